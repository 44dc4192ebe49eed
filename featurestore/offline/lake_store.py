"""The lake offline store: feature rows in Delta tables (:mod:`featurestore.offline.lake`), the
store's bookkeeping in a small DuckDB file beside ``featurestore.yaml``.

Configured by ``offline: {type: delta, path: <directory or URI>}``. The bookkeeping file holds what
the embedded file holds besides rows: the committed batches (``_fs_batches``), the carried tables,
the project, and the list of lake tables. Everything that reads rows reads them through DuckDB,
which scans each table's current files in place; Spark reads the same files
(:func:`featurestore.offline.lake_join.spark_join`).

A batch is visible only when both its Delta commit and its record exist: the record is written
in a bookkeeping transaction that commits right after the Delta commit, and every reader sees a
table's rows only for recorded batches. So a kill between the two (or before either) leaves no
row of the batch visible; the next compaction removes its files (and, for a kill between the
two, its rows).

Deletes (erasure, retention) rewrite the affected Delta files, vacuum with zero retention and
clean the log, so no data file, log entry or statistic keeps a deleted row
(:meth:`DeltaTables.delete`). Rewriting stored values under a new policy (``approve
--treat-existing``) overwrites the table in one commit and cleans it the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from ..types import duckdb_type
from .duckdb_store import BATCHES_TABLE, CARRIED_TABLE, OfflineStore
from .engine import Carry, Compaction
from .lake import STAMPS, DeltaTables, sql_literal
from .sql import quote

if TYPE_CHECKING:
    import pyarrow as pa

    from ..governance import Grant
    from .pit import ViewRequest

LAKE_TABLES = "_fs_lake_tables"
"""Bookkeeping: the view-version tables the lake holds (an object store cannot be listed cheaply)."""
LAKE_POSITION = "_fs_row"
REWRITE_KEY = "featurestore.rewrite"


class LakeOfflineStore(OfflineStore):
    """Rows in Delta tables under `lake`; bookkeeping in the DuckDB file `path`.

    Args:
        path: The bookkeeping file.
        lake: The Delta tables.
        lock_timeout: Seconds to wait for another process holding the bookkeeping file (one writer
            at a time, as for the embedded file).
    """

    position = LAKE_POSITION

    def __init__(self, path: Path, lake: DeltaTables, *, lock_timeout: float = 10.0) -> None:
        super().__init__(path, lock_timeout=lock_timeout)
        self.lake = lake

    def initialize(self, project: str | None = None) -> None:
        super().initialize(project)
        if self.lake.is_local:
            Path(self.lake.root).mkdir(parents=True, exist_ok=True)
        with super()._connect(read_only=False) as con:
            self._create_bookkeeping(con)

    @staticmethod
    def _create_bookkeeping(con: duckdb.DuckDBPyConnection) -> None:
        con.execute(f"CREATE TABLE IF NOT EXISTS {LAKE_TABLES} (table_name VARCHAR PRIMARY KEY)")
        con.execute(
            f"CREATE TABLE IF NOT EXISTS {CARRIED_TABLE} (table_name VARCHAR PRIMARY KEY, "
            "source_table VARCHAR NOT NULL, row_count BIGINT NOT NULL, carried_at TIMESTAMPTZ NOT NULL)"
        )

    @contextmanager
    def _connect(self, *, read_only: bool, create: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """The bookkeeping file, with every lake table readable under its name (rows of recorded
        batches only). Rows change only through this class's methods, never by SQL."""
        with super()._connect(read_only=read_only, create=create) as con:
            for table in self._tables(con):
                self._register(con, table)
            yield con

    def _tables(self, con: duckdb.DuckDBPyConnection) -> list[str]:
        if not con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [LAKE_TABLES]
        ).fetchall()[0][0]:
            return []
        return [str(t) for (t,) in con.execute(f"SELECT table_name FROM {LAKE_TABLES} ORDER BY table_name").fetchall()]

    def _register(self, con: duckdb.DuckDBPyConnection, table: str) -> None:
        self.lake.register(con, table, only_batches_in=BATCHES_TABLE)

    @staticmethod
    def _tables_on(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, str]]:
        """Every lake table with its columns and DuckDB types (the row id left out, as DuckDB's rowid is)."""
        tables: dict[str, dict[str, str]] = {}
        for table, column, dtype in con.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema = 'main' "
            "AND table_catalog = 'temp' AND table_name LIKE 'fv\\_%' ESCAPE '\\' ORDER BY table_name, ordinal_position"
        ).fetchall():
            if column != LAKE_POSITION:
                tables.setdefault(str(table), {})[str(column)] = str(dtype)
        return tables

    def create_table(
        self, table: str, columns: dict[str, str], carry: Carry | None = None, time_columns: Sequence[str] = ()
    ) -> int:
        """Create a view version's Delta table (statistics for `time_columns` and the stamps only);
        with `carry`, fill it with an older version's rows in one commit, their stamps kept."""
        import pyarrow as pa

        from ..types import arrow_type

        source = None if carry is None else carry.into(table)  # refused before anything changes
        schema = pa.schema([(name, arrow_type(dtype)) for name, dtype in columns.items()])
        with super()._connect(read_only=False) as con:
            self._create_bookkeeping(con)
            if self.lake.exists(table):
                self._drop_orphan_lake(con, table)
            self.lake.create(table, schema, time_columns)
            con.execute(f"INSERT OR IGNORE INTO {LAKE_TABLES} VALUES (?)", [table])
            if carry is None or source is None:
                return 0
            self._register(con, source)
            # Recorded first: a kill after this leaves an orphan (a carried record, rows or not) that the next apply replaces.
            con.execute(f"INSERT OR REPLACE INTO {CARRIED_TABLE} VALUES (?, ?, 0, now())", [table, source])
            select = ", ".join(
                f"NULL::{duckdb_type(columns[name])} AS {quote(name)}"
                if source is None
                else f"{quote(source)} AS {quote(name)}"
                for name, source in carry.columns.items()
            )
            where, params = "", []
            if carry.since is not None:
                where, params = f" WHERE {quote(carry.timestamp_field)} >= ?", [carry.since]
            rows: pa.Table = con.sql(
                f"SELECT {select}, {', '.join(STAMPS)} FROM {quote(source)}{where} ORDER BY {LAKE_POSITION}",
                params=params,
            ).to_arrow_table()
            self.lake.write_rows(table, rows)
            con.execute(f"UPDATE {CARRIED_TABLE} SET row_count = ? WHERE table_name = ?", [rows.num_rows, table])
            return int(rows.num_rows)

    def _drop_orphan_lake(self, con: duckdb.DuckDBPyConnection, table: str) -> None:
        self._refuse_unknown_rows(con, table, self.lake.dataset(table).count_rows(), f"the lake {self.lake.root}")
        self.lake.drop(table)

    def _append_on(
        self,
        con: duckdb.DuckDBPyConnection,
        grant: Grant,
        batches: Iterable[pa.Table],
        *,
        batch_id: int,
        ingested_at: datetime,
        on_rows: Callable[[int], None] | None = None,
    ) -> int:
        """Append a batch as one Delta commit, then record it (the record makes it visible)."""
        table = grant.require("write").view.table

        def counted() -> Iterator[pa.Table]:
            for data in batches:
                yield data
                if on_rows is not None:
                    on_rows(data.num_rows)

        con.execute("BEGIN TRANSACTION")
        try:
            total = self.lake.append(table, counted(), batch_id=batch_id, ingested_at=ingested_at)
            con.execute(f"INSERT INTO {BATCHES_TABLE} VALUES (?, ?, ?, ?)", [int(batch_id), table, total, ingested_at])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        self._register(con, table)
        return total

    def _delete_keys_on(self, con: duckdb.DuckDBPyConnection, table: str, key: str, forms: Sequence[str]) -> None:
        """Delete the rows whose key (as text) is one of `forms`, leaving no copy (erasure)."""
        values = ", ".join(sql_literal(str(f)) for f in forms)
        self.lake.delete(table, f"CAST({_lake_name(key)} AS VARCHAR) IN ({values})")
        self._register(con, table)

    def _delete_older_on(
        self,
        con: duckdb.DuckDBPyConnection,
        table: str,
        timestamp_field: str,
        cutoff: datetime,
        key: str | None,
        keep: Sequence[object],
    ) -> None:
        """Delete rows with an event time before `cutoff`, except keys in `keep` (retention)."""
        from datetime import UTC

        predicate = f"{_lake_name(timestamp_field)} < '{cutoff.astimezone(UTC).isoformat()}'"
        if keep and key is not None:
            predicate += (
                f" AND CAST({_lake_name(key)} AS VARCHAR) NOT IN ({', '.join(sql_literal(str(k)) for k in keep)})"
            )
        self.lake.delete(table, predicate)
        self._register(con, table)

    def _rewrite_rows_on(
        self, con: duckdb.DuckDBPyConnection, table: str, data: pa.Table, record: Callable[[], object], marker: str
    ) -> None:
        """Replace every row of a table by `data` (stamps kept) as one Delta commit, with `record`
        (bookkeeping) in the transaction that commits right after it; then clean the table, so the
        old values leave every file and the log. A rewrite whose commit landed but whose record
        did not (a kill between the two) is found by its `marker` in the log and not done twice."""
        con.execute("BEGIN TRANSACTION")
        try:
            record()
            if not self.lake.has_commit(table, REWRITE_KEY, marker):
                self.lake.overwrite(table, data, {REWRITE_KEY: marker})
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        self.lake.clean(table)
        self._register(con, table)

    def join(
        self,
        grants: Sequence[Grant],
        entities: pa.Table,
        requests: Sequence[ViewRequest],
        *,
        as_of: datetime | None,
        known: bool,
        engine: str = "duckdb",
    ) -> pa.Table:
        """The point-in-time join by DuckDB over the lake, or with ``engine="spark"`` by Spark over
        the same files (the active SparkSession, else a local one), rows of recorded batches only."""
        if engine != "spark":
            return super().join(grants, entities, requests, as_of=as_of, known=known, engine=engine)
        from .duckdb_store import _require_tables
        from .lake_join import spark_join, spark_session

        _require_tables(grants, requests, "offline")
        with super()._connect(read_only=True) as con:  # the batches a reader may see: recorded ones
            committed = {b for b, _t, _n, _at in self._batch_records_on(con)}
        return spark_join(
            spark_session(), self.lake, entities, list(requests), as_of=as_of, known=known, committed=committed
        )

    def file_traces(self, grant: Grant, needles: set[str]) -> list[tuple[Path, int, int | None]]:
        """Erasure proofs over every file of a local lake (data files, log entries, checkpoints):
        the needles' count in its bytes, and how many needles are among its decoded values
        (compression could hide bytes) for Parquet files and log entries; none for a lake behind
        a URI (it is checked by query only). Counts only: no value leaves the engine."""
        from .lake import local_files, strings_in

        grant.require_task("erasure")
        if not self.lake.is_local:
            return []
        traces: list[tuple[Path, int, int | None]] = []
        for file in sorted(local_files(Path(self.lake.root).resolve())):
            data = file.read_bytes()
            found = sum(data.count(n.encode()) for n in needles if n)
            values = len(needles & strings_in(file)) if file.suffix in (".parquet", ".json") else None
            traces.append((file, found, values))
        return traces

    def compact(self, on_step: Callable[[str], None] | None = None) -> Compaction:
        """Clean every lake table: delete the rows of batches without a record (a writer killed
        between its Delta commit and its record: invisible, but in the table's files), then remove
        files no longer in the current version and older log entries; compact the bookkeeping file."""
        import pyarrow.compute as pc

        with super()._connect(read_only=False) as con:
            recorded = {int(b) for (b,) in con.execute(f"SELECT batch_id FROM {BATCHES_TABLE}").fetchall()}
            for table in self._tables(con):
                stored = set(
                    pc.unique(self.lake.dataset(table).to_table(columns=["_batch_id"]).column("_batch_id")).to_pylist()
                )
                stray = sorted(int(b) for b in stored - recorded)
                if stray:
                    self.lake.delete(table, f"_batch_id IN ({', '.join(map(str, stray))})")
                else:
                    self.lake.clean(table)
        return super().compact(on_step)


def _lake_name(column: str) -> str:
    return '"' + column.replace('"', '""') + '"'
