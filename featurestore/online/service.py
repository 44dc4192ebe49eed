"""Online serving: materialization into the online store, and lookups through serving plans
built from online read grants (re-decided at most every :data:`~.serving.PLAN_TTL_SECONDS`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from ..apply_plan import Plan
from ..catalog import Catalog
from ..context import Progress, StoreContext, system_clock
from ..errors import FeatureStoreError, NotFoundError, PolicyViolation
from ..governance import MAINTAIN, MATERIALIZE, WRITE, Grant
from ..governance.subjects import Subjects
from ..historical import Historical
from ..offline import GRANTED, POSITION
from ..privacy.pseudonymize import token_context
from ..privacy.treatments import treatment_of
from ..versions import ViewVersion, online_table
from . import VALUES_AT, OnlineStore, Row
from .lookup import (
    EPOCH,
    PLAN_TTL_SECONDS,
    KeyForm,
    OnlineResponse,
    ServingPlan,
    ViewServing,
    converter,
    lookup,
    single_lookup,
)
from .lookup import entity_rows as entity_rows_of
from .materialize import CHUNK_ROWS, chunks_of, copy_rows, latest_rows_sql, pushed_rows
from .opening import open_online_store
from .read_audit import ReadAudit

if TYPE_CHECKING:
    import duckdb

MICROSECOND = timedelta(microseconds=1)
CLEAR_GENERATION = 1 << 62
"""A generation above any a materialization writes: pruning below it removes every row."""


@dataclass(frozen=True)
class MaterializeResult:
    """What one view version's materialization wrote."""

    view: str
    version: int
    entities: int
    full: bool
    end: datetime
    dropped_erased: int = 0
    """Entities of erased subjects left out (their tombstones matched)."""


def effective_ttl_us(ttl: timedelta | None, retention: timedelta | None) -> int | None:
    """How old an online value may be when served, in microseconds: the view's TTL, or the
    policy's online retention if that is shorter (a value past retention is never served)."""
    limits = [x for x in (ttl, retention) if x is not None]
    return min(limits) // MICROSECOND if limits else None


def to_us(moment: datetime) -> int:
    """Microseconds since the epoch."""
    return (moment - EPOCH) // MICROSECOND


