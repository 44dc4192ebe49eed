"""Signed approvals: with governance.signed_approvals only an approval signed by the approver's
registered Ed25519 key counts; unsigned, forged or tampered approvals are not in force."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from featurestore import FeatureStore, KeyManagementError, PolicyViolation
from featurestore.cli import app
from featurestore.testing import TEST_KEY_PROVIDER

from .test_governance import PERSON, POLICY, VIEW


def key_pair(folder: Path, name: str) -> tuple[Path, Path]:
    key = Ed25519PrivateKey.generate()
    private, public = folder / f"{name}.pem", folder / f"{name}.pub.pem"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private, public


@pytest.fixture
def signed_store(tmp_path: Path) -> tuple[Path, Path, Path]:
    root = tmp_path / "store"
    FeatureStore.init(root, key_provider=TEST_KEY_PROVIDER).close()
    config = root / "featurestore.yaml"
    config.write_text(config.read_text().replace("signed_approvals: false", "signed_approvals: true"))
    (root / "policies" / "people.yaml").write_text(POLICY)
    keys = tmp_path / "keys"
    keys.mkdir()
    legal, legal_pub = key_pair(keys, "legal")
    other, _other_pub = key_pair(keys, "other")
    with FeatureStore(root, key_provider=TEST_KEY_PROVIDER) as fs:
        fs.apply([PERSON, VIEW])
        printed = fs.add_approver("A. Counsel", "legal", legal_pub)
        assert printed.startswith("SHA256:")
        [entry] = fs.audit_entries(action="add_approver")
        assert entry.details == {"role": "legal", "public_key": printed}
        with pytest.raises(PolicyViolation, match="already registered as legal"):
            fs.add_approver("A. Counsel", "legal", legal_pub)
    return root, legal, other


def in_force(root: Path) -> list[str]:
    with FeatureStore(root, key_provider=TEST_KEY_PROVIDER) as fs:
        return [a.policy.id for a in fs.policy_snapshot().in_force]


def test_only_an_approval_signed_by_the_registered_key_counts(signed_store: tuple[Path, Path, Path]) -> None:
    root, legal, other = signed_store
    policy = root / "policies" / "people.yaml"
    with FeatureStore(root, key_provider=TEST_KEY_PROVIDER) as fs:
        with pytest.raises(
            PolicyViolation, match="counts only signed approvals .* pass the approver's private key with --key"
        ):
            fs.approve_policy(policy, by="A. Counsel", role="legal")
        with pytest.raises(PolicyViolation, match="is not the one registered for 'A. Counsel' as legal"):
            fs.approve_policy(policy, by="A. Counsel", role="legal", key=other)
        with pytest.raises(PolicyViolation, match="'Mallory' is not a registered approver in the role legal"):
            fs.approve_policy(policy, by="Mallory", role="legal", key=other)
        with pytest.raises(PolicyViolation, match="is not a registered approver in the role dpo"):
            fs.approve_policy(policy, by="A. Counsel", role="dpo", key=legal)
        with pytest.raises(KeyManagementError, match="not an unencrypted PEM private key"):
            fs.approve_policy(policy, by="A. Counsel", role="legal", key=policy)
    assert in_force(root) == []
    result = CliRunner().invoke(
        app,
        [
            "policy",
            "approve",
            str(policy),
            "--by",
            "A. Counsel",
            "--role",
            "legal",
            "--key",
            str(legal),
            "-s",
            str(root),
        ],
        env={"FEATURESTORE_MASTER_KEY": base64.b64encode(bytes(range(32))).decode()},
    )
    assert result.exit_code == 0 and "signed" in result.output, result.output
    assert in_force(root) == ["people"]


@pytest.mark.parametrize(
    "tamper",
    [
        "drop the signature",
        "a random signature",
        "another approver's name",
        "a forged row",
        "the approver's key swapped",
    ],
)
def test_a_tampered_or_forged_approval_is_not_in_force(
    signed_store: tuple[Path, Path, Path], tamper: str, tmp_path: Path
) -> None:
    root, legal, other = signed_store
    with FeatureStore(root, key_provider=TEST_KEY_PROVIDER) as fs:
        fs.approve_policy(root / "policies" / "people.yaml", by="A. Counsel", role="legal", key=legal)
    assert in_force(root) == ["people"]
    engine = sa.create_engine(f"sqlite:///{root / 'registry.db'}")
    fake = base64.b64encode(os.urandom(64)).decode()
    with engine.begin() as conn:
        if tamper == "drop the signature":
            conn.execute(sa.text("UPDATE policy_approvals SET signature = NULL"))
        elif tamper == "a random signature":
            conn.execute(sa.text("UPDATE policy_approvals SET signature = :s"), {"s": fake})
        elif tamper == "another approver's name":
            conn.execute(sa.text("UPDATE policy_approvals SET approved_by = 'B. Other'"))
        elif tamper == "a forged row":  # a newer version approved by nobody who holds the key
            conn.execute(sa.text("DELETE FROM policy_approvals"))
            conn.execute(
                sa.text(
                    "INSERT INTO policy_approvals (policy_id, version, sha256, content, file_name, approved_by, role, "
                    "approved_at, signature) VALUES ('people', 1, :h, :c, 'people.yaml', 'A. Counsel', 'legal', "
                    "'2026-01-01 00:00:00', :s)"
                ),
                {"h": __import__("hashlib").sha256(POLICY.encode()).hexdigest(), "c": POLICY, "s": fake},
            )
        else:
            _other_private, other_pub = key_pair(tmp_path, "swap")
            from featurestore.governance.signatures import public_key_text

            conn.execute(sa.text("UPDATE approvers SET public_key = :k"), {"k": public_key_text(other_pub)})
    engine.dispose()
    assert in_force(root) == [], "the approval no longer counts, so the policy is not in force"
