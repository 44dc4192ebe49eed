"""Compaction as a capability: rewrite the offline store so deleted rows leave no bytes, and only
then mark the erasure and retention requests that waited for it done (audited)."""

from __future__ import annotations

from collections.abc import Callable

from .context import StoreContext
from .offline import Compaction


class Compactor:
    """Compacts one store and completes the deletion requests that waited for it."""

    def __init__(self, ctx: StoreContext) -> None:
        self.ctx = ctx

    def compact(self, on_step: Callable[[str], None] | None = None) -> Compaction:
        """Rewrite the offline file so deleted rows leave no bytes, then mark every pending
        erasure and retention request done (audited)."""
        ctx = self.ctx
        pending = ctx.registry.deletion_requests(status="pending")
        result = ctx.offline.compact(on_step)
        ctx.registry.complete_deletion_requests([r.id for r in pending], ctx.now())
        ctx.audit.append(
            ctx.actor,
            "compact",
            "offline",
            details={
                "bytes_before": result.bytes_before,
                "bytes_after": result.bytes_after,
                "requests_done": [r.id for r in pending],
            },
        )
        return result
