"""Approving a policy over rows already stored raw: find them, and treat them in place when asked.

A view that held data before a policy hashed, tokenized or generalized one of its columns keeps
those values raw: approving the policy alone would leave them readable. :func:`untreated` finds,
per view version and column, the stored rows whose values the new policy treats but the one in
force (if any) did not treat the same way. ``approve`` refuses while there are any, unless asked
to treat them (``--treat-existing``): then every such offline row is rewritten under the new
treatment in one transaction per table, the online copies of those views are deleted (run
``materialize --full`` again), saved training sets that carry those columns get them treated,
and the offline file is compacted, so the raw bytes are gone from disk. A column whose stored
values are already treated differently (hashed, now tokenized) cannot be re-treated: refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa

from .catalog import Catalog
from .context import StoreContext
from .errors import PolicyViolation
from .governance.access import MAINTAIN
from .governance.rules import PolicySnapshot
from .governance.treatments import Treatments
from .policy import Policy
from .policy.model import ColumnRule
from .privacy.treatments import same, treatment_of

if TYPE_CHECKING:
    from .online.service import OnlineService
    from .training_sets import TrainingSets


@dataclass(frozen=True)
class Untreated:
    """Stored rows of one view version whose `column` the policy treats but were stored without it."""

    view: str
    table: str
    column: str
    treatment: str
    rows: int
    convertible: bool
    """False when the stored values are already treated another way (they cannot be re-treated)."""


def _same(a: ColumnRule | None, b: ColumnRule) -> bool:
    return a is not None and same(a, b)


def untreated(ctx: StoreContext, catalog: Catalog, policy: Policy, snapshot: PolicySnapshot) -> list[Untreated]:
    """Every (view version, column) with stored rows the policy would treat that are not treated so."""
    found: list[Untreated] = []
    for latest in catalog.list_views():
        name = latest.view.name
        if not policy.governs(name):
            continue
        current = snapshot.state(name).policy
        for vv in catalog.view_versions(name):
            columns = [
                c
                for c in [*vv.join_keys, *vv.view.feature_names]
                if (rule := policy.rule(c)) is not None
                and treatment_of(rule).rewrites
                and not _same(current.rule(c) if current else None, rule)
            ]
            if not columns:
                continue
            grant = ctx.access.grant(snapshot, vv, vv.view.feature_names, "treat_existing", (MAINTAIN,))
            rows, done = ctx.offline.treated_columns(grant, policy.sha256)
            for column in [c for c in columns if c not in done]:
                rule = policy.rule(column)
                assert rule is not None
                old = current.rule(column) if current else None
                convertible = old is None or not treatment_of(old).rewrites
                if rows:
                    found.append(Untreated(vv.ref, vv.table, column, rule.treatment, int(rows), convertible))
    return found


def describe(items: list[Untreated]) -> str:
    """One line per view version: how many rows, which columns."""
    by_view: dict[str, list[Untreated]] = {}
    for item in items:
        by_view.setdefault(item.view, []).append(item)
    parts = []
    for view, group in by_view.items():
        raw = [i for i in group if i.convertible]
        other = [i for i in group if not i.convertible]
        said = []
        if raw:
            said.append(", ".join(f"{i.column} ({i.treatment})" for i in raw) + " were stored untreated")
        if other:
            said.append(
                ", ".join(f"{i.column} ({i.treatment})" for i in other)
                + " were stored treated another way (--treat-existing cannot convert them: ingest them again into a "
                "new view version)"
            )
        parts.append(f"{view} holds {group[0].rows:,} rows whose " + "; and whose ".join(said))
    return "; ".join(parts)


def treat_existing(
    ctx: StoreContext,
    catalog: Catalog,
    policy: Policy,
    items: list[Untreated],
    treatments: Treatments,
    online: OnlineService,
    training_sets: TrainingSets,
) -> dict[str, int]:
    """Rewrite the untreated rows under `policy`, delete the online copies of their views, treat
    saved training sets' copies, then compact. Returns rows rewritten per view version."""
    stuck = [i for i in items if not i.convertible]
    if stuck:
        raise PolicyViolation(
            "cannot treat stored values that are already treated another way: "
            + ", ".join(f"{i.view}.{i.column}" for i in stuck)
            + "; ingest those views again from their sources under the new policy (a new view version)"
        )
    done: dict[str, int] = {}
    by_table: dict[str, list[Untreated]] = {}
    for item in items:
        by_table.setdefault(item.table, []).append(item)
    snapshot = ctx.access.snapshot()
    for group in by_table.values():
        columns = sorted({i.column for i in group})
        vv = catalog.get_view(group[0].view)
        grant = ctx.access.grant(snapshot, vv, vv.view.feature_names, "treat_existing", (MAINTAIN,))

        def treat_rows(data: pa.Table, view: str = vv.view.name, columns: list[str] = columns) -> pa.Table:
            return treatments.treat_columns(data, policy, view, columns)

        done[group[0].view] = ctx.offline.rewrite(grant, columns, treat_rows, policy_sha256=policy.sha256, at=ctx.now())
    for view in {i.view for i in items}:
        vv = catalog.get_view(view)
        if ctx.registry.materialization(vv.view.name, vv.version) is not None:
            grant = ctx.access.grant(snapshot, vv, vv.view.feature_names, "treat_existing", (MAINTAIN,))
            online.clear(grant, vv)  # every row goes; materialize --full serves treated values again
    columns_of: dict[str, set[str]] = {}
    for item in items:
        columns_of.setdefault(catalog.get_view(item.view).view.name, set()).add(item.column)
    for ts in training_sets.list_all():
        per_view = {
            view: {f["output"]: f["feature"] for f in ts.features if f["view"] == view and f["feature"] in columns}
            for view, columns in columns_of.items()
        }
        keys = sorted(
            {c for view, columns in columns_of.items() if view in ts.views for c in columns if c in ts.entity_columns}
        )
        if not keys and not any(per_view.values()):
            continue

        def treat(table: pa.Table, per_view: dict[str, dict[str, str]] = per_view) -> pa.Table:
            for view, hit in per_view.items():
                if hit:
                    table = treatments.treat_columns(table, policy, view, list(hit), rule_of=hit)
            return table

        touched = sorted(keys + [o for hit in per_view.values() for o in hit])
        training_sets.treat(
            ts.name,
            treat,
            keys,
            f"columns {', '.join(touched)} treated when policy '{policy.id}' "
            f"v{policy.version} was approved over rows stored untreated",
        )
    ctx.offline.compact()
    return done
