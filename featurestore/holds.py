"""Legal holds: a subject or a whole view kept from erasure and retention until the hold ends
(every hold and its end audited; a subject is held by its hashes, never its raw id)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from .catalog import Catalog
from .context import StoreContext
from .errors import NotFoundError, PolicyViolation
from .governance import Grant
from .lineage import Lineage
from .registry.models import HoldRow


@dataclass(frozen=True)
class Hold:
    """A legal hold on a subject or a view."""

    id: int
    kind: str
    entity: str | None
    view: str | None
    reason: str
    created_at: datetime
    created_by: str


class Holds:
    """Legal holds of one store.

    Args:
        ctx: The store's parts.
        catalog: Its definitions.
        lineage: Where subjects are (their hashes).
    """

    def __init__(self, ctx: StoreContext, catalog: Catalog, lineage: Lineage) -> None:
        self.ctx = ctx
        self.catalog = catalog
        self.lineage = lineage

    def add_hold(
        self, *, reason: str, entity: str | None = None, key: str | None = None, view: str | None = None
    ) -> Hold:
        """Suspend retention and erasure for a subject (`entity` and `key`) or a whole `view` (audited)."""
        ctx = self.ctx
        if not reason.strip():
            raise PolicyViolation("a legal hold needs a reason (e.g. the case or ticket it is for)")
        if (view is None) == (entity is None or key is None):
            raise PolicyViolation("hold either a subject (--entity and --key) or a view (--view), not both")
        now = ctx.now()
        if view is not None:
            self.catalog.view_versions(view)  # an unknown view is an error
            hold_id = ctx.registry.add_hold(
                kind="view",
                entity=None,
                view_name=view,
                pseudonyms=[],
                reason=reason,
                created_at=now,
                created_by=ctx.actor,
            )
        else:
            assert entity is not None and key is not None
            grants = self.lineage.versions(entity, "erasure")
            hold_id = ctx.registry.add_hold(
                kind="subject",
                entity=entity,
                view_name=None,
                pseudonyms=self.lineage.entity_hashes(grants, [key]),
                reason=reason,
                created_at=now,
                created_by=ctx.actor,
            )
        ctx.audit.append(
            ctx.actor,
            "hold_add",
            view or entity or "",
            details={"hold": hold_id, "kind": "view" if view else "subject", "reason": reason},
        )
        return next(h for h in self.active() if h.id == hold_id)

    def remove_hold(self, hold_id: int) -> None:
        """End a hold (audited); held erasure requests then run with the next ``erase`` of the subject."""
        if not self.ctx.registry.remove_hold(hold_id, self.ctx.now()):
            raise NotFoundError(f"no active legal hold with id {hold_id}; list them with `featurestore hold list`")
        self.ctx.audit.append(self.ctx.actor, "hold_remove", str(hold_id), details={"hold": hold_id})

    def active(self) -> list[Hold]:
        """The active legal holds."""
        return [
            Hold(h.id, h.kind, h.entity, h.view_name, h.reason, h.created_at, h.created_by)
            for h in self.ctx.registry.holds()
        ]

    def held_hashes(self, entity: str) -> set[str]:
        """Subject hashes of an entity under a hold."""
        return {
            h
            for hold in self.ctx.registry.holds()
            if hold.kind == "subject" and hold.entity == entity
            for h in hold.pseudonyms
        }

    def view_held(self, view: str) -> bool:
        """Whether a whole view is under a hold."""
        return any(h.kind == "view" and h.view_name == view for h in self.ctx.registry.holds())

    @staticmethod
    def holding(entity: str, grants: Sequence[Grant], hashes: set[str], holds: Sequence[HoldRow]) -> list[str]:
        """Why a subject (its `hashes`) of these view versions is held: one line per hold, empty if none."""
        held = []
        views = {g.view.view.name for g in grants}
        for hold in holds:
            if hold.kind == "view" and hold.view_name in views:
                held.append(f"hold {hold.id} on view {hold.view_name}: {hold.reason}")
            elif hold.kind == "subject" and hold.entity == entity and hashes & set(hold.pseudonyms):
                held.append(f"hold {hold.id} on this subject: {hold.reason}")
        return held
