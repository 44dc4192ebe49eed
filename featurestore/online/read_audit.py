"""Online reads, audited in aggregate: one entry per (purpose, features) and flush, never one
registry write per lookup (that would cost milliseconds against a budget of microseconds).

The bound: a lookup is in the durable audit log at most :data:`FLUSH_SECONDS` (plus the time
of one registry write) after it was served, and a flush starts at once when
:data:`FLUSH_READS` lookups are pending. A background thread does the writing, so a process
killed with ``kill -9`` loses at most the lookups of that last interval.
"""

from __future__ import annotations

import threading

from ..audit import AuditLog

FLUSH_SECONDS = 0.5
FLUSH_READS = 1_000

ReadKey = tuple[str | None, tuple[str, ...]]


class ReadAudit:
    """Counts online lookups per (purpose, features) and writes them to the audit log.

    Args:
        audit: The audit log.
        actor: Who is serving.
        background: Flush from a background thread (off for memory stores, whose one
            registry connection must not be shared across threads: they flush inline).
    """

    def __init__(self, audit: AuditLog, actor: str, *, background: bool) -> None:
        self._audit = audit
        self._actor = actor
        self._background = background
        self._lock = threading.Lock()
        self._pending: dict[ReadKey, int] = {}
        self._count = 0
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None

    def record(self, purpose: str | None, features: tuple[str, ...], entities: int) -> None:
        """Count `entities` lookups of `features` for `purpose` (microseconds: no I/O here)."""
        key = (purpose, features)
        with self._lock:
            self._pending[key] = self._pending.get(key, 0) + entities
            self._count += entities
            full = self._count >= FLUSH_READS
        if not self._background:
            if full:
                self.flush()
            return
        if self._thread is None:
            self._start()
        if full:
            self._wake.set()

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="featurestore-read-audit", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(FLUSH_SECONDS)
            self._wake.clear()
            self.flush()

    def flush(self) -> None:
        """Write every pending count as one entry per (purpose, features)."""
        with self._lock:
            pending, self._pending, self._count = self._pending, {}, 0
        for (purpose, features), entities in pending.items():
            self._audit.append(self._actor, "online_reads", ", ".join(sorted({f.rsplit(":", 1)[0] for f in features})),
                               purpose=purpose, details={"features": list(features), "entities": entities})

    def close(self) -> None:
        """Stop the background thread and write what is pending."""
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.flush()
