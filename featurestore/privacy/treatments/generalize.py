"""``generalize``: values coarsened before storage (:func:`featurestore.privacy.pseudonymize.generalize`):
dates to their month or year, numbers down to a multiple of a width, text to a prefix. The stored
type is the raw type; no key is needed and nothing turns a value back.

Option (required): ``generalize``, one of ``{to: month}``, ``{to: year}``, ``{width: N}``, ``{prefix: N}``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import KeyKind, Output, Treatment

if TYPE_CHECKING:
    import pyarrow as pa

    from ..keys import KeyRing
    from .base import ColumnRule

_BINS = {"to": "to its {}", "width": "to steps of {}", "prefix": "to its first {} characters"}


class Generalize(Treatment):
    """Coarsening of dates, numbers and text."""

    name = "generalize"
    key_kind: KeyKind | None = None
    output: Output = "unchanged"
    rewrites = True
    reversible = False
    options = ("generalize",)

    def apply(
        self, column: pa.ChunkedArray, rule: ColumnRule, keys: KeyRing, *, context: str, name: str | None = None
    ) -> pa.ChunkedArray | pa.Array:
        """The column coarsened as the rule's ``generalize`` says."""
        from ..pseudonymize import generalize

        assert rule.generalize is not None
        return generalize(column, rule.generalize)

    def describe(self, rule: ColumnRule) -> str:
        """``generalized``, with its bins.

        >>> from featurestore.policy.model import ColumnRule
        >>> Generalize().describe(ColumnRule("spend", "quasi_identifier", "generalize", generalize={"width": 5}))
        'generalized to steps of 5'
        """
        if not rule.generalize:
            return "generalized"
        ((key, value),) = rule.generalize.items()
        return "generalized " + _BINS[key].format(value)

    def same(self, a: ColumnRule, b: ColumnRule) -> bool:
        """Same stored values: `b` generalizes too, into the same bins."""
        return b.treatment == self.name and a.generalize == b.generalize
