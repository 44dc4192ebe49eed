"""Processes: a batch survives kill -9 whole or not at all, and a held store fails fast and clearly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from featurestore import FeatureStore, StoreLockedError

from .conftest import profile_rows

# A child that ingests an endless-looking stream (50k rows a chunk) and says when it is under way.
SLOW_INGEST = textwrap.dedent(
    """
    import sys, time
    import pyarrow as pa
    from featurestore import FeatureStore
    from tests.conftest import profile_rows

    store = FeatureStore(sys.argv[1])
    chunk = profile_rows(50_000)

    def chunks():
        for i in range(400):
            yield from chunk.to_batches()
            if i == 3:
                print("UNDER WAY", flush=True)
            time.sleep(0.01)

    store.ingest("profile", pa.RecordBatchReader.from_batches(chunk.schema, chunks()))
    print("FINISHED", flush=True)
    """
)

# A child that is killed right after the offline store committed, before the registry heard of it.
KILL_AFTER_COMMIT = textwrap.dedent(
    """
    import os, signal, sys
    from featurestore import FeatureStore
    from featurestore.registry import Registry
    from tests.conftest import profile_rows

    class DiesBeforeRecording(Registry):
        @staticmethod
        def batch_finisher(batch_id, *, status, **kwargs):
            if status == "committed":
                os.kill(os.getpid(), signal.SIGKILL)
            return Registry.batch_finisher(batch_id, status=status, **kwargs)

    registry = DiesBeforeRecording("sqlite:///" + sys.argv[1] + "/registry.db")
    store = FeatureStore(sys.argv[1], registry=registry)
    store.ingest("profile", profile_rows(7))
    """
)

HOLD_LOCK = textwrap.dedent(
    """
    import sys, time, duckdb
    con = duckdb.connect(sys.argv[1])
    print("LOCKED", flush=True)
    time.sleep(float(sys.argv[2]))
    con.close()
    """
)

ROOT = Path(__file__).resolve().parents[1]


def spawn(script: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


def wait_for(proc: subprocess.Popen[str], line: str, timeout: float = 60) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = proc.stdout.readline()
        if got.strip() == line:
            return
        if got == "" and proc.poll() is not None:
            raise AssertionError(
                f"child exited ({proc.returncode}) before {line!r}: {proc.stderr.read() if proc.stderr else ''}"
            )
    raise AssertionError(f"child did not print {line!r} within {timeout} s")


@pytest.mark.slow
def test_kill_9_during_a_large_ingest_leaves_no_partial_batch(store_dir: Path) -> None:
    with FeatureStore(store_dir) as fs:
        kept = fs.ingest("profile", profile_rows(5))
    child = spawn(SLOW_INGEST, str(store_dir))
    try:
        wait_for(child, "UNDER WAY")
        time.sleep(0.3)  # more chunks go into the open transaction
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    with FeatureStore(store_dir, lock_timeout=5) as fs:
        table = fs.read("profile")
        assert table.num_rows == 5, "only the batch committed before the crash is visible"
        assert set(table.column("_batch_id").to_pylist()) == {kept.batch_id}
        batches = fs.list_batches()
        assert [(b.batch_id, b.status) for b in batches] == [
            (kept.batch_id, "committed"),
            (kept.batch_id + 1, "aborted"),
        ]
        assert batches[1].rows is None
        assert "stopped before its transaction committed" in (batches[1].error or "")
        # The store is fully usable again.
        assert fs.ingest("profile", profile_rows(2)).rows == 2
        assert fs.read("profile").num_rows == 7


@pytest.mark.slow
def test_kill_9_between_offline_commit_and_registry_update_is_reconciled(store_dir: Path) -> None:
    child = spawn(KILL_AFTER_COMMIT, str(store_dir))
    child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL, child.stderr.read() if child.stderr else ""
    with FeatureStore(store_dir) as fs:
        [batch] = fs.list_batches()
        assert (batch.status, batch.rows) == ("committed", 7)
        assert fs.read("profile").num_rows == 7
        [entry] = fs.audit_entries(action="ingest")
        assert entry.details == {"batch": batch.batch_id, "rows": 7, "settled_after_crash": True}
    with FeatureStore(store_dir) as fs:  # settled once: a second open writes no second entry
        assert len(fs.audit_entries(action="ingest")) == 1
        fs.verify_audit()


@pytest.mark.slow
def test_held_store_fails_after_a_bounded_wait_naming_the_pid(store_dir: Path) -> None:
    holder = spawn(HOLD_LOCK, str(store_dir / "offline.duckdb"), "60")
    try:
        wait_for(holder, "LOCKED")
        with FeatureStore(store_dir, lock_timeout=0.5) as fs:
            started = time.monotonic()
            with pytest.raises(StoreLockedError) as info:
                fs.ingest("profile", profile_rows(1))
            waited = time.monotonic() - started
            assert 0.5 <= waited < 5, "waits the configured time, then fails: never hangs"
            assert info.value.pid == holder.pid
            assert str(info.value) == (
                f"the offline store {store_dir / 'offline.duckdb'} is held by process {holder.pid}, which opened it "
                "without featurestore's lock (waited 0.5 s). DuckDB lets many processes read a file or one write it. "
                f"Wait for process {holder.pid} to close the file and try again (`ps -p {holder.pid}` shows what it is). "
                "Raise offline.lock_timeout_seconds in featurestore.yaml to wait longer."
            )
            with pytest.raises(StoreLockedError):
                fs.read("profile")
            assert fs.list_views()[0].view.name == "profile", "the registry stays readable meanwhile"
    finally:
        holder.kill()
        holder.wait(timeout=30)
    with FeatureStore(store_dir, lock_timeout=5) as fs:
        assert fs.ingest("profile", profile_rows(1)).rows == 1
        assert [b.status for b in fs.list_batches()] == ["committed"], "a refused ingest records no batch"


@pytest.mark.slow
def test_processes_take_turns_within_the_wait(store_dir: Path) -> None:
    holder = spawn(HOLD_LOCK, str(store_dir / "offline.duckdb"), "1.0")
    try:
        wait_for(holder, "LOCKED")
        with FeatureStore(store_dir, lock_timeout=20) as fs:
            assert fs.ingest("profile", profile_rows(3)).rows == 3
    finally:
        holder.wait(timeout=30)
    assert holder.returncode == 0


# A child that keeps the offline file open for reading, `seconds` at a time, again and again.
LONG_READS = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from featurestore.offline.duckdb_store import OfflineStore

    offline = OfflineStore(Path(sys.argv[1]), lock_timeout=60)
    print("READING", flush=True)
    deadline = time.monotonic() + float(sys.argv[3])
    while time.monotonic() < deadline:
        with offline._connect(read_only=True) as con:
            con.execute("SELECT count(*) FROM _fs_batches").fetchall()
            time.sleep(float(sys.argv[2]))
    """
)


