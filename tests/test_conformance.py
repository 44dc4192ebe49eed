"""One spec, three engines: the point-in-time rules of featurestore/offline/pit.py give the same
answers on the embedded DuckDB file, on DuckDB over the lake layout (Delta tables) and on Spark over
the lake layout, on the golden edge cases and on random cases against the naive reference.

The lake tables are written batch by batch from what the store holds (same rows, same ingestion
times and batch ids, the same order within a batch), as a lake-backed store writes them."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import HealthCheck, given, settings

from featurestore import FeatureStore
from featurestore.governance import WRITE
from featurestore.historical import with_features
from featurestore.offline.lake import DeltaTables, local_files, strings_in
from featurestore.offline.lake_store import LakeOfflineStore
from featurestore.testing import StepClock

from .conftest import TS, join_plan
from .test_governance import approved, open_store, people, root  # noqa: F401 - approved and root are fixtures
from .test_pit_golden import CASES, CREATED_CASES, T0, created_store, loaded  # noqa: F401 - loaded is a fixture
from .test_pit_property import JOIN_CASES, build, expected_values

ENGINES = ("duckdb-file", "duckdb-lake", "spark-lake")


def lake_engine(lake: DeltaTables) -> LakeOfflineStore:
    """The lake offline engine over `lake`, its bookkeeping in a file beside it (made once)."""
    engine = LakeOfflineStore(Path(f"{lake.root}-bookkeeping.duckdb"), lake)
    engine.initialize()
    return engine


def mirror(store: FeatureStore, engine: LakeOfflineStore, refs: list[str], purpose: str | None = None) -> None:
    """Write the view versions behind `refs` to the lake engine through its protocol (one batch per
    stored batch, with the same batch ids, ingestion times and order within a batch)."""
    hist = store._caps.historical
    snapshot = store._ctx.access.snapshot()
    for part in hist.grant_parts(snapshot, hist.requests(refs, [], True), purpose):
        vv = part.vv
        if engine.lake.exists(vv.table):
            continue
        rows = store.read(vv.ref, features=list(part.grant.features), purpose=purpose)
        data = rows.drop_columns(["_ingested_at", "_batch_id"])
        columns = {n: t for n, t in vv.view.stored_columns(vv.join_keys).items() if n in data.column_names}
        engine.create_table(vv.table, columns, time_columns=vv.view.time_columns)
        write = store._ctx.access.grant(
            snapshot, vv, [c for c in vv.view.feature_names if c in columns], None, (WRITE,)
        )
        batch_ids = rows.column("_batch_id").to_pylist()
        for batch_id in dict.fromkeys(batch_ids):  # in stored order: by ingestion time
            mask = pc.equal(rows.column("_batch_id"), batch_id)
            with engine.writing() as writer:
                writer.append(
                    write,
                    [data.filter(mask)],
                    batch_id=batch_id,
                    ingested_at=rows.filter(mask).column("_ingested_at")[0].as_py(),
                )


def join_everywhere(
    store: FeatureStore,
    lake: DeltaTables,
    spark: Any,
    entity: pa.Table,
    refs: list[str],
    *,
    as_of: Any = None,
    known: bool = False,
    full_names: bool = False,
    purpose: str | None = None,
) -> dict[str, pa.Table]:
    """The same join on every engine, each through the OfflineEngine protocol (the file through the
    public get_historical_features; the lake through its engine's join, by DuckDB and by Spark)."""
    assert spark is not None  # the lake engine's Spark join takes the active session
    engine = lake_engine(lake)
    mirror(store, engine, refs, purpose)
    hist = store._caps.historical
    parts = hist.grant_parts(
        store._ctx.access.snapshot(), hist.requests(refs, entity.column_names, full_names), purpose
    )
    grants = [p.grant for p in parts]
    frame, requests = hist.join_requests(entity, parts, "event_timestamp")
    results = {
        "duckdb-file": store.get_historical_features(
            entity, refs, as_of=as_of, known_at_prediction_time=known, full_feature_names=full_names, purpose=purpose
        )
    }
    for name, runner in (("duckdb-lake", "duckdb"), ("spark-lake", "spark")):
        joined = engine.join(grants, frame, requests, as_of=as_of, known=known, engine=runner)
        results[name] = with_features(entity, joined, requests)
    engine.close()
    return results


@pytest.mark.parametrize("known", [False, True], ids=["event-time", "known-at-prediction-time"])
def test_golden_edge_cases_on_every_engine(loaded: Any, spark: Any, tmp_path: Path, known: bool) -> None:  # noqa: F811
    store, entity = loaded
    results = join_everywhere(store, DeltaTables(tmp_path / "lake"), spark, entity, ["v:id", "v:x"], known=known)
    field = "expected_known" if known else "expected"
    for engine, result in results.items():
        assert result.select(["case", "key", "event_timestamp"]).equals(entity), (
            f"{engine}: entity columns untouched, in order"
        )
        got: dict[int, list[Any]] = defaultdict(list)
        for case, ident in zip(result.column("case").to_pylist(), result.column("id").to_pylist(), strict=True):
            got[case].append(ident)
        wrong = {c["id"]: (c["name"], got[c["id"]], c[field]) for c in CASES if got[c["id"]] != c[field]}
        assert wrong == {}, engine
        assert result.equals(results["duckdb-file"]), f"{engine} differs from the DuckDB file (values or types)"


def test_as_of_on_every_engine(loaded: Any, spark: Any, tmp_path: Path) -> None:  # noqa: F811
    store, entity = loaded
    results = join_everywhere(
        store, DeltaTables(tmp_path / "lake"), spark, entity, ["v:id"], as_of=T0 - timedelta(minutes=40)
    )
    for engine, result in results.items():
        by_case = dict(zip(result.column("case").to_pylist(), result.column("id").to_pylist(), strict=False))
        assert (by_case[6], by_case[7], by_case[9], by_case[5]) == (602, 701, None, 502), engine
        assert result.equals(results["duckdb-file"]), engine


@pytest.mark.parametrize("known", [False, True], ids=["event-time", "known-at-prediction-time"])
def test_created_time_cases_on_every_engine(spark: Any, tmp_path: Path, known: bool) -> None:
    store, entity = created_store()
    results = join_everywhere(store, DeltaTables(tmp_path / "lake"), spark, entity, ["vc:id"], known=known)
    field = "expected_known" if known else "expected"
    for engine, result in results.items():
        got = dict(zip(result.column("case").to_pylist(), result.column("id").to_pylist(), strict=True))
        assert {c["id"]: got[c["id"]] for c in CREATED_CASES} == {c["id"]: c[field][0] for c in CREATED_CASES}, engine


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(**JOIN_CASES)
def test_random_cases_agree_on_every_engine(
    spark: Any,
    tmp_path_factory: Any,
    ttls: Any,
    batches: Any,
    entities: Any,
    as_of_s: int | None,
    known: bool,
    plan: str,
) -> None:
    case = build(ttls, batches, entities, as_of_s)
    with case.store, join_plan(plan):
        lake = DeltaTables(tmp_path_factory.mktemp("lake"))
        results = join_everywhere(
            case.store,
            lake,
            spark,
            case.entity,
            ["va:value", "vb:value"],
            as_of=case.as_of,
            known=known,
            full_names=True,
        )
        expected = expected_values(case, ttls, known)
        for engine, result in results.items():
            assert result.num_rows == len(entities), engine
            for name, values in expected.items():
                assert result.column(f"{name}__value").to_pylist() == values, (engine, name)
            assert result.equals(results["duckdb-file"]), engine


def test_hashed_keys_across_a_rotation_on_every_engine(approved: Path, spark: Any, tmp_path: Path) -> None:  # noqa: F811
    """Raw keys match rows stored under either key id (two stored forms per entity row), and the
    lake table keeps only pseudonyms: no raw identifier in any of its files."""
    clock = StepClock(start=datetime(2025, 6, 2, tzinfo=UTC), step=timedelta(seconds=1))
    lake = DeltaTables(tmp_path / "lake")
    with open_store(approved, clock) as fs:
        fs.ingest("person", people(["c1", "c2"], spend=1.0, day=1))
        fs.rotate_key("hmac")
        clock.now = datetime(2025, 6, 6, tzinfo=UTC)
        fs.ingest("person", people(["c2"], spend=2.0, day=5))
        spine = pa.table(
            {
                "customer_id": [" C1 ", "c2", "c2", "c2", "c3"],
                "event_timestamp": pa.array(
                    [
                        datetime(2025, 7, 1, tzinfo=UTC),
                        datetime(2025, 6, 3, tzinfo=UTC),
                        datetime(2025, 6, 5, 12, tzinfo=UTC),
                        datetime(2025, 7, 1, tzinfo=UTC),
                        datetime(2025, 7, 1, tzinfo=UTC),
                    ],
                    TS,
                ),
            }
        )
        for known, expected in ((False, [1.0, 1.0, 2.0, 2.0, None]), (True, [1.0, 1.0, 1.0, 2.0, None])):
            results = join_everywhere(fs, lake, spark, spine, ["person:spend"], known=known, purpose="fraud_detection")
            for engine, result in results.items():
                assert result.column("spend").to_pylist() == expected, (engine, known)
                assert result.column("customer_id").to_pylist() == [" C1 ", "c2", "c2", "c2", "c3"], engine
    raw = {"c1", "c2", " C1 "}
    files = local_files(tmp_path / "lake")
    assert any(p.suffix == ".parquet" for p in files) and any(p.suffix == ".json" for p in files)
    for path in files:
        assert not raw & strings_in(path), path
    stored = {s for p in files if p.suffix == ".parquet" and "_delta_log" not in str(p) for s in strings_in(p)}
    assert stored and all(s.startswith("hmac-") for s in stored), "only pseudonyms in the data files"


def test_composite_keys_never_collide_on_any_engine(spark: Any, tmp_path: Path) -> None:
    """Feast's Spark store builds a row id by concatenating keys without a separator, so the keys
    ("1", "23") and ("12", "3") collide there; here each part is matched on its own, everywhere.
    Tied event times within a batch and across batches still give one row per entity row."""
    from featurestore import Entity, FeatureView

    clock = StepClock(start=T0, step=timedelta(seconds=1))
    with FeatureStore(memory=True, clock=clock) as store:
        store.apply(
            [
                Entity(name="pair", join_keys={"a": "string", "b": "string"}),
                FeatureView(name="p", entity="pair", features={"v": "int64"}, ttl="1d"),
            ]
        )
        at = T0 - timedelta(hours=1)
        store.ingest(
            "p",
            pa.table(
                {
                    "a": ["1", "12", "1", "1"],
                    "b": ["23", "3", "23", "2"],
                    "event_timestamp": pa.array([at] * 4, TS),
                    "v": pa.array([1, 2, 3, 4], pa.int64()),
                }
            ),
        )
        store.ingest(
            "p",
            pa.table({"a": ["12"], "b": ["3"], "event_timestamp": pa.array([at], TS), "v": pa.array([5], pa.int64())}),
        )
        entity = pa.table(
            {
                "a": ["1", "12", "1", "123", None, "1"],
                "b": ["23", "3", "2", "", "3", "23"],
                "event_timestamp": pa.array([T0, T0, T0, T0, T0, at - timedelta(microseconds=1)], TS),
            }
        )
        results = join_everywhere(store, DeltaTables(tmp_path / "lake"), spark, entity, ["p:v"])
        for engine, result in results.items():
            assert result.column("v").to_pylist() == [3, 5, 4, None, None, None], engine
            assert result.equals(results["duckdb-file"]), engine
