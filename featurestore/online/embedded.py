"""The embedded online store: one SQLite file in WAL mode, through APSW.

WAL lets any number of processes read while one writes, and a reader never sees a half-written
transaction; materialization commits chunk by chunk, so a lookup sees each entity either before
or after its update, never torn. Each view version has a ``WITHOUT ROWID`` table keyed by the
entity key, one column per feature: a lookup is one primary-key probe.

APSW (a thin binding of its own, current SQLite) answers a primary-key probe in about 60% of the
time the standard library's ``sqlite3`` takes, which is most of a serving call. Only this module
opens ``online.db``: two SQLite libraries in one process must never open the same file (POSIX
locks are per process; closing one library's descriptor drops the other's locks).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import apsw

from . import Row

BUSY_TIMEOUT_MS = 30_000


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class SQLiteOnlineStore:
    """Online rows in a SQLite file (or in memory for a memory store)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._local = threading.local()
        self._upserts: dict[str, str] = {}
        """The SET clause of each table's compare-and-set upsert, made once."""
        self._memory: apsw.Connection | None = None
        self._memory_cursor: apsw.Cursor | None = None
        if path is None:
            self._memory = apsw.Connection(":memory:")
            self._memory.execute("PRAGMA secure_delete=ON")
            self._memory_cursor = self._memory.cursor()

    def _con(self) -> apsw.Connection:
        if self._memory is not None:
            return self._memory
        con: apsw.Connection | None = getattr(self._local, "con", None)
        if con is None:
            assert self.path is not None
            con = apsw.Connection(str(self.path))
            con.set_busy_timeout(BUSY_TIMEOUT_MS)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            con.execute("PRAGMA secure_delete=ON")  # deleted rows are overwritten, not left in free pages
            self._local.con = con
            self._local.cursor = con.cursor()
        return con

    def _cursor(self) -> apsw.Cursor:
        """This thread's cursor for point lookups (a cursor made per call costs a sixth of a lookup)."""
        if self._memory_cursor is not None:
            return self._memory_cursor
        cursor: apsw.Cursor | None = getattr(self._local, "cursor", None)
        if cursor is None:
            self._con()
            cursor = self._local.cursor
        return cursor

    def ensure_table(self, table: str, features: Sequence[str]) -> None:
        cols = ", ".join(
            ["k TEXT PRIMARY KEY", "_e INTEGER NOT NULL", "_g INTEGER NOT NULL", *(_quote(f) for f in features)]
        )
        self._con().execute(f"CREATE TABLE IF NOT EXISTS {_quote(table)} ({cols}) WITHOUT ROWID")

    def write(self, table: str, rows: Iterable[Row], generation: int, *, newer_only: bool = False) -> int:
        con = self._con()
        rows = rows if isinstance(rows, list) else list(rows)
        if not rows:
            return 0
        # The generation is a literal of the statement, so the rows go to executemany as they
        # come (no tuple rebuilt per row).
        marks = ", ".join(["?", "?", str(int(generation)), *("?" * (len(rows[0]) - 2))])
        into = f"INTO {_quote(table)} VALUES ({marks})"
        if not newer_only:
            self._transaction(con, lambda: con.executemany(f"INSERT OR REPLACE {into}", rows))
            return len(rows)
        upsert = f"INSERT {into} ON CONFLICT(k) DO UPDATE SET {self._newer_sets(con, table)}"
        keys = [row[0] for row in rows]
        probe = f"SELECT 1 FROM {_quote(table)} WHERE k BETWEEN ? AND ? LIMIT 1"

        def write() -> None:
            # Compare-and-set only matters where a row is stored: when none is stored between the
            # rows' least and greatest key (asked under the write lock, so no other writer adds one)
            # and the rows' keys are distinct, a plain INSERT does the same, in 70% of the time.
            fresh = con.execute(probe, (min(keys), max(keys))).get is None and len(set(keys)) == len(keys)
            con.executemany(f"INSERT {into}" if fresh else upsert, rows)

        self._transaction(con, write)
        return len(rows)

    @staticmethod
    def _transaction(con: apsw.Connection, work: Callable[[], object]) -> None:
        """Run `work` in one write transaction: all of it commits, or none of it."""
        con.execute("BEGIN IMMEDIATE")
        try:
            work()
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def _newer_sets(self, con: apsw.Connection, table: str) -> str:
        """The SET clause of a table's compare-and-set upsert, made once: every SET expression sees
        the stored row's old values, so a stored row with a later event time keeps its values (not
        its generation)."""
        sets = self._upserts.get(table)
        if sets is None:
            names = [str(c[1]) for c in con.execute(f"PRAGMA table_info({_quote(table)})")][3:]
            newer = "excluded._e >= _e"
            sets = self._upserts[table] = ", ".join(
                [
                    f"_e = CASE WHEN {newer} THEN excluded._e ELSE _e END",
                    "_g = excluded._g",
                    *(f"{_quote(n)} = CASE WHEN {newer} THEN excluded.{_quote(n)} ELSE {_quote(n)} END" for n in names),
                ]
            )
        return sets

    def copy_table(self, source: str, target: str, columns: dict[str, str | None], generation: int) -> int:
        values = ", ".join("NULL" if c is None else _quote(c) for c in columns.values())
        con = self._con()
        count = [0]

        def copy() -> None:
            con.execute(
                f"INSERT OR REPLACE INTO {_quote(target)} SELECT k, _e, ?, {values} FROM {_quote(source)}",
                (generation,),
            )
            count[0] = con.changes()

        self._transaction(con, copy)
        return count[0]

    def read(self, table: str, keys: Sequence[str]) -> list[Row | None]:
        con = self._con()
        found: dict[str, Row] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 900):  # bound parameters per statement, kept small
            part = unique[start : start + 900]
            query = f"SELECT * FROM {_quote(table)} WHERE k IN ({', '.join('?' * len(part))})"
            for row in con.execute(query, part):
                found[row[0]] = row
        return [found.get(k) for k in keys]

    def point_reader(
        self, table: str, features: Sequence[str], positions: Sequence[int]
    ) -> Callable[[str], Row | None]:
        if not features:
            raise ValueError("a point reader reads at least one feature")
        sql = f"SELECT {', '.join([*map(_quote, features), '_e'])} FROM {_quote(table)} WHERE k = ?"
        cursor = self._cursor

        def read_one(key: str) -> Row | None:
            # `get` reads to the end (fetchone would leave the statement on its row, holding a read
            # transaction open that a WAL checkpoint after an erasure waits on); with two or more
            # columns it is the row's tuple, or None.
            row: Row | None = cursor().execute(sql, (key,)).get
            return row

        return read_one

    def sample_keys(self, table: str, n: int, seed: int) -> list[str]:
        keys = [str(r[0]) for r in self._con().execute(f"SELECT k FROM {_quote(table)}")]
        return random.Random(seed).sample(keys, min(n, len(keys)))

    def prune(self, table: str, generation: int) -> int:
        con = self._con()
        con.execute(f"DELETE FROM {_quote(table)} WHERE _g < ?", (generation,))
        return con.changes()

    def delete(self, table: str, keys: Sequence[str]) -> int:
        """Remove keys; deleted content is zeroed (secure_delete) and the WAL truncated, so no
        copy stays in ``online.db`` or ``online.db-wal``."""
        con = self._con()
        count = 0
        for start in range(0, len(keys), 900):
            part = list(keys[start : start + 900])
            con.execute(f"DELETE FROM {_quote(table)} WHERE k IN ({', '.join('?' * len(part))})", part)
            count += con.changes()
        self._truncate_wal(con)
        return count

    def delete_older(self, table: str, before_us: int, keep: Sequence[str] = ()) -> int:
        """Remove rows older than `before_us` but the kept keys (retention under legal holds)."""
        con = self._con()
        kept = list(keep)
        clause = f" AND k NOT IN ({', '.join('?' * len(kept))})" if kept else ""
        con.execute(f"DELETE FROM {_quote(table)} WHERE _e < ?{clause}", [before_us, *kept])
        count = con.changes()
        self._truncate_wal(con)
        return count

    def _truncate_wal(self, con: apsw.Connection) -> None:
        if self._memory is None:
            for _attempt in range(50):  # a reader holding an old snapshot keeps the WAL: retry briefly
                [(busy, _log, _done)] = con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
                if not busy:
                    return
                time.sleep(0.02)

    def close(self) -> None:
        con = getattr(self._local, "con", None)
        if con is not None:
            self._local.cursor = None
            con.close()
            self._local.con = None
        if self._memory is not None:
            self._memory_cursor = None
            self._memory.close()
            self._memory = None
