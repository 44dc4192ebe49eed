"""What a policy says, as plain data: classes of columns, treatments, purposes, retention,
erasure and differential-privacy rules. Loading and checking are in :mod:`.loader`.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

KINDS = ("direct_identifier", "quasi_identifier", "sensitive_attribute", "non_personal")
ACCESS = ("offline", "online", "reidentify", "dp_aggregates")
NORMALIZERS = ("none", "text", "email", "phone")
"""How identifiers are normalized before hashing (see :func:`featurestore.privacy.pseudonymize.normalize`)."""
LEGAL_BASES = ("consent", "contract", "legal_obligation", "vital_interests", "public_task", "legitimate_interest")


def __getattr__(name: str) -> tuple[str, ...]:
    """``TREATMENTS``: the treatment names policy files may use, read from the registry
    (:data:`featurestore.privacy.treatments.NAMES`) when first asked for, so this plain-data
    module imports nothing of the treatments themselves."""
    if name == "TREATMENTS":
        from ..privacy.treatments import NAMES

        return NAMES
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def parse_duration(text: str) -> timedelta:
    """A policy duration, in the one grammar of :mod:`featurestore.durations` (a year counts 365
    days and a month 30: policies name periods, not dates).

    >>> parse_duration("P1Y6M")
    datetime.timedelta(days=545)
    >>> parse_duration("30d")
    datetime.timedelta(days=30)
    """
    from ..durations import parse_duration as parse

    return parse(text)


@dataclass(frozen=True)
class ColumnRule:
    """How one column is classified and treated."""

    name: str
    kind: str
    treatment: str
    """The name of its treatment; :func:`featurestore.privacy.treatments.treatment_of` gives the object."""
    normalize: str = "none"
    country_code: str | None = None
    """As the policy file wrote it (``"44"``); `region` is what normalization uses."""
    region: str | None = None
    """Where phone numbers written without a country code are read (ISO 3166 alpha-2, e.g. ``GB``):
    the file's ``region``, else the main region of its ``country_code``."""
    generalize: dict[str, Any] | None = None
    category: str | None = None


@dataclass(frozen=True)
class Purpose:
    """An allowed purpose and the access it grants."""

    name: str
    access: tuple[str, ...]
    sensitive_attributes: bool = False


@dataclass(frozen=True)
class Retention:
    """How long rows may be kept, counted from their event time (None: no limit set)."""

    offline: timedelta | None = None
    online: timedelta | None = None
    training_sets: timedelta | None = None
    expired_training_sets: str = "rewrite"
    """What a retention run does with a saved training set holding expired rows: ``rewrite`` it
    without them (the manifest notes it, so reproduction explains the gap) or ``delete`` it."""

    def limits(self) -> dict[str, timedelta]:
        """The limits that are set, by store (``offline``, ``online``, ``training_sets``)."""
        return {name: value for name in RETENTION_STORES if (value := getattr(self, name)) is not None}


RETENTION_STORES = ("offline", "online", "training_sets")


@dataclass(frozen=True)
class Erasure:
    """The right to erasure: which column identifies a person, and the deadline."""

    subject_key: str
    sla: timedelta | None = None


@dataclass(frozen=True)
class Budget:
    """A privacy-loss allowance: epsilon and delta, optionally per period."""

    epsilon: float
    delta: float = 0.0
    period: timedelta | None = None


@dataclass(frozen=True)
class ContributionBounds:
    """How much one person may contribute to a differentially private release."""

    max_rows_per_subject: int | None = None
    clamp: tuple[tuple[str, float, float], ...] = ()
    """(column, lower, upper): values are clamped into this range before aggregation."""
    max_groups_per_subject: int | None = None
    """In a grouped release, each subject's rows count in at most this many groups (chosen at random)."""

    def clamp_of(self, column: str) -> tuple[float, float] | None:
        """The (lower, upper) clamp of a column, or None."""
        return next(((lo, hi) for name, lo, hi in self.clamp if name == column), None)


@dataclass(frozen=True)
class DifferentialPrivacy:
    """Rules for differentially private aggregates."""

    purposes: tuple[str, ...] = ()
    budget: Budget | None = None
    per_release: Budget | None = None
    contribution_bounds: ContributionBounds = ContributionBounds()
    min_group_size: int | None = None
    public_groups: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """(column, its public values): groups released without partition selection (pure epsilon)."""
    per_consumer: bool = False
    """Whether each consumer (the acting user) has its own budget, instead of one per purpose."""
    decimals: int = 2
    """Fixed-point encoding of float values: sums and means are computed on integers scaled by 10**decimals."""

    def groups_of(self, column: str) -> tuple[str, ...] | None:
        """The public values of a group column, or None if its values are not public."""
        return next((values for name, values in self.public_groups if name == column), None)


@dataclass(frozen=True)
class Policy:
    """One policy file, as loaded. `sha256` is the hash of the file's exact bytes."""

    id: str
    version: int
    title: str
    owner: str
    legal_basis: str
    effective_from: date
    review_by: date
    feature_views: tuple[str, ...]
    columns: dict[str, ColumnRule]
    purposes: dict[str, Purpose]
    denied: tuple[str, ...]
    retention: Retention
    erasure: Erasure | None
    differential_privacy: DifferentialPrivacy | None
    sha256: str
    text: str
    file: str
    positions: dict[str, tuple[int, int]] = field(default_factory=dict, compare=False)
    """Where each classified column is written (line, column)."""

    def governs(self, view: str) -> bool:
        """Whether a feature view is in this policy's scope (names or glob patterns)."""
        return any(fnmatch.fnmatchcase(view, pattern) for pattern in self.feature_views)

    def rule(self, column: str) -> ColumnRule | None:
        """The rule for a column (exact name first, then glob patterns in file order)."""
        if column in self.columns:
            return self.columns[column]
        for pattern, rule in self.columns.items():
            if any(ch in pattern for ch in "*?[") and fnmatch.fnmatchcase(column, pattern):
                return rule
        return None

    def purpose_problem(self, purpose: str | None, access: str) -> str | None:
        """Why `purpose` may not have `access` under this policy (None if it may)."""
        if purpose is None:
            return f"policy '{self.id}' requires a purpose for every read; pass purpose=... (CLI: --purpose)"
        if purpose in self.denied:
            return f"purpose '{purpose}' is denied by policy '{self.id}'"
        allowed = self.purposes.get(purpose)
        if allowed is None:
            from ..errors import did_you_mean

            return (
                f"purpose '{purpose}' is not allowed by policy '{self.id}' (allowed: "
                f"{', '.join(sorted(self.purposes)) or 'none'})." + did_you_mean(purpose, self.purposes)
            )
        if access not in allowed.access:
            return (
                f"purpose '{purpose}' may not have {access} access under policy '{self.id}' "
                f"(it has: {', '.join(allowed.access)})"
            )
        return None
