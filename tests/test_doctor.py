"""``featurestore doctor`` finds each fault, says how to fix it and exits 1; a healthy store passes."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from featurestore import FeatureStore
from featurestore.doctor import Check
from featurestore.privacy.keys import StaticKeyProvider
from featurestore.testing import TEST_KEY_PROVIDER

from .test_erasure import build, open_store, subject_rows


def run_doctor(root: Path, **kwargs: object) -> list[Check]:
    return FeatureStore.doctor(root, **({"key_provider": TEST_KEY_PROVIDER} | kwargs))  # type: ignore[arg-type]


def problems(checks: list[Check]) -> dict[str, str]:
    return {c.name: c.detail for c in checks if c.status == "problem"}


@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("doctor"), compression=None)


def copy(healthy: Path, tmp_path: Path) -> Path:
    root = tmp_path / "store"
    shutil.copytree(healthy, root)
    return root


def test_a_healthy_store_passes_every_check(healthy: Path, tmp_path: Path) -> None:
    checks = run_doctor(copy(healthy, tmp_path))
    assert [(c.name, c.status) for c in checks] == [
        ("config", "ok"),
        ("registry", "ok"),
        ("offline store", "ok"),
        ("audit log", "ok"),
        ("keys", "ok"),
        ("online store", "ok"),
        ("policies", "ok"),
    ]
    details = {c.name: c.detail for c in checks}
    assert "registry and offline store agree on 2 batches" in details["offline store"]
    assert details["keys"] == "the master key opens all 3 data keys"  # hmac, siv and the audit chain's key
    assert details["online store"] == "reachable; 2 materialized view versions readable"


def damage_offline(root: Path) -> None:
    path = root / "offline.duckdb"
    data = bytearray(path.read_bytes())
    path.write_bytes(bytes(data[: len(data) // 2]))


def older_registry(root: Path) -> None:
    backup = root.parent / "registry-backup.db"
    shutil.copy(root / "registry.db", backup)
    with open_store(root) as fs:
        fs.ingest("person", subject_rows(["late-1", "late-2"]))
    shutil.copy(backup, root / "registry.db")


def edit_audit(root: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{root / 'registry.db'}")
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE audit_log SET actor = 'someone else' WHERE id = 2"))
    engine.dispose()


def break_policy(root: Path) -> None:
    (root / "policies" / "people.yaml").write_text("id: people\nversion: [unclosed\n")


def redis_down(root: Path) -> None:
    config = root / "featurestore.yaml"
    config.write_text(
        config.read_text().replace("  type: embedded\n  path: online.db", "  type: redis\n  url: redis://127.0.0.1:1/0")
    )


def lose_offline(root: Path) -> None:
    (root / "offline.duckdb").unlink()


FAULTS: dict[str, tuple[Callable[[Path], None], str, str]] = {
    "damaged offline file": (damage_offline, "offline store", "is damaged"),
    "older registry backup": (older_registry, "offline store", "of which the registry has no record"),
    "edited audit entry": (edit_audit, "audit log", "audit entry 2"),
    "unreadable policy file": (break_policy, "policy (unreadable)", "people.yaml:3:1: invalid YAML"),
    "online store down": (redis_down, "online store", "cannot reach the Redis online store at redis://127.0.0.1:1/0"),
    "deleted offline file": (
        lose_offline,
        "offline store",
        "offline.duckdb does not exist, but the registry records 2 committed",
    ),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_each_fault_is_found_and_named(healthy: Path, tmp_path: Path, fault: str) -> None:
    root = copy(healthy, tmp_path)
    damage, check, words = FAULTS[fault]
    damage(root)
    found = problems(run_doctor(root))
    assert check in found, found
    assert words in found[check]


def test_a_wrong_master_key_is_found(healthy: Path, tmp_path: Path) -> None:
    found = problems(run_doctor(copy(healthy, tmp_path), key_provider=StaticKeyProvider(bytes(32))))
    assert set(found) == {"keys", "audit log"} and all("master key does not open" in found[c] for c in found), found


def test_the_cli_exits_1_with_the_fix_and_no_traceback(healthy: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from featurestore.cli import app

    root = copy(healthy, tmp_path)
    (root / "offline.duckdb.compacting").write_bytes(b"left over")
    edit_audit(root)
    result = CliRunner().invoke(app, ["doctor", "-s", str(root)], env={"FEATURESTORE_MASTER_KEY": "x"})
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert (
        "warning offline store:" in result.output
        and "offline.duckdb.compacting is left from a compaction" in result.output
    )
    assert "problem audit log:" in result.output and "problem keys:" in result.output
    assert result.output.rstrip().endswith("problems, 1 warnings.")


def test_the_registry_answers_its_own_integrity_check(tmp_path: Path) -> None:
    """doctor asks the Registry (the one door to it): a healthy SQLite file has no problem, a
    damaged one has as many as SQLite finds, and a memory registry is no file to check."""
    from featurestore.registry import Registry

    healthy = Registry(f"sqlite:///{tmp_path / 'registry.db'}")
    healthy.upgrade()
    try:
        assert healthy.integrity_problems() == 0
    finally:
        healthy.close()
    import sqlite3

    damaged = tmp_path / "damaged.db"  # an index that no longer matches its table: 3 rows missing from it
    con = sqlite3.connect(damaged)
    con.execute("CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT, d TEXT)")
    con.execute("CREATE INDEX i ON t (b)")
    con.executemany("INSERT INTO t VALUES (?, ?, ?)", [(n, f"b{n}", f"d{-n}") for n in range(3)])
    con.commit()
    con.execute("PRAGMA writable_schema = ON")
    con.execute("UPDATE sqlite_master SET sql = 'CREATE INDEX i ON t (d)' WHERE name = 'i'")
    con.commit()
    con.close()
    broken = Registry(f"sqlite:///{damaged}")
    try:
        assert broken.integrity_problems() == 3
    finally:
        broken.close()
    memory = Registry("sqlite://")
    try:
        assert memory.integrity_problems() == 0
    finally:
        memory.close()
