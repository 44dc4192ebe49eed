"""The offline store: every ingested feature row, one DuckDB table per feature view version.

Each table holds the view's join keys, event timestamp and features, plus ``_ingested_at``
(system time of the batch) and ``_batch_id``. The table ``_fs_batches`` records, in the same
transaction as the rows, every batch that committed: it is the ground truth the registry's
batch log is reconciled against after a crash.

The file is opened per operation and closed, read-only for reads, so processes take turns.
Every open goes through a readers-writer lock with writer preference (``file_lock``): readers
share the file, a writer (ingest, apply, compaction) has it alone, and once a writer waits new
readers wait behind it. A process that cannot get the file within the lock timeout gets a
StoreLockedError that names each holder, whether it reads or writes, and for how long.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from ..errors import StoreDamaged, StoreLockedError
from ..faults import offline_fault
from ..governance.access import MAINTAIN, MATERIALIZE, READS, WRITE, Grant
from ..types import duckdb_type
from .engine import GRANTED, POSITION, Bookkeeping, Carry, Compaction
from .file_lock import ReadWriteLock
from .sql import quote, utc_schema

if TYPE_CHECKING:
    import pyarrow as pa  # imported where used: a store opens without pyarrow

    from .pit import ViewRequest

BATCHES_TABLE = "_fs_batches"
STORE_TABLE = "_fs_store"
"""Settings of the store the file belongs to (its project)."""
CARRIED_TABLE = "_fs_carried"
"""Offline record of the view-version tables that started with an older version's rows (written
in the copy's transaction): such a table holds rows of batches recorded under the older table."""
TREATED_TABLE = "_fs_treated_columns"
"""Offline record of (table, column, policy SHA-256) rewritten in place by ``approve
--treat-existing``, in the rewrite's transaction: a rerun after a crash never treats a value twice."""
COMPACT_SUFFIX = ".compacting"
"""The new file is written beside the old one under this suffix, then renamed over it."""


_PID_RE = re.compile(r"PID (\d+)")


def _open(database: str, *, read_only: bool) -> duckdb.DuckDBPyConnection:
    """Connect, with the session in UTC whatever the machine's zone, so results match everywhere."""
    con = duckdb.connect(database, read_only=read_only)
    try:
        con.execute("SET TimeZone = 'UTC'")
    except BaseException:
        con.close()
        raise
    return con


def _is_lock_error(exc: duckdb.Error) -> bool:
    text = str(exc)
    return "Could not set lock" in text or "Conflicting lock" in text


