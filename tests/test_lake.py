"""The lake layout (featurestore/offline/lake.py): a batch is one Delta commit, also under kill -9;
deletes leave no copy in data files, the log or its statistics; row ids rank like rowid."""

from __future__ import annotations

import json
import os
import signal
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake.exceptions import DeltaError

from featurestore.offline.lake import DeltaTables, local_files, row_ids, sql_literal, strings_in

from .children import PATIENCE, spawn, wait_for

TS = pa.timestamp("us", tz="UTC")
SCHEMA = pa.schema([("email", pa.string()), ("event_timestamp", TS), ("spend", pa.float64())])
T = datetime(2025, 3, 1, tzinfo=UTC)


def rows(emails: list[str], spend: float = 1.0) -> pa.Table:
    return pa.table(
        {"email": emails, "event_timestamp": pa.array([T] * len(emails), TS), "spend": [spend] * len(emails)},
        schema=SCHEMA,
    )


@pytest.fixture
def lake(tmp_path: Path) -> DeltaTables:
    tables = DeltaTables(tmp_path / "lake")
    tables.create("fv_p_v1", SCHEMA, ["event_timestamp"])
    return tables


def test_a_batch_is_one_commit_with_its_stamps_and_row_ids(lake: DeltaTables) -> None:
    assert lake.append("fv_p_v1", [rows(["a@x", "b@x"]), rows(["c@x"])], batch_id=1, ingested_at=T) == 3
    assert lake.append("fv_p_v1", [rows(["a@x"], 2.0)], batch_id=2, ingested_at=datetime(2025, 3, 2, tzinfo=UTC)) == 1
    assert lake.append("fv_p_v1", [rows([])], batch_id=3, ingested_at=datetime(2025, 3, 3, tzinfo=UTC)) == 0
    assert lake.committed_batches("fv_p_v1") == {1, 2, 3}, "an empty batch is committed too (named in the log)"
    table = lake.dataset("fv_p_v1").to_table().sort_by("_fs_row")
    assert table.column("email").to_pylist() == ["a@x", "b@x", "c@x", "a@x"]
    assert table.column("_batch_id").to_pylist() == [1, 1, 1, 2]
    assert table.column("_fs_row").to_pylist() == [(1 << 32), (1 << 32) + 1, (1 << 32) + 2, 2 << 32]
    versions = [h for h in lake._table("fv_p_v1").history() if h.get("operation") == "WRITE"]
    assert len(versions) == 3, "one commit per batch, however many chunks it streamed in"


def test_statistics_hold_times_and_stamps_only(lake: DeltaTables) -> None:
    lake.append("fv_p_v1", [rows(["alice@example.com"])], batch_id=1, ingested_at=T)
    log = Path(lake.uri("fv_p_v1")) / "_delta_log"
    stats = [
        json.loads(json.loads(line)["add"]["stats"])
        for f in sorted(log.glob("*.json"))
        for line in f.read_text().splitlines()
        if '"add"' in line
    ]
    assert stats, "the add action carries statistics"
    for stat in stats:
        assert set(stat["minValues"]) <= {"event_timestamp", "_ingested_at", "_batch_id", "_fs_row"}, stat
        assert "alice" not in json.dumps(stat)


def test_a_delete_leaves_no_copy_in_data_log_or_statistics(lake: DeltaTables) -> None:
    lake.append("fv_p_v1", [rows(["alice@example.com", "bob@example.com"])], batch_id=1, ingested_at=T)
    lake.append("fv_p_v1", [rows(["alice@example.com"], 3.0)], batch_id=2, ingested_at=datetime(2025, 3, 2, tzinfo=UTC))
    root = Path(lake.root)
    assert any("alice@example.com" in strings_in(p) for p in local_files(root))
    deleted = lake.delete("fv_p_v1", f"email = {sql_literal('alice@example.com')}")
    assert deleted.rows == 2 and deleted.files_removed >= 2 and deleted.log_entries_removed >= 3
    assert lake.dataset("fv_p_v1").to_table().column("email").to_pylist() == ["bob@example.com"]
    for path in local_files(root):  # data files, log entries (the delete's own predicate too), checkpoints
        assert "alice@example.com" not in strings_in(path), path
        assert b"alice" not in path.read_bytes(), path
    with pytest.raises(DeltaError):  # time travel to before the delete is gone with it
        lake._table("fv_p_v1").load_as_version(1)


