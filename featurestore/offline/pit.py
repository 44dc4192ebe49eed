"""Point-in-time joins: the one implementation, on DuckDB's ASOF JOIN.

For an entity row with key k and timestamp t, and a view version with TTL d, a feature comes
from the stored row with key k and event time e, t - d <= e <= t (both edges inclusive; no TTL,
no lower bound), that is greatest in the order (e, ingestion time, position in its batch):

- the latest event time wins;
- for a view with a ``created_timestamp_field``, among equal event times the latest created
  time wins (a null created time ranks below any other), before the next rules;
- among equal event times, the latest ingestion wins (ingestion times are strictly increasing
  across batches of a store, so this is also the later batch);
- among rows of one batch with equal key and event time, the one later in the batch wins.

``as_of`` ignores rows ingested after it. ``known_at_prediction_time`` also ignores rows
ingested after t: the value a model could really have read at t. An entity row without a match
(or with a null key or timestamp) gets nulls; a null value in the chosen row stays null. Every
entity row comes back exactly once, in input order, its own columns untouched.

Timestamps compare in UTC at microsecond precision, the precision of stored rows; an entity
timestamp with a sub-microsecond part is compared exactly (floored for ``e <= t``, ceiled for
``t - d <= e``), so no edge case shifts.

Why the SQL looks as it does (measured in ``shared/research/privacy.md`` section 5): ASOF picks
an arbitrary row among ties, so the inequality compares structs ``{event time, ingestion time,
row id}``; a TTL in WHERE after an ASOF LEFT JOIN would drop entity rows, so it is a CASE on
the chosen row; for ``known_at_prediction_time`` the join runs on availability time
``greatest(e, ingested)`` against the running best ranking per key, and the chosen row's
columns are then fetched by its row id.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from .sql import quote

MAX_BIGINT = 9_223_372_036_854_775_807


@dataclass(frozen=True)
class ViewRequest:
    """One view version's part of a point-in-time join."""

    table: str
    join_keys: Sequence[str]
    """The view's key columns; the entity table holds them as ``{prefix}{key}``."""
    key_prefixes: Sequence[str]
    """One prefix per stored form of the keys (a pseudonymized key has one form per key id);
    a row matching any form counts, and the best match over all forms wins."""
    timestamp_field: str
    ttl: timedelta | None
    features: Sequence[str]
    """Stored feature columns to read."""
    outputs: Sequence[str]
    """Output column names, one per feature."""
    not_before: datetime | None = None
    """Retention: rows with an event time before this do not exist for the join."""
    created_field: str | None = None
    """The view's created-time column: it ranks rows of equal event time before ingestion time."""
    position: str = "rowid"
    """The stored rows' position column: DuckDB's ``rowid`` in the embedded file, ``_fs_row`` on the
    lake (:mod:`featurestore.offline.lake`); unique in the table, greater for a later row of a batch."""
    key_filter: bool = False
    """Read only stored rows whose key some entity row has (a semi join before the ASOF join):
    chosen by shape, :func:`wants_key_filter`. It never changes the answer."""
    grouped: bool = False
    """``known_at_prediction_time`` only: take the best row per (key, availability time) first, so
    the running best runs over those groups, not over every row: chosen by shape,
    :func:`wants_grouped`. It never changes the answer."""


KEY_FILTER_SHARE = 0.8
"""Filter stored rows by the entity keys when the entity table has fewer distinct keys than this
share of the stored ones (measured, 10 features: 1k x 10M entity x feature rows 2.48 s -> 0.24 s;
100k x 1M 0.34 -> 0.25 s, 60% of the keys; 1M x 10M, every key, 2.76 s -> 3.32 s, so not there)."""
KEY_FILTER_ROWS = 100
"""... and always when the stored rows outnumber the entity keys this many times (a semi join with
a small hash table costs little even where it prunes nothing; no count of stored keys is needed)."""


def wants_key_filter(entity_keys: int, stored_rows: int, stored_keys: Callable[[], int]) -> bool:
    """Whether a view's stored rows are filtered by the entity keys first (the plan by shape).
    `stored_keys` counts the view's distinct keys; it is called only when the row counts do not decide.

    >>> wants_key_filter(1_000, 10_000_000, lambda: 1 / 0), wants_key_filter(2_000_000, 1_000_000, lambda: 1 / 0)
    (True, False)
    >>> wants_key_filter(60_000, 1_000_000, lambda: 100_000), wants_key_filter(110_000, 10_000_000, lambda: 100_000)
    (True, False)
    """
    if entity_keys * KEY_FILTER_ROWS <= stored_rows:
        return True
    if entity_keys >= stored_rows:
        return False
    return entity_keys < KEY_FILTER_SHARE * stored_keys()


