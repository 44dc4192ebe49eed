"""Losing the registry never loses data: a registry that disagrees with the offline file is refused,
``apply`` never replaces a table that holds rows, and ``db recover`` rebuilds a consistent store."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from featurestore import FeatureStore, FeatureView, RegistryOutOfDate, StoreDamaged
from featurestore.cli import app
from featurestore.recovery import Batch, disagreements

from .conftest import CUSTOMER, PROFILE, profile_rows

DEFINITIONS = """\
entities:
  - name: customer
    join_keys: {customer_id: string}
feature_views:
  - name: profile
    entity: customer
    ttl: 30d
    features: {age: int64, score: float64, country: string, tier: string}
"""
PROFILE_V2 = FeatureView(
    name="profile",
    entity="customer",
    ttl="30d",
    features={"age": "int64", "score": "float64", "country": "string", "tier": "string"},
)


def v2_rows(n: int, start: int = 0) -> pa.Table:
    rows = profile_rows(n, start=start)
    return rows.append_column("tier", pa.array(["gold"] * n))


def build(root: Path) -> dict[str, int]:
    """A store with two versions of one view (3 + 2 rows in v1; v2 adds a feature, so it starts with
    those 5 and gets 4 more); features/ holds v2."""
    with FeatureStore.init(root) as fs:
        fs.apply([CUSTOMER, PROFILE])
        fs.ingest("profile", profile_rows(3))
        fs.ingest("profile", profile_rows(2, start=3))
        fs.apply([CUSTOMER, PROFILE_V2])
        fs.ingest("profile", v2_rows(4))
    (root / "features" / "customers.yaml").write_text(DEFINITIONS)
    return {"profile@v1": 5, "profile@v2": 9}


def counts(fs: FeatureStore) -> dict[str, int]:
    return {ref: fs.read(ref).num_rows for ref in ("profile@v1", "profile@v2")}


def test_a_lost_registry_is_refused_and_recovered_with_every_row(tmp_path: Path) -> None:
    root = tmp_path / "store"
    expected = build(root)
    (root / "registry.db").unlink()
    with pytest.raises(
        StoreDamaged,
        match=r"is empty, but the offline store .* holds 3 committed batches \(9 rows\): the "
        r"registry was lost or replaced. Run `featurestore db recover`",
    ):
        FeatureStore(root)
    FeatureStore.upgrade_registry(root)  # what a user might do instead: the store still refuses
    with pytest.raises(StoreDamaged) as info:
        FeatureStore(root)
    message = str(info.value)
    assert "the offline store holds batch 1 (3 rows of fv_profile_v1), of which the registry has no record" in message
    assert "featurestore db recover" in message
    # apply cannot be reached through a refused store; under the hood it never replaces a table with rows either
    with FeatureStore(root, check_agreement=False) as fs:
        with pytest.raises(StoreDamaged, match=r"already holds 5 rows in 2 committed batches of fv_profile_v1"):
            fs.apply([CUSTOMER, PROFILE])
    result = CliRunner().invoke(app, ["db", "recover", "-s", str(root)])
    assert result.exit_code == 0, result.output
    assert "Registered 2 view versions from the offline store: profile@v1, profile@v2." in result.output
    assert "Batches: 3 added, 0 corrected, 0 marked aborted" in result.output
    assert "policy approvals" in result.output, "says what the offline file cannot give back"
    with FeatureStore(root) as fs:
        assert counts(fs) == expected
        assert [(b.batch_id, b.status, b.rows) for b in fs.list_batches()] == [
            (1, "committed", 3),
            (2, "committed", 2),
            (3, "committed", 4),
        ]
        assert [f.name for f in fs.get_view("profile@v1").view.features] == ["age", "score", "country"]
        assert fs.get_view("profile").version == 2
        assert fs.ingest("profile", v2_rows(1, start=9)).batch_id == 4, "no batch id is handed out twice"
        [entry] = fs.audit_entries(action="db_recover")
        assert entry.details["batches_added"] == 3
        assert fs.plan().changes == [], "the recovered registry matches the definitions in features/"


def test_an_older_registry_backup_is_refused_and_reconciled(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with FeatureStore.init(root) as fs:
        fs.apply([CUSTOMER, PROFILE])
        fs.ingest("profile", profile_rows(3))
    shutil.copy(root / "registry.db", tmp_path / "backup.db")
    with FeatureStore(root) as fs:
        fs.ingest("profile", profile_rows(200, start=3))
    shutil.copy(tmp_path / "backup.db", root / "registry.db")  # the old registry comes back
    with pytest.raises(
        StoreDamaged, match=r"holds batch 2 \(200 rows of fv_profile_v1\), of which the registry has no record"
    ):
        FeatureStore(root)
    FeatureStore.recover_registry(root)
    with FeatureStore(root) as fs:
        assert fs.read("profile").num_rows == 203
        assert fs.ingest("profile", profile_rows(1)).batch_id == 3


@pytest.mark.parametrize("status", ["aborted", "pending-then-lost", "row-count"])
def test_a_registry_that_misrecords_a_batch_is_refused(tmp_path: Path, status: str) -> None:
    root = tmp_path / "store"
    with FeatureStore.init(root) as fs:
        fs.apply([CUSTOMER, PROFILE])
        fs.ingest("profile", profile_rows(200))
    engine = sa.create_engine(f"sqlite:///{root / 'registry.db'}")
    with engine.begin() as conn:
        if status == "aborted":  # shows aborted while its 200 rows are visible
            conn.execute(sa.text("UPDATE ingestion_batches SET status = 'aborted', row_count = NULL"))
        elif status == "row-count":
            conn.execute(sa.text("UPDATE ingestion_batches SET row_count = 150"))
        else:  # the registry says committed, the offline file has no record (an older offline file)
            conn.execute(
                sa.text(
                    "INSERT INTO ingestion_batches (id, view_name, version, status, row_count, source, ingested_at, "
                    "started_at) SELECT 9, view_name, version, 'committed', 5, '', ingested_at, started_at "
                    "FROM ingestion_batches WHERE id = 1"
                )
            )
    engine.dispose()
    expected = {
        "aborted": "batch 1 is recorded as aborted, but its 200 rows are in fv_profile_v1",
        "row-count": "batch 1 is 150 rows of fv_profile_v1 in the registry but 200 rows of fv_profile_v1 in the offline store",
        "pending-then-lost": "the registry records batch 9 as committed (5 rows of fv_profile_v1), but the offline store "
        "has no record of it",
    }[status]
    with pytest.raises(StoreDamaged) as info:
        FeatureStore(root)
    assert expected in str(info.value)
    report = FeatureStore.recover_registry(root)
    assert (report.batches_corrected, report.batches_lost) == ((0, 1) if status == "pending-then-lost" else (1, 0))
    with FeatureStore(root) as fs:
        assert fs.read("profile").num_rows == 200
        assert {b.batch_id: b.status for b in fs.list_batches()}[1] == "committed"


def test_a_deleted_offline_file_is_refused_and_never_recreated_empty(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with FeatureStore.init(root) as fs:
        fs.apply([CUSTOMER, PROFILE])
        fs.ingest("profile", profile_rows(3))
    (root / "offline.duckdb").unlink()
    with pytest.raises(StoreDamaged) as info:
        FeatureStore(root)
    assert f"the offline store file {root.resolve() / 'offline.duckdb'} does not exist" in str(info.value)
    assert "1 committed batches (3 rows)" in str(info.value)
    with FeatureStore(root, check_agreement=False) as fs:
        with pytest.raises(StoreDamaged, match="does not exist: restore it from a backup"):
            fs.ingest("profile", profile_rows(1))
    assert not (root / "offline.duckdb").exists(), "no empty file was created over the lost data"
    result = CliRunner().invoke(app, ["batches", "-s", str(root)])
    assert result.exit_code == 1 and "does not exist" in result.output and "Traceback" not in result.output


def test_recovery_on_a_postgresql_registry_hands_out_fresh_batch_ids(tmp_path: Path, postgres_url: str) -> None:
    root = tmp_path / "store"
    with FeatureStore.init(root, registry_url=postgres_url) as fs:
        fs.apply([CUSTOMER, PROFILE])
        for i in range(3):
            fs.ingest("profile", profile_rows(2, start=2 * i))
    (root / "features" / "customers.yaml").write_text(DEFINITIONS.replace(", tier: string", ""))
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:  # the registry is emptied (as by a botched restore), its sequence reset
        for table in ("ingestion_batches", "feature_view_versions", "feature_views", "entities"):
            conn.execute(sa.text(f"DELETE FROM {table}"))
        conn.execute(sa.text("SELECT setval(pg_get_serial_sequence('ingestion_batches', 'id'), 1, false)"))
    engine.dispose()
    with pytest.raises(StoreDamaged, match="of which the registry has no record"):
        FeatureStore(root)
    report = FeatureStore.recover_registry(root)
    assert (report.views, report.batches_added) == (["profile@v1"], 3)
    with pytest.raises(RegistryOutOfDate, match="has no schema yet"):  # a new, empty store is not "lost"
        empty = tmp_path / "empty"
        FeatureStore.init(empty).close()
        (empty / "registry.db").unlink()
        FeatureStore(empty)
    with FeatureStore(root) as fs:
        assert fs.read("profile").num_rows == 6
        assert fs.ingest("profile", profile_rows(1)).batch_id == 4


def test_disagreements_name_each_kind_and_cap_the_list() -> None:
    offline = [Batch(i, "fv_a_v1", 1) for i in range(1, 9)]
    problems = disagreements([], offline, limit=3)
    assert len(problems) == 4 and problems[-1] == "... and 5 more like it"
    assert disagreements([Batch(1, "fv_a_v1", None, "pending")], [Batch(1, "fv_a_v1", 1)]) == [], (
        "pending is crash recovery's job"
    )
