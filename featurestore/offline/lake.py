"""The lake layout: one Delta Lake table per view version under a directory or URI (delta-rs, no JVM).

A batch is one Delta commit: its rows are visible whole or not at all, also when the writing
process is killed part-way (the commit is the last step; files written before it belong to no
version and are removed by the next clean-up). Every row carries its ingestion time
(``_ingested_at``), its batch id (``_batch_id``) and a row id (``_fs_row``, the batch id times
2**32 plus the row's position in its batch: unique in a table, and greater for a later row of the
same batch), which ranks rows of equal event and ingestion time as DuckDB's ``rowid`` does in the
embedded file. The commit's custom metadata names the batch, so committed batches can be listed
from the log alone.

Statistics: Delta keeps per-file minimum and maximum values in its log, where no delete reaches
them (a log kept an erased e-mail as a ``minValues`` statistic after VACUUM). Here only the time
and batch columns have statistics (``delta.dataSkippingStatsColumns``): no key or feature value is
ever copied into the log. Deleting (erasure, retention) rewrites the affected files, vacuums with
zero retention, writes a checkpoint and removes every older log entry, so no data file, log entry
or statistic of the table still holds a deleted row.

Readers: :meth:`DeltaTables.dataset` gives a pyarrow dataset (DuckDB scans it in place) and
:meth:`DeltaTables.files` the Parquet files of the current version (Spark reads them directly: the
tables are written copy-on-write, without deletion vectors).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from ..entity_frames import US_UTC, row_numbers
from ..errors import ConfigError

if TYPE_CHECKING:
    import pyarrow.dataset as ds
    from deltalake import DeltaTable

ROW_BITS = 32
"""A row id is batch id << ROW_BITS | position in the batch (a batch holds fewer than 2**32 rows)."""
BATCH_KEY = "featurestore.batch"
ROWS_KEY = "featurestore.rows"
STAMPS = ("_ingested_at", "_batch_id", "_fs_row")


def _deltalake() -> Any:
    try:
        import deltalake
    except ImportError:  # pragma: no cover - the lake extra is missing
        raise ConfigError("the lake store needs deltalake: pip install 'featurestore[lake]'") from None
    return deltalake


@dataclass(frozen=True)
class Deleted:
    """What one delete on a lake table removed and cleaned."""

    rows: int
    files_removed: int
    """Data files vacuumed (rewritten or emptied by the delete, or left by a killed writer)."""
    log_entries_removed: int


def row_ids(batch_id: int, start: int, n: int) -> pa.Array:
    """The row ids of `n` rows of batch `batch_id` from position `start` on.

    >>> row_ids(3, 0, 2).to_pylist() == [3 << 32, (3 << 32) + 1]
    True
    """
    if not 0 <= batch_id < 2 ** (63 - ROW_BITS) or start + n > 2**ROW_BITS:
        raise ValueError(f"batch {batch_id} is out of the row-id range (batch id < 2**31, < 2**32 rows a batch)")
    import pyarrow.compute as pc

    return pc.add(row_numbers(n), pa.scalar((batch_id << ROW_BITS) + start, pa.int64()))


class DeltaTables:
    """The Delta tables of one lake store.

    Args:
        root: A directory, or a URI delta-rs understands (``s3://``, ``abfss://``, ``gs://``, ...).
        storage_options: Passed to delta-rs for object stores (credentials, endpoints).
        target_file_size: Bytes per data file (default: delta-rs', about 100 MB); a batch streams
            into as many files as it needs before its one commit.
    """

    def __init__(
        self, root: str | Path, storage_options: dict[str, str] | None = None, *, target_file_size: int | None = None
    ) -> None:
        text = str(root).rstrip("/")
        self._local = "://" not in text or text.startswith("file://")
        self.root = text.removeprefix("file://") if self._local else text
        """The lake's directory (a local path, also when given as ``file://``) or URI."""
        self.storage_options = storage_options
        self.target_file_size = target_file_size
        self._files: dict[str, tuple[tuple[str, ...], list[str]]] = {}

    @property
    def is_local(self) -> bool:
        """Whether the lake is a directory of this machine (not an object store)."""
        return self._local

    def uri(self, table: str) -> str:
        """Where a view version's table lives."""
        return f"{self.root}/{table}"

    def exists(self, table: str) -> bool:
        """Whether the table has been created."""
        return bool(_deltalake().DeltaTable.is_deltatable(self.uri(table), storage_options=self.storage_options))

    def _table(self, table: str) -> DeltaTable:
        table_type: Any = _deltalake().DeltaTable
        return table_type(self.uri(table), storage_options=self.storage_options)  # type: ignore[no-any-return]

    def create(self, table: str, schema: pa.Schema, time_columns: Sequence[str]) -> None:
        """Create a view version's table: `schema` is the view's columns (keys, event time,
        features); the stamps are added. Statistics are kept for `time_columns` and the stamps only."""
        if self.exists(table):
            return
        full = pa.schema(
            [
                *schema,
                pa.field("_ingested_at", US_UTC),
                pa.field("_batch_id", pa.int64()),
                pa.field("_fs_row", pa.int64()),
            ]
        )
        stats = ",".join(_stats_name(c) for c in [*time_columns, *STAMPS])
        if self._local:
            Path(self.uri(table)).mkdir(parents=True, exist_ok=True)
        _deltalake().DeltaTable.create(
            self.uri(table),
            full,
            mode="ignore",
            storage_options=self.storage_options,
            configuration={
                "delta.dataSkippingStatsColumns": stats,
                "delta.logRetentionDuration": "interval 0 seconds",
                "delta.deletedFileRetentionDuration": "interval 0 seconds",
                "delta.enableDeletionVectors": "false",
            },
        )

    def append(self, table: str, batches: Iterable[pa.Table], *, batch_id: int, ingested_at: datetime) -> int:
        """Append a batch as one commit, stamped with its id, ingestion time and row ids; returns
        its row count. The rows stream to Parquet files; the commit comes last, so a failure or a
        kill before it leaves no row of the batch visible."""
        dt = self._table(table)
        schema = dt.schema().to_arrow()
        target = pa.schema(schema)
        count = [0]

        def stamped() -> Iterator[pa.RecordBatch]:
            for data in batches:
                n = data.num_rows
                if n == 0:
                    continue
                full = (
                    data.append_column("_ingested_at", pa.array([ingested_at] * n, US_UTC))
                    .append_column("_batch_id", pa.repeat(pa.scalar(batch_id, pa.int64()), n))
                    .append_column("_fs_row", row_ids(batch_id, count[0], n))
                )
                count[0] += n
                yield from full.cast(target).to_batches()

        deltalake = _deltalake()
        reader = pa.RecordBatchReader.from_batches(target, stamped())
        deltalake.write_deltalake(
            dt,
            reader,
            mode="append",
            storage_options=self.storage_options,
            target_file_size=self.target_file_size,
            commit_properties=deltalake.CommitProperties(custom_metadata={BATCH_KEY: str(batch_id)}),
        )
        return count[0]

    def write_rows(self, table: str, rows: pa.Table) -> None:
        """Append rows that already carry their stamps (a new version starting with an older
        version's rows) as one commit."""
        dt = self._table(table)
        deltalake = _deltalake()
        deltalake.write_deltalake(
            dt,
            rows.cast(pa.schema(dt.schema().to_arrow())),
            mode="append",
            storage_options=self.storage_options,
            target_file_size=self.target_file_size,
            commit_properties=deltalake.CommitProperties(custom_metadata={"featurestore.carry": table}),
        )

    def overwrite(self, table: str, rows: pa.Table, metadata: dict[str, str]) -> None:
        """Replace every row by `rows` (which carry their stamps) in one commit; the old files stay
        until :meth:`clean`."""
        dt = self._table(table)
        deltalake = _deltalake()
        deltalake.write_deltalake(
            dt,
            rows.cast(pa.schema(dt.schema().to_arrow())),
            mode="overwrite",
            storage_options=self.storage_options,
            target_file_size=self.target_file_size,
            commit_properties=deltalake.CommitProperties(custom_metadata=metadata),
        )

    def has_commit(self, table: str, key: str, value: str) -> bool:
        """Whether the table's log holds a commit whose custom metadata has `key` = `value`."""
        return any(h.get(key) == value for h in self._table(table).history())

    def committed_batches(self, table: str) -> set[int]:
        """The batch ids whose commit is in the table's log (kept across clean-ups: every batch's
        rows carry its id, so batches with rows also show in the data)."""
        found = {int(h[BATCH_KEY]) for h in self._table(table).history() if BATCH_KEY in h}
        data = self.dataset(table)
        if data.count_rows():
            import pyarrow.compute as pc

            found |= set(pc.unique(data.to_table(columns=["_batch_id"]).column("_batch_id")).to_pylist())
        return found

    def dataset(self, table: str) -> ds.Dataset:
        """The current version as a pyarrow dataset (scanned in place, by DuckDB among others).

        A local lake is read through pyarrow's own file system: delta-rs' file-system handler
        (``to_pyarrow_dataset``) left threads that aborted the interpreter at exit, 1 run in 3
        here (delta-rs issue 2184, polars issue 24169)."""
        dt = self._table(table)
        if not self._local:
            return dt.to_pyarrow_dataset()
        import pyarrow.dataset as pads

        schema = pa.schema(dt.schema().to_arrow())
        return pads.dataset([uri.removeprefix("file://") for uri in dt.file_uris()], format="parquet", schema=schema)

    def register(self, con: Any, table: str, *, only_batches_in: str | None = None) -> None:
        """Make `table` readable under its name on the DuckDB connection `con` (a temporary view):
        DuckDB's own Parquet reader over the current version's files on a local lake (2-3x faster
        than scanning a pyarrow dataset), the pyarrow dataset on an object store. With
        `only_batches_in` (a table of ``batch_id``), rows of other batches are left out."""
        files = self.files(table) if self._local else []
        if files:
            paths = ", ".join("'" + f.removeprefix("file://").replace("'", "''") + "'" for f in files)
            source = f"read_parquet([{paths}])"
        else:
            source = f'"_fs_lake_{table}"'
            con.register(f"_fs_lake_{table}", self.dataset(table))
        where = f" WHERE _batch_id IN (SELECT batch_id FROM {only_batches_in})" if only_batches_in else ""
        con.execute(f'CREATE OR REPLACE TEMP VIEW "{table}" AS SELECT * FROM {source}{where}')

    def files(self, table: str) -> list[str]:
        """The Parquet files of the current version (what Spark reads). On a local lake the list
        is kept until the table's log changes (its entries are immutable and only ever added or,
        at clean-up, removed), so a store that opens many tables reads only their log listings."""
        if not self._local:
            return list(self._table(table).file_uris())
        try:
            entries = os.listdir(Path(self.uri(table)) / "_delta_log")
        except FileNotFoundError:
            entries = []
        state = tuple(sorted(entries))  # the whole listing: "_last_checkpoint" outsorts every version
        cached = self._files.get(table)
        if cached is None or cached[0] != state:
            cached = self._files[table] = (state, [u.removeprefix("file://") for u in self._table(table).file_uris()])
        return list(cached[1])

    def delete(self, table: str, predicate: str) -> Deleted:
        """Delete the rows matching a delta-rs SQL `predicate`, then leave no copy: vacuum with
        zero retention (every file no longer in the current version, also files of a killed
        writer), checkpoint, and remove every older log entry (their statistics and the delete's
        own predicate). Time travel to a version before the delete is gone with it."""
        dt = self._table(table)
        metrics = dt.delete(predicate)
        rows = int(metrics.get("num_deleted_rows", 0) or 0)
        return Deleted(rows, *self.clean(table))

    def clean(self, table: str) -> tuple[int, int]:
        """Vacuum with zero retention, checkpoint, drop older log entries; (files, log entries) removed."""
        dt = self._table(table)
        removed = dt.vacuum(retention_hours=0, dry_run=False, enforce_retention_duration=False, full=True)
        dt = self._table(table)
        log = self._log_entries(table)
        dt.create_checkpoint()
        dt.cleanup_metadata()
        return len(removed), max(0, len(log) - len(self._log_entries(table)))

    def _log_entries(self, table: str) -> list[str]:
        if not self._local:
            return []
        folder = Path(self.uri(table)) / "_delta_log"
        return sorted(p.name for p in folder.iterdir()) if folder.exists() else []

    def drop(self, table: str) -> None:
        """Remove a table and all its files (a local lake only)."""
        if not self._local:
            raise ConfigError(
                "dropping a table on an object store is not supported here: remove its prefix with the store's tools"
            )
        import shutil

        shutil.rmtree(self.uri(table), ignore_errors=True)


def _stats_name(column: str) -> str:
    return f"`{column}`" if not column.replace("_", "").isalnum() else column


def sql_literal(value: object) -> str:
    """A value as a delta-rs (DataFusion) SQL literal for a delete predicate.

    >>> sql_literal("o'brien"), sql_literal(7)
    ("'o''brien'", '7')
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"a lake predicate takes whole numbers and strings, not {type(value).__name__}")
    return str(value) if isinstance(value, int) else "'" + value.replace("'", "''") + "'"


def local_files(root: str | Path) -> list[Path]:
    """Every file under a local lake directory (for byte checks)."""
    return [Path(d) / f for d, _, files in os.walk(root) for f in files]


def strings_in(path: Path) -> set[str]:
    """Every string value in a lake file, decoded: Parquet columns (nested ones too, so compression
    hides nothing), JSON log entries (with the statistics JSON inside them), or the whole text of
    any other file. What an erasure check looks for a subject in."""
    import json

    found: set[str] = set()
    stack: list[Any] = []
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        stack.append(pq.read_table(path).to_pylist())
    elif path.suffix == ".json":
        stack.extend(
            json.loads(line) for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()
        )
    else:
        return {path.read_text(encoding="utf-8", errors="replace")}
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            found.add(item)
            if item.startswith("{"):  # statistics are JSON inside a string
                try:
                    stack.append(json.loads(item))
                except ValueError:
                    pass
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found
