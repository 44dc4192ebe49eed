"""SQL text shared by the offline engines and the SQL builders (point-in-time joins, latest rows,
DP truncation): quoting identifiers, and labelling result timestamps UTC."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa


def utc_schema(table: pa.Table) -> pa.Table:
    """Label every time-zone-aware timestamp column 'UTC' (DuckDB says 'Etc/UTC'); no data copy."""
    import pyarrow as pa

    fields = [
        f.with_type(pa.timestamp(f.type.unit, tz="UTC"))
        if pa.types.is_timestamp(f.type) and f.type.tz is not None
        else f
        for f in table.schema
    ]
    return table.cast(pa.schema(fields, metadata=table.schema.metadata))


def quote(identifier: str) -> str:
    """Quote a DuckDB identifier.

    >>> quote('fv_a"b')
    '"fv_a""b"'
    """
    return '"' + identifier.replace('"', '""') + '"'
