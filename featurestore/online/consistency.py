"""The consistency check: online values against the point-in-time answer for the same instant.

It reads both stores, so its grant must cover both: a purpose allowed ``offline`` and
``online`` access (one with only online access would otherwise learn offline values).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from ..catalog import Catalog
from ..context import StoreContext
from ..historical import Historical, JoinPart
from ..types import arrow_type
from . import KEY_SEPARATOR, VALUES_AT
from .lookup import PRESENT, converter, value_status
from .service import OnlineService, effective_ttl_us, to_us


@dataclass(frozen=True)
class Mismatch:
    """An entity whose online value differs from the point-in-time answer."""

    key: str
    feature: str
    online: Any
    offline: Any
    online_status: str


@dataclass(frozen=True)
class ConsistencyReport:
    """The consistency check of one view version."""

    view: str
    checked: int
    mismatches: list[Mismatch]


class Consistency:
    """Compares the online store with the offline store."""

    def __init__(self, ctx: StoreContext, catalog: Catalog, historical: Historical, online: OnlineService) -> None:
        self.ctx = ctx
        self.catalog = catalog
        self.historical = historical
        self.online = online

    def check(
        self, views: Sequence[str] | None = None, *, sample: int = 1000, purpose: str | None = None, seed: int = 0
    ) -> list[ConsistencyReport]:
        """Draw up to `sample` entities per materialized view version and report every value
        whose online answer differs from the offline one at t = now (TTL included)."""
        ctx = self.ctx
        targets = [self.catalog.get_view(v) for v in views] if views else self.catalog.list_views()
        targets = [vv for vv in targets if ctx.registry.materialization(vv.view.name, vv.version) is not None]
        snapshot = ctx.access.snapshot()
        grants = [
            ctx.access.grant(snapshot, vv, vv.view.feature_names, purpose, ("offline", "online")) for vv in targets
        ]
        reports: list[ConsistencyReport] = []
        for grant in grants:
            vv = grant.require("online").view
            names = list(grant.features)
            keys, stored = self.online.sample_rows(grant, vv, sample, seed)
            now = ctx.now()
            now_us = to_us(now)
            parts_of = [k.split(KEY_SEPARATOR) for k in keys]
            entity = pa.table(
                {
                    **{
                        key: pa.array([p[i] for p in parts_of], pa.string()).cast(arrow_type(t))
                        for i, (key, t) in enumerate(vv.join_keys.items())
                    },
                    "_fs_t": pa.array([now] * len(keys), pa.timestamp("us", tz="UTC")),
                }
            )
            # Stored keys are joined as they are (already in their stored form): no key forms.
            plain = JoinPart(grant, names, vv.view.ttl)
            offline = self.historical.point_in_time(entity, [plain], "_fs_t", as_of=None, known=False, stored_keys=True)
            ttl_us = effective_ttl_us(vv.view.ttl, grant.retention("online"))
            converters = [converter(vv.view.feature(name).dtype) for name in names]
            mismatches: list[Mismatch] = []
            for i, (key, row) in enumerate(zip(keys, stored, strict=True)):
                status = value_status(None if row is None else row[1], now_us, ttl_us)
                for j, name in enumerate(names):
                    online_value = row[VALUES_AT + j] if status == PRESENT and row is not None else None
                    if converters[j] is not None and online_value is not None:
                        online_value = converters[j](online_value)  # type: ignore[misc]
                    offline_value = offline.column(name)[i].as_py()
                    if online_value != offline_value:
                        mismatches.append(Mismatch(key, name, online_value, offline_value, status))
            ctx.audit.append(
                ctx.actor,
                "check_consistency",
                vv.ref,
                purpose=purpose,
                details={"checked": len(keys), "mismatches": len(mismatches)},
            )
            reports.append(ConsistencyReport(vv.ref, len(keys), mismatches))
        return reports
