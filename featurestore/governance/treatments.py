"""What a policy does to data: columns dropped, generalized, hashed or tokenized in memory
before anything is stored, and the stored forms a raw join key may take."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..policy import Policy
from ..privacy.keys import KeyRing

if TYPE_CHECKING:  # pyarrow and the treatments are imported when data is treated, not when a store opens
    import pyarrow as pa

TEXT_TREATMENTS = ("keyed_hash", "tokenize")


def dropped(policy: Policy, columns: Sequence[str]) -> frozenset[str]:
    """Input columns the policy drops (accepted in data, never stored)."""
    return frozenset(c for c in columns if (r := policy.rule(c)) is not None and r.treatment == "drop")


def treated(policy: Policy | None, columns: Sequence[str]) -> frozenset[str]:
    """Stored columns whose raw type is free because they are stored as text (hash, token)."""
    if policy is None:
        return frozenset()
    return frozenset(c for c in columns if (r := policy.rule(c)) is not None and r.treatment in TEXT_TREATMENTS)


class Treatments:
    """Applies policies' treatments with the store's data keys.

    Args:
        keys: The store's key ring (current keys treat new data; every key id serves lookups).
    """

    def __init__(self, keys: KeyRing) -> None:
        self.keys = keys

    def treat(self, table: pa.Table, policy: Policy, view: str) -> pa.Table:
        """Apply the policy's treatments to a batch, in memory, before validation and storage:
        drop, then generalize, then keyed hash / tokenize."""
        for name in dropped(policy, table.column_names):
            table = table.drop_columns([name])
        return self.treat_columns(table, policy, view, table.column_names)

    def treat_columns(
        self, table: pa.Table, policy: Policy, view: str, columns: Sequence[str], rule_of: dict[str, str] | None = None
    ) -> pa.Table:
        """Apply the policy's treatment to each of the table's `columns`; `rule_of` names the rule
        for a column stored under another name (a training set's ``view__feature``)."""
        from ..privacy.pseudonymize import generalize, keyed_hash_columns, normalize, token_context, tokenize

        rule_of = rule_of or {}
        to_hash: dict[str, tuple[pa.ChunkedArray, str, str | None]] = {}
        for index, name in enumerate(table.column_names):
            if name not in columns:
                continue
            rule = policy.rule(rule_of.get(name, name))
            if rule is None or rule.treatment == "keep":
                continue
            column = table.column(index)
            if rule.treatment == "keyed_hash":
                to_hash[name] = (column, rule.normalize, rule.region)
                continue
            if rule.treatment == "generalize":
                assert rule.generalize is not None
                result = generalize(column, rule.generalize)
            else:
                result = tokenize(
                    normalize(column, rule.normalize, region=rule.region, name=name),
                    self.keys.current("siv"),
                    context=token_context(policy.id, view, rule_of.get(name, name)),
                )
            table = table.set_column(index, name, result)
        if to_hash:  # every hashed column in one native pass
            for name, hashed in keyed_hash_columns(to_hash, self.keys.current("hmac")).items():
                table = table.set_column(table.column_names.index(name), name, hashed)
        return table

    def key_variants(self, policy: Policy | None, view: str, key: str, raw: pa.ChunkedArray) -> list[pa.ChunkedArray]:
        import pyarrow as pa

        from ..privacy.pseudonymize import keyed_hash, normalize, token_context, tokenize

        """The stored forms a raw join key may take: itself, or its pseudonym under every key id
        (old rows keep the pseudonyms of the key that made them, so lookups survive rotation)."""
        rule = policy.rule(key) if policy is not None else None
        if rule is None or rule.treatment not in TEXT_TREATMENTS:
            return [raw]
        if rule.treatment == "keyed_hash":
            keys = self.keys.keys("hmac") or [self.keys.current("hmac")]
            return [keyed_hash(raw, k, normalize=rule.normalize, region=rule.region) for k in keys]
        normalized = normalize(raw, rule.normalize, region=rule.region)
        keys = self.keys.keys("siv") or [self.keys.current("siv")]
        assert policy is not None
        return [pa.chunked_array([tokenize(normalized, k, context=token_context(policy.id, view, key))]) for k in keys]
