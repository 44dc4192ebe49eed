"""The audit chain needs the master key to rewrite: recomputed hashes, entries turned unkeyed, a
removed audit key and appends without the master key are all caught."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from featurestore import AuditChainBroken, FeatureStore, KeyManagementError
from featurestore.audit import entry_hash
from featurestore.cli import app
from featurestore.privacy.keys import StaticKeyProvider
from featurestore.testing import TEST_KEY_PROVIDER

from .conftest import CUSTOMER, PROFILE, profile_rows


def keyed_store(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    with FeatureStore.init(root, key_provider=TEST_KEY_PROVIDER) as fs:
        fs.apply([CUSTOMER, PROFILE])
        for i in range(3):
            fs.ingest("profile", profile_rows(2, start=2 * i))
        fs.rotate_key("hmac")
        assert all(e.key_id == "audit-1" for e in fs.audit_entries()), "with a master key every entry is keyed"
    return root


def rewrite(root: Path, edit: str, *, keyed: bool | None) -> None:
    """What someone with registry access but not the master key can do: edit entries, then
    recompute every hash with SHA-256 (the only hash they can make) and relink the chain."""
    engine = sa.create_engine(f"sqlite:///{root / 'registry.db'}")
    with engine.begin() as conn:
        conn.execute(sa.text(edit))
    from featurestore.audit import AuditLog
    from featurestore.registry import Registry

    registry = Registry(f"sqlite:///{root / 'registry.db'}")
    entries = AuditLog(registry, lambda: None).entries()  # type: ignore[arg-type,return-value]
    registry.close()
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE audit_log SET prev_hash = 'tmp' || id"))
        prev = "0" * 64
        for e in entries:
            key_id = e.key_id if keyed is None else None
            digest = entry_hash(e.id, e.at, e.actor, e.action, e.target, e.purpose, e.details, prev)
            conn.execute(
                sa.text("UPDATE audit_log SET prev_hash = :p, hash = :h, key_id = :k WHERE id = :i"),
                {"p": prev, "h": digest, "k": key_id, "i": e.id},
            )
            prev = digest
    engine.dispose()


def test_the_rewrite_helper_fools_an_unkeyed_chain(tmp_path: Path) -> None:
    """The same rewrite passes on a store without a master key: it is the secret that catches it."""
    root = tmp_path / "store"
    with FeatureStore.init(root) as fs:
        fs.apply([CUSTOMER, PROFILE])
        fs.ingest("profile", profile_rows(2))
    rewrite(root, "UPDATE audit_log SET actor = 'someone else' WHERE id = 1", keyed=None)
    with FeatureStore(root) as fs:
        assert fs.verify_audit()[0] == 2 and fs.audit_entries()[0].actor == "someone else"


@pytest.mark.parametrize("keyed", [None, False], ids=["keeping the key ids", "dropping the key ids"])
def test_an_edited_and_recomputed_chain_is_caught(tmp_path: Path, keyed: bool | None) -> None:
    root = keyed_store(tmp_path)
    rewrite(root, "UPDATE audit_log SET actor = 'someone else' WHERE id = 3", keyed=keyed)
    with FeatureStore(root, key_provider=TEST_KEY_PROVIDER) as fs:
        with pytest.raises(AuditChainBroken):
            fs.verify_audit()


def test_removing_the_audit_key_and_the_hmacs_is_caught(tmp_path: Path) -> None:
    root = keyed_store(tmp_path)
    rewrite(root, "DELETE FROM data_keys WHERE kind = 'audit'", keyed=False)
    with FeatureStore(root, key_provider=TEST_KEY_PROVIDER) as fs:
        with pytest.raises(AuditChainBroken, match="no audit entry is keyed, yet this store holds data keys"):
            fs.verify_audit()


def test_a_keyed_chain_needs_the_master_key_to_append_and_to_verify(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = keyed_store(tmp_path)
    with FeatureStore(root, key_provider=StaticKeyProvider(bytes(32))) as fs:
        with pytest.raises(KeyManagementError, match="does not open data key"):
            fs.verify_audit()
    monkeypatch.delenv("FEATURESTORE_MASTER_KEY", raising=False)
    with FeatureStore(root) as fs:
        with pytest.raises(KeyManagementError, match="audit log is keyed, so every entry needs the master key"):
            fs.read("profile")
    with FeatureStore(root, key_provider=TEST_KEY_PROVIDER) as fs:
        count, _head = fs.verify_audit()
        assert count == 5, "the refused read wrote nothing"


def test_an_unkeyed_store_says_so(tmp_path: Path) -> None:
    root = tmp_path / "store"
    with FeatureStore.init(root) as fs:
        fs.apply([CUSTOMER, PROFILE])
    result = CliRunner().invoke(app, ["audit", "verify", "-s", str(root)], env={"FEATURESTORE_MASTER_KEY": ""})
    assert result.exit_code == 0 and "No entry is keyed" in result.output
