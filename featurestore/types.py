"""The column types a definition can name, and their Arrow and DuckDB forms.

Timestamps are always time-zone aware and stored in UTC at microsecond precision.

>>> arrow_type("timestamp")
TimestampType(timestamp[us, tz=UTC])
>>> duckdb_type("float64")
'DOUBLE'
"""

from __future__ import annotations

import pyarrow as pa

_TYPES: dict[str, tuple[pa.DataType, str]] = {
    "bool": (pa.bool_(), "BOOLEAN"),
    "int32": (pa.int32(), "INTEGER"),
    "int64": (pa.int64(), "BIGINT"),
    "float32": (pa.float32(), "FLOAT"),
    "float64": (pa.float64(), "DOUBLE"),
    "string": (pa.string(), "VARCHAR"),
    "date": (pa.date32(), "DATE"),
    "timestamp": (pa.timestamp("us", tz="UTC"), "TIMESTAMPTZ"),
}

TYPE_NAMES: tuple[str, ...] = tuple(_TYPES)
"""Every type name a definition may use."""

KEY_TYPE_NAMES: tuple[str, ...] = ("int32", "int64", "string")
"""Type names allowed for entity join keys."""


def arrow_type(name: str) -> pa.DataType:
    """The Arrow type stored for a definition type name."""
    return _TYPES[name][0]


def duckdb_type(name: str) -> str:
    """The DuckDB column type stored for a definition type name."""
    return _TYPES[name][1]
