"""Turning user data into validated Arrow batches for one feature view version (no I/O but reads).

A source is a pyarrow Table or RecordBatchReader, a pandas or polars DataFrame, or a path to a
Parquet or CSV file. Files and readers are streamed batch by batch, so a file larger than memory
can be ingested; the caller writes every batch in one transaction.

Validation, per batch, before anything is written:
- every join key, the event-timestamp column and every feature is present; nothing else is
  (checked on the schema, before anything is recorded, with every problem listed at once);
- each column converts to the declared type without loss (no truncated floats, no overflow,
  no sub-microsecond timestamps, no float narrowing that changes a value);
- timestamps are time-zone aware (naive ones are rejected, with how to declare a zone);
- join keys and event timestamps have no nulls.
"""

from __future__ import annotations

import csv
import dataclasses
import re
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.compute as pc

from .errors import IngestionError, did_you_mean
from .redaction import csv_column, describe, first_bad_row
from .types import arrow_type

STREAM_BATCH_ROWS = 1_000_000
T = TypeVar("T")


@dataclass(frozen=True)
class TargetSchema:
    """The columns one view version stores, with their definition type names."""

    view: str
    join_keys: Mapping[str, str]
    timestamp_field: str
    features: Mapping[str, str]
    free_types: frozenset[str] = frozenset()
    created_field: str | None = None
    """The created-time column (tie-break), if the view has one: a timestamp, nulls allowed."""
    """Stored columns whose source type is free: a policy turns them into text first."""
    dropped: frozenset[str] = frozenset()
    """Source columns a policy drops: accepted in the data, never stored."""

    @property
    def columns(self) -> dict[str, str]:
        """Every stored column, in table order: keys, event time, created time (if any), features."""
        created = {self.created_field: "timestamp"} if self.created_field else {}
        return {**self.join_keys, self.timestamp_field: "timestamp", **created, **self.features}


@dataclass
class Source:
    """Batches to ingest and a short description of where they came from."""

    batches: Iterator[pa.RecordBatch | pa.Table]
    description: str
    schema: pa.Schema


