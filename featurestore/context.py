"""What every capability of a store shares: its parts, its clock and who is acting.

Capabilities (catalog, ingestion, historical retrieval, training sets, online serving, the
policy workflow) take a :class:`StoreContext` in their constructors; nothing reaches for
globals, the wall clock or the environment on its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from .audit import AuditLog
from .config import StoreConfig
from .errors import FeatureStoreError
from .governance import Access, Treatments
from .offline import OfflineEngine
from .privacy.keys import KeyRing
from .registry import Registry

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """The wall clock in UTC: a store's clock unless one is given (serving reads it as an integer instead)."""
    return datetime.now(UTC)


Progress = Callable[[int, int | None], None]
"""Called with (rows done so far, total rows if known) while a long job runs."""


@dataclass
class StoreContext:
    """The parts of one open store."""

    config: StoreConfig
    registry: Registry
    offline: OfflineEngine
    keys: KeyRing
    audit: AuditLog
    access: Access
    treatments: Treatments
    clock: Clock
    actor: str

    def now(self) -> datetime:
        """The store clock's time, in UTC; a naive clock is an error."""
        now = self.clock()
        if now.tzinfo is None:
            raise FeatureStoreError("the store's clock returned a time-zone-naive datetime")
        return now.astimezone(UTC)
