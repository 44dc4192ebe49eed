"""Erasure and retention that really delete: every copy, every store, every byte; tombstones,
deadlines, holds, lineage, and compaction that survives kill -9."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from featurestore import FeatureStore, FeatureView, StoreDamaged
from featurestore.errors import NotFoundError, PolicyViolation
from featurestore.privacy.pseudonymize import tokenize
from featurestore.testing import TEST_KEY_PROVIDER, StepClock, data_key

from .test_governance import PERSON, POLICY, VIEW, people

TS = pa.timestamp("us", tz="UTC")
SUBJECT = "zqsubject42"
OTHERS = [f"c{i:03d}" for i in range(120)]
VISITS = FeatureView(name="visits", entity="person_e", features={"visit_count": "int64"})  # ungoverned: raw keys
RETAINED = POLICY.replace(
    "retention: {offline: P400D}", "retention: {offline: P30D, online: P10D, training_sets: P20D}"
)
ROOT = Path(__file__).resolve().parents[1]


def clock_at(day: int) -> StepClock:
    return StepClock(start=datetime(2025, 6, day, tzinfo=UTC), step=timedelta(milliseconds=1))


def open_store(root: Path, clock: StepClock | None = None) -> FeatureStore:
    return FeatureStore(root, key_provider=TEST_KEY_PROVIDER, actor="dpo", clock=clock or clock_at(10))


def visits(ids: list[str], day: int = 1) -> pa.Table:
    return pa.table(
        {
            "customer_id": ids,
            "event_timestamp": pa.array([datetime(2025, 6, day, tzinfo=UTC)] * len(ids), TS),
            "visit_count": pa.array([7] * len(ids), pa.int64()),
        }
    )


def subject_rows(ids: list[str], day: int = 1) -> pa.Table:
    rows = people(ids, day=day)
    return rows.set_column(
        rows.column_names.index("email"), "email", pa.array([f"{i}.marker@rare-zq.example" for i in ids])
    )


def build(tmp_path: Path, *, compression: str | None, policy: str = POLICY) -> Path:
    root = tmp_path / "store"
    FeatureStore.init(root, key_provider=TEST_KEY_PROVIDER).close()
    if compression:
        config = root / "featurestore.yaml"
        config.write_text(
            config.read_text().replace(
                "lock_timeout_seconds: 10", f"lock_timeout_seconds: 10\n  force_compression: {compression}"
            )
        )
    (root / "policies" / "people.yaml").write_text(policy)
    with open_store(root) as fs:
        fs.apply([PERSON, VIEW, VISITS])
        fs.approve_policy(root / "policies" / "people.yaml", by="A. Counsel", role="legal")
        fs.ingest("person", subject_rows([*OTHERS[:60], SUBJECT, *OTHERS[60:]]))
        fs.ingest("visits", visits([SUBJECT, *OTHERS]))
        fs.materialize()
        spine = pa.table(
            {
                "customer_id": [SUBJECT, *OTHERS[:9]],
                "event_timestamp": pa.array([datetime(2025, 6, 5, tzinfo=UTC)] * 10, TS),
            }
        )
        fs.create_training_set("fraud_ts", spine, ["person:spend", "visits:visit_count"], purpose="fraud_detection")
    return root


def traces(root: Path, fs: FeatureStore) -> set[bytes]:
    """Everything that would betray the subject: raw id, pseudonyms and tokens under every key."""
    hmac_key = data_key(fs.config.registry_url, "hmac-1")
    siv_key = data_key(fs.config.registry_url, "siv-1")

    def pseudonym(value: str) -> str:
        return "hmac-1:" + hmac.new(hmac_key.hmac_text.encode(), value.encode(), hashlib.sha256).hexdigest()[:32]

    token = tokenize(pa.array([SUBJECT]), siv_key, context="training_set:customer_id")[0].as_py()
    return {
        SUBJECT.encode(),
        pseudonym(SUBJECT).encode(),
        pseudonym(f"{SUBJECT}.marker@rare-zq.example").encode(),
        f"{SUBJECT}.marker".encode(),
        token.encode(),
    }


def found_in_files(root: Path, needles: set[bytes]) -> dict[str, list[bytes]]:
    hits = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if found := [n for n in needles if n in data]:
            hits[str(path.relative_to(root))] = found
    return hits


@pytest.mark.parametrize("compression", ["uncompressed", None])
def test_erasure_leaves_no_trace_in_any_table_or_file(tmp_path: Path, compression: str | None) -> None:
    root = build(tmp_path, compression=compression)
    with open_store(root) as fs:
        needles = traces(root, fs)
        before = fs.where("person_e", SUBJECT)
        assert before == {
            "offline person@v1": 1,
            "offline visits@v1": 1,
            "online ov_person_v1": 1,
            "online ov_visits_v1": 1,
            "training set fraud_ts": 1,
        }
        assert not fs.verify_erasure("person_e", SUBJECT).clean, "positive control: the proof finds the subject before"
        if compression == "uncompressed":  # with compression off, the byte scan sees the raw key and the pseudonyms
            hits = found_in_files(root, needles)
            assert SUBJECT.encode() in hits["offline.duckdb"] and any(
                n.startswith(b"hmac-1:") for n in hits["offline.duckdb"]
            )
        [result] = fs.erase("person_e", [SUBJECT])
        assert result.status == "done" and result.removed == {
            "offline person@v1": 1,
            "online ov_person_v1": 1,
            "offline visits@v1": 1,
            "online ov_visits_v1": 1,
            "training set fraud_ts": 1,
        }
        assert fs.where("person_e", SUBJECT) == {}
        report = fs.verify_erasure("person_e", SUBJECT)
        assert report.clean and report.path is not None
        assert {c.method for c in report.checks} == {"query", "bytes"} and len(report.checks) > 8
        saved = json.loads(Path(report.path).read_text())
        assert saved["clean"] is True and SUBJECT not in Path(report.path).read_text()
        assert fs.read("person", features=["spend"], purpose="fraud_detection").num_rows == len(OTHERS), "others stay"
        again = fs.reproduce_training_set("fraud_ts", purpose="fraud_detection")
        assert again.matches and again.table.num_rows == 9
        assert any("erased subject" in n for n in again.notes)
        [request] = fs.erasure_status()
        assert (request.kind, request.status, request.overdue) == ("erasure", "done", False)
        assert request.deadline is not None and request.done_at is not None
        assert [e.action for e in fs.audit_entries()][-6:] == [
            "erase",
            "compact",
            "where",
            "erase_verify",
            "read",
            "reproduce_training_set",
        ]
        audit = json.dumps([e.__dict__ for e in fs.audit_entries()], default=str)
    assert SUBJECT not in audit
    assert found_in_files(root, needles) == {}, "no raw id, pseudonym or token anywhere under the store"


def test_an_erased_subject_never_comes_back(tmp_path: Path) -> None:
    root = build(tmp_path, compression=None)
    backup = tmp_path / "offline-backup.duckdb"
    shutil.copy(root / "offline.duckdb", backup)
    with open_store(root) as fs:
        fs.erase("person_e", [f"  {SUBJECT.upper()} "])  # normalized as the policy normalizes it (text)
        late = fs.ingest("person", subject_rows([SUBJECT, "late1"]))
        assert (late.rows, late.dropped_erased) == (1, 1)
        assert fs.ingest("visits", visits([SUBJECT.upper(), "late1"])).dropped_erased == 0, (
            "raw keys of ungoverned views match as given"
        )
        assert fs.ingest("visits", visits([SUBJECT])).dropped_erased == 1
        later = FeatureView(name="later", entity="person_e", features={"n": "int64"})  # a view made after the erasure
        fs.apply([PERSON, VIEW, VISITS, later])
        rows = pa.table(
            {
                "customer_id": [SUBJECT, "x"],
                "event_timestamp": pa.array([datetime(2025, 6, 2, tzinfo=UTC)] * 2, TS),
                "n": pa.array([1, 2], pa.int64()),
            }
        )
        assert fs.ingest("later", rows).dropped_erased == 1
        batch = [e for e in fs.audit_entries(action="ingest")][-1]
        assert batch.details["dropped_erased"] == 1
    shutil.copy(backup, root / "offline.duckdb")  # an old backup comes back, subject included
    with pytest.raises(StoreDamaged, match="the offline store has no record of it"):
        open_store(root)  # it is older than the registry: refused until the registry is reconciled with it
    report = FeatureStore.recover_registry(root, key_provider=TEST_KEY_PROVIDER, actor="dpo", clock=clock_at(10))
    assert report.batches_lost == 4 and report.tables_created == ["later@v1"]
    with open_store(root) as fs:
        results = {m.view: m.dropped_erased for m in fs.materialize(["person", "visits"], full=True)}
        assert results["person"] == 1 and results["visits"] == 1, "materialization drops the subject and says how many"
        got = fs.get_online_features({"customer_id": SUBJECT}, ["person:spend"], purpose="fraud_detection")
        assert got.statuses["spend"] == ["missing"]


def test_deadlines_pending_until_compaction_and_overdue(tmp_path: Path) -> None:
    root = build(tmp_path, compression=None)
    clock = clock_at(10)
    with open_store(root, clock) as fs:
        [result] = fs.erase("person_e", [SUBJECT], compact=False)
        assert result.status == "pending"
        assert (
            timedelta(days=30) <= result.deadline - datetime(2025, 6, 10, tzinfo=UTC) < timedelta(days=30, seconds=1)
        ), "one month"
        assert fs.where("person_e", SUBJECT) == {}, "deleted logically at once"
        [request] = fs.erasure_status()
        assert (request.status, request.overdue) == ("pending", False)
        clock.now = datetime(2025, 8, 1, tzinfo=UTC)  # past the 30-day deadline
        [request] = fs.erasure_status()
        assert (request.status, request.overdue) == ("pending", True)
        fs.compact()
        [request] = fs.erasure_status()
        assert (request.status, request.overdue) == ("done", False)


def test_a_legal_hold_suspends_erasure_and_retention(tmp_path: Path) -> None:
    root = build(tmp_path, compression=None, policy=RETAINED)
    clock = clock_at(10)
    with open_store(root, clock) as fs:
        with pytest.raises(PolicyViolation, match="a legal hold needs a reason"):
            fs.add_hold(reason=" ", entity="person_e", key=SUBJECT)
        with pytest.raises(PolicyViolation, match="hold either a subject"):
            fs.add_hold(reason="case 1", entity="person_e", key=SUBJECT, view="person")
        hold = fs.add_hold(reason="litigation 2025-17", entity="person_e", key=SUBJECT)
        [held] = fs.erase("person_e", [SUBJECT])
        assert held.status == "held" and held.held_by == [f"hold {hold.id} on this subject: litigation 2025-17"]
        assert fs.where("person_e", SUBJECT)["offline person@v1"] == 1, "nothing deleted under the hold"
        assert [r.status for r in fs.erasure_status()] == ["held"]
        clock.now = datetime(2025, 8, 1, tzinfo=UTC)  # every row is past the 30-day offline retention
        report = fs.run_retention()
        assert report.removed["offline person@v1"] == len(OTHERS) and report.held == [
            "person@v1: 1 subjects under a legal hold are kept"
        ]
        assert fs.where("person_e", SUBJECT)["offline person@v1"] == 1
        view_hold = fs.add_hold(reason="audit of visits", view="visits")
        assert [h.id for h in fs.list_holds()] == [hold.id, view_hold.id]
        fs.remove_hold(hold.id)
        with pytest.raises(NotFoundError, match=f"no active legal hold with id {hold.id}"):
            fs.remove_hold(hold.id)
        [held_by_view] = fs.erase("person_e", [SUBJECT])
        assert held_by_view.status == "held" and "on view visits" in held_by_view.held_by[0]
        fs.remove_hold(view_hold.id)
        [done] = fs.erase("person_e", [SUBJECT])
        assert done.status == "done" and fs.where("person_e", SUBJECT) == {}
        assert [r.status for r in fs.erasure_status() if r.kind == "erasure"] == ["done", "done", "done"], (
            "the requests queued under the holds are done once the erasure they waited for is"
        )
        actions = [e.action for e in fs.audit_entries()]
        assert actions.count("hold_add") == 2 and actions.count("hold_remove") == 2
        erasures = fs.audit_entries(action="erase")
        assert [len(e.details["held"]) for e in erasures] == [1, 1, 0] and len(erasures[-1].details["requests"]) == 1


def test_reads_hide_rows_past_retention_before_any_job_runs(tmp_path: Path) -> None:
    root = build(tmp_path, compression="uncompressed", policy=RETAINED)  # rows of 2025-06-01
    spine = pa.table({"customer_id": ["c001"], "event_timestamp": pa.array([datetime(2025, 7, 5, tzinfo=UTC)], TS)})
    with open_store(root, clock_at(10)) as fs:  # 9 days after the events: inside every limit
        assert fs.read("person", features=["spend"], purpose="fraud_detection").num_rows == len(OTHERS) + 1
        assert fs.get_online_features({"customer_id": "c001"}, ["person:spend"], purpose="fraud_detection").statuses[
            "spend"
        ] == ["present"]
    with open_store(
        root, StepClock(start=datetime(2025, 6, 12, tzinfo=UTC))
    ) as fs:  # 11 days: past online retention (10)
        got = fs.get_online_features({"customer_id": "c001"}, ["person:spend"], purpose="fraud_detection")
        assert (got.values["spend"], got.statuses["spend"]) == ([None], ["expired"])
        assert fs.check_consistency(views=["visits"])[0].mismatches == []
    with open_store(
        root, StepClock(start=datetime(2025, 6, 27, tzinfo=UTC))
    ) as fs:  # 22 days after the spine rows: past the training-set retention (20)
        assert fs.load_training_set("fraud_ts", purpose="fraud_detection").num_rows == 0
        rebuilt = fs.reproduce_training_set("fraud_ts", purpose="fraud_detection")
        assert (
            rebuilt.matches and rebuilt.table.num_rows == 0 and "past the training-set retention" in rebuilt.notes[-1]
        )
    with open_store(
        root, StepClock(start=datetime(2025, 7, 10, tzinfo=UTC))
    ) as fs:  # 39 days: past offline retention (30)
        assert fs.read("person", features=["spend"], purpose="fraud_detection").num_rows == 0
        joined = fs.get_historical_features(spine, ["person:spend"], purpose="fraud_detection")
        assert joined.column("spend").to_pylist() == [None], "an expired row is not the fallback of a join"
        assert fs.read("visits").num_rows == len(OTHERS) + 1, "ungoverned views have no retention"
        dry = fs.run_retention(dry_run=True)
        assert dry.removed["offline person@v1"] == len(OTHERS) + 1 and dry.compaction is None
        assert found_in_files(root, {b"SW1"}), "nothing deleted by a dry run (the postcode prefix is still in the file)"
        done = fs.run_retention()
        assert (
            done.removed["offline person@v1"] == len(OTHERS) + 1
            and done.removed["online ov_person_v1"] == len(OTHERS) + 1
        )
        assert done.removed["training set fraud_ts"] == 10 and done.compaction is not None
        assert fs.run_retention().removed["offline person@v1"] == 0, "idempotent"
        assert fs.run_retention().compaction is None, "nothing owed, nothing compacted"
        assert fs.get_training_set("fraud_ts").row_count == 0
        assert fs.get_training_set("fraud_ts").notes[-1]["kind"] == "retention"
        assert [r.kind for r in fs.erasure_status()] == ["retention"] and fs.erasure_status()[0].status == "done"
    assert not found_in_files(root, {b"SW1"}), "the expired rows' bytes are gone from every file"


def test_expired_training_sets_can_be_deleted_by_policy(tmp_path: Path) -> None:
    policy = RETAINED.replace("training_sets: P20D}", "training_sets: P20D, expired_training_sets: delete}")
    root = build(tmp_path, compression=None, policy=policy)
    with open_store(root, StepClock(start=datetime(2025, 6, 27, tzinfo=UTC))) as fs:
        report = fs.run_retention()
        assert report.removed["training set fraud_ts (deleted)"] == 10
        assert fs.list_training_sets() == [] and not (root / "training_sets" / "fraud_ts.parquet").exists()


KILL_AT = textwrap.dedent(
    """
    import os, signal, sys
    from featurestore import FeatureStore
    from featurestore.testing import TEST_KEY_PROVIDER

    store = FeatureStore(sys.argv[1], key_provider=TEST_KEY_PROVIDER)

    def step(name):
        if name == sys.argv[2]:
            os.kill(os.getpid(), signal.SIGKILL)

    store.compact(step)
    """
)


@pytest.mark.parametrize("point", ["checkpointed", "copied", "swapped"])
def test_kill_9_during_compaction_leaves_a_whole_store(tmp_path: Path, point: str) -> None:
    root = build(tmp_path, compression=None)
    with open_store(root) as fs:
        fs.erase("person_e", [SUBJECT], compact=False)
    child = subprocess.run(
        [sys.executable, "-c", KILL_AT, str(root), point],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    with open_store(root) as fs:
        assert fs.read("person", features=["spend"], purpose="fraud_detection").num_rows == len(OTHERS)
        assert fs.read("visits").num_rows == len(OTHERS)
        assert [b.status for b in fs.list_batches()] == ["committed", "committed"]
        assert fs.erasure_status()[0].status == "pending", "not done until a compaction has committed"
        fs.compact()
        assert fs.erasure_status()[0].status == "done"
        assert fs.read("person", features=["spend"], purpose="fraud_detection").num_rows == len(OTHERS)
    assert not (root / "offline.duckdb.compacting").exists()


def test_erasure_of_an_unknown_entity_or_a_bad_key_is_a_clear_error(tmp_path: Path) -> None:
    from featurestore.errors import RetrievalError

    root = build(tmp_path, compression=None)
    with open_store(root) as fs:
        with pytest.raises(NotFoundError, match="unknown entity 'persn_e'. Did you mean 'person_e'"):
            fs.erase("persn_e", [SUBJECT])
        from featurestore import Entity

        fs.apply(
            [
                PERSON,
                VIEW,
                VISITS,
                Entity(name="shop", join_keys={"shop_id": "int64"}),
                FeatureView(name="footfall", entity="shop", features={"visitors": "int64"}),
            ]
        )
        with pytest.raises(
            RetrievalError, match="a subject key given is not a valid int64 for 'shop_id' of footfall@v1"
        ):
            fs.erase("shop", ["not-a-number"])


def test_the_erasure_commands(tmp_path: Path) -> None:
    import base64

    from typer.testing import CliRunner

    from featurestore.cli import app
    from featurestore.testing import TEST_MASTER_KEY

    root = build(tmp_path, compression=None)
    runner = CliRunner(env={"FEATURESTORE_MASTER_KEY": base64.b64encode(TEST_MASTER_KEY).decode()})

    def run(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, [*args, "-s", str(root)])
        assert result.exit_code == code, result.output
        assert "Traceback" not in result.output
        return result.output

    keys = tmp_path / "subjects.txt"
    keys.write_text(f"{SUBJECT}\n\n{OTHERS[0]}\n")
    assert "offline person@v1: 1 rows" in run("where", "--entity", "person_e", "--key", SUBJECT)
    assert "FOUND" in run("erase", "verify", "--entity", "person_e", "--key", SUBJECT, code=1)
    hold = run("hold", "add", "--reason", "case 9", "--entity", "person_e", "--key", OTHERS[0])
    assert "Hold 1 on a subject of person_e." in hold and "#1 a subject of person_e: case 9" in run("hold", "list")
    erased = run("erase", "subject", "--entity", "person_e", "--keys-file", str(keys))
    assert "request 1: done, 5 rows removed" in erased and "request 2: held; hold 1 on this subject: case 9" in erased
    assert SUBJECT not in erased and OTHERS[0] not in erased, "raw ids are never printed"
    status = run("erase", "status")
    assert "#1 erasure person_e done" in status and "#2 erasure person_e held" in status
    assert "the subject was found nowhere; report:" in run("erase", "verify", "--entity", "person_e", "--key", SUBJECT)
    assert "The subject is held nowhere in this store." in run("where", "--entity", "person_e", "--key", SUBJECT)
    assert "Hold 1 removed." in run("hold", "remove", "1")
    assert "No active legal holds." in run("hold", "list")
    assert "offline person@v1: would remove 120 rows" in run("retention", "run", "--dry-run"), (
        "the CLI runs on the wall clock: 2025 rows are past 400 days"
    )
    assert "Compacted the offline file" in run("compact")
    assert "name the subjects to erase" in run("erase", "subject", "--entity", "person_e", code=1)
    assert "cannot read the keys file" in run(
        "erase", "subject", "--entity", "person_e", "--keys-file", str(tmp_path / "none"), code=1
    )
    assert "no active legal hold with id 7" in run("hold", "remove", "7", code=1)
