"""``keep``: the column is stored as given (never for a direct identifier)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import KeyKind, Output, Treatment

if TYPE_CHECKING:
    import pyarrow as pa

    from ..keys import KeyRing
    from .base import ColumnRule


class Keep(Treatment):
    """Stored as given."""

    name = "keep"
    key_kind: KeyKind | None = None
    output: Output = "unchanged"
    rewrites = False
    reversible = False
    options: tuple[str, ...] = ()

    def apply(
        self, column: pa.ChunkedArray, rule: ColumnRule, keys: KeyRing, *, context: str, name: str | None = None
    ) -> pa.ChunkedArray:
        """The column itself."""
        return column

    def describe(self, rule: ColumnRule) -> str:
        """``kept as is``."""
        return "kept as is"

    def same(self, a: ColumnRule, b: ColumnRule) -> bool:
        """`b` keeps the column as given too."""
        return b.treatment == self.name
