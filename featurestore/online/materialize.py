"""Copying the latest value per entity from the offline store to an online store.

For each entity of a view version, the row kept online is the one the point-in-time join would
pick at t = `end` without a TTL bound: greatest (event time, ingestion time, row id) among rows
with event time <= `end`. The TTL is applied when the value is read, against the time of the
read, so a value never goes stale silently.

Incremental runs recompute only the entities touched since the watermark: keys of rows in newer
batches, and keys of older rows whose event time falls between the previous run's `end` and
this one's. Results stream from DuckDB in chunks, so memory stays bounded on large views.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import duckdb
import pyarrow as pa

from ..offline.pit import order_sql
from ..offline.sql import quote
from . import KEY_SEPARATOR, OnlineStore, Row

if TYPE_CHECKING:
    from ..versions import ViewVersion

CHUNK_ROWS = 50_000


def key_sql(join_keys: Sequence[str], alias: str = "") -> str:
    """The SQL text of an entity key (parts joined by the unit separator)."""
    parts = [f"CAST({alias}{quote(k)} AS VARCHAR)" for k in join_keys]
    if len(parts) == 1:
        return parts[0]
    return f"concat_ws('{KEY_SEPARATOR}', {', '.join(parts)})"


def _value_sql(name: str, dtype: str) -> str:
    column = quote(name)
    if dtype == "timestamp":
        return f"epoch_us({column})"
    if dtype == "date":
        return f"date_diff('day', DATE '1970-01-01', {column})"
    return column


def latest_rows_sql(
    table: str,
    join_keys: Sequence[str],
    timestamp_field: str,
    features: dict[str, str],
    *,
    since_batch: int | None,
    previous_end: datetime | None,
    created_field: str | None = None,
    position: str = "rowid",
) -> str:
    """SQL for (entity key, event time in us, *features) of the latest row per entity up to ``$end``
    (ranked as the point-in-time join ranks: event time, created time if any, ingestion, position).

    With `since_batch`, only entities touched by newer batches (or by older rows with an event
    time after `previous_end`) are recomputed.
    """
    keys = ", ".join(quote(k) for k in join_keys)
    ts = quote(timestamp_field)
    where = f"{ts} <= $end"
    if since_batch is not None:
        touched = f"_batch_id > {int(since_batch)}"
        if previous_end is not None:
            touched += f" OR ({ts} > '{previous_end.isoformat()}'::TIMESTAMPTZ AND {ts} <= $end)"
        where += f" AND ({keys}) IN (SELECT {keys} FROM {quote(table)} WHERE {touched})"
    # One aggregate per entity keeps only the best row so far (arg_max over the join's ranking),
    # instead of ranking every row with a window; rows come out in key order, which the online
    # store's B-tree takes about 4x faster than random order (200k rows: 0.31 s against 1.42 s).
    best = ", ".join(
        [f"'_e': epoch_us({ts})", *(f"'v{i}': {_value_sql(n, t)}" for i, (n, t) in enumerate(features.items()))]
    )
    outputs = ", ".join(["_b._e AS _e", *(f"_b.v{i} AS {quote(n)}" for i, n in enumerate(features))])
    return (
        f"SELECT k, {outputs} FROM (SELECT {key_sql(join_keys)} AS k, arg_max({{{best}}}, {order_sql(ts, created_field, position)}) AS _b "
        f"FROM {quote(table)} WHERE {where} GROUP BY {keys}) ORDER BY k"
    )


def pushed_rows(
    con: duckdb.DuckDBPyConnection, tables: Sequence[pa.Table], vv: ViewVersion, end: datetime
) -> list[Row]:
    """The online rows of pushed data: per entity its latest row with event time <= `end` (ties:
    the later row), in the form materialization writes, computed by the same SQL on `con` (a
    cursor of an in-memory database: the rows go to a temporary table private to it)."""
    if not tables:
        return []
    features = {f.name: f.dtype for f in vv.view.features}
    columns = list(vv.view.stored_columns(vv.join_keys))
    con.execute("SET TimeZone = 'UTC'")
    for i, data in enumerate(tables):
        con.register("_fs_pushed", data.select(columns))
        verb = "CREATE OR REPLACE TEMP TABLE _fs_push AS" if i == 0 else "INSERT INTO _fs_push"
        con.execute(f"{verb} SELECT *, now() AS _ingested_at, 0 AS _batch_id FROM _fs_pushed")
        con.unregister("_fs_pushed")
    sql = latest_rows_sql(
        "_fs_push",
        list(vv.join_keys),
        vv.view.timestamp_field,
        features,
        since_batch=None,
        previous_end=None,
        created_field=vv.view.created_timestamp_field,
    )
    rows = [row for chunk in stream_rows(con, sql, end) for row in chunk]
    con.execute("DROP TABLE _fs_push")
    return rows


def stream_rows(con: duckdb.DuckDBPyConnection, sql: str, end: datetime) -> Iterator[list[Row]]:
    """Run `sql` and yield its rows in chunks (see :func:`chunks_of`)."""
    return chunks_of(iter(con.sql(sql, params={"end": end}).arrow(batch_size=CHUNK_ROWS)))


def chunks_of(batches: Iterator[pa.RecordBatch]) -> Iterator[list[Row]]:
    """Arrow batches as lists of row tuples, turned column-wise (several times faster than
    fetching Python rows one by one)."""
    for batch in batches:  # the reader is drained before the connection is used again
        if batch.num_rows:
            yield list(zip(*(column.to_pylist() for column in batch.columns), strict=True))


def copy_rows(
    chunks: Iterator[list[Row]],
    store: OnlineStore,
    table: str,
    generation: int,
    on_rows: Callable[[int], None] | None,
    *,
    newer_only: bool = True,
) -> int:
    """Write chunks to the online store, one transaction each; return the row count. With
    `newer_only` (all but a rewind to an earlier end) a newer stored row, e.g. pushed, is kept."""
    total = 0
    for chunk in chunks:
        total += store.write(table, chunk, generation, newer_only=newer_only)
        if on_rows is not None:
            on_rows(len(chunk))
    return total
