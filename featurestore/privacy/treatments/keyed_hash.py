"""``keyed_hash``: a normalized value replaced by its HMAC-SHA256 pseudonym under the current
HMAC key, ``"<key id>:<hex>"`` (:func:`featurestore.privacy.pseudonymize.keyed_hash`). One-way:
equal values still join, nothing turns a pseudonym back.

Options: ``normalize`` and, for phone numbers, ``region`` / ``country_code``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from .base import KeyKind, Output, Target, Treatment, every_key, normalization, same_normalization

if TYPE_CHECKING:
    import pyarrow as pa

    from ..keys import KeyRing
    from .base import ColumnRule


def pseudonymizer(key_id: str, secret: bytes) -> Callable[[str], str]:
    """The pseudonym of one normalized value under one HMAC key (`secret`: its key bytes, as
    :attr:`~featurestore.privacy.keys.DataKey.hmac_text` encodes them), computed as ingestion
    computes it for a whole column.

    >>> pseudonymizer("hmac-1", b"Jefe")("what do ya want for nothing?")
    'hmac-1:5bdcc146bf60754e6a042426089575c7'
    """
    from ..pseudonymize import PSEUDONYM_HEX_DIGITS

    def pseudonym(value: str) -> str:
        return f"{key_id}:" + hmac.new(secret, value.encode(), hashlib.sha256).hexdigest()[:PSEUDONYM_HEX_DIGITS]

    return pseudonym


class KeyedHash(Treatment):
    """Keyed hashing (HMAC-SHA256 pseudonyms) of normalized values."""

    name = "keyed_hash"
    key_kind: KeyKind | None = "hmac"
    output: Output = "text"
    rewrites = True
    reversible = False
    options = ("normalize", "region", "country_code")

    def apply(
        self, column: pa.ChunkedArray, rule: ColumnRule, keys: KeyRing, *, context: str, name: str | None = None
    ) -> pa.ChunkedArray:
        """The column's pseudonyms under the current HMAC key."""
        return self.apply_all({name or "": Target(column, rule, context)}, keys)[name or ""]

    def apply_all(self, targets: Mapping[str, Target], keys: KeyRing) -> dict[str, pa.ChunkedArray]:
        """Every column's pseudonyms in one native pass (in parallel across columns of equal length)."""
        from ..pseudonymize import keyed_hash_columns

        columns = {name: (t.column, t.rule.normalize, t.rule.region) for name, t in targets.items()}
        return keyed_hash_columns(columns, keys.current("hmac"))

    def stored_forms(
        self, raw: pa.ChunkedArray, rule: ColumnRule, keys: KeyRing, *, context: str
    ) -> list[pa.ChunkedArray]:
        """The pseudonyms of `raw` under every HMAC key id."""
        from ..pseudonymize import keyed_hash

        return [keyed_hash(raw, k, normalize=rule.normalize, region=rule.region) for k in every_key(keys, "hmac")]

    def lookup_forms(self, rule: ColumnRule, keys: KeyRing, *, context: str) -> tuple[Callable[[str], str], ...]:
        """A pseudonymizer per HMAC key id (plain Python: one value, no dataframe)."""
        return tuple(pseudonymizer(k.id, k.hmac_text.encode()) for k in every_key(keys, "hmac"))

    def describe(self, rule: ColumnRule) -> str:
        """``replaced by a keyed hash``, with its normalization.

        >>> from featurestore.policy.model import ColumnRule
        >>> KeyedHash().describe(ColumnRule("email", "direct_identifier", "keyed_hash", normalize="email"))
        'replaced by a keyed hash (after email normalization)'
        """
        return "replaced by a keyed hash" + normalization(rule)

    def same(self, a: ColumnRule, b: ColumnRule) -> bool:
        """Same pseudonyms: `b` hashes too, with the same normalization and phone region."""
        return b.treatment == self.name and same_normalization(a, b)
