"""The one protocol every treatment implements, and the helpers the treatments share.

Nothing here imports pyarrow or the mechanisms of :mod:`featurestore.privacy.pseudonymize` at
module level: policies are loaded (and their plan worded) without them; data is treated with them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from ...errors import PolicyViolation

if TYPE_CHECKING:
    import pyarrow as pa

    from ..keys import DataKey, KeyRing


class ColumnRule(Protocol):
    """What a treatment reads of a policy's column rule (:class:`featurestore.policy.model.ColumnRule`
    satisfies it): the treatments stand below the policy model and do not import it."""

    @property
    def name(self) -> str:
        """The column (or glob pattern) the rule is written for."""
        ...

    @property
    def treatment(self) -> str:
        """The treatment's name."""
        ...

    @property
    def normalize(self) -> str:
        """How identifiers are normalized before hashing or tokenizing."""
        ...

    @property
    def region(self) -> str | None:
        """Where phone numbers without a country code are read."""
        ...

    @property
    def generalize(self) -> dict[str, Any] | None:
        """Generalization settings."""
        ...


KeyKind = Literal["hmac", "siv"]
"""The kinds of data key a treatment may need (:data:`featurestore.privacy.keys.KINDS`)."""

Output = Literal["text", "unchanged", "none"]
"""What a treatment stores: text whatever the raw type (hash, token), values of the raw type
(generalize, keep), or nothing (drop)."""


@dataclass(frozen=True)
class Target:
    """One column of a batch to treat: its values, its rule and its token context."""

    column: pa.ChunkedArray
    rule: ColumnRule
    context: str
    """The authenticated context of its tokens (:func:`~featurestore.privacy.pseudonymize.token_context`)."""


@runtime_checkable
class Treatment(Protocol):
    """What a policy does to one column before it is stored, and everything that follows from it.

    An implementation subclasses this protocol (for the defaults below) and is registered once
    in :data:`featurestore.privacy.treatments.REGISTRY`, under the name policy files use.
    """

    name: str
    """The name policy files use (``treatment: keyed_hash``)."""
    key_kind: KeyKind | None
    """The kind of data key it needs, or None. ``"hmac"`` also promises that stored values are
    HMAC pseudonyms ``"<key id>:<hex>"`` of the normalized value: the values subject hashes are
    made of (:mod:`featurestore.governance.subjects`)."""
    output: Output
    """What is stored: ``"text"`` (a view declares the column ``string``), ``"unchanged"`` (the
    raw type) or ``"none"`` (nothing)."""
    rewrites: bool
    """Whether stored values differ from the raw ones (hash, token, generalization): rows stored
    raw before a policy said so must be treated in place (``approve --treat-existing``)."""
    reversible: bool
    """Whether a stored value can be turned back into the raw one (:meth:`reverse`)."""
    options: tuple[str, ...]
    """The column settings of a policy file it reads besides ``kind`` and ``treatment``."""

    @property
    def stored(self) -> bool:
        """Whether the column is stored at all (False: dropped before anything is written)."""
        return self.output != "none"

    @property
    def as_is(self) -> bool:
        """Whether the column is stored exactly as given (so a direct identifier may not have it)."""
        return self.stored and not self.rewrites

    def apply(
        self, column: pa.ChunkedArray, rule: ColumnRule, keys: KeyRing, *, context: str, name: str | None = None
    ) -> pa.ChunkedArray | pa.Array | None:
        """The column as stored (None: not stored), treated with the current key of its kind;
        `context` authenticates tokens, `name` names the column in error messages."""
        ...

    def apply_all(self, targets: Mapping[str, Target], keys: KeyRing) -> dict[str, pa.ChunkedArray | pa.Array | None]:
        """:meth:`apply` to several columns of one batch, by name (a treatment that can share work
        across columns, as keyed hashing's one native pass, does it here)."""
        return {name: self.apply(t.column, t.rule, keys, context=t.context, name=name) for name, t in targets.items()}

    def stored_forms(
        self, raw: pa.ChunkedArray, rule: ColumnRule, keys: KeyRing, *, context: str
    ) -> list[pa.ChunkedArray]:
        """Every form raw values of a join key may be stored in: one column per key id of its kind
        (old rows keep the forms of the key that made them, so lookups, erasure, tombstones and
        holds survive key rotation); values stored as given are their one form."""
        return [raw]

    def lookup_forms(self, rule: ColumnRule, keys: KeyRing, *, context: str) -> tuple[Callable[[str], str], ...]:
        """For online lookups: per key id (newest last), the stored form of one normalized raw
        value. Empty: the key is looked up as given."""
        return ()

    def reverse(self, stored: str, rule: ColumnRule, keys: KeyRing, *, context: str) -> str:
        """The raw value behind a stored one, where the treatment is reversible; else refused."""
        raise PolicyViolation(
            f"column '{rule.name}' is {self.describe(rule)}: its stored values cannot be turned back (only tokens can)"
        )

    def describe(self, rule: ColumnRule) -> str:
        """What happens to the column, in the words legal reads (``policy plan``, ``policy show``),
        with the options that decide its stored values."""
        ...

    def same(self, a: ColumnRule, b: ColumnRule) -> bool:
        """Whether `b` (any rule) would store exactly the values `a` (a rule of this treatment)
        stores: the question both the policy plan and ``--treat-existing`` ask."""
        ...


def every_key(keys: KeyRing, kind: KeyKind) -> list[DataKey]:
    """Every key of a kind, oldest first (the current one is made if there is none yet)."""
    return keys.keys(kind) or [keys.current(kind)]


def normalization(rule: ColumnRule) -> str:
    """The words for how a column is normalized before it is hashed or encrypted ("" if it is not).

    >>> from featurestore.policy.model import ColumnRule
    >>> normalization(ColumnRule("email", "direct_identifier", "keyed_hash", normalize="email"))
    ' (after email normalization)'
    >>> normalization(ColumnRule("phone", "direct_identifier", "tokenize", normalize="phone", region="GB"))
    ' (after phone normalization; numbers without a country code are read in region GB)'
    """
    if rule.normalize == "none":
        return ""
    region = f"; numbers without a country code are read in region {rule.region}" if rule.region else ""
    return f" (after {rule.normalize} normalization{region})"


def same_normalization(a: ColumnRule, b: ColumnRule) -> bool:
    """Whether two rules give a hash or a token the same input: same normalization, and the same
    region for numbers written without a country code (a country code names its main region)."""
    return (a.normalize, a.region) == (b.normalize, b.region)