GROUPED_SHARE = 0.6
"""Group a known-at join's rows by (key, availability time) first when there are at most this
share as many groups as rows. Rows of one batch whose events precede its ingestion share one
availability time (the ingestion), so batches group well. Measured at 10M x 1M: 3.8M groups in
10M rows, 5.7-6.0 s -> 4.2 s; every row its own group, 9.7-10.0 s -> 12.0-12.8 s."""


def wants_grouped(stored_rows: int, groups: Callable[[], int]) -> bool:
    """Whether a known-at join groups a view's rows by (key, availability time) first.
    `groups` counts those groups (about); it is called only when there are rows.

    >>> wants_grouped(10_000_000, lambda: 3_800_000), wants_grouped(10_000_000, lambda: 9_000_000), wants_grouped(0, lambda: 1 / 0)
    (True, False, False)
    """
    return stored_rows > 0 and groups() <= GROUPED_SHARE * stored_rows


def grouped_by_shape(count: Callable[[str], int], view: ViewRequest) -> bool:
    """:func:`wants_grouped` for a view (about 0.1 s on 10M rows). Not with the key filter: the
    rows it leaves are few, and their count would cost more than grouping saves."""
    if view.key_filter:
        return False
    keys = ", ".join(f"{_lit(k)}: {quote(k)}" for k in view.join_keys)
    return wants_grouped(
        count(f"SELECT count(*) FROM {quote(view.table)}"),
        lambda: count(
            f"SELECT approx_count_distinct({{{keys}, '_a': {_avail_sql(quote(view.timestamp_field))}}}) FROM {quote(view.table)}"
        ),
    )


def _avail_sql(ts: str) -> str:
    """When a stored row became available: its event time, or its ingestion if that was later."""
    return f"greatest({ts}, _ingested_at)"


def by_shape(count: Callable[[str], int], view: ViewRequest, entities: str = "_fs_entities") -> bool:
    """:func:`wants_key_filter` for a view, with `count` running a counting query on the
    connection that holds `entities` and the view's table (a few milliseconds)."""
    return wants_key_filter(
        count(entity_keys_sql(view, entities)),
        count(f"SELECT count(*) FROM {quote(view.table)}"),
        lambda: count(stored_keys_sql(view)),
    )


def plan_by_shape(
    count: Callable[[str], int], views: Sequence[ViewRequest], *, known: bool, entities: str = "_fs_entities"
) -> list[ViewRequest]:
    """Each view's plan for this join, by shape: the key filter (:func:`by_shape`) and, for a
    known-at join, grouping by availability (:func:`grouped_by_shape`)."""
    chosen = [replace(v, key_filter=by_shape(count, v, entities)) for v in views]
    return [replace(v, grouped=grouped_by_shape(count, v)) for v in chosen] if known else chosen


def entity_keys_sql(view: ViewRequest, entities: str = "_fs_entities") -> str:
    """About how many distinct keys (over every stored form) the entity table holds for a view.

    >>> print(entity_keys_sql(ViewRequest("t", ["a", "b"], ["k0_"], "ts", None, [], [])))
    SELECT approx_count_distinct({'a': "k0_a", 'b': "k0_b"}) FROM _fs_entities
    """
    return (
        f"SELECT approx_count_distinct(_k) FROM ({_entity_key_union(view, entities, struct=True)})"
        if len(view.key_prefixes) > 1
        else f"SELECT approx_count_distinct({_key_struct(view, view.key_prefixes[0])}) FROM {entities}"
    )


def stored_keys_sql(view: ViewRequest) -> str:
    """About how many distinct keys a view version's table holds."""
    struct = ", ".join(f"{_lit(k)}: {quote(k)}" for k in view.join_keys)
    return f"SELECT approx_count_distinct({{{struct}}}) FROM {quote(view.table)}"


def _key_struct(view: ViewRequest, prefix: str) -> str:
    return "{" + ", ".join(f"{_lit(k)}: {quote(prefix + k)}" for k in view.join_keys) + "}"


