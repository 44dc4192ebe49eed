"""Every error the store raises on purpose.

The tree::

    FeatureStoreError                 root: catch this to catch everything below
    ├── ConfigError                   no store here, or a bad featurestore.yaml
    ├── DefinitionError               bad entity / feature view definitions (errors=[...])
    ├── NotFoundError                 a name that is not registered
    │   ├── UnknownViewError
    │   └── UnknownFeatureError
    ├── IngestionError                data that does not fit the view version (nothing written)
    ├── RetrievalError                a bad entity frame or request for features
    ├── StoreLockedError              another process holds the offline store
    ├── KeyManagementError            a missing or wrong master key, an unknown data key
    ├── PolicyError                   an invalid policy file (errors=[...])
    ├── PolicyViolation               an access or write the approved policies do not allow
    │   └── PrivacyBudgetExceeded     a DP release that would overspend its budget
    ├── AuditChainBroken              the audit log was edited, reordered or cut
    ├── RegistryOutOfDate             the registry schema is behind the code
    └── StoreDamaged                  the registry and the offline data disagree, or a file is
                                      missing, corrupt, read-only or on a full disk

Each message says where the problem is and, where one exists, how to fix it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any


class FeatureStoreError(Exception):
    """Root of every error the store raises on purpose."""


class ConfigError(FeatureStoreError):
    """The store directory or its featurestore.yaml is missing or invalid."""


@dataclass(frozen=True)
class Problem:
    """One problem found in a file, with its position (1-based line and column)."""

    message: str
    file: str | None = None
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = self.file
            if self.line is not None:
                where += f":{self.line}"
                if self.column is not None:
                    where += f":{self.column}"
            where += ": "
        return where + self.message


class _ProblemsError(FeatureStoreError):
    """An error that carries every problem found in some files (`errors`), each positioned."""

    subject = "the input"

    def __init__(self, errors: Sequence[Problem]) -> None:
        self.errors = list(errors)
        count = len(self.errors)
        head = f"{count} problem{'s' if count != 1 else ''} in {self.subject}:"
        super().__init__("\n".join([head, *(f"  {e}" for e in self.errors)]))


class DefinitionError(_ProblemsError):
    """Entity or feature view definitions are invalid; `errors` lists every problem found."""

    subject = "the definitions"


class NotFoundError(FeatureStoreError, LookupError):
    """A name that is not registered."""


class UnknownViewError(NotFoundError):
    """A feature view (or a version of it) that is not registered."""


class UnknownFeatureError(NotFoundError):
    """A feature reference that does not resolve to a registered feature."""


class IngestionError(FeatureStoreError):
    """Data that does not fit the view version; nothing of the batch was written."""


class RetrievalError(FeatureStoreError):
    """An entity frame or feature request that cannot be answered as asked."""


class StoreLockedError(FeatureStoreError):
    """Another process holds the offline store file; `pid` is its process id when known."""

    def __init__(self, message: str, *, path: str, pid: int | None) -> None:
        self.path = path
        self.pid = pid
        super().__init__(message)


class KeyManagementError(FeatureStoreError):
    """A missing or wrong master key, a badly stored key file, or an unknown data key."""


class MasterKeyMissing(KeyManagementError):
    """No master key is configured (as opposed to a wrong one)."""


class PolicyError(_ProblemsError):
    """A policy file is invalid; `errors` lists every problem found, each with its position."""

    subject = "the policy"


class PolicyViolation(FeatureStoreError):
    """An access or a write that the approved policies do not allow (nothing was read or written)."""


class PrivacyBudgetExceeded(PolicyViolation):
    """A differentially private release that the remaining budget cannot pay for (nothing was read).

    `spent` and `budget` are epsilons; `remaining` is what is left; `refreshes_at` is when the
    oldest charge in the budget's period drops out (None: the budget never refreshes)."""

    def __init__(self, message: str, *, spent: float, budget: float, remaining: float, refreshes_at: Any) -> None:
        self.spent = spent
        self.budget = budget
        self.remaining = remaining
        self.refreshes_at = refreshes_at
        super().__init__(message)


class AuditChainBroken(FeatureStoreError):
    """The audit log's hash chain does not verify: an entry was edited, removed or reordered."""


class RegistryOutOfDate(FeatureStoreError):
    """The registry's schema revision is behind the code's (run `featurestore db upgrade`)."""

    def __init__(self, message: str, *, current: str | None, head: str) -> None:
        self.current = current
        self.head = head
        super().__init__(message)


class StoreDamaged(FeatureStoreError):
    """The store's files cannot be used as they are: the registry does not match the offline
    data (lost, replaced or restored from an older backup), or a file is missing, corrupt,
    read-only or on a full disk. The message names the file and what to do."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest choice, or ``""`` if none is close.

    >>> did_you_mean("amont", ["amount", "country"])
    " Did you mean 'amount'?"
    >>> did_you_mean("zzz", ["amount"])
    ''
    """
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


def missing_extra(what: str, extra: str, exc: ImportError) -> ConfigError:
    """The error for an optional dependency that is not installed, naming the extra that brings it.

    >>> str(missing_extra("a Redis online store", "redis", ModuleNotFoundError("No module named 'redis'")))
    "a Redis online store needs the 'redis' extra (No module named 'redis'): pip install 'featurestore[redis]'"
    """
    return ConfigError(f"{what} needs the '{extra}' extra ({exc}): pip install 'featurestore[{extra}]'")
