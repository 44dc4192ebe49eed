"""The right to erasure: deletions that reach every copy (every version of every view of the
entity, the online store, saved training sets) and then every byte (compaction rewrites the
DuckDB file; the SQLite online store zeroes deleted rows and truncates its WAL; training-set
files are rewritten).

An erasure records a request with the policy's deadline, tombstones (subject hashes, never the
raw id nor a pseudonym found in the data) that make later ingestion and materialization drop the
subject, deletes logically at once, and is *done* only when the compaction that removes its
bytes has committed. A legal hold on the subject or a view suspends it (the request is queued as
held, and reported). Where a subject is: :mod:`.lineage`; proofs: :mod:`.erasure_proof`;
retention: :mod:`.retention`; holds: :mod:`.holds`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .compaction import Compactor
from .context import StoreContext
from .governance import MAINTAIN, Grant
from .holds import Holds
from .lineage import Lineage
from .versions import online_table

DEFAULT_DEADLINE = timedelta(days=30)
"""The erasure deadline when no policy of the entity's views sets ``erasure.sla`` (GDPR Art. 12(3): one month)."""


@dataclass(frozen=True)
class ErasureResult:
    """What one erasure request did."""

    request_id: int
    status: str
    """done (rows deleted and their bytes compacted away), pending (deleted, compaction owed) or held."""
    deadline: datetime
    removed: dict[str, int]
    """Rows removed per place (``offline customer_profile@v1``, ``online ov_..._v1``, ``training set t``)."""
    held_by: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DeletionRequest:
    """An erasure or retention request, with its deadline."""

    id: int
    kind: str
    entity: str | None
    status: str
    requested_at: datetime
    deadline: datetime | None
    done_at: datetime | None
    overdue: bool
    details: dict[str, Any]


class Erasure:
    """Erasure requests of one store.

    Args:
        ctx: The store's parts.
        lineage: Where subjects are.
        compactor: Completes requests once their bytes are gone.
    """

    def __init__(self, ctx: StoreContext, lineage: Lineage, compactor: Compactor) -> None:
        self.ctx = ctx
        self.lineage = lineage
        self.compactor = compactor

    def _deadline(self, grants: Sequence[Grant], now: datetime) -> datetime:
        slas = [
            g.policy.erasure.sla
            for g in grants
            if g.policy is not None and g.policy.erasure is not None and g.policy.erasure.sla
        ]
        return now + (min(slas) if slas else DEFAULT_DEADLINE)

    def erase(self, entity: str, keys: Sequence[str], *, compact: bool = True) -> list[ErasureResult]:
        """Erase subjects (raw ids of the entity's key) everywhere; one request per subject, the
        deletes of all of them done together (one statement per table)."""
        ctx = self.ctx
        grants = self.lineage.versions(entity, "erasure")
        ids = list(dict.fromkeys(keys))
        if not ids:
            return []
        now = ctx.now()
        deadline = self._deadline(grants, now)
        hashes = self.lineage.subjects.entity_hashes_by_id([(g.policy, g.view) for g in grants], ids)
        holds = ctx.registry.holds()
        held = [Holds.holding(entity, grants, set(h), holds) for h in hashes]
        request_ids = ctx.registry.add_deletion_requests(
            [
                {
                    "kind": "erasure",
                    "entity": entity,
                    "subject": h[0] if h else None,
                    "status": "held" if why else "pending",
                    "requested_at": now,
                    "deadline": deadline,
                    "details": {"held_by": why} if why else {},
                }
                for h, why in zip(hashes, held, strict=True)
            ]
        )
        erased = [i for i, why in enumerate(held) if not why]
        waiting = [r for r in ctx.registry.deletion_requests(status="held", kind="erasure") if r.entity == entity]
        for i in erased:  # requests queued under holds that have ended are carried out now, and complete with this one
            for request in waiting:
                if request.subject in hashes[i]:
                    ctx.registry.update_deletion_request(
                        request.id, status="pending", details={**request.details, "carried_out_by": request_ids[i]}
                    )
        ctx.registry.add_tombstones(entity, [(d, request_ids[i]) for i in erased for d in hashes[i]], now)
        removed = self._remove_subjects(grants, [ids[i] for i in erased])
        ctx.registry.update_deletion_requests(
            {request_ids[i]: {"removed": r} for i, r in zip(erased, removed, strict=True)}
        )
        totals: dict[str, int] = {}
        for per_subject in removed:
            for place, n in per_subject.items():
                totals[place] = totals.get(place, 0) + n
        ctx.audit.append(
            ctx.actor,
            "erase",
            entity,
            details={
                "requests": [request_ids[i] for i in erased],
                "removed": totals,
                "deadline": deadline.isoformat(),
                "held": {str(request_ids[i]): why for i, why in enumerate(held) if why},
            },
        )
        compacted = compact and bool(erased)
        if compacted:
            self.compactor.compact()
        by_index = dict(zip(erased, removed, strict=True))
        return [
            ErasureResult(
                request_ids[i],
                "held" if held[i] else "done" if compacted else "pending",
                deadline,
                by_index.get(i, {}),
                held[i],
            )
            for i in range(len(ids))
        ]

    def _remove_subjects(self, grants: Sequence[Grant], raw_ids: Sequence[str]) -> list[dict[str, int]]:
        """Delete subjects from every place; rows removed per place, per subject."""
        removed: list[dict[str, int]] = [{} for _ in raw_ids]
        if not raw_ids:
            return removed
        owner: dict[str, dict[str, int]] = {}  # stored form (as text) -> that subject's counts
        for grant in grants:
            vv = grant.view
            by_id = self.lineage.subjects.stored_forms_by_id(grant.policy, vv, raw_ids)
            owner = {str(f): removed[i] for i, forms in enumerate(by_id) for f in forms}
            place = f"offline {vv.ref}"
            for per_subject in removed:
                per_subject[place] = 0
            for form, count in self.ctx.offline.key_counts(
                grant.require(MAINTAIN), [f for forms in by_id for f in forms], delete=True
            ).items():
                owner[form][place] += count
            if self.ctx.registry.materialization(vv.view.name, vv.version) is not None:
                place = f"online {online_table(vv)}"
                present = self.lineage.online.present_keys(grant, vv, list(owner))
                for per_subject in removed:
                    per_subject[place] = 0
                for key in present:
                    owner[key][place] += 1
                self.lineage.online.delete_keys(grant, vv, present)
        by_view = {g.view.view.name: g for g in grants}
        for name in self.lineage.training_sets_of(set(by_view)):
            place = f"training set {name}"
            counts = [0] * len(raw_ids)
            self.lineage.training.rewrite(
                name,
                self.lineage.training_mask(name, by_view, raw_ids, counts),
                kind="erasure",
                text="{rows} rows of erased subjects were removed; reproduction rebuilds the rows that remain",
            )
            for i, n in enumerate(counts):
                removed[i][place] = n
        return removed

    def status(self) -> list[DeletionRequest]:
        """Every erasure and retention request, with whether it is overdue."""
        now = self.ctx.now()
        return [
            DeletionRequest(
                r.id,
                r.kind,
                r.entity,
                r.status,
                r.requested_at,
                r.deadline,
                r.done_at,
                r.status != "done" and r.deadline is not None and r.deadline < now,
                dict(r.details),
            )
            for r in self.ctx.registry.deletion_requests()
        ]