class OfflineStore:
    """Feature rows in one DuckDB file (or in memory, for throwaway stores).

    Args:
        path: The DuckDB file, or None for an in-memory database kept open by this object.
        lock_timeout: Seconds to wait for another process that holds the file.
    """

    position = "rowid"
    """The column that orders rows of one batch (and identifies a row) in the point-in-time rules."""

    def __init__(self, path: Path | None, *, lock_timeout: float = 10.0, force_compression: str | None = None) -> None:
        self.path = path
        self.lock_timeout = lock_timeout
        self.force_compression = force_compression
        self._memory: duckdb.DuckDBPyConnection | None = None
        if path is None:
            self._memory = _open(":memory:", read_only=False)
            self._create_batches_table(self._memory)

    def close(self) -> None:
        if self._memory is not None:
            self._memory.close()
            self._memory = None

    @staticmethod
    def _create_batches_table(con: duckdb.DuckDBPyConnection) -> None:
        con.execute(
            f"CREATE TABLE IF NOT EXISTS {BATCHES_TABLE} (batch_id BIGINT PRIMARY KEY, "
            "table_name VARCHAR NOT NULL, row_count BIGINT NOT NULL, ingested_at TIMESTAMPTZ NOT NULL)"
        )

    def initialize(self, project: str | None = None) -> None:
        """Create the file and its bookkeeping tables if they do not exist, recording the store's project."""
        with self._connect(read_only=False, create=True) as con:
            self._create_batches_table(con)
            if project is not None:
                con.execute(
                    f"CREATE TABLE IF NOT EXISTS {STORE_TABLE} (setting VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)"
                )
                con.execute(f"INSERT OR REPLACE INTO {STORE_TABLE} VALUES ('project', ?)", [project])

    @staticmethod
    def _project_on(con: duckdb.DuckDBPyConnection) -> str | None:
        """The project the file was created for (None: not recorded, a store made without one)."""
        if not con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [STORE_TABLE]
        ).fetchall()[0][0]:
            return None
        rows = con.execute(f"SELECT value FROM {STORE_TABLE} WHERE setting = 'project'").fetchall()
        return str(rows[0][0]) if rows else None

    @contextmanager
    def _connect(self, *, read_only: bool, create: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """Open the database for one operation, waiting a bounded time for another holder; a
        missing file is an error (StoreDamaged) unless `create` (only ``init`` creates it)."""
        if self._memory is not None:
            cursor = self._memory.cursor()
            try:
                yield cursor
            finally:
                cursor.close()
            return
        assert self.path is not None
        if not create and not self.path.exists():
            raise StoreDamaged(
                f"the offline store file {self.path} does not exist: restore it from a backup (featurestore does not "
                "create an empty file over lost data), or create a new store with featurestore init."
            )
        try:
            with self._file_lock(exclusive=not read_only):
                con = self._open_with_retry(read_only)
                try:
                    if self.force_compression and not read_only:
                        con.execute("SET force_compression = ?", [self.force_compression])
                    yield con
                finally:
                    con.close()
        except (duckdb.Error, OSError) as exc:
            fault = offline_fault(self.path, exc)
            if fault is None:
                raise
            raise fault from None

    @contextmanager
    def _file_lock(self, *, exclusive: bool, wait: bool = True) -> Iterator[bool]:
        """Hold the readers-writer lock in front of the file (see ``file_lock``): shared to read,
        exclusive to write or compact; yields False if `wait` is off and it is taken now."""
        assert self.path is not None
        with ReadWriteLock(self.path, timeout=self.lock_timeout).hold(exclusive=exclusive, wait=wait) as taken:
            yield taken

    def compact(self, on_step: Callable[[str], None] | None = None) -> Compaction:
        """Rewrite the file into a new one and swap it in atomically, so deleted rows leave no bytes.

        DuckDB's DELETE, CHECKPOINT and VACUUM leave deleted values in the file; a copy into a
        fresh file does not. Steps: checkpoint (the WAL is folded in and removed), ``COPY FROM
        DATABASE`` into ``<file>.compacting``, fsync, rename over the old file, fsync the folder.
        A kill at any moment leaves the old file or the new one whole; a leftover
        ``.compacting`` file is removed by the next compaction. `on_step` is called after each
        step ("checkpointed", "copied", "swapped") with its name.
        """
        step = on_step or (lambda _name: None)
        started = time.monotonic()
        if self.path is None:  # a memory store has no bytes on disk to rewrite
            return Compaction(0, 0, 0.0)
        tmp = Path(f"{self.path}{COMPACT_SUFFIX}")
        with self._file_lock(exclusive=True):
            before = self.path.stat().st_size
            for leftover in (tmp, Path(f"{tmp}.wal")):
                leftover.unlink(missing_ok=True)
            con = self._open_with_retry(read_only=False)
            try:
                if self.force_compression:
                    con.execute("SET force_compression = ?", [self.force_compression])
                con.execute("CHECKPOINT")
                step("checkpointed")
                [(name,)] = con.execute("SELECT current_database()").fetchall()
                con.execute(f"ATTACH '{str(tmp).replace(chr(39), chr(39) * 2)}' AS _fs_compacted")
                con.execute(f"COPY FROM DATABASE {quote(name)} TO _fs_compacted")
                con.execute("DETACH _fs_compacted")
            finally:
                con.close()
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            step("copied")
            os.replace(tmp, self.path)
            folder = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
            step("swapped")
            return Compaction(before, self.path.stat().st_size, time.monotonic() - started)

    def _open_with_retry(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        assert self.path is not None
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.02
        while True:
            try:
                return _open(str(self.path), read_only=read_only)
            except duckdb.Error as exc:
                if not _is_lock_error(exc):
                    raise
                if time.monotonic() >= deadline:
                    match = _PID_RE.search(str(exc))
                    pid = int(match.group(1)) if match else None
                    holder = f"process {pid}" if pid else "another process"
                    raise StoreLockedError(
                        f"the offline store {self.path} is held by {holder}, which opened it without featurestore's "
                        f"lock (waited {self.lock_timeout:g} s). DuckDB lets many processes read a file or one write "
                        f"it. Wait for {holder} to close the file and try again"
                        + (f" (`ps -p {pid}` shows what it is)." if pid else ".")
                        + " Raise offline.lock_timeout_seconds in featurestore.yaml to wait longer.",
                        path=str(self.path),
                        pid=pid,
                    ) from exc
                time.sleep(delay)
                delay = min(delay * 2, 0.25)

    # --- schema -----------------------------------------------------------------------------

    def create_table(
        self, table: str, columns: dict[str, str], carry: Carry | None = None, time_columns: Sequence[str] = ()
    ) -> int:
        """Create a view version's table: its columns (definition types) plus bookkeeping, and
        with `carry` fill it with an older version's rows in the same transaction (returns how
        many). An orphan of an apply that did not finish (a table without committed batches,
        empty or holding only carried rows) is replaced; one that holds rows the registry lost
        track of never is (StoreDamaged). `time_columns` (event and created time) matter to the lake store only."""
        if carry is not None:
            carry.into(table)  # refused before anything changes
        cols = [f"{quote(n)} {duckdb_type(t)} " for n, t in columns.items()]
        cols += ["_ingested_at TIMESTAMPTZ NOT NULL", "_batch_id BIGINT NOT NULL"]
        with self._connect(read_only=False) as con:
            con.execute(
                f"CREATE TABLE IF NOT EXISTS {CARRIED_TABLE} (table_name VARCHAR PRIMARY KEY, "
                "source_table VARCHAR NOT NULL, row_count BIGINT NOT NULL, carried_at TIMESTAMPTZ NOT NULL)"
            )
            exists = con.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'main' AND table_name = ?", [table]
            ).fetchall()[0][0]
            con.execute("BEGIN TRANSACTION")
            try:
                if exists:
                    self._drop_orphan(con, table)
                con.execute(f"CREATE TABLE {quote(table)} ({', '.join(cols)})")
                carried = 0 if carry is None else self._carry(con, table, carry)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return carried

    def _drop_orphan(self, con: duckdb.DuckDBPyConnection, table: str) -> None:
        [(rows,)] = con.execute(f"SELECT count(*) FROM {quote(table)}").fetchall()
        self._refuse_unknown_rows(con, table, int(rows), f"the offline store {self.path or 'in memory'}")
        con.execute(f"DROP TABLE {quote(table)}")

    @staticmethod
    def _refuse_unknown_rows(con: duckdb.DuckDBPyConnection, table: str, rows: int, where: str) -> None:
        """The orphan rule: a table left by an apply that did not finish (no committed batch;
        empty, or holding only carried rows) may be replaced (its carried record goes); one with
        rows the registry lost track of never is (StoreDamaged)."""
        [(batches,)] = con.execute(f"SELECT count(*) FROM {BATCHES_TABLE} WHERE table_name = ?", [table]).fetchall()
        [(carried,)] = con.execute(f"SELECT count(*) FROM {CARRIED_TABLE} WHERE table_name = ?", [table]).fetchall()
        if batches or (rows and not carried):
            raise StoreDamaged(
                f"{where} already holds {rows:,} rows in {batches} committed batches of {table}, a view version the "
                "registry does not know: the registry was probably lost or restored from an older backup. Nothing was "
                "changed. Run `featurestore db recover` to register it again from the offline store, or put back the "
                "registry that belongs to this store."
            )
        con.execute(f"DELETE FROM {CARRIED_TABLE} WHERE table_name = ?", [table])

    @staticmethod
    def _carry(con: duckdb.DuckDBPyConnection, table: str, carry: Carry) -> int:
        source_table = carry.into(table)
        select = ", ".join("NULL" if source is None else quote(source) for source in carry.columns.values())
        where, params = "", []
        if carry.since is not None:
            where, params = f" WHERE {quote(carry.timestamp_field)} >= ?", [carry.since]
        # One scan in storage (row id) order, which the insert keeps: in-batch ties break the same way.
        con.execute(
            f"INSERT INTO {quote(table)} SELECT {select}, _ingested_at, _batch_id FROM {quote(source_table)}{where}",
            params,
        )
        [(rows,)] = con.execute(f"SELECT count(*) FROM {quote(table)}").fetchall()
        con.execute(f"INSERT INTO {CARRIED_TABLE} VALUES (?, ?, ?, now())", [table, source_table, int(rows)])
        if con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [TREATED_TABLE]
        ).fetchall()[0][0]:
            kept = [c for c in carry.columns.values() if c is not None]
            if kept:
                con.execute(
                    f"INSERT INTO {TREATED_TABLE} SELECT ?, column_name, policy_sha256, treated_at FROM {TREATED_TABLE} "
                    f"WHERE table_name = ? AND column_name IN ({', '.join('?' * len(kept))})",
                    [table, source_table, *kept],
                )
        return int(rows)

    @contextmanager
    def _try_connect(self) -> Iterator[duckdb.DuckDBPyConnection | None]:
        """A read-only connection if the file is free right now, else None (no waiting)."""
        if self._memory is not None or self.path is None or not self.path.exists():
            with self._connect(read_only=True) as con:
                yield con
            return
        with self._file_lock(exclusive=False, wait=False) as free:
            if not free:
                yield None
                return
            try:
                con = _open(str(self.path), read_only=True)
            except duckdb.Error as exc:
                if not _is_lock_error(exc):
                    if (fault := offline_fault(self.path, exc)) is None:
                        raise
                    raise fault from None
                yield None
                return
            try:
                yield con
            except duckdb.Error as exc:
                if (fault := offline_fault(self.path, exc)) is None:
                    raise
                raise fault from None
            finally:
                con.close()

    # --- writes -----------------------------------------------------------------------------

    @staticmethod
    def _next_ingestion_time(con: duckdb.DuckDBPyConnection, now: datetime) -> datetime:
        """`now`, or 1 microsecond after the last committed batch if the clock has not passed it.

        Ingestion times are strictly increasing across a store's batches, so "latest ingestion
        wins" and "latest batch wins" agree, and a later batch is never hidden by an `as_of`.
        """
        [(last,)] = con.execute(f"SELECT epoch_us(max(ingested_at)) FROM {BATCHES_TABLE}").fetchall()
        if last is None:
            return now
        after_last = datetime.fromtimestamp(0, UTC) + timedelta(microseconds=int(last) + 1)
        return max(now, after_last)

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
        """Append every batch in one transaction, stamped with its batch id and ingestion time.

        Either all rows and the `_fs_batches` record commit, or none do (also on a crash or
        when `batches` raises part-way). Returns the number of rows written. `grant` must be
        a write grant for the view version (its policy's treatments already applied).
        """
        table = grant.require("write").view.table
        stamp = ingested_at.isoformat()
        total = 0
        con.execute("BEGIN TRANSACTION")
        try:
            for data in batches:
                con.register("_fs_incoming", data)
                try:
                    con.execute(
                        f"INSERT INTO {quote(table)} SELECT *, TIMESTAMPTZ '{stamp}', {int(batch_id)} FROM _fs_incoming"
                    )
                finally:
                    con.unregister("_fs_incoming")
                total += data.num_rows
                if on_rows is not None:
                    on_rows(data.num_rows)
            con.execute(
                f"INSERT INTO {BATCHES_TABLE} VALUES (?, ?, ?, ?)",
                [int(batch_id), table, total, ingested_at],
            )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return total

    def _delete_keys_on(self, con: duckdb.DuckDBPyConnection, table: str, key: str, forms: Sequence[str]) -> None:
        """Delete the rows whose key (as text) is one of `forms` (erasure; the bytes go at compaction)."""
        import pyarrow as pa

        con.register("_fs_delete_forms", pa.table({"f": pa.array([str(f) for f in forms], pa.string())}))
        try:
            con.execute(
                f"DELETE FROM {quote(table)} WHERE CAST({quote(key)} AS VARCHAR) IN (SELECT f FROM _fs_delete_forms)"
            )
        finally:
            con.unregister("_fs_delete_forms")

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
        clause = f" AND {quote(key)} NOT IN ({', '.join('?' * len(keep))})" if keep and key is not None else ""
        con.execute(
            f"DELETE FROM {quote(table)} WHERE {quote(timestamp_field)} < ?{clause}",
            [cutoff, *(keep if clause else [])],
        )

    def _rewrite_rows_on(
        self, con: duckdb.DuckDBPyConnection, table: str, data: pa.Table, record: Callable[[], object], marker: str
    ) -> None:
        """Replace every row of a table by `data` and run `record` (bookkeeping) in one transaction
        (`marker` names the rewrite: what the lake store checks to never do one twice)."""
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(f"DELETE FROM {quote(table)}")
            con.register("_fs_rewritten", data)
            try:
                con.execute(f"INSERT INTO {quote(table)} SELECT * FROM _fs_rewritten")
            finally:
                con.unregister("_fs_rewritten")
            record()
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    @staticmethod
    def _duplicates_on(con: duckdb.DuckDBPyConnection, table: str, columns: list[str], batch_id: int) -> int:
        """How many rows of one batch share their `columns` (key and event time) with a later row of it."""
        cols = ", ".join(quote(c) for c in columns)
        batch = f"FROM {quote(table)} WHERE _batch_id = {int(batch_id)}"
        # rows minus distinct pairs: about twice as fast as GROUP BY ... HAVING on 10M rows (0.5 s against 1.0 s)
        [(count,)] = con.execute(
            f"SELECT count(*) - (SELECT count(*) FROM (SELECT DISTINCT {cols} {batch})) {batch}"
        ).fetchall()
        return int(count)

    # --- reads ------------------------------------------------------------------------------

    @staticmethod
    def _committed_batches_on(con: duckdb.DuckDBPyConnection, batch_ids: Iterable[int]) -> dict[int, int]:
        """Which of these batch ids committed, with their row counts."""
        ids = [int(b) for b in batch_ids]
        if not ids:
            return {}
        rows = con.execute(
            f"SELECT batch_id, row_count FROM {BATCHES_TABLE} WHERE batch_id IN ({', '.join('?' * len(ids))})",
            ids,
        ).fetchall()
        return {int(b): int(n) for b, n in rows}

    @staticmethod
    def _batch_records_on(con: duckdb.DuckDBPyConnection) -> list[tuple[int, str, int, datetime]]:
        """Every committed batch the file records: (batch id, table, rows, ingestion time), by id."""
        rows = con.execute(
            f"SELECT batch_id, table_name, row_count, ingested_at FROM {BATCHES_TABLE} ORDER BY batch_id"
        ).fetchall()
        return [(int(b), str(t), int(n), at) for b, t, n, at in rows]

    @staticmethod
    def _batch_summary_on(con: duckdb.DuckDBPyConnection) -> tuple[int, int, int]:
        """(count, largest id, total rows) of the committed batches the file records."""
        [(count, last, rows)] = con.execute(
            f"SELECT count(*), coalesce(max(batch_id), 0), coalesce(sum(row_count), 0) FROM {BATCHES_TABLE}"
        ).fetchall()
        return int(count), int(last), int(rows)

    @staticmethod
    def _tables_on(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, str]]:
        """Every view-version table in the file with its columns and DuckDB types, in order."""
        tables: dict[str, dict[str, str]] = {}
        for table, column, dtype in con.execute(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'main' AND table_name LIKE 'fv\\_%' ESCAPE '\\' ORDER BY table_name, ordinal_position"
        ).fetchall():
            tables.setdefault(str(table), {})[str(column)] = str(dtype)
        return tables

    def row_counts(self, tables: Iterable[str]) -> dict[str, int]:
        """How many rows each of these tables holds (0 for one the file lacks)."""
        wanted = list(tables)
        if not wanted:
            return {}
        with self._connect(read_only=True) as con:
            present = set(self._tables_on(con))
            return {
                t: int(con.execute(f"SELECT count(*) FROM {quote(t)}").fetchall()[0][0]) if t in present else 0
                for t in wanted
            }

    def scan(self, grant: Grant, *, as_of: datetime | None = None) -> pa.Table:
        """Every stored row a read grant covers (keys, event time, its features, ``_ingested_at``,
        ``_batch_id``), ingested at or before `as_of`, none past the grant's offline retention."""
        vv = grant.require("offline").view
        table = vv.table
        created = [vv.view.created_timestamp_field] if vv.view.created_timestamp_field else []
        columns = [*vv.join_keys, vv.view.timestamp_field, *created, *grant.features, "_ingested_at", "_batch_id"]
        cols = ", ".join(quote(c) for c in columns)
        sql = f"SELECT {cols} FROM {quote(table)}"
        conditions: list[str] = []
        params: list[object] = []
        if as_of is not None:
            conditions.append("_ingested_at <= ?")
            params.append(as_of)
        if (cutoff := grant.cutoff("offline")) is not None:
            conditions.append(f"{quote(vv.view.timestamp_field)} >= ?")
            params.append(cutoff)
        if conditions:
            sql += " WHERE " + " AND ".join(conditions)
        sql += f" ORDER BY _ingested_at, _batch_id, {self.position}"
        with self._connect(read_only=True) as con:
            return utc_schema(con.sql(sql, params=params).to_arrow_table())

    # --- the door: every method below that touches feature rows takes a Grant -----------------

    def _granted_sql(self, grant: Grant) -> str:
        """The rows and columns `grant` covers: join keys, event (and created) time, its features,
        the stamps and the position; for a read grant none past its offline retention. A maintain
        grant (never refused, even on a blocked view) reads keys and times only, no feature value."""
        vv = grant.view
        created = [vv.view.created_timestamp_field] if vv.view.created_timestamp_field else []
        features = () if grant.access == (MAINTAIN,) else grant.features
        columns = dict.fromkeys([*vv.join_keys, vv.view.timestamp_field, *created, *features])
        select = ", ".join(
            [*(quote(c) for c in columns), "_ingested_at", "_batch_id", f"{self.position} AS {POSITION}"]
        )
        sql = f"SELECT {select} FROM {quote(vv.table)}"
        cutoff = grant.cutoff("offline") if any(kind in READS for kind in grant.access) else None
        if cutoff is not None:
            sql += f" WHERE {quote(vv.view.timestamp_field)} >= TIMESTAMPTZ '{cutoff.astimezone(UTC).isoformat()}'"
        return sql

    @contextmanager
    def _granted(self, grant: Grant, sql: str) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection where `sql` (checked by :func:`_reads_only_granted`) may read the view
        :data:`GRANTED` of `grant`'s rows and columns."""
        with self._connect(read_only=True) as con:
            _reads_only_granted(con, sql)
            con.execute(f"CREATE OR REPLACE TEMP VIEW {GRANTED} AS {self._granted_sql(grant)}")
            try:
                yield con
            finally:
                con.execute(f"DROP VIEW IF EXISTS {GRANTED}")

    def query(self, grant: Grant, sql: str, params: Sequence[object] | None = None) -> pa.Table:
        """A capability's own read (a DP truncation, say) over exactly the rows a grant covers:
        `sql` reads the temporary view named :data:`GRANTED` that holds them (columns: join keys,
        event and created time, the granted features, ``_ingested_at``, ``_batch_id`` and
        ``_fs_position``) and nothing else: one SELECT naming no other table and no table function
        (else PolicyViolation, before anything is read)."""
        _require_any(grant, QUERY_KINDS)
        with self._granted(grant, sql) as con:
            return con.sql(sql, params=list(params) if params else None).to_arrow_table()

    @contextmanager
    def stream(
        self,
        grant: Grant,
        sql: str,
        params: dict[str, object],
        *,
        batch_size: int,
        last_batch_of: Sequence[str] = (),
    ) -> Iterator[tuple[int, Iterator[pa.RecordBatch]]]:
        """:meth:`query`, its result streamed in Arrow batches while the store is held (writers
        wait: one consistent snapshot), with the last batch id recorded for the tables
        `last_batch_of` read in the same snapshot (materialization's watermark)."""
        grant.require(MATERIALIZE)
        with self._granted(grant, sql) as con:
            last = self._last_batch_on(con, last_batch_of)
            yield last, iter(con.sql(sql, params=params).arrow(batch_size=batch_size))

    @staticmethod
    def _last_batch_on(con: duckdb.DuckDBPyConnection, tables: Sequence[str]) -> int:
        if not tables:
            return 0
        [(last,)] = con.execute(
            f"SELECT coalesce(max(batch_id), 0) FROM {BATCHES_TABLE} WHERE table_name IN "
            f"({', '.join('?' * len(tables))})",
            list(tables),
        ).fetchall()
        return int(last)

    def data_version(self, grant: Grant) -> tuple[int, int]:
        """(last batch id, stored rows) of the grant's view version: what a cached release depends on."""
        table = _require_any(grant, QUERY_KINDS).view.table
        with self._connect(read_only=True) as con:
            [(rows,)] = con.execute(f"SELECT count(*) FROM {quote(table)}").fetchall()
            return self._last_batch_on(con, [table]), int(rows)

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
        """The point-in-time join (:mod:`featurestore.offline.pit`) of `entities` (registered as
        ``_fs_entities``) with each request; every request's table needs an offline grant among
        `grants`. `engine` is ``duckdb``; the lake store also runs ``spark``."""
        _require_tables(grants, requests, "offline")
        if engine != "duckdb":
            from ..errors import RetrievalError

            raise RetrievalError(
                "engine='spark' reads the lake store: set `offline: {type: delta, path: ...}` in "
                "featurestore.yaml (featurestore init --lake DIR_OR_URI), or leave engine at duckdb"
            )
        import dataclasses

        from . import pit

        own = [dataclasses.replace(r, position=self.position) for r in requests]  # this engine's row position
        with self._connect(read_only=True) as con:
            con.register("_fs_entities", entities)
            try:
                planned = pit.plan_by_shape(lambda sql: int(con.execute(sql).fetchall()[0][0]), own, known=known)
                sql = pit.pit_sql(planned, as_of=as_of, known_at_prediction_time=known)
                return utc_schema(con.sql(sql).to_arrow_table())
            finally:
                con.unregister("_fs_entities")

    def file_traces(self, grant: Grant, needles: set[str]) -> list[tuple[Path, int, int | None]]:
        """Erasure proofs over files besides the store's DuckDB file: there are none here."""
        grant.require_task("erasure")
        return []

    # --- maintenance: erasure, retention, treat-existing (maintain grants only) ------------------

    def key_counts(self, grant: Grant, forms: Sequence[object], *, delete: bool = False) -> dict[str, int]:
        """Rows of the grant's view version whose subject key (as text) is one of `forms`, per
        form; with `delete`, those rows are deleted in the same hold (erasure: the bytes go at
        compaction)."""
        import pyarrow as pa

        vv = (grant.require_task("erasure") if delete else grant.require(MAINTAIN)).view
        if not forms:
            return {}
        key = quote(_subject_key(grant))
        values = pa.table({"f": pa.array([str(f) for f in forms], pa.string())})
        with self._connect(read_only=not delete) as con:
            con.register("_fs_forms", values)
            try:
                counts = dict(
                    con.execute(
                        f"SELECT CAST({key} AS VARCHAR), count(*) FROM {quote(vv.table)} "
                        f"WHERE CAST({key} AS VARCHAR) IN (SELECT f FROM _fs_forms) GROUP BY ALL"
                    ).fetchall()
                )
            finally:
                con.unregister("_fs_forms")
            if counts and delete:
                self._delete_keys_on(con, vv.table, _subject_key(grant), [str(f) for f in forms])
        return {str(k): int(v) for k, v in counts.items()}

    def stored_keys(self, grant: Grant) -> pa.ChunkedArray:
        """Every distinct stored subject key of the grant's view version (to find held subjects)."""
        key = quote(_subject_key(grant.require_task("erasure", "retention")))
        return self.query(grant, f"SELECT DISTINCT {key} FROM {GRANTED}").column(0)

    def older(self, grant: Grant, cutoff: datetime, keep: Sequence[object] = (), *, delete: bool = False) -> int:
        """How many rows of the grant's view version have an event time before `cutoff`, except
        subject keys in `keep` (legal holds); with `delete`, those rows are deleted (retention)."""
        vv = (grant.require_task("retention") if delete else grant.require(MAINTAIN)).view
        ts = quote(vv.view.timestamp_field)
        key = _subject_key(grant) if keep else None
        clause = f" AND {quote(key)} NOT IN ({', '.join('?' * len(keep))})" if key is not None else ""
        with self._connect(read_only=not delete) as con:
            [(count,)] = con.execute(
                f"SELECT count(*) FROM {quote(vv.table)} WHERE {ts} < ?{clause}", [cutoff, *keep]
            ).fetchall()
            if count and delete:
                self._delete_older_on(con, vv.table, vv.view.timestamp_field, cutoff, key, keep)
        return int(count)

    def treated_columns(self, grant: Grant, policy_sha256: str) -> tuple[int, set[str]]:
        """(stored rows, columns already rewritten under the policy with this hash) of the grant's
        view version (approve --treat-existing)."""
        table = grant.require_task("treat_existing").view.table
        with self._connect(read_only=True) as con:
            [(rows,)] = con.execute(f"SELECT count(*) FROM {quote(table)}").fetchall()
            if not con.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [TREATED_TABLE]
            ).fetchall()[0][0]:
                return int(rows), set()
            done = con.execute(
                f"SELECT column_name FROM {TREATED_TABLE} WHERE table_name = ? AND policy_sha256 = ?",
                [table, policy_sha256],
            ).fetchall()
        return int(rows), {str(c) for (c,) in done}

    def rewrite(
        self,
        grant: Grant,
        columns: Sequence[str],
        treat: Callable[[pa.Table], pa.Table],
        *,
        policy_sha256: str,
        at: datetime,
    ) -> int:
        """Rewrite every row of the grant's view version through `treat` (which treats `columns`)
        and record (table, column, policy hash) in the same transaction, so a rerun after a crash
        never treats a value twice. Returns the rows rewritten; a treated value that does not fit
        its column is refused (PolicyViolation) with nothing changed."""
        import pyarrow as pa

        table = grant.require_task("treat_existing").view.table
        with self._connect(read_only=False) as con:
            data = con.sql(f"SELECT * FROM {quote(table)}").to_arrow_table()
            treated = treat(data)
            con.execute(
                f"CREATE TABLE IF NOT EXISTS {TREATED_TABLE} (table_name VARCHAR, column_name VARCHAR, "
                "policy_sha256 VARCHAR, treated_at TIMESTAMPTZ)"
            )

            def record() -> None:
                con.executemany(
                    f"INSERT INTO {TREATED_TABLE} VALUES (?, ?, ?, ?)", [[table, c, policy_sha256, at] for c in columns]
                )

            try:
                self._rewrite_rows_on(con, table, treated, record, marker=f"{policy_sha256}:{','.join(columns)}")
            except (duckdb.Error, pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                # their messages quote the values that do not fit (the lake's cast, DuckDB's insert)
                from ..errors import PolicyViolation

                raise PolicyViolation(
                    f"{grant.view.ref}: the treated values of {', '.join(columns)} do not fit the stored "
                    "column types (a hash or token is text: declare those features as string); nothing "
                    "was changed"
                ) from None
        return int(data.num_rows)

    # --- ingestion ---------------------------------------------------------------------------

    @contextmanager
    def writing(self) -> Iterator[OfflineWriter]:
        """Hold the store for writing (one writer at a time) for one ingestion: see :class:`OfflineWriter`."""
        with self._connect(read_only=False) as con:
            yield OfflineWriter(self, con)

    # --- bookkeeping: batches, tables, the project (no feature rows) -----------------------------

    def committed_batches(self, batch_ids: Iterable[int], *, wait: bool = True) -> dict[int, int] | None:
        """Which of these batch ids committed, with their row counts; None when `wait` is off and
        another process holds the store now."""
        ids = list(batch_ids)
        with self._connect(read_only=True) if wait else self._try_connect() as con:
            return None if con is None else self._committed_batches_on(con, ids)

    def bookkeeping(self, *, wait: bool = True, read_every_block: bool = False) -> Bookkeeping | None:
        """What the store records besides rows (None when `wait` is off and it is held now);
        `read_every_block` also reads every block of every view table (1.5 s for 10M rows) and
        returns none of it, so damaged data shows as an error."""
        with self._connect(read_only=True) if wait else self._try_connect() as con:
            if con is None:
                return None
            if read_every_block:
                for table in self._tables_on(con):
                    con.execute(f"SELECT bit_xor(hash(COLUMNS(*))) FROM {quote(table)}").fetchall()
            return Bookkeeping(
                self._project_on(con), self._tables_on(con), self._batch_records_on(con), self._batch_summary_on(con)
            )


class OfflineWriter:
    """One ingestion's hold on the offline store (from :meth:`OfflineStore.writing`): settle
    pending batches against it, take the next ingestion time, append one batch under a write grant."""

    def __init__(self, store: OfflineStore, con: duckdb.DuckDBPyConnection) -> None:
        self._store = store
        self._con = con

    def committed_batches(self, batch_ids: Iterable[int]) -> dict[int, int]:
        """Which of these batch ids committed, with their row counts."""
        return self._store._committed_batches_on(self._con, batch_ids)

    def next_ingestion_time(self, now: datetime) -> datetime:
        """`now`, or 1 microsecond after the last committed batch if the clock has not passed it."""
        return self._store._next_ingestion_time(self._con, now)

    def append(
        self,
        grant: Grant,
        batches: Iterable[pa.Table],
        *,
        batch_id: int,
        ingested_at: datetime,
        on_rows: Callable[[int], None] | None = None,
    ) -> int:
        """Append every batch in one transaction under a write grant (see ``_append_on``); returns the rows."""
        return self._store._append_on(
            self._con, grant.require(WRITE), batches, batch_id=batch_id, ingested_at=ingested_at, on_rows=on_rows
        )

    def duplicates(self, grant: Grant, batch_id: int) -> int:
        """How many rows of one batch share key and event time with a later row of it."""
        vv = grant.require(WRITE).view
        return self._store._duplicates_on(self._con, vv.table, [*vv.join_keys, vv.view.timestamp_field], batch_id)


def _subject_key(grant: Grant) -> str:
    """The one join key that identifies a subject in the grant's view (composite keys: DefinitionError)."""
    from ..governance.subjects import subject_key

    return subject_key(grant.view)


QUERY_KINDS = ("offline", "dp_aggregates", "reidentify", MAINTAIN)
"""The grants a capability's own read (:meth:`OfflineStore.query`) may be spent with: reads of
rows, and maintenance (which reads keys to delete); not online lookups or writes."""


def _require_any(grant: Grant, kinds: Sequence[str]) -> Grant:
    """`grant`, if it covers one of `kinds`; PolicyViolation otherwise."""
    if not any(kind in grant.access for kind in kinds):
        grant.require(kinds[0])  # raises, naming what the grant is for
    return grant


def _require_tables(grants: Sequence[Grant], requests: Sequence[ViewRequest], access: str) -> None:
    """Every request reads a table some grant of `access` covers, and only what that grant covers:
    its view's keys and time columns, its features, no row before its retention cutoff (else
    PolicyViolation)."""
    from ..errors import PolicyViolation

    by_table: dict[str, list[Grant]] = {}
    for g in grants:
        by_table.setdefault(g.require(access).view.table, []).append(g)
    for request in requests:
        covering = by_table.get(request.table)
        if not covering:
            raise PolicyViolation(f"no {access} grant covers the offline table {request.table}")
        problems = [_uncovered(g, request) for g in covering]
        if all(problems):
            raise PolicyViolation(f"the {access} grant for {covering[0].view.ref} {problems[0]}")


def _uncovered(grant: Grant, request: ViewRequest) -> str:
    """What `request` reads that `grant` does not cover ("" when nothing)."""
    vv = grant.view
    if list(request.join_keys) != list(vv.join_keys):
        return f"joins on the keys {', '.join(vv.join_keys)}, not {', '.join(request.join_keys)}"
    if request.timestamp_field != vv.view.timestamp_field or request.created_field != vv.view.created_timestamp_field:
        return "reads the view's own time columns only"
    outside = [f for f in request.features if f not in grant.features]
    if outside:
        return f"does not cover {', '.join(outside)}"
    cutoff = grant.read_cutoff()
    if cutoff is not None and (request.not_before is None or request.not_before < cutoff):
        return f"sees no row before {cutoff.isoformat()} (retention)"
    return ""


def _reads_only_granted(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Refuse (PolicyViolation) `sql` unless it is one SELECT whose tables are :data:`GRANTED` and
    its own CTEs, with no table function (read_parquet, query_table, ...): what a granted read may
    name. Checked on DuckDB's parse tree, before anything runs."""
    import json

    from ..errors import PolicyViolation

    [(text,)] = con.execute("SELECT json_serialize_sql(?)", [sql]).fetchall()
    tree = json.loads(text)
    why = tree.get("error_message") if tree.get("error") else None
    if why is None and len(tree.get("statements", [])) != 1:
        why = "it holds several statements"
    tables: set[tuple[str, str, str]] = set()
    ctes: set[str] = set()
    functions: set[str] = set()
    stack: list[object] = [tree.get("statements", [])] if why is None else []
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            if node.get("type") == "BASE_TABLE":
                tables.add((node.get("catalog_name", ""), node.get("schema_name", ""), node.get("table_name", "")))
            elif node.get("type") == "TABLE_FUNCTION":
                functions.add(str((node.get("function") or {}).get("function_name", "?")))
            if isinstance(node.get("cte_map"), dict):
                ctes |= {str(entry.get("key")) for entry in node["cte_map"].get("map", [])}
            stack.extend(node.values())
    others = sorted(
        ".".join(p for p in name if p) for name in tables if name[:2] != ("", "") or name[2] not in {GRANTED, *ctes}
    )
    if why is None and (others or functions):
        why = f"it names {', '.join([*others, *(f + '()' for f in sorted(functions))])}"
    if why is None and ctes:  # a CTE named like a stored table would let a reference outside its scope reach the table
        stored = {str(t).lower() for (t,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        if clashing := sorted(c for c in ctes if c.lower() in stored):
            why = f"its CTEs {', '.join(clashing)} are named like stored tables"
    if why is not None:
        raise PolicyViolation(f"a granted read reads only the view {GRANTED} in one SELECT: {why}")
