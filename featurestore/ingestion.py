"""Ingestion: validated, policy-treated batches appended atomically, and the batch record."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from . import sources
from .catalog import Catalog
from .context import Progress, StoreContext
from .errors import FeatureStoreError
from .governance import WRITE, Grant
from .governance.subjects import Subjects, subject_key
from .governance.treatments import dropped, treated
from .policy import Policy
from .registry.models import IngestionBatchRow
from .settling import Settler
from .versions import ViewVersion


@dataclass(frozen=True)
class IngestResult:
    """What one ``ingest`` call wrote."""

    batch_id: int
    view: str
    version: int
    rows: int
    ingested_at: datetime
    dropped_erased: int = 0
    """Rows of erased subjects dropped before storage (their tombstones matched)."""
    duplicates: int = 0
    """Rows that share their key and event time with a later row of the same batch: stored, but
    the later row wins every lookup (the point-in-time rule), so they are usually a mistake."""


@dataclass(frozen=True)
class BatchInfo:
    """One ingestion batch as the registry records it."""

    batch_id: int
    view: str
    version: int
    status: str
    rows: int | None
    source: str
    ingested_at: datetime
    error: str | None


@dataclass
class Prepared:
    """Data opened for one view version under a write grant: `tables` yields it validated and
    treated, once; each hook in `on_table` sees every table as it is yielded."""

    vv: ViewVersion
    grant: Grant
    source: str
    total: int | None
    tables: Iterator[pa.Table] = field(default_factory=lambda: iter(()))
    dropped_erased: int = 0
    on_table: list[Callable[[pa.Table], None]] = field(default_factory=list)


class Ingestion:
    """Writes batches into view versions, and settles batches a crashed process left pending."""

    def __init__(self, ctx: StoreContext, catalog: Catalog) -> None:
        self.ctx = ctx
        self.catalog = catalog
        self.subjects = Subjects(ctx.keys, ctx.treatments)

    def prepare(self, view: str, data: Any) -> Prepared:
        """Open `data` for a view version under a write grant: its batches come out validated and
        treated as the policy in force says (erased subjects dropped and counted), in memory."""
        ctx = self.ctx
        vv = self.catalog.get_view(view)
        grant = ctx.access.grant(ctx.access.snapshot(), vv, vv.view.feature_names, None, (WRITE,))
        policy = grant.policy
        stored = list(vv.view.stored_columns(vv.join_keys))
        target = sources.TargetSchema(
            view=vv.ref,
            join_keys=vv.join_keys,
            timestamp_field=vv.view.timestamp_field,
            features={f.name: f.dtype for f in vv.view.features},
            free_types=treated(policy, stored),
            created_field=vv.view.created_timestamp_field,
        )
        source = sources.open_source(data, target)
        if policy is not None:
            target = dataclasses.replace(target, dropped=dropped(policy, source.schema.names))
        sources.check_schema(source.schema, target)
        erased = ctx.registry.tombstones(vv.view.entity)
        prepared = Prepared(vv, grant, source.description, _known_rows(data))

        def validated() -> Iterator[pa.Table]:
            offset = 0
            for batch in source.batches:
                if batch.schema != source.schema:
                    sources.check_schema(batch.schema, target)
                if erased:  # erased subjects never come back: their rows are dropped, and counted
                    table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
                    mask = self._erased_mask(policy, vv, table.column(subject_key(vv)), erased)
                    if hits := int(pc.sum(mask).as_py() or 0):
                        prepared.dropped_erased += hits
                        batch = table.filter(pc.invert(mask))
                if policy is not None:  # treatments happen in memory, before anything is written
                    batch = ctx.treatments.treat(
                        pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch,
                        policy,
                        vv.view.name,
                    )
                table = sources.validate_batch(batch, target, row_offset=offset)
                offset += table.num_rows
                for hook in prepared.on_table:
                    hook(table)
                yield table

        prepared.tables = validated()
        return prepared

    def ingest(
        self, view: str, data: Any, *, progress: Progress | None = None, prepared: Prepared | None = None
    ) -> IngestResult:
        """Validate `data`, treat it as the policy in force says, and append it as one batch
        (`prepared`: data already opened by :meth:`prepare`)."""
        ctx = self.ctx
        prepared = prepared or self.prepare(view, data)
        vv, grant, policy, total = prepared.vv, prepared.grant, prepared.grant.policy, prepared.total
        done = 0

        def advance(rows: int) -> None:
            nonlocal done
            done += rows
            if progress is not None:
                progress(done, total)

        # The batch is recorded as pending while this process holds the offline store for
        # writing, so any process that can open the store knows no pending batch is in flight.
        with ctx.offline.writing() as writer:
            self.reconcile_with(writer.committed_batches)
            ingested_at = writer.next_ingestion_time(ctx.now())
            batch_id = ctx.registry.start_batch(
                vv.view.name, vv.version, source=prepared.source, ingested_at=ingested_at
            )
            try:
                rows = writer.append(
                    grant,
                    sources.prefetched(prepared.tables),
                    batch_id=batch_id,
                    ingested_at=ingested_at,
                    on_rows=advance,
                )
            except BaseException as exc:
                # A governed view's error may quote a raw value: the registry keeps only its kind.
                reason = (
                    f"{type(exc).__name__}: details withheld, the view is governed by policy '{policy.id}'"
                    if policy is not None
                    else str(exc) or type(exc).__name__
                )
                try:
                    ctx.registry.finish_batch(batch_id, status="aborted", finished_at=ctx.now(), error=reason)
                except FeatureStoreError:
                    pass  # e.g. the registry is on the same full disk: the batch stays pending, settled as aborted on the next open
                raise
            duplicates = writer.duplicates(grant, batch_id)
            # The batch's settling and its audit entry commit in one registry transaction.
            ctx.audit.append(
                ctx.actor,
                "ingest",
                vv.ref,
                details={
                    "batch": batch_id,
                    "rows": rows,
                    "policy": policy.id if policy else None,
                    "policy_sha256": policy.sha256 if policy else None,
                    "dropped_erased": prepared.dropped_erased,
                    "duplicates": duplicates,
                },
                change=ctx.registry.batch_finisher(batch_id, status="committed", finished_at=ctx.now(), row_count=rows),
            )
        return IngestResult(batch_id, vv.view.name, vv.version, rows, ingested_at, prepared.dropped_erased, duplicates)

    def _erased_mask(
        self, policy: Policy | None, vv: ViewVersion, raw: pa.ChunkedArray, erased: set[str]
    ) -> pa.ChunkedArray:
        """Which incoming rows (raw keys, before treatment) belong to erased subjects."""
        values = pa.array(sorted(erased), pa.string())
        mask = pa.chunked_array([pa.array([False] * len(raw), pa.bool_())])
        for column in self.subjects.hashes(policy, vv, raw):
            mask = pc.or_(mask, pc.fill_null(pc.is_in(column, value_set=values), False))
        return mask

    def list_batches(self, view: str | None = None) -> list[BatchInfo]:
        """Ingestion batches (all views, or one view's), oldest first."""
        if view is not None:
            self.catalog.view_versions(view)  # an unknown view is an error
        self.reconcile(wait=True)
        return [_batch_info(r) for r in self.ctx.registry.batches(view)]

    def last_ingestion(self) -> datetime | None:
        """When the last committed batch was ingested (None: nothing yet)."""
        committed = [b.ingested_at for b in self.ctx.registry.batches(status="committed")]
        return max(committed) if committed else None

    def reconcile(self, *, wait: bool) -> None:
        """Settle batches left pending by a crashed process (see :mod:`.settling`)."""
        Settler(self.ctx).reconcile(wait=wait)

    def reconcile_with(self, committed_of: Callable[[list[int]], dict[int, int] | None]) -> None:
        """Settle pending batches against the offline store's record (see :meth:`Settler.reconcile_with`)."""
        Settler(self.ctx).reconcile_with(committed_of)


def _batch_info(row: IngestionBatchRow) -> BatchInfo:
    return BatchInfo(
        row.id, row.view_name, row.version, row.status, row.row_count, row.source, row.ingested_at, row.error
    )


def _known_rows(data: Any) -> int | None:
    if isinstance(data, (pa.Table, pa.RecordBatch)):
        return int(data.num_rows)
    if isinstance(data, (str, Path)) and str(data).lower().endswith((".parquet", ".pq")):
        import pyarrow.parquet as pq

        try:
            return int(pq.ParquetFile(data).metadata.num_rows)
        except (pa.ArrowInvalid, OSError):
            return None
    shape = getattr(data, "shape", None)
    if isinstance(shape, tuple) and shape:
        return int(shape[0])
    return None
