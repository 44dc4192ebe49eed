"""Proof that a subject is gone: every table of every store queried and every file under the
store scanned (bytes, and decoded values where compression could hide them) for the raw id, its
normalized forms, pseudonyms and tokens; the report is kept as evidence."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .context import StoreContext
from .governance import Grant
from .lineage import Lineage


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


class ErasureProofs:
    """Erasure proofs of one store.

    Args:
        ctx: The store's parts.
        lineage: Where subjects are.
    """

    def __init__(self, ctx: StoreContext, lineage: Lineage) -> None:
        self.ctx = ctx
        self.lineage = lineage

    def verify(self, entity: str, key: str) -> VerifyReport:
        """Prove a subject is gone: query every table of every store, and scan the bytes of every
        file under the store for the raw id, its normalized forms, pseudonyms and tokens."""
        ctx = self.ctx
        grants = self.lineage.versions(entity, "erasure")
        checks = [Check(place, "query", rows) for place, rows in self.lineage.where_all(entity, key).items()]
        needles: set[bytes] = {key.encode(), key.strip().lower().encode()}
        for grant in grants:
            for form in self.lineage.subjects.stored_forms(grant.policy, grant.view, [key]):
                needles.add(str(form).encode())
        root = ctx.config.root
        hashes = self.lineage.entity_hashes(grants, [key])
        now = ctx.now()
        path = None
        if root is not None:
            for file in sorted(p for p in root.rglob("*") if p.is_file() and "erasure_reports" not in p.parts):
                data = file.read_bytes()
                checks.append(Check(str(file.relative_to(root)), "bytes", sum(data.count(n) for n in needles if n)))
            checks += self._lake_checks(root, grants, {n.decode() for n in needles if n})
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

    def _lake_checks(self, root: Path, grants: Sequence[Grant], needles: set[str]) -> list[Check]:
        """On the lake store (asked of the engine under an erasure grant; counts only): every
        value of every Parquet file and log entry, decoded (compression could hide bytes), and the
        bytes of lake files outside the store directory (those under it were scanned already)."""
        if not grants:
            return []
        checks = []
        for file, found, values in self.ctx.offline.file_traces(grants[0], needles):
            where = str(file.relative_to(root)) if file.is_relative_to(root) else str(file)
            if not file.is_relative_to(root):
                checks.append(Check(where, "bytes", found))
            if values is not None:
                checks.append(Check(where, "values", values))
        return checks
