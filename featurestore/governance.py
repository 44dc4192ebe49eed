"""Enforcing approved policies: which policy governs a view, whether it is in force, what a
write must become before it is stored, and who may read what for which purpose.

A policy is in force only as approved: its file's SHA-256 must match an approval. A view in
the scope of a policy that is unapproved, or edited since its approval, can be neither written
nor read. A policy whose file was removed after approval stays in force as approved (removing a
file never lifts protection). Views outside every policy's scope are ungoverned.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from .errors import DefinitionError, PolicyError, PolicyViolation, Problem
from .policy import Policy, load_policies, parse_policy
from .privacy.keys import KeyRing
from .privacy.pseudonymize import generalize, keyed_hash, keyed_hash_columns, normalize, tokenize
from .registry import Registry
from .registry.models import PolicyApprovalRow

TEXT_TREATMENTS = ("keyed_hash", "tokenize")


@dataclass(frozen=True)
class Governing:
    """The policy that governs a view and whether it is in force."""

    policy: Policy
    approved: bool
    reason: str
    """Why it is not in force (empty when approved)."""

    def require(self, view: str) -> Policy:
        if not self.approved:
            raise PolicyViolation(f"feature view '{view}' is governed by policy '{self.policy.id}' ({self.policy.file}), {self.reason}")
        return self.policy


class Governance:
    """Policies of one store, read from its ``policies/`` folder and the registry's approvals."""

    def __init__(self, root: Path | None, registry: Registry, keys: KeyRing) -> None:
        self.root = root
        self.registry = registry
        self.keys = keys

    # --- which policy, in which state ------------------------------------------------------

    def policies(self) -> list[Governing]:
        """Every policy with its state: the files, plus approved policies whose file is gone."""
        files = load_policies(self.root / "policies") if self.root is not None else []
        approvals = self.registry.approvals()
        by_hash = {a.sha256: a for a in approvals}
        result: list[Governing] = []
        for policy in files:
            if policy.sha256 in by_hash:
                result.append(Governing(policy, True, ""))
                continue
            earlier = [a for a in approvals if a.policy_id == policy.id]
            if earlier:
                last = earlier[-1]
                reason = (f"which was edited since its approval by {last.approved_by} on {last.approved_at:%Y-%m-%d} "
                          f"(approved SHA-256 {last.sha256[:12]}..., file now {policy.sha256[:12]}...); "
                          f"review and approve it again: `featurestore policy approve {policy.file} --by NAME --role ROLE`")
            else:
                reason = (f"which is not approved; review it (`featurestore policy plan {policy.file}`) and approve "
                          f"it (`featurestore policy approve {policy.file} --by NAME --role ROLE`)")
            result.append(Governing(policy, False, reason))
        present = {g.policy.id for g in result}
        latest: dict[str, PolicyApprovalRow] = {}
        for a in approvals:
            latest[a.policy_id] = a
        for policy_id, approval in latest.items():
            if policy_id not in present:
                result.append(Governing(parse_policy(approval.content, approval.file_name, approval.sha256), True, ""))
        return result

    def governing(self, view: str, policies: Sequence[Governing] | None = None) -> Governing | None:
        """The policy governing `view`, or None; two policies over one view is an error."""
        found = [g for g in (self.policies() if policies is None else policies) if g.policy.governs(view)]
        if len(found) > 1:
            raise PolicyError([Problem(
                f"feature view '{view}' is in the scope of policies {', '.join(g.policy.id for g in found)}; "
                "one view is governed by one policy"
            )])
        return found[0] if found else None

    # --- apply ----------------------------------------------------------------------------

    def check_definitions(self, views: Sequence[tuple[str, Mapping[str, str], Mapping[str, str]]]) -> None:
        """Raise DefinitionError for governed views with unclassified, dropped or mistyped columns.

        `views` are (name, join keys with types, features with types).
        """
        policies = self.policies()
        problems: list[Problem] = []
        for name, keys, features in views:
            gov = self.governing(name, policies)
            if gov is None:
                continue
            policy = gov.policy
            for column, dtype in {**keys, **features}.items():
                rule = policy.rule(column)
                if rule is None:
                    problems.append(Problem(
                        f"column '{column}' of feature view '{name}' is not classified in policy '{policy.id}' "
                        f"({policy.file}); add it under 'classification' (default deny)"
                    ))
                elif rule.treatment == "drop":
                    problems.append(Problem(
                        f"column '{column}' of feature view '{name}' is dropped by policy '{policy.id}'; remove it "
                        "from the view (dropped columns may still arrive in ingested data and are discarded)"
                    ))
                elif rule.treatment in TEXT_TREATMENTS and dtype != "string":
                    problems.append(Problem(
                        f"column '{column}' of feature view '{name}' is stored as a {rule.treatment.replace('_', ' ')} "
                        f"under policy '{policy.id}', so declare it 'string' (it is {dtype})"
                    ))
        if problems:
            raise DefinitionError(problems)

    # --- writes ---------------------------------------------------------------------------

    def dropped(self, policy: Policy, columns: Sequence[str]) -> frozenset[str]:
        """Input columns the policy drops (accepted in data, never stored)."""
        return frozenset(c for c in columns if (r := policy.rule(c)) is not None and r.treatment == "drop")

    def treated(self, policy: Policy, columns: Sequence[str]) -> frozenset[str]:
        """Stored columns whose raw type is free because they are stored as text (hash, token)."""
        return frozenset(c for c in columns if (r := policy.rule(c)) is not None and r.treatment in TEXT_TREATMENTS)

    def treat(self, table: pa.Table, policy: Policy) -> pa.Table:
        """Apply the policy's treatments to a batch, in memory, before validation and storage:
        drop, then generalize, then keyed hash / tokenize."""
        for name in self.dropped(policy, table.column_names):
            table = table.drop_columns([name])
        to_hash: dict[str, tuple[pa.ChunkedArray, str, str | None]] = {}
        for index, name in enumerate(table.column_names):
            rule = policy.rule(name)
            if rule is None or rule.treatment == "keep":
                continue
            column = table.column(index)
            if rule.treatment == "keyed_hash":
                to_hash[name] = (column, rule.normalize, rule.country_code)
                continue
            if rule.treatment == "generalize":
                assert rule.generalize is not None
                treated = generalize(column, rule.generalize)
            else:
                treated = tokenize(normalize(column, rule.normalize, country_code=rule.country_code),
                                   self.keys.current("siv"), context=name)
            table = table.set_column(index, name, treated)
        if to_hash:  # every hashed column in one native pass
            for name, hashed in keyed_hash_columns(to_hash, self.keys.current("hmac")).items():
                table = table.set_column(table.column_names.index(name), name, hashed)
        return table

    # --- reads ----------------------------------------------------------------------------

    def check_read(self, view: str, features: Sequence[str], purpose: str | None, access: str = "offline") -> Policy | None:
        """Refuse a read the governing policy does not allow; return that policy (None if ungoverned)."""
        gov = self.governing(view)
        if gov is None:
            return None
        policy = gov.require(view)
        problem = policy.purpose_problem(purpose, access)
        if problem:
            raise PolicyViolation(f"read of '{view}' refused: {problem}")
        sensitive = [f for f in features if (r := policy.rule(f)) is not None and r.kind == "sensitive_attribute"]
        if sensitive and purpose is not None and not policy.purposes[purpose].sensitive_attributes:
            granted = [p.name for p in policy.purposes.values() if p.sensitive_attributes]
            raise PolicyViolation(
                f"read of '{view}' refused: {', '.join(sensitive)} {'is a sensitive attribute' if len(sensitive) == 1 else 'are sensitive attributes'} "
                f"that policy '{policy.id}' releases only for {', '.join(granted) or 'no purpose'}, not for '{purpose}'"
            )
        return policy

    def key_variants(self, policy: Policy | None, key: str, raw: pa.ChunkedArray) -> list[pa.ChunkedArray]:
        """The stored forms a raw join key may take: itself, or its pseudonym under every key id
        (old rows keep the pseudonyms of the key that made them, so lookups survive rotation)."""
        rule = policy.rule(key) if policy is not None else None
        if rule is None or rule.treatment not in TEXT_TREATMENTS:
            return [raw]
        if rule.treatment == "keyed_hash":
            keys = self.keys.keys("hmac") or [self.keys.current("hmac")]
            return [keyed_hash(raw, k, normalize=rule.normalize, country_code=rule.country_code) for k in keys]
        normalized = normalize(raw, rule.normalize, country_code=rule.country_code)
        keys = self.keys.keys("siv") or [self.keys.current("siv")]
        return [pa.chunked_array([tokenize(normalized, k, context=key)]) for k in keys]
