"""The offline engine's public face: what the rest of the store may do with offline rows.

Two engines implement :class:`OfflineEngine`: the embedded DuckDB file
(:class:`~featurestore.offline.duckdb_store.OfflineStore`) and the Delta lake
(:class:`~featurestore.offline.lake_store.LakeOfflineStore`). Only this package holds connections;
every method that touches feature rows takes a :class:`~featurestore.governance.Grant` decided by
:func:`~featurestore.governance.decide` (reads need a read grant, ingestion a write grant, erasure,
retention, treat-existing and carry-forward a maintain grant). Bookkeeping (batches, tables, the
project) needs none: it holds no feature value.

To add an offline engine:

1. Write ``offline/<name>_store.py`` with a class that satisfies :class:`OfflineEngine` (subclass
   ``OfflineStore`` if rows can be read through DuckDB, as the lake does: then only the writes,
   the connection and ``join(engine=...)`` differ).
2. Return it from :func:`featurestore.opening.open_offline_store` for its ``offline.type`` (and
   accept that type in :mod:`featurestore.config`). Nothing else may check which engine it has.
3. Add it to the engine fixture of ``tests/test_conformance.py``: the conformance cases (exact
   point-in-time answers, erasure leaving no copy, retention, carry-forward) run through this
   protocol on every engine.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import pyarrow as pa

    from ..governance import Grant
    from .pit import ViewRequest

GRANTED = "_fs_granted"
"""The temporary view :meth:`OfflineStore.query` reads through: exactly the rows and columns a grant covers."""
POSITION = "_fs_position"
"""The granted view's name for a row's position (DuckDB's ``rowid``, the lake's ``_fs_row``)."""


@dataclass(frozen=True)
class Compaction:
    """What one compaction did: the file's size before and after, and how long it took."""

    bytes_before: int
    bytes_after: int
    seconds: float


@dataclass(frozen=True)
class Carry:
    """The rows a new view version's table starts with: every row of `source` (an older version
    of the view) with an event time at or after `since` (retention), its own ingestion time and
    batch id kept, each new column from the source column `columns` names (None: null)."""

    grant: Grant
    """A maintain grant for the older version (its table is the source; its offline retention
    cutoff is `since`)."""
    columns: dict[str, str | None]
    timestamp_field: str

    @property
    def source(self) -> str:
        """The older version's table."""
        return self.grant.require_task("carry_forward").view.table

    def into(self, table: str) -> str:
        """The older version's table, if `table` is a later version of the same view and every
        column copied is one the grant names (keys, event and created time, its features);
        PolicyViolation otherwise (another view's rows would be read under that view's policy)."""
        from ..errors import PolicyViolation
        from ..versions import table_name

        old = self.grant.require_task("carry_forward").view
        _, _, number = table.rpartition("_v")
        if not (number.isdigit() and table == table_name(old.view.name, int(number)) and int(number) > old.version):
            raise PolicyViolation(
                f"a carry-forward grant for {old.ref} fills only a later version of {old.view.name}, not {table}"
            )
        created = [old.view.created_timestamp_field] if old.view.created_timestamp_field else []
        covered = {*old.join_keys, old.view.timestamp_field, *created, *self.grant.features}
        outside = sorted({c for c in self.columns.values() if c is not None and c not in covered})
        if outside:
            raise PolicyViolation(f"the carry-forward grant for {old.ref} does not cover {', '.join(outside)}")
        return old.table

    @property
    def since(self) -> datetime | None:
        """Rows before this event time are past retention and are not carried."""
        return self.grant.cutoff("offline")


@dataclass(frozen=True)
class Bookkeeping:
    """What an offline store records besides feature rows, read in one snapshot."""

    project: str | None
    """The project the store was created for (None: not recorded)."""
    tables: dict[str, dict[str, str]]
    """Every view-version table with its columns and DuckDB types."""
    records: list[tuple[int, str, int, datetime]]
    """Every committed batch: (batch id, table, rows, ingestion time), by id."""
    summary: tuple[int, int, int]
    """(count, largest id, total rows) of the committed batches."""


class OfflineWriter(Protocol):
    """One ingestion's hold on the offline store (from :meth:`OfflineEngine.writing`)."""

    def committed_batches(self, batch_ids: Iterable[int]) -> dict[int, int]:
        """Which of these batch ids committed, with their row counts."""
        ...

    def next_ingestion_time(self, now: datetime) -> datetime:
        """`now`, or 1 microsecond after the last committed batch if the clock has not passed it."""
        ...

    def append(
        self,
        grant: Grant,
        batches: Iterable[pa.Table],
        *,
        batch_id: int,
        ingested_at: datetime,
        on_rows: Callable[[int], None] | None = None,
    ) -> int:
        """Append every batch as one batch under a write grant (all rows and its record, or none)."""
        ...

    def duplicates(self, grant: Grant, batch_id: int) -> int:
        """How many rows of one batch share key and event time with a later row of it."""
        ...


