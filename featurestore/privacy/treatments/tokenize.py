"""``tokenize``: a normalized value encrypted as a deterministic AES-SIV token under the current
AES-SIV key, ``"<key id>:<base64url>"`` (:func:`featurestore.privacy.pseudonymize.tokenize`).
Equal values still join; the view column's token context is authenticated, so a token opens
only through the view and column it was made for, and only for ``reidentify`` access.

Options: ``normalize`` and, for phone numbers, ``region`` / ``country_code``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .base import KeyKind, Output, Treatment, every_key, normalization, same_normalization

if TYPE_CHECKING:
    import pyarrow as pa

    from ..keys import DataKey, KeyRing
    from .base import ColumnRule


def tokenizer(key: DataKey, context: str) -> Callable[[str], str]:
    """The token of one normalized value with `key` under a view column's token `context`."""
    import pyarrow as pa

    from ..pseudonymize import tokenize

    def token(value: str) -> str:
        result: str = tokenize(pa.array([value]), key, context=context)[0].as_py()
        return result

    return token


class Tokenize(Treatment):
    """Reversible, deterministic encryption (AES-SIV tokens) of normalized values."""

    name = "tokenize"
    key_kind: KeyKind | None = "siv"
    output: Output = "text"
    rewrites = True
    reversible = True
    options = ("normalize", "region", "country_code")

    def apply(
        self, column: pa.ChunkedArray, rule: ColumnRule, keys: KeyRing, *, context: str, name: str | None = None
    ) -> pa.Array:
        """The column's tokens under the current AES-SIV key."""
        from ..pseudonymize import normalize, tokenize

        return tokenize(
            normalize(column, rule.normalize, region=rule.region, name=name), keys.current("siv"), context=context
        )

    def stored_forms(
        self, raw: pa.ChunkedArray, rule: ColumnRule, keys: KeyRing, *, context: str
    ) -> list[pa.ChunkedArray]:
        """The tokens of `raw` under every AES-SIV key id."""
        import pyarrow as pa

        from ..pseudonymize import normalize, tokenize

        normalized = normalize(raw, rule.normalize, region=rule.region)
        return [pa.chunked_array([tokenize(normalized, k, context=context)]) for k in every_key(keys, "siv")]

    def lookup_forms(self, rule: ColumnRule, keys: KeyRing, *, context: str) -> tuple[Callable[[str], str], ...]:
        """A tokenizer per AES-SIV key id."""
        return tuple(tokenizer(k, context) for k in every_key(keys, "siv"))

    def reverse(self, stored: str, rule: ColumnRule, keys: KeyRing, *, context: str) -> str:
        """The value behind a token, with the key its prefix names (an unknown key id raises
        KeyManagementError; a token of another context, PolicyViolation)."""
        from ..pseudonymize import detokenize

        return detokenize(stored, keys.get(stored.partition(":")[0]), context=context)

    def describe(self, rule: ColumnRule) -> str:
        """``encrypted as a reversible token``, with its normalization.

        >>> from featurestore.policy.model import ColumnRule
        >>> Tokenize().describe(ColumnRule("iban", "direct_identifier", "tokenize"))
        'encrypted as a reversible token'
        """
        return "encrypted as a reversible token" + normalization(rule)

    def same(self, a: ColumnRule, b: ColumnRule) -> bool:
        """Same tokens: `b` tokenizes too, with the same normalization and phone region."""
        return b.treatment == self.name and same_normalization(a, b)
