"""Signed approvals: an approver's Ed25519 key signs the SHA-256 of the policy text they approve.

Approvers are registered with their public key (``featurestore approvers add NAME ROLE
--public-key FILE``, audited); ``policy approve --key FILE`` signs with the private key. With
``governance.signed_approvals: true`` every snapshot verifies each approval's signature against
the key registered for its approver and role, and an approval that is unsigned, signed by another
key, or whose approver is not registered counts as not approved. `cryptography` does the Ed25519.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..errors import KeyManagementError

MAX_KEY_FILE_BYTES = 64 << 10


def _read(path: Path, what: str) -> bytes:
    if not path.is_file():
        raise KeyManagementError(f"the {what} file {path} does not exist or is not a file")
    if path.stat().st_size > MAX_KEY_FILE_BYTES:
        raise KeyManagementError(f"the {what} file {path} is too large to be a key")
    return path.read_bytes()


def public_key_text(path: Path) -> str:
    """An Ed25519 public key file (PEM ``BEGIN PUBLIC KEY``) as the base64 of its 32 raw bytes."""
    data = _read(path, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise KeyManagementError(
            f"{path}: not a PEM public key (make one with `openssl genpkey -algorithm ed25519` and "
            "`openssl pkey -pubout`)"
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyManagementError(f"{path}: the public key is not an Ed25519 key")
    return base64.b64encode(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()


def fingerprint(public_key: str) -> str:
    """A short, shareable name for a public key: ``SHA256:<first 16 hex digits>``."""
    return "SHA256:" + hashlib.sha256(base64.b64decode(public_key)).hexdigest()[:16]


def sign(private_key_file: Path, sha256: str) -> tuple[str, str]:
    """Sign a policy's SHA-256 (hex text) with an Ed25519 private key file (unencrypted PEM);
    returns (signature, public key), both base64."""
    data = _read(private_key_file, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise KeyManagementError(f"{private_key_file}: not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyManagementError(f"{private_key_file}: the private key is not an Ed25519 key")
    signature = key.sign(sha256.encode())
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(signature).decode(), base64.b64encode(public).decode()


def verify(public_key: str, sha256: str, signature: str | None) -> bool:
    """Whether `signature` is the registered key's signature of `sha256`."""
    if not signature:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key)).verify(
            base64.b64decode(signature), sha256.encode()
        )
        return True
    except (InvalidSignature, ValueError, binascii.Error):
        return False
