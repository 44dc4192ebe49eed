"""Errors about data, without the data: what went wrong, in which column and row, never the value.

Arrow, pandas and CSV errors quote the offending value or the whole line ("CSV parse error:
Expected 4 columns, got 5: P2,2026-01-01T00:00:00Z,Raw.Person1@Example.org,..."). Any such value
may be a governed identifier, so these rules keep only the kind of problem (a type, a count, a
range) and the store names the column and the row itself (:func:`first_bad_row`).
"""

from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.compute as pc

_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"CSV parse error: (?:Row #\d+: )?Expected (\d+) columns, got (\d+)"), "expected {0} columns, got {1}"),
    (re.compile(r"CSV conversion error to ([\w\[\], =:/+-]+?): invalid value"), "a value is not a valid {0}"),
    (
        re.compile(r"Failed to parse string: .* as a scalar of type ([\w\[\], =:/+-]+?)(?::|$)", re.S),
        "a value is not a valid {0}",
    ),
    (re.compile(r"expected a zone offset"), "a timestamp has no zone offset (add Z or +01:00, or declare the zone)"),
    (
        re.compile(r"Float value .* was truncated converting to (\w+)"),
        "a fractional value would be truncated converting to {0}",
    ),
    (re.compile(r"Integer value .* not in range: (-?\d+) to (-?\d+)"), "a value is out of range ({0} to {1})"),
    (
        re.compile(r"Could not convert .* with type (\w+): tried to convert to (\w+)", re.S),
        "a {0} value cannot be converted to {1}",
    ),
    (
        re.compile(r"Conversion failed for column (.+?) with type (\w+)"),
        "column '{0}' ({1}) holds values of mixed types",
    ),
    (re.compile(r"CSV parse error: .*quote", re.S | re.I), "a quoted field is not closed"),
    (re.compile(r"(?:invalid|not valid) UTF-?8", re.I), "the data is not valid UTF-8 text"),
)
WITHHELD = "invalid data (the exact error is withheld: it quotes values)"


def describe(text: str) -> str:
    """The kind of data problem an Arrow or pandas error reports, without any value it quotes.

    >>> describe("CSV parse error: Expected 4 columns, got 5: P2,2026-01-01,raw@example.org")
    'expected 4 columns, got 5'
    >>> describe("Failed to parse string: 'raw@example.org' as a scalar of type int64")
    'a value is not a valid int64'
    >>> describe("something about 'raw@example.org'")
    'invalid data (the exact error is withheld: it quotes values)'
    """
    found = [template.format(*match.groups()) for rule, template in _RULES if (match := rule.search(text))]
    return "; ".join(dict.fromkeys(found)) or WITHHELD


def csv_column(text: str) -> int | None:
    """The 0-based column an Arrow CSV conversion error names (``In CSV column #3: ...``)."""
    match = re.search(r"In CSV column #(\d+)", text)
    return int(match.group(1)) if match else None


def first_bad_row(column: pa.Array | pa.ChunkedArray, want: pa.DataType) -> int | None:
    """The index of the first value that does not cast safely to `want` (None if all do), by
    halving: about 2 log2(n) casts of slices, on the error path only."""
    values = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column

    def ok(array: pa.Array) -> bool:
        try:
            pc.cast(array, want, safe=True)
            return True
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return False

    if ok(values):
        return None
    lo, hi = 0, len(values)  # the first bad index is in [lo, hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(values.slice(lo, mid - lo)):
            lo = mid
        else:
            hi = mid
    return lo