class OfflineEngine(Protocol):
    """Every ingested feature row, per view version, with its event and ingestion time."""

    path: Path | None
    """The store's DuckDB file (the lake's bookkeeping file), or None in memory."""
    lock_timeout: float
    """Seconds to wait for another process that holds the store."""
    position: str
    """The stored rows' position column in point-in-time SQL (``rowid``, the lake's ``_fs_row``)."""

    def close(self) -> None:
        """Release what the engine holds open."""
        ...

    def initialize(self, project: str | None = None) -> None:
        """Create the store and its bookkeeping if they do not exist, recording its project."""
        ...

    def compact(self, on_step: Callable[[str], None] | None = None) -> Compaction:
        """Rewrite the store so deleted rows leave no bytes (each step reported to `on_step`)."""
        ...

    def create_table(
        self, table: str, columns: dict[str, str], carry: Carry | None = None, time_columns: Sequence[str] = ()
    ) -> int:
        """Create a view version's table, filled by `carry` (a maintain grant's rows) in the same
        transaction; returns the rows carried."""
        ...

    def row_counts(self, tables: Iterable[str]) -> dict[str, int]:
        """How many rows each table holds (a plan's numbers; no value is read)."""
        ...

    # --- reads (read grants) ------------------------------------------------------------------

    def scan(self, grant: Grant, *, as_of: datetime | None = None) -> pa.Table:
        """Every stored row an offline grant covers, ingested at or before `as_of`."""
        ...

    def query(self, grant: Grant, sql: str, params: Sequence[object] | None = None) -> pa.Table:
        """A capability's own SQL over the view :data:`GRANTED`: exactly the rows a grant covers."""
        ...

    def stream(
        self,
        grant: Grant,
        sql: str,
        params: dict[str, object],
        *,
        batch_size: int,
        last_batch_of: Sequence[str] = (),
    ) -> AbstractContextManager[tuple[int, Iterator[pa.RecordBatch]]]:
        """:meth:`query` streamed in one snapshot, with the last batch id of `last_batch_of`."""
        ...

    def data_version(self, grant: Grant) -> tuple[int, int]:
        """(last batch id, stored rows) of the grant's view version."""
        ...

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
        """The point-in-time join of :mod:`featurestore.offline.pit`, each table under an offline grant."""
        ...

    # --- maintenance (maintain grants) ----------------------------------------------------------

    def key_counts(self, grant: Grant, forms: Sequence[object], *, delete: bool = False) -> dict[str, int]:
        """Rows per stored subject-key form; with `delete`, deleted (erasure)."""
        ...

    def stored_keys(self, grant: Grant) -> pa.ChunkedArray:
        """Every distinct stored subject key of the grant's view version."""
        ...

    def older(self, grant: Grant, cutoff: datetime, keep: Sequence[object] = (), *, delete: bool = False) -> int:
        """Rows with an event time before `cutoff` except held keys; with `delete`, deleted (retention)."""
        ...

    def treated_columns(self, grant: Grant, policy_sha256: str) -> tuple[int, set[str]]:
        """(stored rows, columns already rewritten under this policy hash)."""
        ...

    def rewrite(
        self,
        grant: Grant,
        columns: Sequence[str],
        treat: Callable[[pa.Table], pa.Table],
        *,
        policy_sha256: str,
        at: datetime,
    ) -> int:
        """Rewrite every row through `treat` and record it, once (approve --treat-existing)."""
        ...

    def file_traces(self, grant: Grant, needles: set[str]) -> list[tuple[Path, int, int | None]]:
        """Erasure proofs (an erasure grant): for each file holding rows besides the store's own
        (a local lake's data files and log), how many times `needles` occur in its bytes and how
        many of them are among its decoded values (None for a file that holds no values); counts
        only, never a value."""
        ...

    # --- ingestion and bookkeeping ------------------------------------------------------------

    def writing(self) -> AbstractContextManager[OfflineWriter]:
        """Hold the store for one ingestion (one writer at a time)."""
        ...

    def committed_batches(self, batch_ids: Iterable[int], *, wait: bool = True) -> dict[int, int] | None:
        """Which batch ids committed (None: held by another process and `wait` is off)."""
        ...

    def bookkeeping(self, *, wait: bool = True, read_every_block: bool = False) -> Bookkeeping | None:
        """What the store records besides rows (None: held by another process and `wait` is off)."""
        ...
