"""The audit log: who did what, for which purpose, hash-chained so edits show.

Each entry's hash is SHA-256 over its canonical JSON (id, time, actor, action, target, purpose,
details) and the previous entry's hash; the first entry follows a hash of zeros. ``verify``
recomputes the chain and reports the first entry that does not fit: an edited entry breaks its
own hash, a removed or reordered one breaks the link of the next. Removing the newest entries
leaves a shorter valid chain, so ``verify`` returns the head hash and count: compare them with a
copy kept elsewhere (``featurestore audit verify --expect-head``).

Entries never hold raw identifiers: reads record the features, purpose and row count, not keys.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from .errors import AuditChainBroken
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


def entry_hash(entry_id: int, at: datetime, actor: str, action: str, target: str, purpose: str | None,
               details: dict[str, Any], prev_hash: str) -> str:
    """The hash an entry must carry."""
    payload = json.dumps(
        {"id": entry_id, "at": at.isoformat(), "actor": actor, "action": action, "target": target,
         "purpose": purpose, "details": details, "prev": prev_hash},
        sort_keys=True, separators=(",", ":"), default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


class AuditLog:
    """Appends to and verifies the registry's audit log."""

    def __init__(self, registry: Registry, clock: Callable[[], datetime]) -> None:
        self._registry = registry
        self._clock = clock

    def append(self, actor: str, action: str, target: str, *, purpose: str | None = None,
               details: dict[str, Any] | None = None, change: Callable[[Session], None] | None = None) -> AuditEntry:
        """Add an entry after the current head (retried if another process appended first);
        `change` is a registry change that commits in the same transaction as the entry."""
        details = json.loads(json.dumps(details or {}, default=str))

        def hasher(entry_id: int, at: datetime, prev: str) -> str:
            return entry_hash(entry_id, at, actor, action, target, purpose, details, prev)

        for _attempt in range(20):
            row = self._registry.append_audit(lambda: self._clock().astimezone(UTC), actor, action, target, purpose,
                                              details, hasher, GENESIS, change)
            if row is not None:
                return _entry(row)
        raise AuditChainBroken("could not append to the audit log: it keeps changing under this process")

    def entries(self, *, action: str | None = None, limit: int | None = None) -> list[AuditEntry]:
        """Entries oldest first (the newest `limit` if given)."""
        return [_entry(r) for r in self._registry.audit_rows(action=action, limit=limit)]

    def verify(self) -> tuple[int, str]:
        """Check the whole chain; return (entry count, head hash) or raise AuditChainBroken."""
        prev, count, expected_id = GENESIS, 0, 1
        for e in self.entries():
            if e.id != expected_id:
                raise AuditChainBroken(f"audit entry {expected_id} is missing (the next entry is {e.id})")
            if e.prev_hash != prev:
                raise AuditChainBroken(
                    f"audit entry {e.id} ({e.action} {e.target}) does not follow entry {e.id - 1}: "
                    "an entry before it was edited, removed or reordered"
                )
            if entry_hash(e.id, e.at, e.actor, e.action, e.target, e.purpose, e.details, e.prev_hash) != e.hash:
                raise AuditChainBroken(f"audit entry {e.id} ({e.action} {e.target}) was edited after it was written")
            prev, count, expected_id = e.hash, count + 1, expected_id + 1
        return count, prev


def _entry(row: AuditRow) -> AuditEntry:
    return AuditEntry(row.id, row.at, row.actor, row.action, row.target, row.purpose, dict(row.details),
                      row.prev_hash, row.hash)
