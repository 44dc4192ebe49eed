"""A store whose offline rows are Delta tables (`offline: {type: delta}`): the same answers as the
embedded file for every read path, erasure and retention that leave no trace in any lake file, a
kill -9 mid-ingest that leaves no partial batch, and Spark as the join engine."""

from __future__ import annotations

import os
import signal
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from featurestore import Entity, FeatureStore, FeatureView, RetrievalError
from featurestore.offline.lake import local_files, strings_in
from featurestore.offline.lake_store import REWRITE_KEY, LakeOfflineStore
from featurestore.testing import TEST_KEY_PROVIDER, StepClock

from .children import PATIENCE, spawn, wait_for
from .test_governance import PERSON, POLICY, VIEW, hmac_of, people

TS = pa.timestamp("us", tz="UTC")
T0 = datetime(2025, 3, 1, tzinfo=UTC)
ITEM = Entity(name="item", join_keys={"item_id": "int64"})
STOCK = FeatureView(
    name="stock", entity="item", ttl="2d", features={"qty": "int64", "price": "float64", "seen": "timestamp"}
)


def stock(ids: list[int], at: datetime, qty: int) -> pa.Table:
    n = len(ids)
    return pa.table(
        {
            "item_id": pa.array(ids, pa.int64()),
            "event_timestamp": pa.array([at] * n, TS),
            "qty": pa.array([qty] * n, pa.int64()),
            "price": [qty * 1.5] * n,
            "seen": pa.array([at] * n, TS),
        }
    )


def fill(fs: FeatureStore, clock: StepClock) -> None:
    fs.apply([ITEM, STOCK])
    fs.ingest("stock", stock([1, 2, 3, 1], T0 - timedelta(hours=5), 5))  # a tie in the batch: the later row wins
    clock.now = T0 - timedelta(hours=2)
    fs.ingest("stock", stock([2, 4], T0 - timedelta(hours=5), 7))  # the same event time, a later batch: wins
    clock.now = T0


@pytest.fixture
def pair(tmp_path: Path) -> Any:
    """A lake store and a file store with the same history."""
    stores = []
    for name, lake in (("lake_store", "lake"), ("file_store", None)):
        clock = StepClock(start=T0 - timedelta(hours=4), step=timedelta(microseconds=0))
        fs = FeatureStore.init(tmp_path / name, lake=lake, clock=clock, key_provider=TEST_KEY_PROVIDER)
        fill(fs, clock)
        stores.append(fs)
    yield stores
    for fs in stores:
        fs.close()


def test_a_lake_store_answers_every_read_like_the_file(pair: Any, spark: Any) -> None:
    lake, file = pair
    assert isinstance(lake._ctx.offline, LakeOfflineStore) and not isinstance(file._ctx.offline, LakeOfflineStore)
    assert lake.read("stock").equals(file.read("stock"))
    entity = pa.table(
        {
            "item_id": pa.array([1, 2, 3, 4, 5, None], pa.int64()),
            "event_timestamp": pa.array([T0, T0, T0 - timedelta(days=3), T0, T0, T0], TS),
        }
    )
    expected = file.get_historical_features(entity, ["stock:*"])
    assert expected.column("qty").to_pylist() == [5, 7, None, 7, None, None]
    assert lake.get_historical_features(entity, ["stock:*"]).equals(expected)
    assert lake.get_historical_features(entity, ["stock:*"], engine="spark").equals(expected)
    as_of = T0 - timedelta(hours=3)
    assert lake.get_historical_features(entity, ["stock:qty"], as_of=as_of).equals(
        file.get_historical_features(entity, ["stock:qty"], as_of=as_of)
    )
    for engine in ("duckdb", "spark"):
        assert lake.get_historical_features(entity, ["stock:*"], known_at_prediction_time=True, engine=engine).equals(
            file.get_historical_features(entity, ["stock:*"], known_at_prediction_time=True)
        ), engine
    one = lake.create_training_set("by_duckdb", entity, ["stock:*"])
    two = lake.create_training_set("by_spark", entity, ["stock:*"], engine="spark")
    three = file.create_training_set("on_file", entity, ["stock:*"])
    assert one.content_hash == two.content_hash == three.content_hash
    assert lake.reproduce_training_set("by_spark").matches
    for fs in (lake, file):
        fs.materialize(end=T0)
        assert fs.check_consistency()[0].mismatches == []
    refs = ["stock:qty", "stock:seen"]
    assert (
        lake.get_online_features([{"item_id": i} for i in (1, 2, 4, 9)], refs).values
        == file.get_online_features([{"item_id": i} for i in (1, 2, 4, 9)], refs).values
    )


