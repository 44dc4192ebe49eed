"""The right to erasure, retention runs, legal holds and subject lineage: deletions that reach
every copy (every version of every view of the entity, the online store, saved training sets)
and then every byte (compaction rewrites the DuckDB file; the SQLite online store zeroes deleted
rows and truncates its WAL; training-set files are rewritten).

An erasure records a request with the policy's deadline, tombstones (subject hashes, never the
raw id nor a pseudonym found in the data) that make later ingestion and materialization drop the
subject, deletes logically at once, and is *done* only when the compaction that removes its
bytes has committed. A legal hold on the subject or a view suspends both erasure (the request is
queued as held, and reported) and retention.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from ..catalog import Catalog, online_table
from ..context import StoreContext
from ..errors import NotFoundError, PolicyViolation
from ..governance import MAINTAIN, Grant
from ..historical import JoinPart
from ..offline import Compaction
from ..online.service import OnlineService
from ..registry.models import HoldRow
from ..training_sets import TrainingSets
from .pseudonymize import tokenize
from .subjects import Subjects, subject_key

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


@dataclass(frozen=True)
class Check:
    """One check of an erasure proof: where, how, and whether the subject was found."""

    where: str
    method: str
    found: int


@dataclass(frozen=True)
class VerifyReport:
    """Evidence that a subject is gone: every table queried and every file scanned."""

    entity: str
    subject: str
    """The subject's hash (never the raw id)."""
    checked_at: datetime
    checks: list[Check]
    path: str | None
    """Where the report was written (None for a memory store)."""

    @property
    def clean(self) -> bool:
        """Whether no check found the subject."""
        return all(c.found == 0 for c in self.checks)


@dataclass(frozen=True)
class RetentionReport:
    """What a retention run removed (or would remove, in a dry run)."""

    dry_run: bool
    removed: dict[str, int]
    held: list[str]
    compaction: Compaction | None


