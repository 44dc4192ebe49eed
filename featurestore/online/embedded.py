"""The embedded online store: one SQLite file in WAL mode.

WAL lets any number of processes read while one writes, and a reader never sees a half-written
transaction; materialization commits chunk by chunk, so a lookup sees each entity either before
or after its update, never torn. Each view version has a ``WITHOUT ROWID`` table keyed by the
entity key, one column per feature: a lookup is one primary-key probe.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from . import Row


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class SQLiteOnlineStore:
    """Online rows in a SQLite file (or in memory for a memory store)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._local = threading.local()
        self._point: dict[str, str] = {}
        """The point-lookup SQL of each table, made once."""
        self._upserts: dict[str, str] = {}
        """The compare-and-set upsert of each table, made once."""
        self._memory: sqlite3.Connection | None = None
        if path is None:
            self._memory = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
            self._memory.execute("PRAGMA secure_delete=ON")

    def _con(self) -> sqlite3.Connection:
        if self._memory is not None:
            return self._memory
        con: sqlite3.Connection | None = getattr(self._local, "con", None)
        if con is None:
            assert self.path is not None
            con = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            con.execute("PRAGMA secure_delete=ON")  # deleted rows are overwritten, not left in free pages
            self._local.con = con
        return con

    def ensure_table(self, table: str, features: Sequence[str]) -> None:
        cols = ", ".join(["k TEXT PRIMARY KEY", "_e INTEGER NOT NULL", "_g INTEGER NOT NULL", *(_quote(f) for f in features)])
        self._con().execute(f"CREATE TABLE IF NOT EXISTS {_quote(table)} ({cols}) WITHOUT ROWID")

    def write(self, table: str, rows: Iterable[Row], generation: int, *, newer_only: bool = False) -> int:
        con = self._con()
        rows = [(r[0], r[1], generation, *r[2:]) for r in rows]
        if not rows:
            return 0
        marks = ", ".join("?" * len(rows[0]))
        if newer_only:
            sql = self._upserts.get(table) or self._upsert_sql(con, table, marks)
        else:
            sql = f"INSERT OR REPLACE INTO {_quote(table)} VALUES ({marks})"
        con.execute("BEGIN IMMEDIATE")
        try:
            con.executemany(sql, rows)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return len(rows)

    def _upsert_sql(self, con: sqlite3.Connection, table: str, marks: str) -> str:
        """The compare-and-set upsert of a table, made once: every SET expression sees the stored
        row's old values, so a stored row with a later event time keeps its values (not its generation)."""
        names = [str(c[1]) for c in con.execute(f"PRAGMA table_info({_quote(table)})")][3:]
        newer = "excluded._e >= _e"
        sets = ", ".join([f"_e = CASE WHEN {newer} THEN excluded._e ELSE _e END", "_g = excluded._g",
                          *(f"{_quote(n)} = CASE WHEN {newer} THEN excluded.{_quote(n)} ELSE {_quote(n)} END" for n in names)])
        sql = self._upserts[table] = f"INSERT INTO {_quote(table)} VALUES ({marks}) ON CONFLICT(k) DO UPDATE SET {sets}"
        return sql

    def copy_table(self, source: str, target: str, columns: dict[str, str | None], generation: int) -> int:
        values = ", ".join("NULL" if c is None else _quote(c) for c in columns.values())
        con = self._con()
        con.execute("BEGIN IMMEDIATE")
        try:
            count: int = con.execute(f"INSERT OR REPLACE INTO {_quote(target)} SELECT k, _e, ?, {values} FROM {_quote(source)}",
                                     (generation,)).rowcount
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return count

    def read(self, table: str, keys: Sequence[str]) -> list[Row | None]:
        con = self._con()
        if len(keys) == 1:
            sql = self._point.get(table)
            if sql is None:
                sql = self._point[table] = f"SELECT * FROM {_quote(table)} WHERE k = ?"
            return [con.execute(sql, (keys[0],)).fetchone()]
        found: dict[str, Row] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 900):  # SQLite's limit on bound parameters
            part = unique[start:start + 900]
            query = f"SELECT * FROM {_quote(table)} WHERE k IN ({', '.join('?' * len(part))})"
            for row in con.execute(query, part):
                found[row[0]] = row
        return [found.get(k) for k in keys]

    def point_reader(self, table: str, features: Sequence[str], positions: Sequence[int]) -> Callable[[str], Row | None]:
        sql = f"SELECT {', '.join(['_e', *map(_quote, features)])} FROM {_quote(table)} WHERE k = ?"
        con = self._con

        def read_one(key: str) -> Row | None:
            row: Row | None = con().execute(sql, (key,)).fetchone()
            return row

        return read_one

    def sample_keys(self, table: str, n: int, seed: int) -> list[str]:
        keys = [r[0] for r in self._con().execute(f"SELECT k FROM {_quote(table)}")]
        return random.Random(seed).sample(keys, min(n, len(keys)))

    def prune(self, table: str, generation: int) -> int:
        return self._con().execute(f"DELETE FROM {_quote(table)} WHERE _g < ?", (generation,)).rowcount

    def delete(self, table: str, keys: Sequence[str]) -> int:
        """Remove keys; deleted content is zeroed (secure_delete) and the WAL truncated, so no
        copy stays in ``online.db`` or ``online.db-wal``."""
        con = self._con()
        count = 0
        for start in range(0, len(keys), 900):
            part = list(keys[start:start + 900])
            count += con.execute(f"DELETE FROM {_quote(table)} WHERE k IN ({', '.join('?' * len(part))})", part).rowcount
        self._truncate_wal(con)
        return count

    def delete_older(self, table: str, before_us: int, keep: Sequence[str] = ()) -> int:
        """Remove rows older than `before_us` but the kept keys (retention under legal holds)."""
        con = self._con()
        kept = list(keep)
        clause = f" AND k NOT IN ({', '.join('?' * len(kept))})" if kept else ""
        count: int = con.execute(f"DELETE FROM {_quote(table)} WHERE _e < ?{clause}", [before_us, *kept]).rowcount
        self._truncate_wal(con)
        return count

    def _truncate_wal(self, con: sqlite3.Connection) -> None:
        if self._memory is None:
            for _attempt in range(50):  # a reader holding an old snapshot keeps the WAL: retry briefly
                busy, _log, _done = con.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                if not busy:
                    return
                time.sleep(0.02)

    def close(self) -> None:
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None
        if self._memory is not None:
            self._memory.close()
            self._memory = None
