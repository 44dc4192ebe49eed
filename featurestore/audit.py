"""The audit log: who did what, for which purpose, in a chain that needs a secret to rewrite.

Each entry's hash covers its canonical JSON (id, time, actor, action, target, purpose, details,
key id) and the previous entry's hash; the first entry follows a hash of zeros. Where the master
key is configured, the hash is an HMAC-SHA256 under the store's audit key (a data key of kind
``audit``, wrapped by the master key in the registry), so rewriting an entry and recomputing the
chain needs the master key: without it the HMACs cannot be made again. Entries written
before the store had a master key are plain SHA-256 (``key_id`` None) and are protected by the
first keyed entry's link; once the chain is keyed every entry needs the master key (an append
without it is refused) and ``verify`` refuses an unkeyed entry after a keyed one, so rewriting
history needs the master key. ``verify`` recomputes the chain
and reports the first entry that does not fit: an edited entry breaks its own hash, a removed or
reordered one breaks the link of the next. Removing the newest entries leaves a shorter valid
chain, so ``verify`` returns the head hash and count: compare them with a copy kept elsewhere
(``featurestore audit verify --expect-head``).

Entries never hold raw identifiers: reads record the features, purpose and row count, not keys.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from .errors import AuditChainBroken, KeyManagementError
from .privacy.keys import DataKey, KeyRing
from .registry import Registry
from .registry.models import AuditRow

GENESIS = "0" * 64


@dataclass(frozen=True)
class AuditEntry:
    """One audit log entry."""

    id: int
    at: datetime
    actor: str
    action: str
    target: str
    purpose: str | None
    details: dict[str, Any]
    prev_hash: str
    hash: str
    key_id: str | None = None
    """The audit key of the entry's HMAC (None: plain SHA-256, written without the master key)."""


def entry_hash(
    entry_id: int,
    at: datetime,
    actor: str,
    action: str,
    target: str,
    purpose: str | None,
    details: dict[str, Any],
    prev_hash: str,
    key: DataKey | None = None,
) -> str:
    """The hash an entry must carry: HMAC-SHA256 under the audit `key`, or SHA-256 without one."""
    fields: dict[str, Any] = {
        "id": entry_id,
        "at": at.isoformat(),
        "actor": actor,
        "action": action,
        "target": target,
        "purpose": purpose,
        "details": details,
        "prev": prev_hash,
    }
    if key is not None:
        fields["key"] = key.id
    payload = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str).encode()
    if key is None:
        return hashlib.sha256(payload).hexdigest()
    return hmac.new(key.secret, payload, hashlib.sha256).hexdigest()


class AuditLog:
    """Appends to and verifies the registry's audit log."""

    def __init__(self, registry: Registry, clock: Callable[[], datetime], keys: KeyRing | None = None) -> None:
        self._registry = registry
        self._clock = clock
        self._keys = keys

    def append(
        self,
        actor: str,
        action: str,
        target: str,
        *,
        purpose: str | None = None,
        details: dict[str, Any] | None = None,
        change: Callable[[Session], None] | None = None,
    ) -> AuditEntry:
        """Add an entry after the current head (retried if another process appended first);
        `change` is a registry change that commits in the same transaction as the entry."""
        details = json.loads(json.dumps(details or {}, default=str))
        key = self._key()

        def hasher(entry_id: int, at: datetime, prev: str) -> str:
            return entry_hash(entry_id, at, actor, action, target, purpose, details, prev, key)

        for _attempt in range(20):
            row = self._registry.append_audit(
                lambda: self._clock().astimezone(UTC),
                actor,
                action,
                target,
                purpose,
                details,
                hasher,
                GENESIS,
                change,
                key.id if key is not None else None,
            )
            if row is not None:
                return _entry(row)
        raise AuditChainBroken("could not append to the audit log: it keeps changing under this process")

    def _key(self) -> DataKey | None:
        """The audit key for a new entry: None only while the store has no audit key and no master
        key is configured; once the chain is keyed, an entry without the master key is refused."""
        if self._keys is None:
            return None
        key = self._keys.available("audit")
        if key is None and self._registry.wrapped_keys("audit"):
            raise KeyManagementError(
                "this store's audit log is keyed, so every entry needs the master key: set FEATURESTORE_MASTER_KEY "
                "(or keys.master_key_file in featurestore.yaml)"
            )
        return key

    def entries(self, *, action: str | None = None, limit: int | None = None) -> list[AuditEntry]:
        """Entries oldest first (the newest `limit` if given)."""
        return [_entry(r) for r in self._registry.audit_rows(action=action, limit=limit)]

    def verify(self, *, expect_head: str | None = None) -> tuple[int, str]:
        """Check the whole chain (and, if given, that its head is `expect_head`); return (entry
        count, head hash) or raise AuditChainBroken. Keyed entries need the master key."""
        prev, count, expected_id = GENESIS, 0, 1
        audit_keys = {key_id for key_id, _wrapped, _at in self._registry.wrapped_keys("audit")}
        keyed_from: int | None = None
        for e in self.entries():
            if e.id != expected_id:
                raise AuditChainBroken(f"audit entry {expected_id} is missing (the next entry is {e.id})")
            if e.prev_hash != prev:
                raise AuditChainBroken(
                    f"audit entry {e.id} ({e.action} {e.target}) does not follow entry {e.id - 1}: "
                    "an entry before it was edited, removed or reordered"
                )
            key = None
            if e.key_id is None and keyed_from is not None:
                raise AuditChainBroken(
                    f"audit entry {e.id} ({e.action} {e.target}) has no HMAC although the chain is keyed "
                    f"from entry {keyed_from} on: it was rewritten without the master key"
                )
            if e.key_id is not None:
                keyed_from = keyed_from or e.id
                if self._keys is None or e.key_id not in audit_keys:
                    raise AuditChainBroken(
                        f"audit entry {e.id} names audit key '{e.key_id}', which the registry does "
                        "not hold: keys were removed, or the entry was made up"
                    )
                key = self._keys.get(e.key_id)  # a missing or wrong master key is a KeyManagementError
            if entry_hash(e.id, e.at, e.actor, e.action, e.target, e.purpose, e.details, e.prev_hash, key) != e.hash:
                raise AuditChainBroken(f"audit entry {e.id} ({e.action} {e.target}) was edited after it was written")
            prev, count, expected_id = e.hash, count + 1, expected_id + 1
        if count and keyed_from is None and any(self._registry.wrapped_keys(kind) for kind in ("hmac", "siv")):
            raise AuditChainBroken(
                "no audit entry is keyed, yet this store holds data keys wrapped by a master key, so "
                "its entries were keyed: the audit key and the chain were replaced"
            )
        if expect_head is not None and prev != expect_head:
            raise AuditChainBroken(
                f"the audit log's head is {prev[:16]}... after {count} entries, not the expected {expect_head[:16]}...: "
                "entries were removed from its end, or it is another log"
            )
        return count, prev


def _entry(row: AuditRow) -> AuditEntry:
    return AuditEntry(
        row.id,
        row.at,
        row.actor,
        row.action,
        row.target,
        row.purpose,
        dict(row.details),
        row.prev_hash,
        row.hash,
        row.key_id,
    )
