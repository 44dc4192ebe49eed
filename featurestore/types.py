"""The column types a definition can name, and their Arrow and DuckDB forms.

Timestamps are always time-zone aware and stored in UTC at microsecond precision.

>>> arrow_type("timestamp")
TimestampType(timestamp[us, tz=UTC])
>>> duckdb_type("float64")
'DOUBLE'
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

_DUCKDB: dict[str, str] = {
    "bool": "BOOLEAN",
    "int32": "INTEGER",
    "int64": "BIGINT",
    "float32": "FLOAT",
    "float64": "DOUBLE",
    "string": "VARCHAR",
    "date": "DATE",
    "timestamp": "TIMESTAMPTZ",
}

TYPE_NAMES: tuple[str, ...] = tuple(_DUCKDB)
"""Every type name a definition may use."""

KEY_TYPE_NAMES: tuple[str, ...] = ("int32", "int64", "string")
"""Type names allowed for entity join keys."""


@functools.cache
def arrow_type(name: str) -> pa.DataType:
    """The Arrow type stored for a definition type name (pyarrow is imported on first use, so the
    CLI starts without it)."""
    import pyarrow as pa

    types = {
        "bool": pa.bool_(),
        "int32": pa.int32(),
        "int64": pa.int64(),
        "float32": pa.float32(),
        "float64": pa.float64(),
        "string": pa.string(),
        "date": pa.date32(),
        "timestamp": pa.timestamp("us", tz="UTC"),
    }
    return types[name]


def duckdb_type(name: str) -> str:
    """The DuckDB column type stored for a definition type name."""
    return _DUCKDB[name]
