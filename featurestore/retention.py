"""Retention runs: rows past the policies' retention deleted from the offline store, the online
store and saved training sets (except what a legal hold protects), then compacted away. A run
is idempotent, and one after a crash finishes the compaction the first one owed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc

from .catalog import Catalog
from .compaction import Compactor
from .context import StoreContext
from .governance import MAINTAIN, Grant
from .historical import JoinPart
from .holds import Holds
from .lineage import Lineage
from .offline import Compaction
from .versions import online_table


@dataclass(frozen=True)
class RetentionReport:
    """What a retention run removed (or would remove, in a dry run)."""

    dry_run: bool
    removed: dict[str, int]
    held: list[str]
    compaction: Compaction | None


class Retention:
    """Retention runs of one store.

    Args:
        ctx: The store's parts.
        catalog: Its definitions.
        lineage: Where subjects are (the online service and training sets through it).
        holds: Legal holds.
        compactor: Completes the retention request once its bytes are gone.
    """

    def __init__(
        self, ctx: StoreContext, catalog: Catalog, lineage: Lineage, holds: Holds, compactor: Compactor
    ) -> None:
        self.ctx = ctx
        self.catalog = catalog
        self.lineage = lineage
        self.holds = holds
        self.compactor = compactor

    def run(self, *, dry_run: bool = False, compact: bool = True) -> RetentionReport:
        """Delete rows past the policies' retention (offline, online, training sets), except
        what a hold protects, then compact. Idempotent: a second run removes nothing, and a
        run after a crash finishes the compaction the first one owed."""
        ctx = self.ctx
        snapshot = ctx.access.snapshot()
        removed: dict[str, int] = {}
        held: list[str] = []
        now = ctx.now()
        request: int | None = None
        for head in self.catalog.list_views():
            versions = self.catalog.view_versions(head.view.name)
            for vv in versions:
                grant = ctx.access.grant(snapshot, vv, vv.view.feature_names, "retention", (MAINTAIN,))
                if grant.policy is None or not grant.policy.retention.limits():
                    continue
                if self.holds.view_held(vv.view.name):
                    held.append(f"{vv.ref}: the view is under a legal hold")
                    continue
                keep = self._held_keys(grant)
                if keep:
                    held.append(f"{vv.ref}: {len(keep)} subjects under a legal hold are kept")
                if (limit := grant.policy.retention.offline) is not None:
                    count = self._expire_offline(grant, now - limit, keep, dry_run=True)
                    if count and not dry_run:
                        if request is None:  # recorded before the delete: a crash leaves the compaction owed
                            request = ctx.registry.add_deletion_request(
                                kind="retention",
                                entity=None,
                                subject=None,
                                status="pending",
                                requested_at=now,
                                deadline=now,
                                details={},
                            )
                        count = self._expire_offline(grant, now - limit, keep, dry_run=False)
                    removed[f"offline {vv.ref}"] = count
                online_limit = grant.policy.retention.online
                if online_limit is not None and ctx.registry.materialization(vv.view.name, vv.version) is not None:
                    if dry_run:
                        removed[f"online {online_table(vv)}"] = (
                            0  # counted when it runs: the online stores have no dry run
                        )
                    else:
                        removed[f"online {online_table(vv)}"] = self.lineage.online.delete_older(
                            grant, vv, now - online_limit, [str(k) for k in keep]
                        )
        training = self.lineage.training
        for ts in training.list_all():
            parts = training.maintenance_parts(ts, "retention")
            limits = [p.grant.policy.retention.training_sets for p in parts if p.grant.policy is not None]
            limit = min((x for x in limits if x is not None), default=None)
            if limit is None or ts.timestamp_column not in ts.entity_columns:
                continue
            cutoff = now - limit
            action = next(
                (p.grant.policy.retention.expired_training_sets for p in parts if p.grant.policy is not None), "rewrite"
            )

            def expired(
                table: pa.Table, _parts: list[JoinPart], cutoff: datetime = cutoff, column: str = ts.timestamp_column
            ) -> pa.ChunkedArray:
                values = table.column(column)
                return pc.fill_null(
                    pc.less(values, pa.scalar(cutoff, pa.timestamp("us", tz="UTC")).cast(values.type)), False
                )

            count = training.rewrite(
                ts.name,
                expired,
                kind="retention",
                dry_run=dry_run or action == "delete",
                text="{rows} rows past the training-set retention were removed",
            )
            if action == "delete" and count:
                if not dry_run:
                    training.delete(ts.name)
                removed[f"training set {ts.name} (deleted)"] = ts.row_count
            else:
                removed[f"training set {ts.name}"] = count
        if not dry_run:
            pending = [r for r in ctx.registry.deletion_requests(status="pending")]
            if request is not None:
                ctx.registry.update_deletion_request(request, details={"removed": removed, "held": held})
            ctx.audit.append(ctx.actor, "retention_run", "store", details={"removed": removed, "held": held})
            compaction = self.compactor.compact() if compact and pending else None
        else:
            compaction = None
        return RetentionReport(dry_run, removed, held, compaction)

    def _held_keys(self, grant: Grant) -> list[object]:
        """Stored keys of a view version that belong to held subjects."""
        wanted = self.holds.held_hashes(grant.view.view.entity)
        if not wanted:
            return []
        stored = self.ctx.offline.stored_keys(grant)
        mask = self.lineage.subjects.matching(grant.policy, grant.view, stored, wanted)
        return list(stored.filter(mask).to_pylist())

    def _expire_offline(self, grant: Grant, cutoff: datetime, keep: list[object], *, dry_run: bool) -> int:
        return self.ctx.offline.older(grant, cutoff, keep, delete=not dry_run)
