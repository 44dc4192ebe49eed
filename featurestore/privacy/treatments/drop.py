"""``drop``: the column is accepted in ingested data and never stored; a view may not declare it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import KeyKind, Output, Treatment

if TYPE_CHECKING:
    import pyarrow as pa

    from ..keys import KeyRing
    from .base import ColumnRule


class Drop(Treatment):
    """Nothing stored."""

    name = "drop"
    key_kind: KeyKind | None = None
    output: Output = "none"
    rewrites = False
    reversible = False
    options: tuple[str, ...] = ()

    def apply(
        self, column: pa.ChunkedArray, rule: ColumnRule, keys: KeyRing, *, context: str, name: str | None = None
    ) -> None:
        """Nothing: the column is not stored."""
        return None

    def describe(self, rule: ColumnRule) -> str:
        """``dropped (never stored)``."""
        return "dropped (never stored)"

    def same(self, a: ColumnRule, b: ColumnRule) -> bool:
        """`b` drops the column too."""
        return b.treatment == self.name
