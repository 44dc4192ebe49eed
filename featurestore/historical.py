"""Historical retrieval: a view's stored rows (``read``) and point-in-time joins
(``get_historical_features``), both only through read grants. The join's rules are in
:mod:`featurestore.offline.pit`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa

from .catalog import Catalog
from .context import StoreContext
from .entity_frames import KeyColumns, join_frame, read_entity_frame
from .errors import FeatureStoreError, RetrievalError
from .governance import Grant, PolicySnapshot
from .governance.treatments import treated
from .offline.pit import ViewRequest
from .versions import ResolvedFeature, ViewVersion

ENGINES = ("duckdb", "spark")
"""Who computes a point-in-time join: DuckDB (over the embedded file or the lake) or Spark (over the lake)."""


@dataclass(frozen=True)
class PartRequest:
    """What one view version contributes to a join, before the policy decided on it."""

    vv: ViewVersion
    features: list[str]
    outputs: list[str]
    ttl: timedelta | None


@dataclass(frozen=True)
class JoinPart:
    """One view version's share of a point-in-time join, with the grant that allows it."""

    grant: Grant
    outputs: list[str]
    ttl: timedelta | None

    @property
    def vv(self) -> ViewVersion:
        """The view version."""
        return self.grant.view


def output_names(
    resolved: list[ResolvedFeature], entity_columns: list[str], full_names: bool
) -> list[tuple[str, int, str, str]]:
    """(view, version, feature, output column) per resolved feature; two outputs of one name are an error."""
    outputs = [f"{r.view}__{r.feature}" if full_names else r.feature for r in resolved]
    seen: dict[str, str] = {}
    for r, out in zip(resolved, outputs, strict=True):
        if out in seen or out in entity_columns:
            other = seen.get(out, "a column of entity_df")
            hint = " Pass full_feature_names=True to name columns view__feature." if not full_names else ""
            raise RetrievalError(f"two columns would be named '{out}': {r.ref} and {other}.{hint}")
        seen[out] = r.ref
    return [(r.view, r.version, r.feature, out) for r, out in zip(resolved, outputs, strict=True)]