def test_a_lake_store_reopens_and_agrees_with_its_registry(pair: Any) -> None:
    lake, _ = pair
    root = lake.config.root
    lake.close()
    with FeatureStore(root, key_provider=TEST_KEY_PROVIDER) as again:
        assert [b.status for b in again.list_batches()] == ["committed", "committed"]
        assert again.read("stock").num_rows == 6
        report = [c for c in FeatureStore.doctor(root, key_provider=TEST_KEY_PROVIDER) if c.status == "fail"]
        assert report == [], report


def test_a_delta_commit_without_its_record_is_invisible(pair: Any) -> None:
    """The window between the Delta commit and its bookkeeping record: no reader sees the batch."""
    lake, _ = pair
    offline = lake._ctx.offline
    offline.lake.append("fv_stock_v1", [stock([9], T0 - timedelta(hours=1), 99)], batch_id=999, ingested_at=T0)
    assert 999 not in lake.read("stock").column("_batch_id").to_pylist()
    entity = pa.table({"item_id": pa.array([9], pa.int64()), "event_timestamp": pa.array([T0], TS)})
    assert lake.get_historical_features(entity, ["stock:qty"]).column("qty").to_pylist() == [None]
    assert lake.get_historical_features(entity, ["stock:qty"], engine="spark").column("qty").to_pylist() == [None]
    assert offline.lake.dataset("fv_stock_v1").count_rows() == 7, "the stray row is in the table's files"
    lake.compact()
    assert offline.lake.dataset("fv_stock_v1").count_rows() == 6, "compaction deletes rows of batches without a record"
    assert lake.read("stock").num_rows == 6


def test_spark_needs_the_lake_and_engines_are_named(pair: Any) -> None:
    _, file = pair
    entity = pa.table({"item_id": pa.array([1], pa.int64()), "event_timestamp": pa.array([T0], TS)})
    with pytest.raises(RetrievalError, match="engine='spark' reads the lake store"):
        file.get_historical_features(entity, ["stock:qty"], engine="spark")
    with pytest.raises(RetrievalError, match="unknown engine 'polars'"):
        file.get_historical_features(entity, ["stock:qty"], engine="polars")


def test_a_new_version_carries_its_history_on_the_lake(pair: Any) -> None:
    lake, file = pair
    wider = FeatureView(
        name="stock",
        entity="item",
        ttl="2d",
        features={"qty": "int64", "price": "float64", "seen": "timestamp", "bin": "string"},
    )
    entity = pa.table({"item_id": pa.array([1, 2, 4], pa.int64()), "event_timestamp": pa.array([T0] * 3, TS)})
    for fs in (lake, file):
        fs.apply([ITEM, wider])
    assert lake.read("stock@v2").equals(file.read("stock@v2"))
    got = lake.get_historical_features(entity, ["stock@v2:*"])
    assert got.equals(file.get_historical_features(entity, ["stock@v2:*"]))
    assert got.column("qty").to_pylist() == [5, 7, 7] and got.column("bin").to_pylist() == [None] * 3


def governed_lake(tmp_path: Path, clock: StepClock) -> FeatureStore:
    root = tmp_path / "governed"
    FeatureStore.init(root, lake="lake", key_provider=TEST_KEY_PROVIDER, actor="tester").close()
    (root / "policies" / "people.yaml").write_text(POLICY)
    fs = FeatureStore(root, key_provider=TEST_KEY_PROVIDER, actor="tester", clock=clock)
    fs.apply([PERSON, VIEW])
    fs.approve_policy(root / "policies" / "people.yaml", by="A. Counsel", role="legal", ticket="LEGAL-1")
    return fs


def test_erasure_on_the_lake_leaves_no_trace_in_any_file(tmp_path: Path) -> None:
    clock = StepClock(start=datetime(2025, 6, 2, tzinfo=UTC), step=timedelta(seconds=1))
    fs = governed_lake(tmp_path, clock)
    fs.ingest("person", people(["cust-alpha-0001", "cust-beta-0002"], spend=1.0, day=1))
    fs.ingest("person", people(["cust-alpha-0001"], spend=2.0, day=2))
    fs.materialize()
    assert not fs.verify_erasure("person_e", "cust-alpha-0001").clean, "the proof sees the subject before erasure"
    lake_dir = fs.config.root / "lake"  # type: ignore[operator]
    pseudonym = hmac_of(fs, "cust-alpha-0001")
    files = local_files(lake_dir)
    assert any(pseudonym in strings_in(p) for p in files), "the subject is in the lake before erasure"
    assert not any(
        {"cust-alpha-0001", "cust-beta-0002", " Person.cust-alpha-0001@Example.COM "} & strings_in(p) for p in files
    ), "raw identifiers never reach the lake"
    [result] = fs.erase("person_e", ["cust-alpha-0001"])
    assert result.status == "done" and result.removed["offline person@v1"] == 2
    for path in local_files(lake_dir):  # data files, every log entry, checkpoints, statistics
        assert pseudonym not in strings_in(path), path
        assert pseudonym.encode() not in path.read_bytes(), path
    assert fs.where("person_e", "cust-alpha-0001") == {}
    assert fs.read("person", features=["spend"], purpose="fraud_detection").num_rows == 1
    proof = fs.verify_erasure("person_e", "cust-alpha-0001")
    values = [c for c in proof.checks if c.method == "values"]
    assert proof.clean and len(values) >= 3, "every lake data file and log entry was read, decoded"
    fs.close()


