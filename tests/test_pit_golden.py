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
    store.apply([
        Entity(name="thing", join_keys={"key": "string"}),
        FeatureView(name="v", entity="thing", features={"id": "int64", "x": "float64"}, ttl="1d"),
    ])
    batches: dict[datetime, list[list[Any]]] = defaultdict(list)
    for case in CASES:
        for key, event, ingested, ident, x in case["features"]:
            batches[at(ingested)].append([key, at(event), ident, x])
    for ingested in sorted(batches):
        rows = batches[ingested]
        clock.now = ingested
        store.ingest("v", pa.table({
            "key": [r[0] for r in rows],
            "event_timestamp": pa.array([r[1] for r in rows], pa.timestamp("us", tz="UTC")),
            "id": pa.array([r[2] for r in rows], pa.int64()),
            "x": pa.array([r[3] for r in rows], pa.float64()),
        }))
    entity_rows = [(case["id"], key, t) for case in CASES for key, t in case["entity"]]
    entity = pa.table({
        "case": [c for c, _, _ in entity_rows],
        "key": [k for _, k, _ in entity_rows],
        "event_timestamp": pa.array(
            [None if t is None else T0_NS + offset_ns(t) for _, _, t in entity_rows], pa.timestamp("ns", tz="UTC")
        ),
    })
    return store, entity


@pytest.mark.parametrize("known", [False, True], ids=["event-time", "known-at-prediction-time"])
def test_golden_edge_cases(loaded: Any, known: bool) -> None:
    store, entity = loaded
    result = store.get_historical_features(entity, ["v:id", "v:x"], known_at_prediction_time=known)
    assert result.num_rows == entity.num_rows
    assert result.select(["case", "key", "event_timestamp"]).equals(entity), "entity columns come back untouched, in order"
    got: dict[int, list[Any]] = defaultdict(list)
    got_x: dict[int, list[Any]] = defaultdict(list)
    for case, ident, x in zip(result.column("case").to_pylist(), result.column("id").to_pylist(), result.column("x").to_pylist(), strict=True):
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
        store.apply([Entity(name="e", join_keys={"id": "int64"}), FeatureView(name="w", entity="e", features={"y": "int64"})])
        store.ingest("w", pa.table({"id": [1], "event_timestamp": pa.array([datetime(2000, 1, 1, tzinfo=UTC)]), "y": [7]}))
        entity = pa.table({"id": [1, 1], "event_timestamp": pa.array([datetime(1999, 12, 31, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC)])})
        assert store.get_historical_features(entity, ["w:y"]).column("y").to_pylist() == [None, 7]
