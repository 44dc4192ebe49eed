"""Differentially private aggregates over a view, with a persistent privacy-budget ledger.

OpenDP does every mechanism (its Polars context, or its vector Laplace for public groups; never a
sampler of ours). The store adds what
OpenDP lacks:

- **The privacy unit is the entity.** Each entity keeps at most the policy's
  ``max_rows_per_subject`` rows, drawn at random in DuckDB before OpenDP sees the data (in a
  grouped release, first at most ``max_groups_per_subject`` of its groups, also at random), and
  OpenDP is told exactly those bounds (``unit_of(contributions=K)``, or per-group and group-count
  ``Bound``s; the group bound lowers partition selection's threshold), so one entity moves any
  statistic by at most what K rows can. Values are clamped to the policy's ``clamp`` bounds and
  float features are encoded as fixed-point integers (``decimals``; integer features as they
  are), because float sums need a table-size bound that ruins accuracy.
- **Group keys** the policy declares public (``public_groups``) are released for every public
  value (pure epsilon); any other group column goes through OpenDP's partition selection, which
  needs a delta, so a group held by too few entities is never released. Groups whose released
  count is below ``min_group_size`` are suppressed, and a count is always part of a grouped
  release for that reason.
- **Budget** per purpose (or per consumer, ``per_consumer``) and period, in the registry: a
  release reserves its cost atomically before any data is read; one that would exceed the
  budget is refused with what remains and when it refreshes. A reservation whose release then
  fails stays charged (``failed``): the data may have been read. The query is first run on an
  empty frame of the same schema, so plan errors are found before anything is reserved.
- **Accuracy before spending**: ``dry_run=True`` returns each statistic's noise scale and 95%
  interval, spending nothing; the truncation bias of the contribution bound is stated as unknown
  (measuring it would read the data outside the budget).
- **Public groups** (and ungrouped queries) are summed exactly in DuckDB and noised by OpenDP's
  vector Laplace mechanism (``dp_vectors``); private groups go through OpenDP's Polars context.
- **Caching**: the same query of the same data version returns the stored release at no new
  cost; calibrations (OpenDP's search for the noise scale, 1-3 s) are kept per query shape, and
  the last truncation (or its per-group sums) per data version and shape, for the life of the
  store object. A data version is the view version's last batch, its row count (erasure and
  retention delete without a batch) and the retention cutoff's day.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NoReturn

import pyarrow as pa

from .catalog import Catalog
from .context import StoreContext
from .errors import PolicyViolation, PrivacyBudgetExceeded
from .governance import Grant
from .governance.subjects import subject_key
from .offline import GRANTED
from .offline.sql import quote
from .policy import Policy
from .policy.model import DifferentialPrivacy
from .privacy import dp_vectors
from .registry.models import DpLedgerRow

MAX_ROWS = 10**9
"""The public bound OpenDP's margins get on a view's size (not the real count, which is private)."""
ALPHA = 0.05
MAX_CACHED_ROWS = 50_000_000
"""The last truncated dataset (or its per-group sums) is kept in memory up to this many rows."""


@dataclass(frozen=True)
class Statistic:
    """One released statistic's noise: its distribution, scale and the 95% interval half-width."""

    column: str
    aggregate: str
    distribution: str
    scale: float
    accuracy: float
    threshold: int | None = None
    """Partition selection: groups with a noisy count below this are not released."""


@dataclass(frozen=True)
class DpRelease:
    """A differentially private release (or, for a dry run, what it would cost and how accurate it would be)."""

    view: str
    aggregates: list[str]
    group_by: list[str]
    epsilon: float
    delta: float
    table: pa.Table | None
    """The released values (None for a dry run)."""
    statistics: list[Statistic]
    cached: bool
    """True when the same query of the same data was released before: no new cost."""
    dry_run: bool
    spent: float
    """Epsilon charged to the budget by this call (0 for dry runs and cached releases)."""
    suppressed_groups: int
    truncation_bias: str
    ledger_id: int | None