class Historical:
    """Reads of stored rows and point-in-time joins."""

    def __init__(self, ctx: StoreContext, catalog: Catalog) -> None:
        self.ctx = ctx
        self.catalog = catalog

    # --- requests and grants ------------------------------------------------------------------

    def group(
        self,
        entries: list[tuple[str, int, str, str]],
        ttls: dict[tuple[str, int], timedelta | None] | None = None,
        views: dict[tuple[str, int], ViewVersion] | None = None,
    ) -> list[PartRequest]:
        """Group (view, version, feature, output) entries into one request per view version.

        Each version's TTL is the one registered now, unless `ttls` gives it (a training set's
        manifest gives the TTLs recorded when it was built). `views` are versions already read.
        """
        groups: dict[tuple[str, int], PartRequest] = {}
        for view, version, feature, out in entries:
            if (view, version) not in groups:
                vv = (views or {}).get((view, version)) or self.catalog.get_view(f"{view}@v{version}")
                ttl = ttls[(view, version)] if ttls is not None else vv.view.ttl
                groups[(view, version)] = PartRequest(vv, [], [], ttl)
            groups[(view, version)].features.append(feature)
            groups[(view, version)].outputs.append(out)
        return list(groups.values())

    def requests(self, features: Sequence[str] | str, entity_columns: list[str], full_names: bool) -> list[PartRequest]:
        """Resolve feature references into one request per view version."""
        views: dict[tuple[str, int], ViewVersion] = {}
        resolved = self.catalog.resolve_features(features, views)
        return self.group(output_names(resolved, entity_columns, full_names), views=views)

    def grant_parts(
        self,
        snapshot: PolicySnapshot,
        requests: list[PartRequest],
        purpose: str | None,
        access: Sequence[str] = ("offline",),
    ) -> list[JoinPart]:
        """Decide every view of a join under one snapshot; refused (and audited) if any is refused."""
        return [
            JoinPart(self.ctx.access.grant(snapshot, r.vv, r.features, purpose, access), r.outputs, r.ttl)
            for r in requests
        ]

    # --- verbs --------------------------------------------------------------------------------

    def read(
        self,
        view: str,
        *,
        features: Sequence[str] | None = None,
        as_of: datetime | None = None,
        purpose: str | None = None,
    ) -> pa.Table:
        """Every stored row of a view version, for a purpose its policy allows offline access."""
        vv = self.catalog.get_view(view)
        names = list(features) if features is not None else vv.view.feature_names
        self.catalog.check_features(vv, names, pinned="@" in view)
        if as_of is not None and as_of.tzinfo is None:
            raise FeatureStoreError("as_of must be time-zone aware, e.g. datetime(2025, 1, 1, tzinfo=UTC)")
        grant = self.ctx.access.grant(self.ctx.access.snapshot(), vv, names, purpose, ("offline",))
        table = self.ctx.offline.scan(grant, as_of=as_of)
        self.ctx.audit.append(
            self.ctx.actor, "read", vv.ref, purpose=purpose, details={"features": names, "rows": table.num_rows}
        )
        return table

    def get_historical_features(
        self,
        entity_df: Any,
        features: Sequence[str] | str,
        *,
        as_of: datetime | None = None,
        known_at_prediction_time: bool = False,
        timestamp_column: str = "event_timestamp",
        full_feature_names: bool = False,
        purpose: str | None = None,
        engine: str = "duckdb",
    ) -> pa.Table:
        """Point-in-time correct feature values for each row of `entity_df`, joined by `engine`."""
        entity = read_entity_frame(entity_df)
        if as_of is not None and as_of.tzinfo is None:
            raise RetrievalError("as_of must be time-zone aware, e.g. datetime(2025, 1, 1, tzinfo=UTC)")
        requests = self.requests(features, entity.column_names, full_feature_names)
        parts = self.grant_parts(self.ctx.access.snapshot(), requests, purpose)
        table = self.point_in_time(
            entity, parts, timestamp_column, as_of=as_of, known=known_at_prediction_time, engine=engine
        )
        self.ctx.audit.append(
            self.ctx.actor,
            "get_historical_features",
            ", ".join(p.vv.ref for p in parts),
            purpose=purpose,
            details={"features": [f"{p.vv.ref}:{f}" for p in parts for f in p.grant.features], "rows": table.num_rows},
        )
        return table

    # --- the point-in-time runner ---------------------------------------------------------------

    def point_in_time(
        self,
        entity: pa.Table,
        parts: Sequence[JoinPart],
        timestamp_column: str,
        *,
        as_of: datetime | None,
        known: bool,
        stored_keys: bool = False,
        engine: str = "duckdb",
    ) -> pa.Table:
        """Run the join: every part needs an offline grant; raw keys of treated join keys are
        hashed or tokenized in-process under every key id to match the stored forms (unless
        `stored_keys`: the entity keys are already in their stored form). `engine` is ``duckdb``
        (the default, on either offline store) or ``spark`` (the lake store only)."""
        if engine not in ENGINES:
            raise RetrievalError(f"unknown engine {engine!r}: use one of {', '.join(ENGINES)}")
        frame, requests = self.join_requests(entity, parts, timestamp_column, stored_keys=stored_keys)
        joined = self.ctx.offline.join(
            [p.grant for p in parts], frame, requests, as_of=as_of, known=known, engine=engine
        )
        return with_features(entity, joined, requests)

    def join_requests(
        self, entity: pa.Table, parts: Sequence[JoinPart], timestamp_column: str, *, stored_keys: bool = False
    ) -> tuple[pa.Table, list[ViewRequest]]:
        """What any engine joins: the entity frame (``_row``, keys in every stored form, entity
        times) and one request per part; every part needs an offline grant."""
        groups = []
        for i, part in enumerate(parts):
            grant = part.grant.require("offline")
            keys = list(grant.view.join_keys)
            free = frozenset() if stored_keys else treated(grant.policy, keys)
            forms = (
                (
                    lambda key, raw, p=grant.policy, v=grant.view.view.name: self.ctx.treatments.key_variants(
                        p, v, key, raw
                    )
                )
                if free
                else None
            )
            groups.append(KeyColumns(grant.view.ref, grant.view.join_keys, f"_k{i}_", forms, free))
        frame, prefixes = join_frame(entity, timestamp_column, groups)
        requests = [
            ViewRequest(
                p.vv.table,
                list(p.vv.join_keys),
                pre,
                p.vv.view.timestamp_field,
                p.ttl,
                list(p.grant.features),
                p.outputs,
                not_before=p.grant.read_cutoff(),
                created_field=p.vv.view.created_timestamp_field,
                position=self.ctx.offline.position,
            )
            for p, pre in zip(parts, prefixes, strict=True)
        ]
        return frame, requests


def with_features(entity: pa.Table, joined: pa.Table, requests: Sequence[ViewRequest]) -> pa.Table:
    """The entity table with an engine's joined outputs appended (one row per entity row, in order)."""
    assert joined.num_rows == entity.num_rows, "a point-in-time join returns each entity row once"
    result = entity
    for req in requests:
        for out in req.outputs:
            result = result.append_column(joined.schema.field(out), joined.column(out))
    return result
