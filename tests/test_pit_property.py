"""Property: the DuckDB point-in-time join equals a naive pure-Python reading of the rules."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from featurestore import Entity, FeatureStore, FeatureView

from .conftest import JOIN_PLANS, join_plan

BASE = datetime(2025, 3, 1, tzinfo=UTC)
BASE_NS = int(BASE.timestamp()) * 10**9
SECOND_NS = 10**9


@dataclass
class ViewSpec:
    name: str
    entity: str
    key: str
    key_type: str
    ttl_s: int | None
    created: bool = False
    """The view ranks ties by a created_timestamp_field (random, some null)."""


VIEWS = [ViewSpec("va", "ea", "ka", "string", None), ViewSpec("vb", "eb", "kb", "int64", None, created=True)]
KEYS = {"ka": ["a", "b", "c"], "kb": [1, 2, 3]}


class SetClock:
    def __init__(self) -> None:
        self.now = BASE

    def __call__(self) -> datetime:
        return self.now


feature_row = st.tuples(
    st.integers(0, 2),
    st.integers(0, 10),
    st.one_of(st.none(), st.integers(-5, 5)),
    st.one_of(st.none(), st.integers(0, 3)),
)  # created time (seconds; None: null) for views that have one
batch = st.tuples(st.integers(0, 12), st.lists(feature_row, min_size=1, max_size=5))
entity_row = st.tuples(
    st.one_of(st.none(), st.integers(0, 3)),  # index into KEYS (3 = a key with no rows)
    st.one_of(st.none(), st.integers(0, 12)),  # seconds
    st.sampled_from([0, 0, 0, 500, -500]),  # sub-microsecond offset in ns
)


def reference(
    rows: list[dict[str, Any]], key: Any, t_ns: int | None, ttl_s: int | None, as_of_ns: int | None, known: bool
) -> Any:
    """The rules, read literally: filter candidates, then take the greatest (event, created with
    null lowest, ingestion, position); views without a created column have created None everywhere."""
    if key is None or t_ns is None:
        return None
    candidates = [
        r
        for r in rows
        if r["key"] == key
        and r["e_ns"] <= t_ns
        and (ttl_s is None or r["e_ns"] >= t_ns - ttl_s * SECOND_NS)
        and (as_of_ns is None or r["ing_ns"] <= as_of_ns)
        and (not known or r["ing_ns"] <= t_ns)
    ]
    if not candidates:
        return None
    lowest = -(2**63)
    return max(
        candidates, key=lambda r: (r["e_ns"], lowest if r["c_ns"] is None else r["c_ns"], r["ing_ns"], r["pos"])
    )["value"]


def to_ns(ts: datetime) -> int:
    return int((ts - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1)) * 1000


JOIN_CASES: dict[str, st.SearchStrategy[Any]] = {
    "ttls": st.tuples(st.one_of(st.none(), st.integers(1, 6)), st.one_of(st.none(), st.integers(1, 6))),
    "batches": st.tuples(st.lists(batch, max_size=4), st.lists(batch, max_size=4)),
    "entities": st.lists(entity_row, max_size=10),
    "as_of_s": st.one_of(st.none(), st.integers(0, 13)),
    "known": st.booleans(),
    "plan": st.sampled_from(JOIN_PLANS),
}
"""What a random join case is made of (this test and the conformance suite draw from it)."""


@dataclass
class Case:
    """A random store and entity table, with what the store holds read back for the reference."""

    store: FeatureStore
    clock: SetClock
    entity: pa.Table
    as_of: datetime | None
    stored: dict[str, list[dict[str, Any]]]
    entity_ns: list[int | None]


def build(
    ttls: tuple[int | None, int | None], batches: tuple[list[Any], list[Any]], entities: list[Any], as_of_s: int | None
) -> Case:
    """Ingest the generated batches of both views into a memory store and make the entity table."""
    clock = SetClock()
    store = FeatureStore(memory=True, clock=clock)
    defs: list[Any] = []
    for spec, ttl in zip(VIEWS, ttls, strict=True):
        defs.append(Entity(name=spec.entity, join_keys={spec.key: spec.key_type}))
        defs.append(
            FeatureView(
                name=spec.name,
                entity=spec.entity,
                features={"value": "int64"},
                ttl=ttl,
                created_timestamp_field="created" if spec.created else None,
            )
        )
    store.apply(defs)
    # Batches of both views, in ingestion-time order (equal times are bumped by 1 us).
    plan = sorted(
        [
            (t, i, spec, rows)
            for i, (spec, view_batches) in enumerate(zip(VIEWS, batches, strict=True))
            for t, rows in view_batches
        ],
        key=lambda item: (item[0], item[1]),
    )
    for t, _, spec, rows in plan:
        clock.now = BASE + timedelta(seconds=t)
        columns = {
            spec.key: pa.array(
                [KEYS[spec.key][k] for k, _, _, _ in rows], spec.key_type if spec.key_type == "string" else pa.int64()
            ),
            "event_timestamp": pa.array(
                [BASE + timedelta(seconds=e) for _, e, _, _ in rows], pa.timestamp("us", tz="UTC")
            ),
            "value": pa.array([v for _, _, v, _ in rows], pa.int64()),
        }
        if spec.created:
            columns["created"] = pa.array(
                [None if c is None else BASE + timedelta(seconds=c) for _, _, _, c in rows],
                pa.timestamp("us", tz="UTC"),
            )
        store.ingest(spec.name, pa.table(columns))
    stored: dict[str, list[dict[str, Any]]] = {}
    for spec in VIEWS:
        table = store.read(spec.name)  # ordered by ingestion, batch, position in batch
        created = table.column("created").to_pylist() if spec.created else [None] * table.num_rows
        stored[spec.name] = [
            {
                "key": k,
                "e_ns": to_ns(e),
                "c_ns": None if c is None else to_ns(c),
                "ing_ns": to_ns(i),
                "pos": pos,
                "value": v,
            }
            for pos, (k, e, c, i, v) in enumerate(
                zip(
                    table.column(spec.key).to_pylist(),
                    table.column("event_timestamp").to_pylist(),
                    created,
                    table.column("_ingested_at").to_pylist(),
                    table.column("value").to_pylist(),
                    strict=True,
                )
            )
        ]
    entity_ns = [None if s is None else BASE_NS + s * SECOND_NS + off for _, s, off in entities]
    entity = pa.table(
        {
            "ka": pa.array(
                [None if k is None or k == 3 else KEYS["ka"][k] for k, _, _ in entities] if entities else [],
                pa.string(),
            ),
            "kb": pa.array(
                [None if k is None else (KEYS["kb"][k] if k < 3 else 99) for k, _, _ in entities], pa.int64()
            ),
            "event_timestamp": pa.array(entity_ns, pa.timestamp("ns", tz="UTC")),
            "label": pa.array(list(range(len(entities))), pa.int64()),
        }
    )
    as_of = None if as_of_s is None else BASE + timedelta(seconds=as_of_s)
    return Case(store, clock, entity, as_of, stored, entity_ns)


def expected_values(case: Case, ttls: tuple[int | None, int | None], known: bool) -> dict[str, list[Any]]:
    """The reference's answer per view, for every entity row."""
    as_of_ns = None if case.as_of is None else to_ns(case.as_of)
    return {
        spec.name: [
            reference(case.stored[spec.name], key, t, ttl, as_of_ns, known)
            for key, t in zip(case.entity.column(spec.key).to_pylist(), case.entity_ns, strict=True)
        ]
        for spec, ttl in zip(VIEWS, ttls, strict=True)
    }


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**JOIN_CASES)
def test_join_matches_the_naive_reference(
    ttls: tuple[int | None, int | None],
    batches: tuple[list[Any], list[Any]],
    entities: list[Any],
    as_of_s: int | None,
    known: bool,
    plan: str,
) -> None:
    case = build(ttls, batches, entities, as_of_s)
    store, clock, entity = case.store, case.clock, case.entity
    with store, join_plan(plan):
        result = store.get_historical_features(
            entity, ["va:value", "vb:value"], as_of=case.as_of, known_at_prediction_time=known, full_feature_names=True
        )
        assert result.num_rows == len(entities)
        assert result.select(["ka", "kb", "event_timestamp", "label"]).equals(entity)
        for name, expected in expected_values(case, ttls, known).items():
            assert result.column(f"{name}__value").to_pylist() == expected, name
        # Materialization picks the same row as the join at t = now (every ranking rule), and the
        # online TTL check answers as the join's TTL bound does.
        clock.now = BASE + timedelta(seconds=13)
        now_ns = to_ns(clock.now)
        store.materialize(end=clock.now)
        for spec, ttl in zip(VIEWS, ttls, strict=True):
            keys = KEYS[spec.key]
            online = store.get_online_features([{spec.key: k} for k in keys], [f"{spec.name}:value"]).values["value"]
            assert online == [reference(case.stored[spec.name], k, now_ns, ttl, None, False) for k in keys], (
                f"online {spec.name}"
            )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**{**JOIN_CASES, "known": st.just(True), "plan": st.just("grouped")})
def test_known_at_joins_grouped_by_availability_match_the_naive_reference(
    ttls: tuple[int | None, int | None],
    batches: tuple[list[Any], list[Any]],
    entities: list[Any],
    as_of_s: int | None,
    known: bool,
    plan: str,
) -> None:
    """The known-at plan that first takes the best row per (key, availability time), drawn more
    often than the shared cases draw it."""
    case = build(ttls, batches, entities, as_of_s)
    with case.store, join_plan(plan):
        result = case.store.get_historical_features(
            case.entity,
            ["va:value", "vb:value"],
            as_of=case.as_of,
            known_at_prediction_time=known,
            full_feature_names=True,
        )
        for name, expected in expected_values(case, ttls, known).items():
            assert result.column(f"{name}__value").to_pylist() == expected, name
