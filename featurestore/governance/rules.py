"""The policy in force, as a pure function of the registry's approvals and the files under
``policies/`` (which are only proposals).

The rules, in order:

1. For each policy id, the **latest approval** is in force, with exactly its approved scope,
   whatever the files say now. Its content comes from the registry, so deleting, renaming or
   editing the file changes nothing; putting an older approved version back changes nothing
   either (the latest approval still wins).
2. A file whose bytes differ from the version in force of its id is a **draft**: it changes
   nothing that is enforced, except that it may not lift protection. Views it names that the
   version in force of the same id does not govern are **blocked** until it is approved
   (someone declared them personal data: fail closed).
3. A file of an id that was **never approved** blocks every view it names.
4. A file that cannot be parsed is read leniently for its id and scope, and then treated as a
   draft (rules 2-3). If not even that can be read, every view that no approved policy
   governs is blocked: it is unknown which views the file meant.
5. A view governed by two policies in force, or governed by one and named by another id's
   file, is blocked until the conflict is resolved.
6. In closed mode (``governance: {require_policy: true}``) a view that no approved policy
   governs is blocked.

>>> from featurestore.policy.loader import EXAMPLE_MINIMAL, parse_policy
>>> approved = parse_policy(EXAMPLE_MINIMAL, "minimal.yaml")
>>> draft = parse_policy(EXAMPLE_MINIMAL.replace("[profile]", "[orders]"), "minimal.yaml")
>>> snap = decide_snapshot([Proposal.of(draft)], [Approval(1, approved)], require_policy=False)
>>> snap.state("profile").policy.id, snap.state("orders").blocked is not None
('minimal', True)
"""

from __future__ import annotations

import fnmatch
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from ..policy import Policy

SNAPSHOT_HASH_BYTES = 8


@dataclass(frozen=True)
class Approval:
    """One approval in the registry: the exact content approved (parsed), and who approved it."""

    id: int
    policy: Policy
    approved_by: str = ""
    role: str = ""
    approved_at: datetime | None = None


@dataclass(frozen=True)
class Proposal:
    """One file under ``policies/``: parsed, or (when it does not parse) what could be read of it."""

    file: str
    sha256: str
    policy: Policy | None
    """The parsed policy, or None when the file has problems."""
    policy_id: str | None
    """The id (from the parsed policy, or read leniently from a broken file)."""
    scope: tuple[str, ...] | None
    """The views it names (None: not even the scope could be read)."""
    problem: str | None = None

    @staticmethod
    def of(policy: Policy) -> Proposal:
        """A proposal for a file that parsed."""
        return Proposal(policy.file, policy.sha256, policy, policy.id, policy.feature_views)


@dataclass(frozen=True)
class ViewState:
    """What is enforced for one view: governed by a policy, ungoverned, or blocked (with why)."""

    view: str
    policy: Policy | None = None
    approval: Approval | None = None
    blocked: str | None = None
    """Why the view can be neither written nor read (None: not blocked)."""

    @property
    def governed(self) -> bool:
        """Whether an approved policy governs the view."""
        return self.policy is not None


@dataclass(frozen=True)
class Draft:
    """A file whose content differs from the version in force of its policy id."""

    proposal: Proposal
    in_force: Approval | None
    """The version in force of the same id (None: the id was never approved)."""


@dataclass(frozen=True)
class PolicySnapshot:
    """Every policy decision of one request is taken against one snapshot."""

    in_force: tuple[Approval, ...]
    proposals: tuple[Proposal, ...]
    require_policy: bool
    id: str = field(default="")
    """A short hash of what the snapshot was built from (approvals, file hashes, mode)."""

    def state(self, view: str) -> ViewState:
        """What is enforced for `view` under this snapshot."""
        governing = [a for a in self.in_force if a.policy.governs(view)]
        if len(governing) > 1:
            ids = ", ".join(a.policy.id for a in governing)
            return ViewState(
                view,
                blocked=f"it is in the scope of approved policies {ids}; one view is governed by one "
                "policy: approve a version of one of them that drops it",
            )
        mine = governing[0] if governing else None
        for proposal in self.proposals:
            if proposal.scope is None:
                if mine is None:
                    return ViewState(
                        view,
                        blocked=f"{proposal.file} cannot be read ({proposal.problem}), so it is unknown "
                        "whether it governs this view; fix or remove the file",
                    )
                continue
            if not any(fnmatch.fnmatchcase(view, p) for p in proposal.scope):
                continue
            if mine is not None and proposal.policy_id == mine.policy.id:
                continue  # a draft of the governing policy: the approved version decides
            name = f"policy '{proposal.policy_id}'" if proposal.policy_id is not None else "a policy without an id"
            if mine is not None:
                return ViewState(
                    view,
                    blocked=(
                        f"it is governed by policy '{mine.policy.id}' but {proposal.file} ({name}) also names it; "
                        "one view is governed by one policy: remove it from one of them"
                    ),
                )
            approved_before = any(a.policy.id == proposal.policy_id for a in self.in_force)
            if approved_before:
                reason = (
                    f"a draft of policy '{proposal.policy_id}' ({proposal.file}) adds it to its scope and is not "
                    f"approved yet; review it (`featurestore policy plan {proposal.file}`) and approve it"
                )
            else:
                reason = (
                    f"{name} ({proposal.file}) names it and is not approved; review it "
                    f"(`featurestore policy plan {proposal.file}`) and approve it "
                    f"(`featurestore policy approve {proposal.file} --by NAME --role ROLE`)"
                )
            if proposal.problem is not None:
                reason += f"; the file also has problems: {proposal.problem}"
            return ViewState(view, blocked=reason)
        if mine is not None:
            return ViewState(view, policy=mine.policy, approval=mine)
        if self.require_policy:
            return ViewState(
                view,
                blocked=(
                    "the store requires an approved policy for every feature view (governance.require_policy), and none "
                    f"governs it; write policies/{view}.yaml naming it in its scope (classify columns without personal "
                    "data as non_personal) and approve it"
                ),
            )
        return ViewState(view)

    def drafts(self) -> list[Draft]:
        """Files whose content is not the version in force of their policy id."""
        by_id = {a.policy.id: a for a in self.in_force}
        drafts = []
        for proposal in self.proposals:
            current = by_id.get(proposal.policy_id or "")
            if current is None or current.policy.sha256 != proposal.sha256:
                drafts.append(Draft(proposal, current))
        return drafts

    def policy(self, policy_id: str) -> Policy | None:
        """The version in force of a policy id, or None."""
        return next((a.policy for a in self.in_force if a.policy.id == policy_id), None)


def decide_snapshot(
    proposals: Sequence[Proposal], approvals: Sequence[Approval], *, require_policy: bool
) -> PolicySnapshot:
    """The snapshot for these files and approvals: per policy id, its latest approval is in force."""
    latest: dict[str, Approval] = {}
    for approval in sorted(approvals, key=lambda a: a.id):
        latest[approval.policy.id] = approval
    digest = hashlib.sha256()
    for approval in latest.values():
        digest.update(f"a:{approval.id}:{approval.policy.sha256};".encode())
    for proposal in proposals:
        digest.update(f"p:{proposal.file}:{proposal.sha256};".encode())
    digest.update(b"closed" if require_policy else b"open")
    return PolicySnapshot(
        tuple(latest.values()), tuple(proposals), require_policy, digest.hexdigest()[: 2 * SNAPSHOT_HASH_BYTES]
    )
