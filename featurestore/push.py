"""Writing straight to serving (Feast's push source): rows validated and treated exactly as
``ingest`` does, then written to the offline store as one batch, to the online store at once,
or both. Online, an older event never overwrites a newer one (a compare-and-set per entity)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from .context import StoreContext
from .errors import FeatureStoreError
from .ingestion import Ingestion
from .online.service import OnlineService

TARGETS = ("online", "offline", "both")


@dataclass(frozen=True)
class PushResult:
    """What one push wrote."""

    view: str
    version: int
    rows: int
    """Rows accepted (after erased subjects were dropped)."""
    batch_id: int | None
    """The offline batch (None when pushed to the online store only)."""
    online_entities: int
    """Entities written online (their latest pushed row each; 0 for an offline-only push)."""
    dropped_erased: int = 0


class Pusher:
    """Pushes rows through ingestion's validation and treatments to the offline and/or online store."""

    def __init__(self, ctx: StoreContext, ingestion: Ingestion, online: OnlineService) -> None:
        self.ctx = ctx
        self.ingestion = ingestion
        self.online = online

    def push(self, view: str, data: Any, *, to: str = "online") -> PushResult:
        """Validate and treat `data` as ``ingest`` does, then write it where `to` says."""
        if to not in TARGETS:
            raise FeatureStoreError(f"push to must be one of {', '.join(TARGETS)}, not {str(to)[:20]!r}")
        prepared = self.ingestion.prepare(view, data)
        vv = prepared.vv
        kept: list[pa.Table] = []
        batch_id = None
        if to == "online":  # every check runs; nothing is written offline
            kept = list(prepared.tables)
            rows = sum(t.num_rows for t in kept)
        else:
            if to == "both":
                prepared.on_table.append(kept.append)
            result = self.ingestion.ingest(view, data, prepared=prepared)
            batch_id, rows = result.batch_id, result.rows
        entities = self.online.push(prepared.grant, kept) if to != "offline" else 0
        self.ctx.audit.append(
            self.ctx.actor,
            "push",
            vv.ref,
            details={
                "to": to,
                "rows": rows,
                "batch": batch_id,
                "online_entities": entities,
                "dropped_erased": prepared.dropped_erased,
            },
        )
        return PushResult(vv.view.name, vv.version, rows, batch_id, entities, prepared.dropped_erased)
