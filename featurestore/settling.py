"""Settling batches a crashed process left pending, against the offline store's record: a batch
the offline file holds becomes committed (with its ``ingest`` audit entry), any other aborted
(``ingest_aborted``), each in one registry transaction. Every open of a store runs this, so it
needs neither pyarrow nor the ingestion machinery."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from .context import StoreContext
from .errors import StoreLockedError
from .registry.models import IngestionBatchRow
from .registry.repository import BatchAlreadySettled


class Settler:
    """Settles pending batches of one store."""

    def __init__(self, ctx: StoreContext) -> None:
        self.ctx = ctx

    def reconcile(self, *, wait: bool) -> None:
        """Settle batches left pending by a crashed process, against the offline store's record."""
        if not self.ctx.registry.batches(status="pending"):
            return
        try:
            self.reconcile_with(lambda ids: self.ctx.offline.committed_batches(ids, wait=wait))
        except StoreLockedError:
            if wait:
                raise

    def reconcile_with(self, committed_of: Callable[[list[int]], dict[int, int] | None]) -> None:
        """Settle pending batches against the offline store's record: `committed_of` gives which
        of some batch ids committed, with their rows (None: the store is held now; try later)."""
        registry = self.ctx.registry
        pending = registry.batches(status="pending")
        if not pending:
            return
        committed = committed_of([b.id for b in pending])
        if committed is None:
            return
        now = self.ctx.now()
        for batch in pending:
            try:
                self._settle(batch, committed.get(batch.id), now)
            except BatchAlreadySettled:
                continue  # another process settled it (and wrote its entry) first

    def _settle(self, batch: IngestionBatchRow, committed_rows: int | None, now: datetime) -> None:
        """Settle one pending batch and write its audit entry, in one registry transaction."""
        registry = self.ctx.registry
        vref = f"{batch.view_name}@v{batch.version}"
        if committed_rows is not None:
            self.ctx.audit.append(
                self.ctx.actor,
                "ingest",
                vref,
                details={
                    "batch": batch.id,
                    "rows": committed_rows,
                    "settled_after_crash": True,
                },
                change=registry.batch_finisher(batch.id, status="committed", finished_at=now, row_count=committed_rows),
            )
        else:
            self.ctx.audit.append(
                self.ctx.actor,
                "ingest_aborted",
                vref,
                details={
                    "batch": batch.id,
                    "settled_after_crash": True,
                },
                change=registry.batch_finisher(
                    batch.id,
                    status="aborted",
                    finished_at=now,
                    error="the ingesting process stopped before its transaction committed; no row of this batch was written",
                ),
            )