def test_retention_on_the_lake_deletes_for_good(tmp_path: Path) -> None:
    clock = StepClock(start=datetime(2025, 6, 2, tzinfo=UTC), step=timedelta(seconds=1))
    fs = governed_lake(tmp_path, clock)
    fs.ingest("person", people(["c1", "c2"], day=1))
    pseudonym = hmac_of(fs, "c2")
    clock.now = datetime(2026, 8, 1, tzinfo=UTC)  # 400 days later: past the policy's offline retention
    assert fs.run_retention(dry_run=True).removed == {"offline person@v1": 2}
    stored = fs._ctx.offline.lake.dataset  # type: ignore[attr-defined]
    assert stored("fv_person_v1").count_rows() == 2, "a dry run deletes nothing (reads already hide expired rows)"
    report = fs.run_retention()
    assert report.removed == {"offline person@v1": 2}
    assert stored("fv_person_v1").count_rows() == 0
    for path in local_files(fs.config.root / "lake"):  # type: ignore[operator]
        assert pseudonym not in strings_in(path), path
    fs.close()


@pytest.mark.slow
def test_kill_9_during_a_lake_store_ingest_leaves_no_partial_batch(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with FeatureStore.init(root, lake="lake") as fs:
        fs.apply([ITEM, STOCK])
        fs.ingest("stock", stock([1], T0, 1))
    child = textwrap.dedent(f"""
        import sys
        import pyarrow as pa
        from datetime import datetime, UTC
        from featurestore import FeatureStore
        from featurestore.offline.lake import local_files
        TS = pa.timestamp("us", tz="UTC")
        n = 3_000_000
        table = pa.table({{"item_id": pa.array(range(n), pa.int64()), "event_timestamp": pa.array([datetime(2025, 3, 1, tzinfo=UTC)] * n, TS),
                           "qty": pa.array(range(n), pa.int64()), "price": pa.array([1.0] * n), "seen": pa.array([datetime(2025, 3, 1, tzinfo=UTC)] * n, TS)}})
        fs = FeatureStore({str(root)!r})
        fs._ctx.offline.lake.target_file_size = 1_000_000  # many files before the one commit
        def data_files():
            return [p for p in local_files({str(root / "lake")!r}) if p.suffix == ".parquet" and "_delta_log" not in str(p)]
        def progress(done, total):
            # Past a million rows with files of this batch on disk: say so, and hold the batch open.
            if done > 1_000_000 and len(data_files()) > 1:
                print("writing", flush=True)
                sys.stdin.readline()
        fs.ingest("stock", pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=100_000)), progress=progress)
        print("committed", flush=True)
    """)
    proc = spawn(child)
    try:
        wait_for(proc, "writing")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=PATIENCE)
    with FeatureStore(root) as fs:
        assert [b.status for b in fs.list_batches()] == ["committed", "aborted"]
        assert fs.read("stock").num_rows == 1, "no row of the killed batch"
        data_files = [p for p in local_files(root / "lake") if p.suffix == ".parquet" and "_delta_log" not in str(p)]
        assert len(data_files) > 1, "the killed writer left files behind"
        fs.compact()
        left = [p for p in local_files(root / "lake") if p.suffix == ".parquet" and "_delta_log" not in str(p)]
        assert len(left) == 1, "compaction removes the killed writer's files"
        assert fs.ingest("stock", stock([2], T0, 2)).rows == 1 and fs.read("stock").num_rows == 2


