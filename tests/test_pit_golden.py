"""Point-in-time joins on the golden edge cases (tests/fixtures/pit_edge_cases.yaml)."""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import yaml

from featurestore import Entity, FeatureStore, FeatureView

from .conftest import JOIN_PLANS, join_plan

FIXTURE = Path(__file__).parent / "fixtures" / "pit_edge_cases.yaml"
T0 = datetime(2025, 1, 10, tzinfo=UTC)
T0_NS = int(T0.timestamp()) * 1_000_000_000
UNITS_NS = {"d": 86_400 * 10**9, "h": 3_600 * 10**9, "m": 60 * 10**9, "s": 10**9, "us": 1_000, "ns": 1}


def offset_ns(text: str) -> int:
    """'-1d-1us' -> nanoseconds from T0."""
    if text == "0":
        return 0
    total = 0
    for sign, amount, unit in re.findall(r"([+-])(\d+)(d|h|m|s|us|ns)", text):
        total += (1 if sign == "+" else -1) * int(amount) * UNITS_NS[unit]
    return total


def at(text: str) -> datetime:
    ns = offset_ns(text)
    assert ns % 1000 == 0, "feature and ingestion times are whole microseconds"
    return T0 + timedelta(microseconds=ns // 1000)


class SetClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


CASES: list[dict[str, Any]] = yaml.safe_load(FIXTURE.read_text())["cases"]


@pytest.fixture(scope="module")
def loaded() -> Any:
    clock = SetClock()
    store = FeatureStore(memory=True, clock=clock)
    store.apply(
        [
            Entity(name="thing", join_keys={"key": "string"}),
            FeatureView(name="v", entity="thing", features={"id": "int64", "x": "float64"}, ttl="1d"),
        ]
    )
    batches: dict[datetime, list[list[Any]]] = defaultdict(list)
    for case in CASES:
        for key, event, ingested, ident, x in case["features"]:
            batches[at(ingested)].append([key, at(event), ident, x])
    for ingested in sorted(batches):
        rows = batches[ingested]
        clock.now = ingested
        store.ingest(
            "v",
            pa.table(
                {
                    "key": [r[0] for r in rows],
                    "event_timestamp": pa.array([r[1] for r in rows], pa.timestamp("us", tz="UTC")),
                    "id": pa.array([r[2] for r in rows], pa.int64()),
                    "x": pa.array([r[3] for r in rows], pa.float64()),
                }
            ),
        )
    entity_rows = [(case["id"], key, t) for case in CASES for key, t in case["entity"]]
    entity = pa.table(
        {
            "case": [c for c, _, _ in entity_rows],
            "key": [k for _, k, _ in entity_rows],
            "event_timestamp": pa.array(
                [None if t is None else T0_NS + offset_ns(t) for _, _, t in entity_rows], pa.timestamp("ns", tz="UTC")
            ),
        }
    )
    return store, entity


@pytest.mark.parametrize("plan", JOIN_PLANS)
@pytest.mark.parametrize("known", [False, True], ids=["event-time", "known-at-prediction-time"])
def test_golden_edge_cases(loaded: Any, known: bool, plan: str) -> None:
    store, entity = loaded
    with join_plan(plan):
        result = store.get_historical_features(entity, ["v:id", "v:x"], known_at_prediction_time=known)
    assert result.num_rows == entity.num_rows
    assert result.select(["case", "key", "event_timestamp"]).equals(entity), (
        "entity columns come back untouched, in order"
    )
    got: dict[int, list[Any]] = defaultdict(list)
    got_x: dict[int, list[Any]] = defaultdict(list)
    for case, ident, x in zip(
        result.column("case").to_pylist(), result.column("id").to_pylist(), result.column("x").to_pylist(), strict=True
    ):
        got[case].append(ident)
        got_x[case].append(x)
    field = "expected_known" if known else "expected"
    wrong = {c["id"]: (c["name"], got[c["id"]], c[field]) for c in CASES if got[c["id"]] != c[field]}
    assert wrong == {}
    for case in CASES:
        if "expected_x" in case:
            assert got_x[case["id"]] == case["expected_x"]


def test_as_of_ignores_rows_ingested_later(loaded: Any) -> None:
    store, entity = loaded
    result = store.get_historical_features(entity, ["v:id"], as_of=T0 - timedelta(minutes=40))
    by_case = dict(zip(result.column("case").to_pylist(), result.column("id").to_pylist(), strict=False))
    assert by_case[6] == 602  # 601 was ingested at -30m, after as_of
    assert by_case[7] == 701
    assert by_case[9] is None  # 902 ingested at -30m, 901 at +1h: both after as_of
    assert by_case[5] == 502


def test_no_ttl_view_has_no_lower_bound() -> None:
    with FeatureStore(memory=True) as store:
        store.apply(
            [Entity(name="e", join_keys={"id": "int64"}), FeatureView(name="w", entity="e", features={"y": "int64"})]
        )
        store.ingest(
            "w", pa.table({"id": [1], "event_timestamp": pa.array([datetime(2000, 1, 1, tzinfo=UTC)]), "y": [7]})
        )
        entity = pa.table(
            {
                "id": [1, 1],
                "event_timestamp": pa.array([datetime(1999, 12, 31, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC)]),
            }
        )
        assert store.get_historical_features(entity, ["w:y"]).column("y").to_pylist() == [None, 7]


CREATED_CASES: list[dict[str, Any]] = yaml.safe_load(FIXTURE.read_text())["created_cases"]
CREATED_VIEW = FeatureView(
    name="vc", entity="thing", features={"id": "int64"}, ttl="1d", created_timestamp_field="created"
)


def created_store(order: int = 1) -> tuple[FeatureStore, pa.Table]:
    """The created cases loaded batch by batch; `order` -1 writes each batch's rows reversed, which
    must not matter where created times differ."""
    clock = SetClock()
    store = FeatureStore(memory=True, clock=clock)
    store.apply([Entity(name="thing", join_keys={"key": "string"}), CREATED_VIEW])
    batches: dict[datetime, list[list[Any]]] = defaultdict(list)
    for case in CREATED_CASES:
        for key, event, created, ingested, ident in case["features"]:
            batches[at(ingested)].append([key, at(event), None if created is None else at(created), ident])
    for ingested in sorted(batches):
        clock.now = ingested
        rows = batches[ingested][::order]
        store.ingest(
            "vc",
            pa.table(
                {
                    "key": [r[0] for r in rows],
                    "event_timestamp": pa.array([r[1] for r in rows], pa.timestamp("us", tz="UTC")),
                    "created": pa.array([r[2] for r in rows], pa.timestamp("us", tz="UTC")),
                    "id": pa.array([r[3] for r in rows], pa.int64()),
                }
            ),
        )
    entity_rows = [(case["id"], key, t) for case in CREATED_CASES for key, t in case["entity"]]
    entity = pa.table(
        {
            "case": [c for c, _, _ in entity_rows],
            "key": [k for _, k, _ in entity_rows],
            "event_timestamp": pa.array(
                [T0 + timedelta(microseconds=offset_ns(t) // 1000) for _, _, t in entity_rows],
                pa.timestamp("us", tz="UTC"),
            ),
        }
    )
    return store, entity


@pytest.mark.parametrize("plan", JOIN_PLANS)
@pytest.mark.parametrize("known", [False, True], ids=["event-time", "known-at-prediction-time"])
def test_golden_created_timestamp_cases(known: bool, plan: str) -> None:
    store, entity = created_store()
    with join_plan(plan):
        result = store.get_historical_features(entity, ["vc:id"], known_at_prediction_time=known)
    field = "expected_known" if known else "expected"
    got = dict(zip(result.column("case").to_pylist(), result.column("id").to_pylist(), strict=True))
    assert {c["id"]: got[c["id"]] for c in CREATED_CASES} == {c["id"]: c[field][0] for c in CREATED_CASES}


def test_materialization_ranks_by_created_time_like_the_join() -> None:
    store, entity = created_store()
    store.materialize(end=T0)
    online = store.get_online_features([{"key": k} for k in entity.column("key").to_pylist()], ["vc:id"]).values["id"]
    joined = store.get_historical_features(entity, ["vc:id"]).column("id").to_pylist()
    assert online == joined == [c["expected"][0] for c in CREATED_CASES]


def test_with_a_created_column_the_order_rows_are_written_in_no_longer_matters() -> None:
    """A Feast source moved over: ingested in file order instead of created order, same rows."""
    forward, entity = created_store(order=1)
    backward, _ = created_store(order=-1)
    same = [c["id"] for c in CREATED_CASES if c["id"] != "c5"]  # c5's rows tie on created: position decides
    a = forward.get_historical_features(entity, ["vc:id"]).to_pylist()
    b = backward.get_historical_features(entity, ["vc:id"]).to_pylist()
    assert [r for r in a if r["case"] in same] == [r for r in b if r["case"] in same]


def test_a_created_column_is_part_of_the_schema_and_checked() -> None:
    import hashlib
    import json

    from featurestore import DefinitionError, IngestionError

    plain = FeatureView(name="vc", entity="thing", features={"id": "int64"})
    old_payload = {
        "join_keys": [("key", "string")],
        "timestamp_field": "event_timestamp",
        "features": [("id", "int64")],
    }
    assert (
        plain.schema_hash({"key": "string"})
        == hashlib.sha256(json.dumps(old_payload, sort_keys=True).encode()).hexdigest()
    ), "views without a created column keep their schema hash (no surprise new versions)"
    assert CREATED_VIEW.schema_hash({"key": "string"}) != plain.schema_hash({"key": "string"})
    assert list(CREATED_VIEW.stored_columns({"key": "string"})) == ["key", "event_timestamp", "created", "id"]
    assert FeatureView.from_dict(CREATED_VIEW.to_dict()) == CREATED_VIEW
    for created, message in (
        ("event_timestamp", "is the event time column"),
        ("id", "is a feature"),
        ("2x", "invalid created"),
    ):
        with pytest.raises(DefinitionError, match=message):
            FeatureView(name="vc", entity="thing", features={"id": "int64"}, created_timestamp_field=created)
    store = FeatureStore(memory=True)
    thing = Entity(name="thing", join_keys={"key": "string"})
    with pytest.raises(
        DefinitionError,
        match="key is a join key of entity 'thing' and cannot also be a feature, the event time or the created time",
    ):
        store.plan(
            [thing, FeatureView(name="vc", entity="thing", features={"id": "int64"}, created_timestamp_field="key")]
        )
    store.apply([thing, plain])
    store.ingest(
        "vc", pa.table({"key": ["a"], "event_timestamp": pa.array([T0], pa.timestamp("us", tz="UTC")), "id": [1]})
    )
    [change] = store.apply([thing, CREATED_VIEW]).changes
    assert (
        change.carry_from is None
        and "a new created time column (none -> created) cannot carry v1's 1 rows forward" in change.detail
    )
    with pytest.raises(IngestionError, match="created"):
        store.ingest(
            "vc", pa.table({"key": ["a"], "event_timestamp": pa.array([T0], pa.timestamp("us", tz="UTC")), "id": [1]})
        )
    naive = pa.table(
        {
            "key": ["a"],
            "event_timestamp": pa.array([T0], pa.timestamp("us", tz="UTC")),
            "created": pa.array([datetime(2025, 1, 1)], pa.timestamp("us")),
            "id": [1],
        }
    )
    with pytest.raises(IngestionError, match="created"):
        store.ingest("vc", naive)


def test_a_created_column_in_a_definition_file(tmp_path: Path) -> None:
    from featurestore.definitions import load_definitions

    path = tmp_path / "v.yaml"
    path.write_text(
        "entities:\n  - {name: thing, join_keys: {key: string}}\nfeature_views:\n"
        "  - name: vc\n    entity: thing\n    created_timestamp_field: created\n    features: {id: int64}\n"
        "  - name: bad\n    entity: thing\n    created_timestamp_field: id\n    features: {id: int64}\n"
    )
    from featurestore import DefinitionError

    with pytest.raises(DefinitionError, match=r"v\.yaml:10:30: feature view 'bad': 'id' is a feature"):
        load_definitions([path])
    path.write_text(path.read_text().split("  - name: bad")[0])
    [view] = load_definitions([path]).views
    assert view.created_timestamp_field == "created"
