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

import duckdb
import pyarrow as pa

from ..catalog import Catalog, online_table
from ..context import StoreContext
from ..errors import PolicyViolation
from ..offline.duckdb_store import TREATED_TABLE, quote
from ..policy import Policy
from ..policy.model import ColumnRule
from ..privacy.treatments import same, treatment_of
from .rules import PolicySnapshot
from .treatments import Treatments

if TYPE_CHECKING:
    from ..online import OnlineStore
    from ..training_sets import TrainingSets


def _has_record(con: duckdb.DuckDBPyConnection) -> bool:
    rows = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [TREATED_TABLE]
    ).fetchall()
    return bool(rows[0][0])


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
            with ctx.offline.connect(read_only=True) as con:
                [(rows,)] = con.execute(f"SELECT count(*) FROM {quote(vv.table)}").fetchall()
                done = (
                    {
                        c
                        for (c,) in con.execute(
                            f"SELECT column_name FROM {TREATED_TABLE} WHERE table_name = ? AND policy_sha256 = ?",
                            [vv.table, policy.sha256],
                        ).fetchall()
                    }
                    if _has_record(con)
                    else set()
                )
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
    return "; ".join(
        f"{view} holds {group[0].rows:,} rows whose "
        + ", ".join(f"{i.column} ({i.treatment})" for i in group)
        + " were stored untreated"
        for view, group in by_view.items()
    )


def treat_existing(
    ctx: StoreContext,
    catalog: Catalog,
    policy: Policy,
    items: list[Untreated],
    treatments: Treatments,
    online: OnlineStore,
    training_sets: TrainingSets,
) -> dict[str, int]:
    """Rewrite the untreated rows under `policy`, delete the online copies of their views, treat
    saved training sets' copies, then compact. Returns rows rewritten per view version."""
    import duckdb

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
    for table, group in by_table.items():
        columns = sorted({i.column for i in group})
        with ctx.offline.connect(read_only=False) as con:
            data = con.sql(f"SELECT * FROM {quote(table)}").to_arrow_table()
            treated = treatments.treat_columns(data, policy, catalog.get_view(group[0].view).view.name, columns)
            con.execute(
                f"CREATE TABLE IF NOT EXISTS {TREATED_TABLE} (table_name VARCHAR, column_name VARCHAR, "
                "policy_sha256 VARCHAR, treated_at TIMESTAMPTZ)"
            )
            try:

                def record(table: str = table, columns: list[str] = columns) -> None:
                    con.executemany(
                        f"INSERT INTO {TREATED_TABLE} VALUES (?, ?, ?, ?)",
                        [[table, c, policy.sha256, ctx.now()] for c in columns],
                    )

                ctx.offline.rewrite_rows(con, table, treated, record, marker=f"{policy.sha256}:{','.join(columns)}")
            except duckdb.Error:
                raise PolicyViolation(
                    f"{group[0].view}: the treated values of {', '.join(columns)} do not fit the stored "
                    "column types (a hash or token is text: declare those features as string); nothing "
                    "was changed"
                ) from None
        done[group[0].view] = data.num_rows
    for view in {i.view for i in items}:
        vv = catalog.get_view(view)
        if ctx.registry.materialization(vv.view.name, vv.version) is not None:
            online.prune(online_table(vv), 1 << 62)  # every row goes; materialize --full serves treated values again
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
