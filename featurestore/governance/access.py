"""Who may do what with which view: one decision per request, returned as a :class:`Grant`.

Every path that touches governed data takes a ``Grant``: the offline scan, the point-in-time
runner, the online serving plan, the training-set loader, ingestion's writer and
re-identification. A grant can only be made by :func:`decide` (the constructor refuses anything
else), so a method that forgets the policy check has nothing to pass and does not type-check.

>>> from featurestore.governance.rules import decide_snapshot
>>> Grant(None, (), None, ("offline",), None, decide_snapshot([], [], require_policy=False), None)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
TypeError: a Grant is made only by featurestore.governance.access.decide
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, NoReturn

from ..errors import DefinitionError, PolicyViolation, Problem
from ..policy import Policy
from ..privacy.treatments import treatment_of
from .rules import PolicySnapshot

if TYPE_CHECKING:
    from ..audit import AuditLog
    from ..versions import ViewVersion
    from .policies import PolicySource

WRITE = "write"
"""The access kind of ingestion and push (rows into the store): the view must not be blocked; no purpose."""
MATERIALIZE = "materialize"
"""The access kind of materialization: it reads the offline rows of a view version to write their
latest values to the online store. Decided as a write (the view must not be blocked; no purpose),
and accepted only where materialization reads and writes."""
WRITES = ((WRITE,), (MATERIALIZE,))
MAINTAIN = "maintain"
"""The access kind of erasure and retention: they read only to delete, so they get the policy in
force even for a blocked view (deleting must never be refused); no purpose."""
READS = ("offline", "online", "reidentify", "dp_aggregates")
TASKS = ("erasure", "retention", "treat_existing", "carry_forward", "policy_plan", "doctor")
"""What a maintain grant may be for; it names one in place of a purpose, and each engine method
that deletes or rewrites rows accepts only its own (a retention grant cannot erase a subject)."""

_MINTING = threading.local()
"""Set only while :func:`decide` constructs a grant; any other construction (including
``dataclasses.replace`` to widen one) is refused."""


@dataclass(frozen=True)
class Grant:
    """Permission for one request to touch one view version's columns, for a purpose.

    Attributes:
        view: The view version.
        features: The feature columns it may return (join keys and event time come along).
        purpose: The purpose the caller named (None for writes and ungoverned reads); for a
            maintain grant, its task (one of TASKS).
        access: The access kinds decided (e.g. ``("offline",)``, ``("offline", "online")``).
        policy: The approved policy that governs the view (None: ungoverned).
        snapshot: The policy snapshot the decision was taken under.
    """

    view: ViewVersion
    features: tuple[str, ...]
    purpose: str | None
    access: tuple[str, ...]
    policy: Policy | None
    snapshot: PolicySnapshot
    decided_at: datetime | None
    """When it was decided, for retention cutoffs (None: no retention limit applies)."""

    def __post_init__(self) -> None:
        if not getattr(_MINTING, "active", False):
            raise TypeError("a Grant is made only by featurestore.governance.access.decide")

    def require(self, access: str) -> Grant:
        """This grant, if it covers `access`; PolicyViolation otherwise (a grant for online
        lookups cannot be spent on an offline scan)."""
        if access not in self.access:
            raise PolicyViolation(
                f"a grant for {', '.join(self.access)} access to {self.view.ref} cannot be used for {access} access"
            )
        return self

    def require_task(self, *tasks: str) -> Grant:
        """This grant, if it is a maintain grant for one of `tasks`; PolicyViolation otherwise."""
        self.require(MAINTAIN)
        if self.purpose not in tasks:
            raise PolicyViolation(
                f"a maintain grant for {self.purpose} on {self.view.ref} cannot be used for {' or '.join(tasks)}"
            )
        return self

    def cutoff(self, store: str) -> datetime | None:
        """Retention: the earliest event time this grant may see in `store` (``offline``,
        ``online`` or ``training_sets``), from the policy in force and the decision's time;
        None when no limit applies. Rows before it are treated as gone, before any job deletes them."""
        limit = getattr(self.policy.retention, store) if self.policy is not None else None
        return None if limit is None or self.decided_at is None else self.decided_at - limit

    def read_cutoff(self) -> datetime | None:
        """The strictest retention cutoff of the stores this grant reads (offline, online)."""
        cutoffs = [c for kind in self.access if kind in ("offline", "online") and (c := self.cutoff(kind)) is not None]
        return max(cutoffs) if cutoffs else None

    def retention(self, store: str) -> timedelta | None:
        """The retention limit of `store` under the governing policy (None: none)."""
        return getattr(self.policy.retention, store) if self.policy is not None else None

    @property
    def policy_hash(self) -> str | None:
        """``"<policy id>@<sha256>"`` of the governing policy (None: ungoverned)."""
        return f"{self.policy.id}@{self.policy.sha256}" if self.policy is not None else None


def decide(
    snapshot: PolicySnapshot,
    view: ViewVersion,
    features: Sequence[str],
    purpose: str | None,
    access: Sequence[str],
    clock: Callable[[], datetime],
) -> Grant:
    """Decide one request under `snapshot`; return its Grant or raise PolicyViolation (with why).

    Writes (``access=("write",)`` or ``("materialize",)``) need the view not to be blocked. Reads need, for a governed
    view, a purpose the policy allows every access kind asked for, and sensitive attributes only
    for purposes released for them. `clock` is read only when a retention limit applies.
    """
    name = view.view.name
    state = snapshot.state(name)
    kinds = tuple(access)
    now = clock() if state.policy is not None and state.policy.retention.limits() and kinds not in WRITES else None
    if kinds == (MAINTAIN,):
        if purpose not in TASKS:
            raise PolicyViolation(
                f"a maintain grant for '{name}' names its task, one of {', '.join(TASKS)} (got {purpose!r})"
            )
        return _mint(view, features, purpose, kinds, state.policy, snapshot, now)
    if state.blocked is not None:
        raise PolicyViolation(f"feature view '{name}' can be neither written nor read: {state.blocked}")
    policy = state.policy
    if policy is not None and kinds not in WRITES:
        for kind in kinds:
            problem = policy.purpose_problem(purpose, kind)
            if problem:
                raise PolicyViolation(
                    f"re-identification refused: {problem}"
                    if kind == "reidentify"
                    else f"read of '{name}' refused: {problem}"
                )
        sensitive = [
            f
            for f in [*view.join_keys, *features]
            if (r := policy.rule(f)) is not None and r.kind == "sensitive_attribute"
        ]
        assert purpose is not None  # purpose_problem refuses None
        # DP releases never show a row, so a purpose with only dp_aggregates access may group by a
        # sensitive attribute: the documented way to audit fairness without row access.
        if sensitive and kinds != ("dp_aggregates",) and not policy.purposes[purpose].sensitive_attributes:
            granted = [p.name for p in policy.purposes.values() if p.sensitive_attributes]
            raise PolicyViolation(
                f"read of '{name}' refused: {', '.join(sensitive)} "
                f"{'is a sensitive attribute' if len(sensitive) == 1 else 'are sensitive attributes'} "
                f"that policy '{policy.id}' releases only for {', '.join(granted) or 'no purpose'}, not for '{purpose}'"
            )
    return _mint(view, features, purpose, kinds, policy, snapshot, now)


def _mint(
    view: ViewVersion,
    features: Sequence[str],
    purpose: str | None,
    kinds: tuple[str, ...],
    policy: Policy | None,
    snapshot: PolicySnapshot,
    now: datetime | None,
) -> Grant:
    _MINTING.active = True
    try:
        return Grant(view, tuple(features), purpose, kinds, policy, snapshot, now)
    finally:
        _MINTING.active = False


def check_definitions(
    snapshot: PolicySnapshot, views: Sequence[tuple[str, Mapping[str, str], Mapping[str, str]]]
) -> None:
    """Raise DefinitionError for views that the policies in force or proposed would not accept:
    unclassified (default deny), dropped or mistyped columns; in closed mode, views that no
    approved policy governs. `views` are (name, join keys with types, features with types)."""
    problems: list[Problem] = []
    for name, keys, features in views:
        state = snapshot.state(name)
        candidates = [state.policy] if state.policy is not None else []
        candidates += [
            p.policy
            for p in snapshot.proposals
            if p.policy is not None and p.policy.governs(name) and all(p.policy.sha256 != c.sha256 for c in candidates)
        ]
        if snapshot.require_policy and state.policy is None:
            problems.append(Problem(f"feature view '{name}' cannot be applied: {state.blocked}"))
            continue
        for policy in candidates:
            for column, dtype in {**keys, **features}.items():
                rule = policy.rule(column)
                if rule is None:
                    problems.append(
                        Problem(
                            f"column '{column}' of feature view '{name}' is not classified in policy '{policy.id}' "
                            f"({policy.file}); add it under 'classification' (default deny)"
                        )
                    )
                elif not (treatment := treatment_of(rule)).stored:
                    problems.append(
                        Problem(
                            f"column '{column}' of feature view '{name}' is dropped by policy '{policy.id}'; remove it "
                            "from the view (dropped columns may still arrive in ingested data and are discarded)"
                        )
                    )
                elif treatment.output == "text" and dtype != "string":
                    problems.append(
                        Problem(
                            f"column '{column}' of feature view '{name}' is stored as a {treatment.name.replace('_', ' ')} "
                            f"under policy '{policy.id}', so declare it 'string' (it is {dtype})"
                        )
                    )
    if problems:
        raise DefinitionError(problems)


class Access:
    """Takes policy snapshots and decisions for one store, and audits every refusal.

    Args:
        source: Where snapshots come from.
        audit: The audit log (refusals are recorded: who, purpose, view, why; never values).
        actor: Who is acting.
    """

    def __init__(self, source: PolicySource, audit: AuditLog, actor: str, clock: Callable[[], datetime]) -> None:
        self.source = source
        self.audit = audit
        self.actor = actor
        self.clock = clock

    def snapshot(self) -> PolicySnapshot:
        """The policy in force now; take one per request and decide every view under it."""
        return self.source.snapshot()

    def grant(
        self,
        snapshot: PolicySnapshot,
        view: ViewVersion,
        features: Sequence[str],
        purpose: str | None,
        access: Sequence[str],
    ) -> Grant:
        """:func:`decide`, with the refusal audited before it is raised."""
        try:
            return decide(snapshot, view, features, purpose, access, self.clock)
        except PolicyViolation as exc:
            self.refuse(snapshot, view, features, purpose, access, str(exc))

    def refuse(
        self,
        snapshot: PolicySnapshot,
        view: ViewVersion,
        features: Sequence[str],
        purpose: str | None,
        access: Sequence[str],
        reason: str,
    ) -> NoReturn:
        """Audit a refusal (who, purpose, view, access, why) and raise it as PolicyViolation."""
        self.audit.append(
            self.actor,
            "refused",
            view.ref,
            purpose=purpose,
            details={"access": list(access), "features": list(features), "reason": reason, "snapshot": snapshot.id},
        )
        raise PolicyViolation(reason)