@pytest.mark.slow
def test_a_waiting_writer_goes_before_new_readers(store_dir: Path) -> None:
    """Two readers whose reads overlap all the time never keep a writer out longer than one read."""
    path = str(store_dir / "offline.duckdb")
    first = spawn(LONG_READS, path, "0.6", "20")
    wait_for(first, "READING")
    time.sleep(0.3)
    second = spawn(LONG_READS, path, "0.6", "20")  # starts its reads while the first one's are running
    try:
        wait_for(second, "READING")
        time.sleep(1.0)
        with FeatureStore(store_dir, lock_timeout=15) as fs:
            waits = []
            for _ in range(3):
                started = time.monotonic()
                fs.ingest("profile", profile_rows(2))
                waits.append(time.monotonic() - started)
        assert max(waits) < 0.6 + 1.0, f"each writer waited at most about one read (0.6 s): {waits}"
    finally:
        for child in (first, second):
            child.kill()
            child.wait(timeout=30)


@pytest.mark.slow
def test_a_timed_out_reader_hears_who_writes(store_dir: Path) -> None:
    holder = spawn(
        textwrap.dedent(
            """
        import sys, time
        from pathlib import Path
        from featurestore.offline.duckdb_store import OfflineStore

        with OfflineStore(Path(sys.argv[1]))._connect(read_only=False):
            print("WRITING", flush=True)
            time.sleep(30)
        """
        ),
        str(store_dir / "offline.duckdb"),
    )
    try:
        wait_for(holder, "WRITING")
        with FeatureStore(store_dir, lock_timeout=0.3) as fs:
            with pytest.raises(StoreLockedError) as info:
                fs.read("profile")
        message = str(info.value)
        assert info.value.pid == holder.pid
        assert f"is held by process {holder.pid} (writing for " in message
        assert "it can be read only when no process writes it" in message
        assert "wait for the writer to finish" in message
    finally:
        holder.kill()
        holder.wait(timeout=30)
    with FeatureStore(store_dir, lock_timeout=5) as fs:  # the dead holder's record is ignored, its lock gone
        assert fs.read("profile").num_rows == 0


# A child that ingests small batches for ever, to be killed at a random moment.
INGEST_FOREVER = textwrap.dedent(
    """
    import sys
    from featurestore import FeatureStore
    from tests.conftest import profile_rows

    store = FeatureStore(sys.argv[1], lock_timeout=30)
    rows = profile_rows(50)
    store.ingest("profile", rows)
    print("READY", flush=True)
    while True:
        store.ingest("profile", rows)
    """
)


def kill_during_ingest(store_dir: Path, trials: int, seed: int) -> list[tuple[int, int]]:
    """Kill -9 an ingesting child at random moments, `trials` times; after each kill, open the
    store and return (committed batches, batches without an ingest audit entry) per trial."""
    import random

    rng = random.Random(seed)
    results = []
    for _ in range(trials):
        child = spawn(INGEST_FOREVER, str(store_dir))
        try:
            wait_for(child, "READY")
            time.sleep(rng.uniform(0.0, 0.3))
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
        with FeatureStore(store_dir, lock_timeout=30) as fs:
            committed = {b.batch_id for b in fs.list_batches() if b.status == "committed"}
            audited = {int(e.details["batch"]) for e in fs.audit_entries(action="ingest")}
            offline = set(fs.read("profile").column("_batch_id").to_pylist())
            assert offline == committed, "the registry agrees with the rows after every kill"
            results.append((len(committed), len(committed - audited)))
            fs.verify_audit()
    return results


@pytest.mark.slow
def test_kill_9_at_random_points_never_leaves_a_committed_batch_unaudited(store_dir: Path) -> None:
    results = kill_during_ingest(store_dir, trials=24, seed=7)
    assert [unaudited for _committed, unaudited in results] == [0] * 24
    assert results[-1][0] >= 48, "every trial committed batches (so kills landed in the middle of ingestion)"