def open_source(data: Any, target: TargetSchema) -> Source:
    """Adapt any supported input to a stream of Arrow batches."""
    if isinstance(data, pa.Table):
        chunks = (data.slice(start, STREAM_BATCH_ROWS) for start in range(0, max(data.num_rows, 1), STREAM_BATCH_ROWS))
        return Source(chunks, f"arrow table ({data.num_rows} rows)", data.schema)
    if isinstance(data, pa.RecordBatch):
        return Source(iter([data]), f"arrow record batch ({data.num_rows} rows)", data.schema)
    if isinstance(data, pa.RecordBatchReader):
        return Source(iter(data), "arrow record batch stream", data.schema)
    if isinstance(data, (str, Path)):
        return _open_file(Path(data), target)
    module = type(data).__module__.split(".", 1)[0]
    if module == "pandas":
        try:
            table = pa.Table.from_pandas(data, preserve_index=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise IngestionError(
                f"cannot convert the pandas DataFrame for '{target.view}': {_pandas_problem(data, str(exc))}; "
                "give the column one type (e.g. df[col].astype('int64'))"
            ) from None
        return dataclasses.replace(open_source(table, target), description=f"pandas DataFrame ({table.num_rows} rows)")
    if module == "polars" and hasattr(data, "to_arrow"):
        table = data.to_arrow()
        return dataclasses.replace(open_source(table, target), description=f"polars DataFrame ({table.num_rows} rows)")
    raise IngestionError(
        f"cannot ingest a {type(data).__name__} into '{target.view}': pass a pyarrow Table or "
        "RecordBatchReader, a pandas or polars DataFrame, or the path of a .parquet or .csv file"
    )


def _open_file(path: Path, target: TargetSchema) -> Source:
    if not path.is_file():
        raise IngestionError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        try:
            pfile = pq.ParquetFile(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise IngestionError(f"{path}: not a readable Parquet file ({describe(str(exc))})") from None
        batches = pfile.iter_batches(batch_size=STREAM_BATCH_ROWS)
        return Source(
            _wrap_errors(batches, path, target),
            f"parquet file {path} ({pfile.metadata.num_rows} rows)",
            pfile.schema_arrow,
        )
    if suffix == ".csv":
        import pyarrow.csv as pcsv

        # Declared types keep keys such as "00123" as text; timestamps are left to inference
        # so a value without a zone offset is caught by validation with a clear message.
        types = {n: arrow_type(t) for n, t in target.columns.items() if t != "timestamp"}
        bad_lines: list[int] = []

        def invalid_row(row: Any) -> str:  # records where a line has the wrong number of fields
            bad_lines.append(int(row.number) if row.number is not None else _line_of(path, row.text))
            return "error"

        try:
            reader = pcsv.open_csv(
                path,
                read_options=pcsv.ReadOptions(block_size=64 << 20),
                parse_options=pcsv.ParseOptions(invalid_row_handler=invalid_row),
                convert_options=pcsv.ConvertOptions(column_types=types),
            )
        except (pa.ArrowInvalid, OSError) as exc:
            raise csv_error(path, exc, types, bad_lines) from None
        return Source(_wrap_errors(iter(reader), path, target, types, bad_lines), f"csv file {path}", reader.schema)
    raise IngestionError(f"{path}: unsupported file type '{suffix}'; use .parquet or .csv")


def _wrap_errors(
    batches: Iterator[pa.RecordBatch],
    path: Path,
    target: TargetSchema,
    types: dict[str, pa.DataType] | None = None,
    bad_lines: list[int] | None = None,
) -> Iterator[pa.RecordBatch]:
    try:
        yield from batches
    except (pa.ArrowInvalid, OSError) as exc:
        if types is None:
            raise IngestionError(f"{path}: {describe(str(exc))}") from None
        raise csv_error(path, exc, types, bad_lines or []) from None


def _line_of(path: Path, text: str) -> int:
    """The 1-based line of `path` that reads `text` (a streaming CSV reader does not count lines);
    0 if none does."""
    with open(path, encoding="utf-8", errors="replace", newline="") as handle:
        for number, line in enumerate(handle, start=1):
            if line.rstrip("\r\n") == text:
                return number
    return 0


def csv_error(path: Path, exc: BaseException, types: dict[str, pa.DataType], bad_lines: list[int]) -> IngestionError:
    """A CSV read error that names the line or the column and row, never the values there."""
    import pyarrow.csv as pcsv

    text = str(exc)
    problem = describe(text)
    if bad_lines:
        where = f"line {bad_lines[0]}: " if bad_lines[0] else ""
        return IngestionError(f"{path}: {where}{problem}; every line needs one field per header column")
    index = csv_column(text)
    if index is not None:
        try:
            with open(path, newline="", encoding="utf-8", errors="replace") as handle:
                name = next(csv.reader(handle))[index]
            column = pcsv.read_csv(
                path, convert_options=pcsv.ConvertOptions(include_columns=[name], column_types={name: pa.string()})
            ).column(name)
            want = types.get(name)
            row = first_bad_row(column, want) if want is not None else None
        except (pa.ArrowInvalid, OSError, IndexError, StopIteration, csv.Error):
            return IngestionError(f"{path}: column #{index + 1}: {problem}")
        where = f"row {row + 1} (line {row + 2})" if row is not None else "a row"
        return IngestionError(f"{path}: column '{name}', {where}: {problem}")
    return IngestionError(f"{path}: cannot read CSV: {problem}")


def _pandas_problem(data: Any, text: str) -> str:
    """What a pandas conversion error means, with the column and the first row whose type differs."""
    problem = describe(text)
    match = re.search(r"Conversion failed for column (.+?) with type", text)
    if match and match.group(1) in data.columns:
        column = data[match.group(1)]
        kinds = [type(v) for v in column if v is not None and v == v]
        first = kinds[0] if kinds else None
        for row, value in enumerate(column):
            if value is not None and value == value and type(value) is not first:
                return f"{problem}: column '{match.group(1)}' changes type at row {row}"
    return problem


_END = object()


def prefetched(items: Iterator[T]) -> Iterator[T]:
    """Yield `items`, preparing the next one on a worker thread while the caller works on the
    current one (reading, treating and validating a chunk overlaps with inserting the last;
    Arrow, polars and DuckDB release the GIL). Errors surface where the item is taken."""
    with ThreadPoolExecutor(1, thread_name_prefix="featurestore-ingest") as pool:
        future = pool.submit(next, items, _END)
        while True:
            item = future.result()
            if item is _END:
                return
            future = pool.submit(next, items, _END)
            yield item  # type: ignore[misc]


def check_schema(schema: pa.Schema, target: TargetSchema) -> None:
    """Raise IngestionError listing every column problem at once: missing, unknown, duplicate,
    of a type that cannot hold the declared one, or timestamps without a time zone."""
    expected = list(target.columns)
    present = list(schema.names)
    problems: list[str] = []
    dupes = sorted({n for n in present if present.count(n) > 1})
    if dupes:
        problems.append(f"duplicate columns: {', '.join(dupes)}")
    missing = [c for c in expected if c not in present]
    unknown = [c for c in present if c not in expected and c not in target.dropped]
    for col in missing:
        problems.append(f"missing column '{col}'." + did_you_mean(col, unknown))
    for col in unknown:
        problems.append(
            f"unknown column '{col}'."
            + did_you_mean(col, missing)
            + " Drop it before ingesting, or add it to the view definition (a new version)."
        )
    for name, dtype in target.columns.items():
        if name in present and not dupes and name not in target.free_types:
            problem = type_problem(schema.field(name).type, name, dtype)
            if problem:
                problems.append(problem)
    if problems:
        raise IngestionError(f"data for '{target.view}' does not fit its columns:\n  " + "\n  ".join(problems))


def type_problem(have: pa.DataType, name: str, dtype: str) -> str | None:
    """Why a column of Arrow type `have` cannot hold the declared type `dtype` (None if it can)."""
    family = _family(have)
    if have == arrow_type(dtype) or family == "null":
        return None
    if family not in _ALLOWED[dtype]:
        return (
            f"column '{name}' is {have} in the data but {dtype} in the definition; convert it "
            "before ingesting, or change the feature's type (a new version)"
        )
    if family == "timestamp" and have.tz is None:
        return (
            f"column '{name}' has time-zone-naive timestamps; declare their zone, e.g. in pandas "
            f"df['{name}'] = df['{name}'].dt.tz_localize('UTC'), in Arrow "
            "pa.timestamp('us', tz='UTC'), in CSV an offset like 2024-05-01T12:00:00Z"
        )
    return None


_INTS = {pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64()}
_FLOATS = {pa.float16(), pa.float32(), pa.float64()}


def _family(t: pa.DataType) -> str:
    if pa.types.is_dictionary(t):
        return _family(t.value_type)
    if t in _INTS:
        return "int"
    if t in _FLOATS:
        return "float"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_timestamp(t):
        return "timestamp"
    if pa.types.is_null(t):
        return "null"
    return str(t)


# Which source families may be converted to which declared type.
_ALLOWED = {
    "bool": {"bool"},
    "int32": {"int", "float"},
    "int64": {"int", "float"},
    "float32": {"int", "float"},
    "float64": {"int", "float"},
    "string": {"string"},
    "date": {"date"},
    "timestamp": {"timestamp"},
}


def convert_column(
    column: pa.ChunkedArray | pa.Array, name: str, dtype: str, target: TargetSchema, row_offset: int = 0
) -> pa.ChunkedArray | pa.Array:
    """Convert one column to its declared type, or raise IngestionError saying why not."""
    want = arrow_type(dtype)
    have = column.type
    if have == want or (dtype == "string" and (pa.types.is_large_string(have) or pa.types.is_string_view(have))):
        return column  # DuckDB reads every Arrow string layout; no copy needed
    family = _family(have)
    where = f"column '{name}' of '{target.view}'"
    if family == "null":
        return pa.nulls(len(column), want)
    problem = type_problem(have, name, dtype)
    if problem:
        raise IngestionError(f"'{target.view}': {problem}")
    if pa.types.is_dictionary(have):
        column = pc.cast(column, have.value_type)
    try:
        converted = pc.cast(column, want, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        hint = ""
        if family == "timestamp":
            hint = " The store keeps microseconds: round first, e.g. df[col].dt.floor('us')."
        row = first_bad_row(column, want)
        at = f" (first at row {row_offset + row})" if row is not None else ""
        raise IngestionError(
            f"{where} cannot be stored as {dtype} without loss: {describe(str(exc))}{at}.{hint}"
        ) from None
    if family == "float" and dtype == "float32" and have != want:
        back = pc.cast(converted, have)
        same = pc.or_kleene(pc.equal(back, column), pc.and_(pc.is_nan(back), pc.is_nan(column)))
        if not pc.all(pc.fill_null(same, True)).as_py():
            raise IngestionError(
                f"{where} cannot be stored as float32 without loss: some values need float64 "
                "precision; declare the feature float64"
            )
    return converted


def validate_batch(batch: pa.RecordBatch | pa.Table, target: TargetSchema, *, row_offset: int) -> pa.Table:
    """Check one batch and return it as a Table with the stored column order and types."""
    table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
    if target.dropped:
        table = table.drop_columns([c for c in table.column_names if c in target.dropped])
    columns = []
    for name, dtype in target.columns.items():
        columns.append(convert_column(table.column(name), name, dtype, target, row_offset))
    for name in [*target.join_keys, target.timestamp_field]:
        col = table.column(name)
        if col.null_count:
            first = pc.index(pc.is_null(col), True).as_py()
            kind = "entity key" if name in target.join_keys else "event timestamp"
            raise IngestionError(
                f"column '{name}' of '{target.view}' has {col.null_count} null {kind}"
                f"{'s' if col.null_count > 1 else ''} (first at row {row_offset + first}); "
                "every row needs its key and event time: drop or fill those rows"
            )
    return pa.Table.from_arrays(columns, names=list(target.columns))


def rows_table(rows: list[dict[str, Any]], types: dict[str, str]) -> pa.Table:
    """JSON-style rows (one object per row, e.g. an HTTP body) as an Arrow table in the definition
    `types`: timestamps as ISO 8601 text with a zone, dates as ``YYYY-MM-DD``. A value that does not
    convert is an IngestionError naming its row and column, never the value; columns the rows
    carry but the definition does not are kept (``check_schema`` says what to do with them)."""
    from datetime import date, datetime

    names = list(dict.fromkeys(name for row in rows for name in row))
    columns: dict[str, pa.Array] = {}
    for name in names:
        values = [row.get(name) for row in rows]
        dtype = types.get(name)
        if dtype in ("timestamp", "date"):
            parsed: list[Any] = []
            for index, value in enumerate(values):
                try:
                    if value is None or isinstance(value, (date, datetime)):
                        parsed.append(value)
                    elif dtype == "date":
                        parsed.append(date.fromisoformat(str(value)))
                    else:
                        moment = datetime.fromisoformat(str(value))
                        if moment.tzinfo is None:
                            raise IngestionError(
                                f"row {index}, column '{name}': the timestamp has no time zone; write it "
                                "with one, e.g. 2025-01-01T00:00:00Z"
                            )
                        parsed.append(moment)
                except ValueError:
                    raise IngestionError(
                        f"row {index}, column '{name}': not an ISO 8601 {dtype} "
                        f"(e.g. {'2025-01-01' if dtype == 'date' else '2025-01-01T00:00:00Z'})"
                    ) from None
            values = parsed
        try:
            columns[name] = pa.array(values, arrow_type(dtype)) if dtype is not None else pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            bad = next((i for i, v in enumerate(values) if not _fits(v, dtype)), None)
            where = f"row {bad}, " if bad is not None else ""
            raise IngestionError(
                f"{where}column '{name}': a value is not {dtype or 'of one type with the others'}"
            ) from None
    return pa.table(columns)


def _fits(value: Any, dtype: str | None) -> bool:
    try:
        pa.array([value], arrow_type(dtype)) if dtype is not None else pa.array([value])
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return False
    return True