class Erasure:
    """Erasure, retention, holds and lineage for one store."""

    def __init__(self, ctx: StoreContext, catalog: Catalog, online: OnlineService, training: TrainingSets) -> None:
        self.ctx = ctx
        self.catalog = catalog
        self.online = online
        self.training = training
        self.subjects = Subjects(ctx.keys, ctx.treatments)

    # --- helpers ------------------------------------------------------------------------------

    def _versions(self, entity: str) -> list[Grant]:
        """Maintenance grants for every version of every view of an entity."""
        if self.ctx.registry.entity(entity) is None:
            names = [e.name for e in self.catalog.list_entities()]
            from ..errors import did_you_mean

            raise NotFoundError(f"unknown entity '{entity}'." + did_you_mean(entity, names))
        snapshot = self.ctx.access.snapshot()
        grants = []
        for head in self.catalog.list_views():
            if head.view.entity != entity:
                continue
            for vv in self.catalog.view_versions(head.view.name):
                grants.append(self.ctx.access.grant(snapshot, vv, vv.view.feature_names, "erasure", (MAINTAIN,)))
        return grants

    def _holds_for(self, entity: str, grants: Sequence[Grant], hashes: set[str], holds: Sequence[HoldRow]) -> list[str]:
        held = []
        views = {g.view.view.name for g in grants}
        for hold in holds:
            if hold.kind == "view" and hold.view_name in views:
                held.append(f"hold {hold.id} on view {hold.view_name}: {hold.reason}")
            elif hold.kind == "subject" and hold.entity == entity and hashes & set(hold.pseudonyms):
                held.append(f"hold {hold.id} on this subject: {hold.reason}")
        return held

    def _entity_hashes(self, grants: Sequence[Grant], raw_ids: Sequence[str]) -> list[str]:
        return self.subjects.entity_hashes([(g.policy, g.view) for g in grants], raw_ids)

    def _deadline(self, grants: Sequence[Grant], now: datetime) -> datetime:
        slas = [
            g.policy.erasure.sla
            for g in grants
            if g.policy is not None and g.policy.erasure is not None and g.policy.erasure.sla
        ]
        return now + (min(slas) if slas else DEFAULT_DEADLINE)

    def _training_sets_of(self, views: set[str]) -> list[str]:
        return [ts.name for ts in self.training.list_all() if set(ts.views) & views]

    def _training_mask(
        self, ts_name: str, grants_by_view: dict[str, Grant], raw_ids: Sequence[str], counts: list[int] | None = None
    ) -> Callable[[pa.Table, list[JoinPart]], pa.ChunkedArray]:
        """Which rows of a saved training set hold these subjects (raw, pseudonymized or tokenized
        keys); with `counts`, also how many rows each subject holds."""
        ts = self.training.get(ts_name)

        def remove(table: pa.Table, parts: list[JoinPart]) -> pa.ChunkedArray:
            mask = pa.chunked_array([pa.array([False] * table.num_rows, pa.bool_())])
            for key in dict.fromkeys(subject_key(p.vv) for p in parts):
                if key not in table.column_names:
                    continue
                part = next(p for p in parts if subject_key(p.vv) == key)
                grant = grants_by_view.get(part.vv.view.name) or part.grant
                if key in ts.protected_columns:  # tokens of the raw key, under every AES-SIV key id
                    raw = pa.array(list(raw_ids), pa.string())
                    by_id = [
                        list(t)
                        for t in zip(
                            *(
                                tokenize(raw, k, context=f"training_set:{key}").to_pylist()
                                for k in self.ctx.keys.keys("siv")
                            ),
                            strict=True,
                        )
                    ]
                else:
                    by_id = self.subjects.stored_forms_by_id(grant.policy, part.vv, raw_ids)
                owner = {str(f): i for i, forms in enumerate(by_id) for f in forms}
                column = table.column(key)
                text = column.cast(pa.string()) if column.type != pa.string() else column
                hits = pc.fill_null(pc.is_in(text, value_set=pa.array(list(owner), pa.string())), False)
                mask = pc.or_(mask, hits)
                if counts is not None:
                    for value in text.filter(hits).to_pylist():
                        counts[owner[value]] += 1
            return mask

        return remove

    # --- erasure ------------------------------------------------------------------------------

    def erase(self, entity: str, keys: Sequence[str], *, compact: bool = True) -> list[ErasureResult]:
        """Erase subjects (raw ids of the entity's key) everywhere; one request per subject, the
        deletes of all of them done together (one statement per table)."""
        ctx = self.ctx
        grants = self._versions(entity)
        ids = list(dict.fromkeys(keys))
        if not ids:
            return []
        now = ctx.now()
        deadline = self._deadline(grants, now)
        hashes = self.subjects.entity_hashes_by_id([(g.policy, g.view) for g in grants], ids)
        holds = ctx.registry.holds()
        held = [self._holds_for(entity, grants, set(h), holds) for h in hashes]
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
            self.compact()
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
            by_id = self.subjects.stored_forms_by_id(grant.policy, vv, raw_ids)
            owner = {str(f): removed[i] for i, forms in enumerate(by_id) for f in forms}
            place = f"offline {vv.ref}"
            for per_subject in removed:
                per_subject[place] = 0
            for form, count in self._offline_rows(grant, [f for forms in by_id for f in forms], delete=True).items():
                owner[form][place] += count
            if self.ctx.registry.materialization(vv.view.name, vv.version) is not None:
                place = f"online {online_table(vv)}"
                present = self.online.present_keys(grant, vv, list(owner))
                for per_subject in removed:
                    per_subject[place] = 0
                for key in present:
                    owner[key][place] += 1
                self.online.delete_keys(grant, vv, present)
        by_view = {g.view.view.name: g for g in grants}
        for name in self._training_sets_of(set(by_view)):
            place = f"training set {name}"
            counts = [0] * len(raw_ids)
            self.training.rewrite(
                name,
                self._training_mask(name, by_view, raw_ids, counts),
                kind="erasure",
                text="{rows} rows of erased subjects were removed; reproduction rebuilds the rows that remain",
            )
            for i, n in enumerate(counts):
                removed[i][place] = n
        return removed

    def _offline_rows(self, grant: Grant, forms: list[object], *, delete: bool) -> dict[str, int]:
        """Rows whose key is one of `forms`, per form (as text); with `delete`, removed in one statement."""
        return self.ctx.offline.key_counts(grant.require(MAINTAIN), forms, delete=delete)

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

    # --- lineage and proof --------------------------------------------------------------------

    def where(self, entity: str, key: str) -> dict[str, int]:
        """Every place that holds a subject, with row counts (places with none are left out)."""
        found = {place: rows for place, rows in self._where_all(entity, key).items() if rows}
        self.ctx.audit.append(self.ctx.actor, "where", entity, details={"places": len(found)})
        return found

    def verify(self, entity: str, key: str) -> VerifyReport:
        """Prove a subject is gone: query every table of every store, and scan the bytes of every
        file under the store for the raw id, its normalized forms, pseudonyms and tokens."""
        ctx = self.ctx
        grants = self._versions(entity)
        checks = [Check(place, "query", rows) for place, rows in self._where_all(entity, key).items()]
        needles: set[bytes] = {key.encode(), key.strip().lower().encode()}
        for grant in grants:
            for form in self.subjects.stored_forms(grant.policy, grant.view, [key]):
                needles.add(str(form).encode())
        root = ctx.config.root
        hashes = self._entity_hashes(grants, [key])
        now = ctx.now()
        path = None
        if root is not None:
            for file in sorted(p for p in root.rglob("*") if p.is_file() and "erasure_reports" not in p.parts):
                data = file.read_bytes()
                checks.append(Check(str(file.relative_to(root)), "bytes", sum(data.count(n) for n in needles if n)))
            checks += self._lake_checks(root, {n.decode() for n in needles if n})
            folder = root / "erasure_reports"
            folder.mkdir(exist_ok=True)
            report_path = folder / f"{entity}-{now.strftime('%Y%m%dT%H%M%S%fZ')}.json"
            report_path.write_text(
                json.dumps(
                    {
                        "entity": entity,
                        "subject_hash": hashes[0] if hashes else None,
                        "checked_at": now.isoformat(),
                        "clean": all(c.found == 0 for c in checks),
                        "checks": [{"where": c.where, "method": c.method, "found": c.found} for c in checks],
                    },
                    indent=2,
                ),
                encoding="utf-8",
            )
            path = str(report_path)
        report = VerifyReport(entity, hashes[0] if hashes else "", now, checks, path)
        ctx.audit.append(
            ctx.actor, "erase_verify", entity, details={"clean": report.clean, "checks": len(checks), "report": path}
        )
        return report

    def _lake_checks(self, root: Path, needles: set[str]) -> list[Check]:
        """On the lake store: every value of every Parquet file and log entry, decoded (compression
        could hide bytes), and the bytes of lake files outside the store directory."""
        from ..offline.lake import strings_in

        checks = []
        for file in self.ctx.offline.data_files():
            where = str(file.relative_to(root)) if file.is_relative_to(root) else str(file)
            if not file.is_relative_to(root):
                data = file.read_bytes()
                checks.append(Check(where, "bytes", sum(data.count(n.encode()) for n in needles)))
            if file.suffix in (".parquet", ".json"):
                checks.append(Check(where, "values", len(needles & strings_in(file))))
        return checks

    def _where_all(self, entity: str, key: str) -> dict[str, int]:
        """:meth:`where`, with every place listed (zero counts included), unaudited."""
        grants = self._versions(entity)
        counts: dict[str, int] = {}
        for grant in grants:
            vv = grant.view
            forms = self.subjects.stored_forms(grant.policy, vv, [key])
            counts[f"offline {vv.ref}"] = sum(self._offline_rows(grant, forms, delete=False).values())
            if self.ctx.registry.materialization(vv.view.name, vv.version) is not None:
                counts[f"online {online_table(vv)}"] = len(self.online.present_keys(grant, vv, [str(f) for f in forms]))
        by_view = {g.view.view.name: g for g in grants}
        for name in self._training_sets_of(set(by_view)):
            counts[f"training set {name}"] = self.training.rewrite(
                name, self._training_mask(name, by_view, [key]), kind="where", text="", dry_run=True
            )
        return counts

    # --- holds --------------------------------------------------------------------------------

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
            grants = self._versions(entity)
            hold_id = ctx.registry.add_hold(
                kind="subject",
                entity=entity,
                view_name=None,
                pseudonyms=self._entity_hashes(grants, [key]),
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
        return next(h for h in self.holds() if h.id == hold_id)

    def remove_hold(self, hold_id: int) -> None:
        """End a hold (audited); held erasure requests then run with the next ``erase`` of the subject."""
        if not self.ctx.registry.remove_hold(hold_id, self.ctx.now()):
            raise NotFoundError(f"no active legal hold with id {hold_id}; list them with `featurestore hold list`")
        self.ctx.audit.append(self.ctx.actor, "hold_remove", str(hold_id), details={"hold": hold_id})

    def holds(self) -> list[Hold]:
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

    # --- retention ------------------------------------------------------------------------------

    def run_retention(self, *, dry_run: bool = False, compact: bool = True) -> RetentionReport:
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
                if self.view_held(vv.view.name):
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
                        removed[f"online {online_table(vv)}"] = self.online.delete_older(
                            grant, vv, now - online_limit, [str(k) for k in keep]
                        )
        for ts in self.training.list_all():
            parts = self.training.maintenance_parts(ts, "retention")
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

            count = self.training.rewrite(
                ts.name,
                expired,
                kind="retention",
                dry_run=dry_run or action == "delete",
                text="{rows} rows past the training-set retention were removed",
            )
            if action == "delete" and count:
                if not dry_run:
                    self.training.delete(ts.name)
                removed[f"training set {ts.name} (deleted)"] = ts.row_count
            else:
                removed[f"training set {ts.name}"] = count
        if not dry_run:
            pending = [r for r in ctx.registry.deletion_requests(status="pending")]
            if request is not None:
                ctx.registry.update_deletion_request(request, details={"removed": removed, "held": held})
            ctx.audit.append(ctx.actor, "retention_run", "store", details={"removed": removed, "held": held})
            compaction = self.compact() if compact and pending else None
        else:
            compaction = None
        return RetentionReport(dry_run, removed, held, compaction)

    def _held_keys(self, grant: Grant) -> list[object]:
        """Stored keys of a view version that belong to held subjects."""
        wanted = self.held_hashes(grant.view.view.entity)
        if not wanted:
            return []
        stored = self.ctx.offline.stored_keys(grant)
        mask = self.subjects.matching(grant.policy, grant.view, stored, wanted)
        return list(stored.filter(mask).to_pylist())

    def _expire_offline(self, grant: Grant, cutoff: datetime, keep: list[object], *, dry_run: bool) -> int:
        return self.ctx.offline.older(grant, cutoff, keep, delete=not dry_run)