def _entity_key_union(view: ViewRequest, entities: str, *, struct: bool) -> str:
    """Every stored form of the entity keys, one row per (entity row, form)."""
    if struct:
        return " UNION ALL ".join(f"SELECT {_key_struct(view, p)} AS _k FROM {entities}" for p in view.key_prefixes)
    return " UNION ALL ".join(
        "SELECT " + ", ".join(f"{quote(p + k)} AS {quote(k)}" for k in view.join_keys) + f" FROM {entities}"
        for p in view.key_prefixes
    )


def _key_filter_sql(view: ViewRequest, entities: str) -> str:
    """Stored rows whose key is one of the entity keys (in any stored form)."""
    match = " AND ".join(f"_x.{quote(k)} = {quote(view.table)}.{quote(k)}" for k in view.join_keys)
    return f"EXISTS (SELECT 1 FROM ({_entity_key_union(view, entities, struct=False)}) _x WHERE {match})"


def _ttl_sql(ttl: timedelta) -> str:
    micros = ttl // timedelta(microseconds=1)
    return f"INTERVAL {micros} MICROSECOND"


def pit_sql(
    views: Sequence[ViewRequest],
    *,
    entities: str = "_fs_entities",
    as_of: datetime | None = None,
    known_at_prediction_time: bool = False,
) -> str:
    """The SQL of a point-in-time join of `entities` (``_row``, keys, ``_t_floor``, ``_t_ceil``).

    Returns ``_row`` and every requested feature, one row per entity row, ordered by ``_row``.

    >>> print(pit_sql([ViewRequest("fv_p_v1", ["id"], ["k0_"], "ts", timedelta(days=1), ["x"], ["x"])]))
    WITH f0 AS (
      SELECT "id", "ts" AS _e, {'t': "ts", 'i': _ingested_at, 'r': rowid} AS _o, "x"
      FROM "fv_p_v1"
    )
    SELECT e._row,
      CASE WHEN f0_0._e >= e._t_ceil - INTERVAL 86400000000 MICROSECOND THEN f0_0."x" END AS "x"
    FROM (SELECT _row, "k0_id", _t_floor, _t_ceil, coalesce(_t_floor, '-infinity'::TIMESTAMPTZ) AS _t FROM _fs_entities) e
    ASOF LEFT JOIN f0 AS f0_0 ON e."k0_id" = f0_0."id" AND {'t': e._t, 'i': 'infinity'::TIMESTAMPTZ, 'r': 9223372036854775807} >= f0_0._o
    ORDER BY e._row
    """
    ctes: list[str] = []
    selects: list[str] = ["e._row"]
    joins: list[str] = []
    entity_cols: list[str] = []
    for i, view in enumerate(views):
        cte = f"f{i}"
        keys = ", ".join(quote(k) for k in view.join_keys)
        ts = quote(view.timestamp_field)
        conditions = [f"_ingested_at <= '{as_of.isoformat()}'::TIMESTAMPTZ"] if as_of is not None else []
        if view.not_before is not None:
            conditions.append(f"{ts} >= '{view.not_before.isoformat()}'::TIMESTAMPTZ")
        if view.key_filter:
            conditions.append(_key_filter_sql(view, entities))
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        order = order_sql(ts, view.created_field, view.position)
        if known_at_prediction_time:
            # A row available only after every entity time can never be chosen: left out.
            avail = _avail_sql(ts)
            avail_bound = f"{avail} <= (SELECT max(_t_floor) FROM {entities})"
            where = f" WHERE {' AND '.join([*conditions, avail_bound])}"
            # The running best ranking (a small struct whose 'r' is the row id) per availability
            # time; the chosen row's columns are fetched by row id afterwards. Half the time of
            # carrying every feature through the window (0.27 s against 0.51 s at 1M x 100k).
            cols = ", ".join(quote(f) for f in view.features)
            if view.grouped:  # the best per (key, availability) first: one row per group, so ROWS = RANGE
                source = (
                    f"{cte}_g AS (\n  SELECT {keys}, {avail} AS _avail, max({order}) AS _m\n"
                    f"  FROM {quote(view.table)}{where}\n  GROUP BY {keys}, {avail}\n), "
                )
                running = (
                    f"{cte} AS (\n  SELECT {keys}, _avail,\n    max(_m) OVER (PARTITION BY {keys} ORDER BY _avail\n"
                    f"      ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS _b\n  FROM {cte}_g\n)"
                )
            else:
                source = ""
                running = (
                    f"{cte} AS (\n  SELECT {keys}, {avail} AS _avail,\n"
                    f"    max({order}) OVER (PARTITION BY {keys} ORDER BY {avail}\n"
                    f"      RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS _b\n"
                    f"  FROM {quote(view.table)}{where}\n)"
                )
            ctes.append(
                f"{source}{running}, {cte}_rows AS (\n  SELECT {view.position} AS _r, {ts} AS _e, {cols}\n"
                f"  FROM {quote(view.table)}{' WHERE ' + _key_filter_sql(view, entities) if view.key_filter else ''}\n)"
            )
        else:
            cols = ", ".join(quote(f) for f in view.features)
            ctes.append(
                f"{cte} AS (\n  SELECT {keys}, {ts} AS _e, {order} AS _o, {cols}\n  FROM {quote(view.table)}{where}\n)"
            )
        aliases = [f"{cte}_{j}" for j in range(len(view.key_prefixes))]
        for alias, prefix in zip(aliases, view.key_prefixes, strict=True):
            if known_at_prediction_time:
                inequality = f"e._t >= {alias}._avail"
            else:
                created = ", 'c': 'infinity'::TIMESTAMPTZ" if view.created_field else ""
                inequality = f"{{'t': e._t{created}, 'i': 'infinity'::TIMESTAMPTZ, 'r': {MAX_BIGINT}}} >= {alias}._o"
            key_eq = " AND ".join(f"e.{quote(prefix + k)} = {alias}.{quote(k)}" for k in view.join_keys)
            joins.append(f"ASOF LEFT JOIN {cte} AS {alias} ON {key_eq} AND {inequality}")
            entity_cols += [quote(prefix + k) for k in view.join_keys]
        if known_at_prediction_time:
            # The best over every stored form of the key (greatest() skips forms that matched nothing).
            ranked = f"{aliases[0]}._b" if len(aliases) == 1 else f"greatest({', '.join(f'{a}._b' for a in aliases)})"
            joins.append(f"LEFT JOIN {cte}_rows AS {cte}_r ON {cte}_r._r = ({ranked}).r")
            source = f"{cte}_r"
        elif len(aliases) == 1:
            source = aliases[0]
        else:
            # The best row over every stored form of the key: structs compare by their first
            # field, the ordering key, and greatest() skips forms that matched nothing.
            fields = ", ".join(["'_e': {a}._e", *(f"{_lit(f)}: {{a}}.{quote(f)}" for f in view.features)])
            forms = [
                f"CASE WHEN {a}._o IS NULL THEN NULL ELSE {{'_o': {a}._o, {fields.format(a=a)}}} END" for a in aliases
            ]
            source = f"greatest({', '.join(forms)})"
        chosen_e = f"{source}._e"  # the chosen row's columns are all read as {source}.<name>
        for feature, output in zip(view.features, view.outputs, strict=True):
            value = f"{source}.{quote(feature)}"
            if view.ttl is None:
                selects.append(f"{value} AS {quote(output)}")
            else:
                selects.append(
                    f"CASE WHEN {chosen_e} >= e._t_ceil - {_ttl_sql(view.ttl)} THEN {value} END AS {quote(output)}"
                )
    entity_select = ", ".join(["_row", *entity_cols, "_t_floor", "_t_ceil"])
    select_list = ",\n  ".join(selects)
    return (
        f"WITH {', '.join(ctes)}\n"
        f"SELECT {select_list}\n"
        f"FROM (SELECT {entity_select}, coalesce(_t_floor, '-infinity'::TIMESTAMPTZ) AS _t FROM {entities}) e\n"
        + "\n".join(joins)
        + "\nORDER BY e._row"
    )


def order_sql(ts: str, created_field: str | None, position: str = "rowid") -> str:
    """The ranking of a view's rows, greatest wins: event time, then created time (a null lowest),
    then ingestion time, then position (row id).

    >>> print(order_sql('"ts"', "created"))
    {'t': "ts", 'c': coalesce("created", '-infinity'::TIMESTAMPTZ), 'i': _ingested_at, 'r': rowid}
    """
    created = f"'c': coalesce({quote(created_field)}, '-infinity'::TIMESTAMPTZ), " if created_field else ""
    return f"{{'t': {ts}, {created}'i': _ingested_at, 'r': {position}}}"


def _lit(name: str) -> str:
    return "'" + name.replace("'", "''") + "'"