def test_the_cli_makes_a_lake_store_and_joins_on_spark(tmp_path: Path, spark: Any) -> None:
    import pyarrow.parquet as pq
    from typer.testing import CliRunner

    from featurestore.cli import app

    from .conftest import profile_rows
    from .test_cli import DEFS

    runner = CliRunner()
    store = tmp_path / "s"

    def run(*args: str) -> str:
        result = runner.invoke(app, list(args))
        assert result.exit_code == 0, result.output
        return result.output

    run("init", str(store), "--lake", "lake")
    assert "type: delta" in (store / "featurestore.yaml").read_text()
    (store / "features" / "defs.yaml").write_text(DEFS)
    run("apply", "-s", str(store))
    rows = profile_rows(12)
    pq.write_table(rows, tmp_path / "rows.parquet")
    run("ingest", "profile", str(tmp_path / "rows.parquet"), "-s", str(store))
    assert (store / "lake" / "fv_profile_v1" / "_delta_log").is_dir()
    spine = rows.select(["customer_id", "event_timestamp"])
    pq.write_table(spine, tmp_path / "spine.parquet")
    outputs = {}
    for engine in ("duckdb", "spark"):
        out = tmp_path / f"{engine}.parquet"
        run(
            "get-historical",
            str(tmp_path / "spine.parquet"),
            "-f",
            "profile:age",
            "--out",
            str(out),
            "--engine",
            engine,
            "-s",
            str(store),
        )
        outputs[engine] = pq.read_table(out)
    assert outputs["duckdb"].equals(outputs["spark"])
    assert outputs["duckdb"].column("age").to_pylist() == rows.column("age").to_pylist()
    result = runner.invoke(
        app,
        [
            "get-historical",
            str(tmp_path / "spine.parquet"),
            "-f",
            "profile:age",
            "--out",
            str(tmp_path / "x.parquet"),
            "--engine",
            "flink",
            "-s",
            str(store),
        ],
    )
    assert result.exit_code == 1 and "unknown engine 'flink'" in result.output and "Traceback" not in result.output


def test_push_and_registry_recovery_on_the_lake(pair: Any) -> None:
    lake, file = pair
    pushed = stock([7], T0 - timedelta(minutes=30), 70)
    for fs in (lake, file):
        fs.materialize(end=T0)
        fs.push("stock", pushed, to="both")
    assert lake.read("stock").equals(file.read("stock")), "a pushed offline batch is one more lake commit"
    assert lake.get_online_features({"item_id": 7}, ["stock:qty"]).values == {"qty": [70]}
    root = lake.config.root
    assert root is not None
    lake.close()
    (root / "registry.db").unlink()  # the registry is lost; the lake and its bookkeeping remain
    (root / "features" / "stock.yaml").write_text(
        "entities:\n  - name: item\n    join_keys: {item_id: int64}\nfeature_views:\n  - name: stock\n    entity: item\n"
        "    ttl: 2d\n    features: {qty: int64, price: float64, seen: timestamp}\n"
    )
    report = FeatureStore.recover_registry(root, key_provider=TEST_KEY_PROVIDER)
    assert report.views == ["stock@v1"] and report.batches_added == 3
    with FeatureStore(root, key_provider=TEST_KEY_PROVIDER) as again:
        assert again.read("stock").equals(file.read("stock"))


def test_a_rewrite_whose_commit_landed_is_never_done_twice(pair: Any) -> None:
    """approve --treat-existing on the lake: if a kill lands between the overwrite's commit and its
    bookkeeping record, the rerun finds the commit's marker and records without rewriting again
    (a value is never treated twice)."""
    lake, _ = pair
    offline = lake._ctx.offline
    with offline._connect(read_only=False) as con:
        rows = con.sql('SELECT * FROM "fv_stock_v1" ORDER BY _fs_row').to_arrow_table()
    once = rows.set_column(rows.schema.get_field_index("qty"), "qty", pa.array([1] * rows.num_rows, pa.int64()))
    twice = rows.set_column(rows.schema.get_field_index("qty"), "qty", pa.array([2] * rows.num_rows, pa.int64()))
    recorded: list[str] = []
    offline.lake.overwrite("fv_stock_v1", once, {REWRITE_KEY: "policy-sha:qty"})  # the commit landed; then the kill
    with offline._connect(read_only=False) as con:
        offline._rewrite_rows_on(con, "fv_stock_v1", twice, lambda: recorded.append("rerun"), marker="policy-sha:qty")
    assert recorded == ["rerun"], "the rerun records the rewrite"
    assert set(lake.read("stock").column("qty").to_pylist()) == {1}, "and does not rewrite the rewritten values again"
    with offline._connect(read_only=False) as con:
        offline._rewrite_rows_on(con, "fv_stock_v1", twice, lambda: recorded.append("new"), marker="other-sha:qty")
    assert set(lake.read("stock").column("qty").to_pylist()) == {2}, "another rewrite does rewrite"
    assert lake.read("stock").column("_batch_id").to_pylist() == rows.column("_batch_id").to_pylist(), "stamps kept"
