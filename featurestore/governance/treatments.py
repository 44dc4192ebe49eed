"""What a policy does to data: columns dropped, generalized, hashed or tokenized in memory
before anything is stored, and the stored forms a raw join key may take. The treatments
themselves are objects (:mod:`featurestore.privacy.treatments`); this adapter holds the key ring
and asks them, column by column."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..policy import Policy
from ..privacy.keys import KeyRing
from ..privacy.treatments import REGISTRY, Target, Treatment, treatment_of

if TYPE_CHECKING:  # pyarrow and the mechanisms are imported when data is treated, not when a store opens
    import pyarrow as pa

TEXT_TREATMENTS = tuple(name for name, t in REGISTRY.items() if t.output == "text")
"""Treatments that store text whatever the raw type (hash, token)."""


def dropped(policy: Policy, columns: Sequence[str]) -> frozenset[str]:
    """Input columns the policy drops (accepted in data, never stored)."""
    return frozenset(c for c in columns if (r := policy.rule(c)) is not None and not treatment_of(r).stored)


def treated(policy: Policy | None, columns: Sequence[str]) -> frozenset[str]:
    """Stored columns whose raw type is free because they are stored as text (hash, token)."""
    if policy is None:
        return frozenset()
    return frozenset(c for c in columns if (r := policy.rule(c)) is not None and treatment_of(r).output == "text")


class Treatments:
    """Applies policies' treatments with the store's data keys.

    Args:
        keys: The store's key ring (current keys treat new data; every key id serves lookups).
    """

    def __init__(self, keys: KeyRing) -> None:
        self.keys = keys

    def treat(self, table: pa.Table, policy: Policy, view: str) -> pa.Table:
        """Apply the policy's treatments to a batch, in memory, before validation and storage:
        drop, then every other treatment (each treatment's columns at once)."""
        for name in dropped(policy, table.column_names):
            table = table.drop_columns([name])
        return self.treat_columns(table, policy, view, table.column_names)

    def treat_columns(
        self, table: pa.Table, policy: Policy, view: str, columns: Sequence[str], rule_of: dict[str, str] | None = None
    ) -> pa.Table:
        """Apply the policy's treatment to each of the table's `columns`; `rule_of` names the rule
        for a column stored under another name (a training set's ``view__feature``)."""
        from ..privacy.pseudonymize import token_context

        rule_of = rule_of or {}
        by_treatment: dict[str, tuple[Treatment, dict[str, Target]]] = {}
        for index, name in enumerate(table.column_names):
            rule = policy.rule(rule_of.get(name, name)) if name in columns else None
            if rule is None or treatment_of(rule).as_is:
                continue
            context = token_context(policy.id, view, rule_of.get(name, name))
            group = by_treatment.setdefault(rule.treatment, (treatment_of(rule), {}))[1]
            group[name] = Target(table.column(index), rule, context)
        gone = []
        for treatment, targets in by_treatment.values():
            for name, result in treatment.apply_all(targets, self.keys).items():
                if result is None:
                    gone.append(name)
                else:
                    table = table.set_column(table.column_names.index(name), name, result)
        return table.drop_columns(gone) if gone else table

    def key_variants(self, policy: Policy | None, view: str, key: str, raw: pa.ChunkedArray) -> list[pa.ChunkedArray]:
        """The stored forms a raw join key may take: itself, or its pseudonym under every key id
        (old rows keep the pseudonyms of the key that made them, so lookups survive rotation)."""
        from ..privacy.pseudonymize import token_context

        rule = policy.rule(key) if policy is not None else None
        if policy is None or rule is None:
            return [raw]
        return treatment_of(rule).stored_forms(raw, rule, self.keys, context=token_context(policy.id, view, key))