def test_kill_9_during_a_lake_ingest_leaves_no_partial_batch(lake: DeltaTables) -> None:
    lake.append("fv_p_v1", [rows(["kept@x"])], batch_id=1, ingested_at=T)
    # The child streams rows into one batch; once it sees a data file of its own on disk (and has
    # streamed 7 chunks), it says so and holds the batch open until it is killed.
    child = textwrap.dedent(f"""
        import sys
        import pyarrow as pa
        from datetime import datetime, UTC
        from featurestore.offline.lake import DeltaTables, local_files
        TS = pa.timestamp("us", tz="UTC")
        def data_files():
            return {{p for p in local_files({str(lake.root)!r}) if p.suffix == ".parquet"}}
        before = data_files()
        def chunks():
            for i in range(10_000):
                n = 200_000
                yield pa.table({{"email": pa.array([f"p{{i}}-{{j}}@x" for j in range(n)]),
                                 "event_timestamp": pa.array([datetime(2025, 3, 1, tzinfo=UTC)] * n, TS),
                                 "spend": pa.array([1.0] * n)}})
                if i >= 6 and data_files() - before:
                    print("streaming", flush=True)
                    sys.stdin.readline()
        DeltaTables({str(lake.root)!r}, target_file_size=1_000_000).append("fv_p_v1", chunks(), batch_id=2, ingested_at=datetime(2025, 3, 2, tzinfo=UTC))
        print("committed", flush=True)
    """)
    before = {p for p in local_files(lake.root) if p.suffix == ".parquet"}
    proc = spawn(child)
    try:
        wait_for(proc, "streaming")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=PATIENCE)
    written = {p for p in local_files(lake.root) if p.suffix == ".parquet"} - before
    assert lake.committed_batches("fv_p_v1") == {1}
    assert lake.dataset("fv_p_v1").to_table().column("email").to_pylist() == ["kept@x"], "no row of the killed batch"
    assert written, "the killed writer had written data files (1 MB each) before its commit"
    files, _ = lake.clean("fv_p_v1")
    assert files == len(written), "the killed writer's files are removed by the next clean-up"
    assert lake.append("fv_p_v1", [rows(["after@x"])], batch_id=3, ingested_at=datetime(2025, 3, 3, tzinfo=UTC)) == 1
    assert lake.committed_batches("fv_p_v1") == {1, 3}


def test_row_ids_and_literals_refuse_what_they_cannot_hold() -> None:
    with pytest.raises(ValueError, match="row-id range"):
        row_ids(2**31, 0, 1)
    with pytest.raises(ValueError, match="row-id range"):
        row_ids(1, 2**32 - 1, 2)
    for bad in (1.5, True, None, b"x"):
        with pytest.raises(TypeError):
            sql_literal(bad)
    assert sql_literal("x' OR '1'='1") == "'x'' OR ''1''=''1'"


def test_a_kept_file_list_follows_every_change_another_writer_makes(lake: DeltaTables) -> None:
    reader, writer = lake, DeltaTables(lake.root)
    writer.append("fv_p_v1", [rows(["a@x"])], batch_id=1, ingested_at=T)
    first = reader.files("fv_p_v1")
    assert len(first) == 1 and reader.files("fv_p_v1") == first
    writer.append("fv_p_v1", [rows(["b@x"])], batch_id=2, ingested_at=T)
    assert len(reader.files("fv_p_v1")) == 2, "an append by another writer is seen"
    writer.delete("fv_p_v1", "email = 'a@x'")  # rewrite, vacuum, checkpoint, log clean-up
    after = reader.files("fv_p_v1")
    assert all(Path(f).exists() for f in after) and len(after) == 1, "a delete and its clean-up are seen"
    writer.delete("fv_p_v1", "email = 'b@x'")  # a second clean-up: the listing keeps changing
    assert reader.files("fv_p_v1") == [] and reader.dataset("fv_p_v1").count_rows() == 0