@dataclass(frozen=True)
class BudgetStatus:
    """One privacy budget: spent, reserved (releases running) and remaining in its current period."""

    policy_id: str
    purpose: str
    consumer: str | None
    budget: float
    spent: float
    reserved: float
    remaining: float
    delta_budget: float
    delta_spent: float
    period_days: float | None
    refreshes_at: datetime | None


def parse_aggregate(text: str) -> tuple[str, str | None]:
    """``count``, ``sum:col`` or ``mean:col`` as (kind, column).

    >>> parse_aggregate("mean:spend_total"), parse_aggregate("count")
    (('mean', 'spend_total'), ('count', None))
    """
    kind, _, column = text.partition(":")
    if kind == "count" and not column:
        return "count", None
    if kind in ("sum", "mean") and column:
        return kind, column
    raise PolicyViolation(f"unknown DP aggregate {text!r}: use count, sum:COLUMN or mean:COLUMN")


class DifferentialPrivacyQueries:
    """DP releases and the budget ledger of one store."""

    def __init__(self, ctx: StoreContext, catalog: Catalog) -> None:
        self.ctx = ctx
        self.catalog = catalog
        self._calibrations: dict[str, Any] = {}
        self._truncation: tuple[tuple[str, str, tuple[str, ...]], pa.Table] | None = None

    # --- the budget --------------------------------------------------------------------------

    def _rules(self, grant: Grant) -> tuple[Policy, DifferentialPrivacy]:
        """The DP rules that govern a grant; refused (and audited) where there are none for its purpose."""
        policy = grant.policy

        def refuse(why: str) -> NoReturn:
            self.ctx.access.refuse(grant.snapshot, grant.view, grant.features, grant.purpose, grant.access, why)

        if policy is None or policy.differential_privacy is None or policy.differential_privacy.budget is None:
            refuse(
                f"feature view '{grant.view.view.name}' has no differential-privacy budget in an approved policy: add "
                "differential_privacy with a budget to its policy and approve it"
            )
        assert policy is not None and policy.differential_privacy is not None
        dp = policy.differential_privacy
        if grant.purpose not in dp.purposes:
            refuse(
                f"purpose '{grant.purpose}' is not among the differential-privacy purposes of policy "
                f"'{policy.id}' ({', '.join(dp.purposes) or 'none'})"
            )
        return policy, dp

    def _budget_key(self, policy: Policy, dp: DifferentialPrivacy, purpose: str, consumer: str | None) -> str:
        return f"{policy.id}/{purpose}/{consumer if dp.per_consumer else '*'}"

    def budget(self, *, purpose: str | None = None) -> list[BudgetStatus]:
        """Every budget with a charge, or the budget of every DP purpose of the policies in force."""
        snapshot = self.ctx.access.snapshot()
        now = self.ctx.now()
        statuses: list[BudgetStatus] = []
        seen: set[str] = set()
        charged = {(e.policy_id, e.budget_key) for e in self.ctx.registry.dp_entries()}
        for approval in snapshot.in_force:
            policy = approval.policy
            dp = policy.differential_privacy
            if dp is None or dp.budget is None:
                continue
            keys = {key for policy_id, key in charged if policy_id == policy.id}
            keys |= {self._budget_key(policy, dp, p, None) for p in dp.purposes if not dp.per_consumer}
            for key in sorted(keys):
                _pid, name, consumer = key.split("/", 2)
                if key in seen or (purpose is not None and name != purpose):
                    continue
                seen.add(key)
                statuses.append(self._status(policy, dp, key, name, None if consumer == "*" else consumer, now))
        return statuses

    def _status(
        self, policy: Policy, dp: DifferentialPrivacy, key: str, purpose: str, consumer: str | None, now: datetime
    ) -> BudgetStatus:
        assert dp.budget is not None
        since = now - dp.budget.period if dp.budget.period else None
        entries = [e for e in self.ctx.registry.dp_entries(budget_key=key) if since is None or e.created_at > since]
        spent = sum(e.epsilon for e in entries if e.status != "reserved")
        reserved = sum(e.epsilon for e in entries if e.status == "reserved")
        refresh = min((e.created_at for e in entries), default=None)
        return BudgetStatus(
            policy.id,
            purpose,
            consumer,
            dp.budget.epsilon,
            spent,
            reserved,
            max(dp.budget.epsilon - spent - reserved, 0.0),
            dp.budget.delta,
            sum(e.delta for e in entries),
            dp.budget.period.total_seconds() / 86400 if dp.budget.period else None,
            refresh + dp.budget.period if refresh is not None and dp.budget.period else None,
        )

    # --- queries -----------------------------------------------------------------------------

    def query(
        self,
        view: str,
        *,
        aggregates: Sequence[str],
        group_by: Sequence[str] = (),
        purpose: str | None,
        epsilon: float | None = None,
        delta: float | None = None,
        dry_run: bool = False,
        consumer: str | None = None,
        fresh: bool = False,
        window: tuple[datetime, datetime] | None = None,
    ) -> DpRelease:
        """A DP release of `aggregates` over `view`, optionally grouped (see the module docstring);
        `fresh` pays for a new draw instead of returning the stored release of the same query and data;
        `window` (start, end) keeps rows with start <= event time < end."""
        import opendp.prelude as dp_lib

        dp_lib.enable_features("contrib")
        ctx = self.ctx
        vv = self.catalog.get_view(view)
        specs = [parse_aggregate(a) for a in aggregates]
        if not specs:
            raise PolicyViolation("name at least one aggregate: count, sum:COLUMN or mean:COLUMN")
        columns = [c for _k, c in specs if c is not None]
        self.catalog.check_features(vv, [*columns, *[g for g in group_by if g not in vv.join_keys]], pinned="@" in view)
        grant = ctx.access.grant(ctx.access.snapshot(), vv, [*columns, *group_by], purpose, ("dp_aggregates",))
        policy, rules = self._rules(grant)
        assert rules.budget is not None
        limit = rules.per_release.epsilon if rules.per_release is not None else rules.budget.epsilon
        epsilon = limit if epsilon is None else float(epsilon)
        if not 0 < epsilon <= limit:
            raise PolicyViolation(
                f"epsilon {epsilon} is not allowed: policy '{policy.id}' allows at most {limit} per release"
            )
        private_groups = [g for g in group_by if rules.groups_of(g) is None]
        if private_groups and not delta:
            raise PolicyViolation(
                f"group columns {', '.join(private_groups)} have no public values in policy '{policy.id}', so their groups are "
                "chosen by DP partition selection, which needs a delta: pass delta=... (e.g. 1e-7), or declare the values "
                "under differential_privacy.public_groups"
            )
        delta = float(delta or 0.0)
        if delta > rules.budget.delta:
            raise PolicyViolation(
                f"delta {delta} exceeds the budget's delta {rules.budget.delta} in policy '{policy.id}'"
            )
        if group_by and not any(k == "count" for k, _c in specs):
            specs = [("count", None), *specs]  # a grouped release carries its count: min_group_size needs it
        bounds_of: dict[str, tuple[int, int]] = {}
        scales: dict[str, int] = {}
        for kind, column in specs:
            if column is None:
                continue
            clamp = rules.contribution_bounds.clamp_of(column)
            if clamp is None:
                raise PolicyViolation(
                    f"{kind}:{column} needs clamp bounds for '{column}' in policy '{policy.id}' "
                    "(differential_privacy.contribution_bounds.clamp)"
                )
            scale = scales[column] = 10**rules.decimals if vv.view.feature(column).dtype.startswith("float") else 1
            bounds_of[column] = (int(round(clamp[0] * scale)), int(round(clamp[1] * scale)))
        rows_per_entity = rules.contribution_bounds.max_rows_per_subject or 1
        groups_per_entity = rules.contribution_bounds.max_groups_per_subject if group_by else None
        shape = json.dumps(
            {
                "view": vv.ref,
                "specs": specs,
                "group_by": list(group_by),
                "epsilon": epsilon,
                "delta": delta,
                "bounds": bounds_of,
                "k": rows_per_entity,
                "g": groups_per_entity,
                "decimals": rules.decimals,
                "groups": [rules.groups_of(g) for g in group_by],
                "policy": policy.sha256,
                "window": [w.isoformat() for w in window] if window else None,
            },
            sort_keys=True,
        )
        query_hash = hashlib.sha256(shape.encode()).hexdigest()
        public = all(rules.groups_of(g) is not None for g in group_by)
        if public:  # exact sums per public group in DuckDB, OpenDP's vector Laplace on them (dp_vectors)
            vectors = dp_vectors.plan(specs, bounds_of, rows_per_entity, epsilon)
            statistics = [Statistic(*row) for row in vectors.statistics(specs)]
        else:  # partition selection: OpenDP's Polars context over the rows
            measurement, summary = self._calibrate(
                query_hash, specs, list(group_by), rules, epsilon, delta, bounds_of, rows_per_entity, grant
            )
            statistics = [
                Statistic(
                    str(r["column"]),
                    str(r["aggregate"]),
                    str(r["distribution"]),
                    float(r["scale"]),
                    float(r["accuracy"]),
                    int(r["threshold"]) if r.get("threshold") is not None else None,
                )
                for r in summary
            ]
        bias = (
            f"unknown: each entity keeps at most {rows_per_entity} rows, drawn at random; how many rows that leaves "
            "out is not measured (it would read the data outside the budget)"
        )
        base = dict(
            view=vv.ref,
            aggregates=list(aggregates),
            group_by=list(group_by),
            epsilon=epsilon,
            delta=delta,
            statistics=statistics,
            truncation_bias=bias,
        )
        if dry_run:
            ctx.audit.append(
                ctx.actor,
                "dp_dry_run",
                vv.ref,
                purpose=purpose,
                details={"epsilon": epsilon, "delta": delta, "aggregates": list(aggregates)},
            )
            return DpRelease(
                table=None,
                cached=False,
                dry_run=True,
                spent=0.0,
                suppressed_groups=0,
                ledger_id=None,
                **base,  # type: ignore[arg-type]
            )
        data_version = self._data_version(grant)
        key = self._budget_key(policy, rules, str(purpose), consumer or ctx.actor)
        for entry in [] if fresh else ctx.registry.dp_entries(query_hash=query_hash):
            if (
                entry.status == "spent"
                and entry.data_version == data_version
                and entry.budget_key == key
                and entry.release
            ):
                ctx.audit.append(
                    ctx.actor,
                    "dp_release",
                    vv.ref,
                    purpose=purpose,
                    details={"cached": True, "ledger": entry.id, "epsilon": 0.0},
                )
                return DpRelease(
                    table=pa.Table.from_pylist(entry.release["rows"]),
                    cached=True,
                    dry_run=False,
                    spent=0.0,
                    suppressed_groups=int(entry.release["suppressed"]),
                    ledger_id=entry.id,
                    **base,  # type: ignore[arg-type]
                )
        entry_id = self._reserve(
            key, policy, rules, str(purpose), consumer or ctx.actor, epsilon, delta, vv.ref, query_hash, data_version
        )
        try:
            rows = self._truncated(
                grant, list(group_by), bounds_of, scales, rows_per_entity, groups_per_entity, window, summed=public
            )
            if public:
                keys = list(itertools.product(*(rules.groups_of(g) or () for g in group_by)))
                released = dp_vectors.release(vectors, rows, list(group_by), keys, specs, bounds_of)
            else:
                released = measurement(_lazy(rows)).collect()
            table, suppressed = self._finish(released, specs, list(group_by), rules, scales)
        except BaseException:
            ctx.registry.settle_dp(
                entry_id, status="failed", release=None
            )  # the data may have been read: still charged
            ctx.audit.append(
                ctx.actor,
                "dp_release_failed",
                vv.ref,
                purpose=purpose,
                details={"ledger": entry_id, "epsilon": epsilon},
            )
            raise
        ctx.registry.settle_dp(entry_id, status="spent", release={"rows": table.to_pylist(), "suppressed": suppressed})
        ctx.audit.append(
            ctx.actor,
            "dp_release",
            vv.ref,
            purpose=purpose,
            details={
                "ledger": entry_id,
                "epsilon": epsilon,
                "delta": delta,
                "aggregates": list(aggregates),
                "group_by": list(group_by),
                "groups": table.num_rows,
                "suppressed": suppressed,
            },
        )
        return DpRelease(
            table=table,
            cached=False,
            dry_run=False,
            spent=epsilon,
            suppressed_groups=suppressed,
            ledger_id=entry_id,
            **base,  # type: ignore[arg-type]
        )

    def release_view(
        self,
        target: str,
        *,
        source: str,
        aggregates: Sequence[str],
        group_by: str,
        purpose: str | None,
        window: tuple[datetime, datetime],
        epsilon: float | None = None,
        delta: float | None = None,
        ingest: Callable[[str, pa.Table], Any],
    ) -> tuple[DpRelease, Any]:
        """A DP aggregate feature view: release `aggregates` of `source` by `group_by` for one time
        window (charged to the budget) and ingest it into `target`, a normal view whose entity's key is
        the group column and whose event time is the window's end, so it joins point-in-time by group."""
        vv = self.catalog.get_view(target)
        if list(vv.join_keys) != [group_by]:
            raise PolicyViolation(
                f"{vv.ref} is keyed by {', '.join(vv.join_keys)}: a DP aggregate view of '{source}' by "
                f"'{group_by}' needs an entity whose one join key is '{group_by}'"
            )
        release = self.query(
            source,
            aggregates=aggregates,
            group_by=[group_by],
            purpose=purpose,
            epsilon=epsilon,
            delta=delta,
            window=window,
        )
        assert release.table is not None
        table = release.table
        missing = [f for f in vv.view.feature_names if f not in table.column_names]
        if missing:
            raise PolicyViolation(
                f"{vv.ref} has features {', '.join(missing)} that the release does not have "
                f"(it has {', '.join(table.column_names)})"
            )
        rows = table.select([group_by, *vv.view.feature_names]).append_column(
            vv.view.timestamp_field, pa.array([window[1]] * table.num_rows, pa.timestamp("us", tz="UTC"))
        )
        return release, ingest(target, rows)

    # --- steps -------------------------------------------------------------------------------

    def _reserve(
        self,
        key: str,
        policy: Policy,
        rules: DifferentialPrivacy,
        purpose: str,
        consumer: str,
        epsilon: float,
        delta: float,
        view: str,
        query_hash: str,
        data_version: str,
    ) -> int:
        assert rules.budget is not None
        budget = rules.budget
        now = self.ctx.now()
        since = now - budget.period if budget.period else None

        def check(entries: list[DpLedgerRow]) -> None:
            spent = sum(e.epsilon for e in entries)
            spent_delta = sum(e.delta for e in entries)
            if spent + epsilon > budget.epsilon + 1e-12 or spent_delta + delta > budget.delta + 1e-15:
                refresh = min((e.created_at for e in entries), default=None)
                when = refresh + budget.period if refresh is not None and budget.period else None
                remaining = max(budget.epsilon - spent, 0.0)
                raise PrivacyBudgetExceeded(
                    f"privacy budget of purpose '{purpose}' under policy '{policy.id}' is too small for this release: "
                    f"epsilon {epsilon:g} asked, {remaining:g} of {budget.epsilon:g} left"
                    + (f" (delta {max(budget.delta - spent_delta, 0):g} left)" if delta else "")
                    + (
                        f"; it refreshes from {when:%Y-%m-%d %H:%M} UTC, when the oldest charge leaves the "
                        f"{budget.period.days}-day period"
                        if when and budget.period
                        else "; this budget never refreshes"
                    ),
                    spent=spent,
                    budget=budget.epsilon,
                    remaining=remaining,
                    refreshes_at=when,
                )

        entry = {
            "policy_id": policy.id,
            "purpose": purpose,
            "consumer": consumer if rules.per_consumer else None,
            "epsilon": epsilon,
            "delta": delta,
            "view": view,
            "query_hash": query_hash,
            "data_version": data_version,
            "release": None,
            "created_at": now,
        }
        try:
            return self.ctx.registry.reserve_dp(key, since, check, entry)
        except PrivacyBudgetExceeded as exc:
            self.ctx.audit.append(
                self.ctx.actor,
                "dp_refused",
                view,
                purpose=purpose,
                details={"epsilon": epsilon, "remaining": exc.remaining, "reason": str(exc)},
            )
            raise

    def _data_version(self, grant: Grant) -> str:
        """What a release depends on: the view version's last batch and row count (erasure and
        retention delete rows without a new batch), and the retention cutoff's day."""
        last, rows = self.ctx.offline.data_version(grant)
        cutoff = grant.cutoff("offline")
        return f"{grant.view.ref}:{last}:{rows}:{cutoff.date().isoformat() if cutoff else '-'}"

    def _truncated(
        self,
        grant: Grant,
        group_by: list[str],
        bounds: dict[str, tuple[int, int]],
        scales: dict[str, int],
        rows_per_entity: int,
        groups_per_entity: int | None,
        window: tuple[datetime, datetime] | None,
        *,
        summed: bool,
    ) -> pa.Table:
        """The view's rows as the mechanisms get them: at most `rows_per_entity` per entity (drawn at
        random) in at most `groups_per_entity` of its groups (drawn at random), values clamped and as fixed-point integers; `summed`: their exact row count (``_n``)
        and sums (``_s_<column>``) per group instead, computed in DuckDB. The last result is kept for
        the same data version and shape (releases over one truncated dataset compose like any
        others; the window over every entity is the slow part, 2-5 s on 10M rows)."""
        vv = grant.view
        key = quote(subject_key(vv))
        ts = quote(vv.view.timestamp_field)
        values = []
        for column, (lo, hi) in bounds.items():
            scaled = f"CAST({quote(column)} AS DOUBLE) * {scales[column]}"
            values.append(f"CAST(round(least(greatest({scaled}, {lo}), {hi})) AS BIGINT) AS {quote(column)}")
        groups = [f"CAST({quote(g)} AS VARCHAR) AS {quote(g)}" for g in group_by]
        conditions: list[str] = []
        params: list[object] = []  # rows past retention are not in the granted view at all
        if window is not None:
            conditions.append(f"{ts} >= ? AND {ts} < ?")
            params += list(window)
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        select = ", ".join([*groups, *values]) or "1 AS _one"
        names = ", ".join([*(quote(g) for g in group_by), *(quote(c) for c in bounds)]) or "_one"
        # Partitioning by the key's 64-bit hash is twice as fast as by the string; two keys with one
        # hash share one bound of K rows, which only lowers their contribution.
        rows = f"SELECT hash({key}) AS _fs_entity, random() AS _fs_r, {select} FROM {GRANTED} {where}"
        if group_by and groups_per_entity:  # first the groups each entity counts in, chosen at random
            by = ", ".join(quote(g) for g in group_by)
            rows = (
                f"WITH _fs_rows AS MATERIALIZED ({rows}), _fs_groups AS (SELECT _fs_entity, {by} FROM (SELECT *, "
                f"random() AS _fs_gr FROM (SELECT DISTINCT _fs_entity, {by} FROM _fs_rows)) QUALIFY row_number() OVER "
                f"(PARTITION BY _fs_entity ORDER BY _fs_gr) <= {int(groups_per_entity)}) "
                f"SELECT * FROM _fs_rows SEMI JOIN _fs_groups USING (_fs_entity, {by})"
            )
        sql = (
            f"SELECT {names} FROM ({rows}) QUALIFY row_number() OVER (PARTITION BY _fs_entity ORDER BY _fs_r) "
            f"<= {int(rows_per_entity)}"
        )
        if summed:
            sums = "".join(f", sum({quote(c)})::BIGINT AS {quote('_s_' + c)}" for c in bounds)
            by = ", ".join(quote(g) for g in group_by)
            sql = f"SELECT {by + ', ' if by else ''}count(*) AS _n{sums} FROM ({sql})" + (
                f" GROUP BY {by}" if by else ""
            )
        cache_key = (self._data_version(grant), sql, tuple(map(str, params)))
        if self._truncation is not None and self._truncation[0] == cache_key:
            return self._truncation[1]
        table = self.ctx.offline.query(grant, sql, params)
        self._truncation = (cache_key, table) if table.num_rows <= MAX_CACHED_ROWS else None
        return table

    def _calibrate(
        self,
        query_hash: str,
        specs: list[tuple[str, str | None]],
        group_by: list[str],
        rules: DifferentialPrivacy,
        epsilon: float,
        delta: float,
        bounds: dict[str, tuple[int, int]],
        rows_per_entity: int,
        grant: Grant,
    ) -> tuple[Any, list[dict[str, Any]]]:
        """OpenDP's measurement and its accuracy summary for a query shape, built once per shape
        on an empty frame of the same schema (plan errors surface here, before any reservation)."""
        if query_hash in self._calibrations:
            return self._calibrations[query_hash]  # type: ignore[no-any-return]
        import opendp.prelude as dp_lib
        import polars as pl

        dp: Any = dp_lib  # OpenDP's prelude and Polars' .dp namespace are not typed
        schema = {**{g: pl.String for g in group_by}, **{c: pl.Int64 for c in bounds}}
        empty = pl.LazyFrame(schema=schema or {"_one": pl.Int32})
        loss = dp.loss_of(epsilon=epsilon, delta=delta) if delta else dp.loss_of(epsilon=epsilon)
        groups = rules.contribution_bounds.max_groups_per_subject
        contributions: Any = (
            rows_per_entity
            if not (group_by and groups)
            else [dp.polars.Bound(per_group=rows_per_entity), dp.polars.Bound(by=group_by, num_groups=groups)]
        )
        context = dp.Context.compositor(
            data=empty,
            privacy_unit=dp.unit_of(contributions=contributions),
            privacy_loss=loss,
            split_evenly_over=1,
            margins=[dp.polars.Margin(max_length=MAX_ROWS)],
        )
        exprs = []
        for kind, column in specs:
            if kind == "count":
                exprs.append(dp.len(signed=True).alias("count"))
            else:
                assert column is not None
                stat: Any = pl.col(column).fill_null(0)
                exprs.append(
                    (stat.dp.sum(bounds[column]) if kind == "sum" else stat.dp.mean(bounds[column])).alias(
                        f"{kind}_{column}"
                    )
                )
        query: Any = context.query()
        if group_by:
            query = query.group_by(group_by).agg(*exprs)
            if all(rules.groups_of(g) is not None for g in group_by):  # every combination of the public values
                combos = itertools.product(*(rules.groups_of(g) or () for g in group_by))
                keys = pl.DataFrame(
                    [dict(zip(group_by, combo, strict=True)) for combo in combos],
                    schema={g: pl.String for g in group_by},
                )
                query = query.with_keys(keys)
        else:
            query = query.select(*exprs)
        summary = query.summarize(alpha=ALPHA).to_dicts()
        measurement: Any = query.resolve()
        measurement(empty).collect()  # a plan error shows here, on no data, before any budget is reserved
        self._calibrations[query_hash] = (measurement, summary)
        return measurement, summary

    @staticmethod
    def _finish(
        released: Any,
        specs: list[tuple[str, str | None]],
        group_by: list[str],
        rules: DifferentialPrivacy,
        scales: dict[str, int],
    ) -> tuple[pa.Table, int]:
        """Decode fixed-point values and suppress groups smaller than min_group_size (post-processing, free)."""
        import polars as pl

        frame = released
        for kind, column in specs:
            if column is not None and scales[column] != 1:
                frame = frame.with_columns((pl.col(f"{kind}_{column}") / scales[column]).alias(f"{kind}_{column}"))
        suppressed = 0
        if group_by and rules.min_group_size:
            small = frame.filter(pl.col("count") < rules.min_group_size)
            suppressed = small.height
            frame = frame.filter(pl.col("count") >= rules.min_group_size)
        if group_by:
            frame = frame.sort(group_by)
        return frame.to_arrow(), suppressed


def _lazy(rows: pa.Table) -> Any:
    import polars as pl

    frame = pl.from_arrow(rows)
    assert isinstance(frame, pl.DataFrame)
    return frame.lazy()