class OnlineService:
    """Materialization and online lookups of one store.

    Args:
        ctx: The store's parts.
        catalog: Its definitions.
        historical: Its historical retrieval (for feature references).
        online_store: The online store to use (default: the one the config names, opened on first use).
    """

    def __init__(
        self, ctx: StoreContext, catalog: Catalog, historical: Historical, online_store: OnlineStore | None = None
    ) -> None:
        self.ctx = ctx
        self.catalog = catalog
        self.historical = historical
        self._store = online_store
        self._plans: dict[tuple[Any, ...], ServingPlan] = {}
        self._scratch: duckdb.DuckDBPyConnection | None = None
        """The in-memory DuckDB database pushes rank their rows in (made on first push)."""
        self.reads = ReadAudit(ctx.audit, ctx.actor, background=ctx.config.root is not None)
        clock = ctx.clock
        self._now_us: Callable[[], int] = (
            (lambda: time.time_ns() // 1000) if clock is system_clock else (lambda: to_us(clock()))
        )
        """Now in microseconds: the store clock's, read as an integer when it is the wall clock."""

    def _opened(self) -> OnlineStore:
        """The online store (opened on first use). Private: every path from outside this package
        goes through a method that takes a Grant."""
        store = self._store
        if store is None:
            store = self._store = open_online_store(self.ctx.config.online, self.ctx.config.root)
        return store

    @staticmethod
    def _table(grant: Grant, access: str, vv: ViewVersion) -> str:
        """The online table of `vv`, if `grant` covers `access` to that view version; PolicyViolation
        otherwise (a grant for one view version cannot be spent on another's table)."""
        table = online_table(grant.require(access).view)
        if online_table(vv) != table:
            raise PolicyViolation(
                f"a grant for {grant.view.ref} cannot be used on the online rows of {vv.ref} ({online_table(vv)})"
            )
        return table

    def close(self) -> None:
        """Record pending online-read audit entries and close the online store."""
        self.reads.close()
        if self._scratch is not None:
            self._scratch.close()
        if self._store is not None:
            self._store.close()

    def materialize(
        self,
        views: Sequence[str] | None = None,
        *,
        end: datetime | None = None,
        full: bool = False,
        progress: Progress | None = None,
    ) -> list[MaterializeResult]:
        """Copy, per entity, the latest value as of `end` (default now) to the online store."""
        ctx = self.ctx
        end = end or ctx.now()
        if end.tzinfo is None:
            raise FeatureStoreError("end must be time-zone aware")
        targets = [self.catalog.get_view(v) for v in views] if views else self.catalog.list_views()
        snapshot = ctx.access.snapshot()
        grants = [ctx.access.grant(snapshot, vv, vv.view.feature_names, None, (MATERIALIZE,)) for vv in targets]
        results: list[MaterializeResult] = []
        done = 0

        def advance(rows: int) -> None:
            nonlocal done
            done += rows
            if progress is not None:
                progress(done, None)

        for grant in grants:
            vv = grant.require(MATERIALIZE).view
            table = online_table(vv)
            features = {f.name: f.dtype for f in vv.view.features}
            self._opened().ensure_table(table, list(features))
            state = ctx.registry.materialization(vv.view.name, vv.version)
            rewind = state is not None and end < state.end
            rebuild = full or state is None or rewind
            # A version's table can hold rows carried from older versions, recorded under their tables.
            tables = [o.table for o in self.catalog.view_versions(vv.view.name) if o.version <= vv.version]
            generation = (state.generation if state is not None else 0) + 1

            sql = latest_rows_sql(
                GRANTED,
                list(vv.join_keys),
                vv.view.timestamp_field,
                features,
                since_batch=None if rebuild or state is None else state.last_batch_id,
                previous_end=None if rebuild or state is None else state.end,
                created_field=vv.view.created_timestamp_field,
                position=POSITION,
            )
            # The store is held while rows stream (writers wait): one consistent snapshot.
            with ctx.offline.stream(grant, sql, {"end": end}, batch_size=CHUNK_ROWS, last_batch_of=tables) as (
                last_batch,
                batches,
            ):
                chunks = chunks_of(batches)
                erased = ctx.registry.tombstones(vv.view.entity)
                dropped = [0]
                if erased:  # an erased subject never comes back online, even from rows ingested before its erasure
                    chunks = self._without_erased(chunks, grant, erased, dropped)
                count = copy_rows(chunks, self._opened(), table, generation, advance, newer_only=not rewind)
            if rebuild:  # only now: readers saw old rows until each new one replaced it
                self._opened().prune(table, generation)
            ctx.registry.set_materialization(
                vv.view.name,
                vv.version,
                last_batch_id=last_batch,
                end=end,
                entities=count,
                generation=generation,
                updated_at=ctx.now(),
            )
            ctx.audit.append(
                ctx.actor, "materialize", vv.ref, details={"entities": count, "full": rebuild, "end": end.isoformat()}
            )
            self._plans.clear()
            results.append(MaterializeResult(vv.view.name, vv.version, count, rebuild, end, dropped[0]))
        return results

    def push(self, grant: Grant, tables: Sequence[pa.Table]) -> int:
        """Write validated, treated rows of the grant's view version (a write grant: the one the
        rows were prepared under) straight to the online store (the latest row per entity up to
        now, by the materialization rule), never over a row with a later event time.
        Returns how many entities were written."""
        ctx = self.ctx
        vv = grant.require(WRITE).view
        table = online_table(vv)
        self._opened().ensure_table(table, vv.view.feature_names)
        state = ctx.registry.materialization(vv.view.name, vv.version)
        if state is None:  # the next materialize recomputes every entity from batch 0
            ctx.registry.set_materialization(
                vv.view.name, vv.version, last_batch_id=0, end=EPOCH, entities=0, generation=0, updated_at=ctx.now()
            )
        if (
            self._scratch is None
        ):  # an in-memory database for pushes, made once: a connection costs ~13 ms, a cursor ~0.07
            import duckdb

            self._scratch = duckdb.connect(":memory:")
        cursor = self._scratch.cursor()
        try:
            rows = pushed_rows(cursor, tables, vv, ctx.now())
        finally:
            cursor.close()
        count = self._opened().write(table, rows, state.generation if state is not None else 0, newer_only=True)
        self._plans.clear()
        return count

    def carry_forward(self, plan: Plan) -> None:
        """Start each new version that `apply` carried forward with the old version's online rows
        and watermark, so its old features serve the same values before and after it is materialized.
        The copies are generation 0: a later full rebuild prunes any it does not write again."""
        ctx = self.ctx
        for change in plan.changes:
            if change.carry_from is None or change.version is None:
                continue
            old = self.catalog.get_view(f"{change.name}@v{change.carry_from}")
            state = ctx.registry.materialization(old.view.name, old.version)
            if state is None:
                continue
            new = self.catalog.get_view(f"{change.name}@v{change.version}")
            table = online_table(new)
            self._opened().ensure_table(table, new.view.feature_names)
            columns = {f: f if f in old.view.feature_names else None for f in new.view.feature_names}
            count = self._opened().copy_table(online_table(old), table, columns, 0)
            ctx.registry.set_materialization(
                new.view.name,
                new.version,
                last_batch_id=state.last_batch_id,
                end=state.end,
                entities=count,
                generation=0,
                updated_at=ctx.now(),
            )
            ctx.audit.append(ctx.actor, "materialize", new.ref, details={"entities": count, "carried_from": old.ref})
            self._plans.clear()

    # --- governed maintenance: every method takes the Grant of the view version it touches -----

    def present_keys(self, grant: Grant, vv: ViewVersion, keys: Sequence[str]) -> list[str]:
        """Those of `keys` (stored forms of entity keys) that have a row online for `vv`, in order
        (erasure and lineage). Needs a maintenance grant for `vv`."""
        table = self._table(grant, MAINTAIN, vv)
        keys = list(keys)
        return [k for k, row in zip(keys, self._opened().read(table, keys), strict=True) if row is not None]

    def delete_keys(self, grant: Grant, vv: ViewVersion, keys: Sequence[str]) -> int:
        """Remove these entity keys of `vv` for good, no copy left in the store's files (erasure);
        returns how many rows were removed. Needs a maintenance grant for erasure of `vv`."""
        table = self._table(grant.require_task("erasure"), MAINTAIN, vv)
        return self._opened().delete(table, list(keys))

    def delete_older(self, grant: Grant, vv: ViewVersion, cutoff: datetime, keep: Sequence[str] = ()) -> int:
        """Remove the rows of `vv` whose event time is before `cutoff` (retention), except the
        entity keys in `keep` (legal holds); returns how many. Needs a maintenance grant for retention of `vv`."""
        table = self._table(grant.require_task("retention"), MAINTAIN, vv)
        return self._opened().delete_older(table, to_us(cutoff), list(keep))

    def clear(self, grant: Grant, vv: ViewVersion) -> int:
        """Remove every row of `vv`'s online table (treat-existing: raw copies go until the view is
        materialized again); returns how many. Needs a treat-existing maintenance grant for `vv`."""
        table = self._table(grant.require_task("treat_existing"), MAINTAIN, vv)
        return self._opened().prune(table, CLEAR_GENERATION)

    def probe(self, grant: Grant, vv: ViewVersion) -> None:
        """Read one stored key of `vv` and discard it: raises if the table cannot be read
        (``doctor``). Needs a maintenance grant for the doctor's check of `vv`."""
        self._opened().sample_keys(self._table(grant.require_task("doctor"), MAINTAIN, vv), 1, 0)

    def sample_rows(self, grant: Grant, vv: ViewVersion, n: int, seed: int) -> tuple[list[str], list[Row | None]]:
        """Up to `n` entity keys of `vv`, a reproducible sample, and their rows as read back
        (the consistency check). Needs a grant with online access to `vv`."""
        table = self._table(grant, "online", vv)
        store = self._opened()
        keys = store.sample_keys(table, n, seed)
        return keys, store.read(table, keys)

    def _without_erased(
        self, chunks: Iterator[list[Row]], grant: Grant, erased: set[str], dropped: list[int]
    ) -> Iterator[list[Row]]:
        subjects = Subjects(self.ctx.keys, self.ctx.treatments)
        for chunk in chunks:
            keys = pa.chunked_array([pa.array([row[0] for row in chunk], pa.string())])
            mask = subjects.matching(grant.policy, grant.view, keys, erased).to_pylist()
            kept = [row for row, hit in zip(chunk, mask, strict=True) if not hit]
            dropped[0] += len(chunk) - len(kept)
            if kept:
                yield kept

    def materialized_views(self) -> list[str]:
        """References (``name@vN``) of the view versions in the online store."""
        return [
            vv.ref
            for vv in self.catalog.list_views()
            if self.ctx.registry.materialization(vv.view.name, vv.version) is not None
        ]

    def get_online_features(
        self,
        entity_rows: Mapping[str, Any] | Sequence[Mapping[str, Any]] | pa.Table,
        features: Sequence[str] | str,
        *,
        purpose: str | None = None,
        full_feature_names: bool = False,
    ) -> OnlineResponse:
        """Latest feature values for entities, with a status per value (`features` may name a
        feature service: ``"service:fraud_v1"``)."""
        cache_key = ((features,) if type(features) is str else tuple(features), purpose, full_feature_names)
        plan = self._plans.get(cache_key)
        if plan is None or time.monotonic() - plan.built_at >= PLAN_TTL_SECONDS:
            plan = self._build_plan(cache_key)
        single = plan.single
        if single is not None:  # one entity row, as a row or a list of one (HTTP bodies)
            one = (
                entity_rows
                if type(entity_rows) is dict
                else (
                    entity_rows[0]
                    if type(entity_rows) is list and len(entity_rows) == 1 and type(entity_rows[0]) is dict
                    else None
                )
            )
            if one is not None:
                response = single(one, self._now_us())
                if response is not None:
                    self.reads.record_read(plan.read_of_one)
                    return response
        rows = entity_rows_of(entity_rows)
        response = lookup(plan, rows, self._opened().read, self._now_us())
        self.reads.record(purpose, plan.audit_key, len(rows))
        return response

    def _build_plan(self, cache_key: tuple[tuple[str, ...], str | None, bool]) -> ServingPlan:
        """Decide a request's plan from one policy snapshot, and cache it (a cached plan is used
        until it is PLAN_TTL_SECONDS old: :meth:`get_online_features` checks)."""
        features, purpose, full_names = cache_key
        requests = self.historical.requests(features, [], full_names)
        parts = self.historical.grant_parts(self.ctx.access.snapshot(), requests, purpose, ("online",))
        views: list[ViewServing] = []
        for part in parts:
            vv, policy = part.vv, part.grant.policy
            if self.ctx.registry.materialization(vv.view.name, vv.version) is None:
                raise NotFoundError(f"{vv.ref} is not materialized: run `featurestore materialize {vv.ref}`")
            stored = vv.view.feature_names
            key_forms = []
            for key in vv.join_keys:
                rule = policy.rule(key) if policy is not None else None
                makers: tuple[Callable[[str], str], ...] = ()
                if rule is not None and policy is not None:
                    context = token_context(policy.id, vv.view.name, key)
                    makers = treatment_of(rule).lookup_forms(rule, self.ctx.keys, context=context)
                key_forms.append(
                    KeyForm(
                        key,
                        rule.treatment if rule is not None and makers else None,
                        vv.join_keys[key],
                        rule.normalize if rule else "none",
                        rule.region if rule else None,
                        makers=makers,
                    )
                )
            views.append(
                ViewServing(
                    grant=part.grant,
                    ref=vv.ref,
                    table=online_table(vv),
                    keys=tuple(key_forms),
                    positions=tuple(VALUES_AT + stored.index(f) for f in part.grant.features),
                    outputs=tuple(part.outputs),
                    converters=tuple(converter(vv.view.feature(f).dtype) for f in part.grant.features),
                    ttl_us=effective_ttl_us(part.ttl, part.grant.retention("online")),
                )
            )
        audit_key = tuple(f"{v.ref}:{f}" for v, p in zip(views, parts, strict=True) for f in p.grant.features)
        plan = ServingPlan(
            views, [o for v in views for o in v.outputs], time.monotonic(), audit_key, (purpose, audit_key, 1)
        )
        if len(views) == 1 and len(views[0].keys) == 1 and views[0].keys[0].treatment is None and views[0].positions:
            view, stored = views[0], parts[0].vv.view.feature_names
            plan.single = single_lookup(
                view,
                self._opened().point_reader(
                    view.table, [stored[p - VALUES_AT] for p in view.positions], view.positions
                ),
            )
        self._plans[cache_key] = plan
        return plan
