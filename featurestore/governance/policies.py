"""Where the policy snapshot comes from: the registry's approvals (what is in force) and the
files under ``policies/`` (proposals), read once per request. The rules are in :mod:`.rules`."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import yaml

from ..errors import PolicyError
from ..policy import Policy, parse_policy
from ..registry import Registry
from ..yamlpos import MAX_YAML_BYTES
from .rules import Approval, PolicySnapshot, Proposal, decide_snapshot
from .signatures import verify

MAX_POLICY_BYTES = MAX_YAML_BYTES
"""A policy file larger than this is not read (it is reported, and treated as unreadable): the
same limit every definitions and policy file has."""


def policy_files(folder: Path) -> list[Path]:
    """The proposal files of a ``policies/`` folder (``*.yaml`` and ``*.yml``), by name."""
    if not folder.is_dir():
        return []
    return sorted(p for p in [*folder.glob("*.yaml"), *folder.glob("*.yml")] if p.is_file())


def read_proposal(path: Path) -> Proposal:
    """One file as a proposal: parsed, or read leniently for its id and scope when it has problems."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_POLICY_BYTES + 1)
    except OSError as exc:
        return Proposal(str(path), "", None, None, None, f"it cannot be opened: {exc.strerror}")
    sha = hashlib.sha256(data).hexdigest()
    if len(data) > MAX_POLICY_BYTES:
        return Proposal(str(path), sha, None, None, None, f"it is larger than {MAX_POLICY_BYTES:,} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return Proposal(str(path), sha, None, None, None, "it is not UTF-8 text")
    try:
        policy = parsed(text, str(path), sha)
        return Proposal.of(policy)
    except PolicyError as exc:
        problem = str(exc.errors[0]) + (f" (and {len(exc.errors) - 1} more)" if len(exc.errors) > 1 else "")
    policy_id, scope = _lenient(text)
    return Proposal(str(path), sha, None, policy_id, scope, problem)


@functools.lru_cache(maxsize=256)
def parsed(text: str, file: str, sha256: str) -> Policy:
    """:func:`~featurestore.policy.parse_policy`, remembered: a snapshot per request re-reads
    the files and approvals, and most of them have not changed since the last one."""
    return parse_policy(text, file, sha256)


def _lenient(text: str) -> tuple[str | None, tuple[str, ...] | None]:
    """The id and scope of a policy text that does not pass the checks, if they can be read."""
    try:
        doc = yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader that refuses aliases
    except yaml.YAMLError:
        return None, None
    if not isinstance(doc, dict):
        return None, None
    scope = doc.get("scope")
    views = scope.get("feature_views") if isinstance(scope, dict) else None
    policy_id = doc.get("id")
    if isinstance(views, str):
        views = [views]
    if not isinstance(views, list) or not all(isinstance(v, str) for v in views):
        return (str(policy_id) if policy_id is not None else None), None
    return (str(policy_id) if policy_id is not None else None), tuple(views)


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without aliases, so a broken file cannot expand into gigabytes."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            raise yaml.YAMLError("aliases are not allowed in policy files")
        return super().compose_node(parent, index)


class PolicySource:
    """Builds policy snapshots for one store: its ``policies/`` folder and its registry's approvals.

    Args:
        folder: The store's ``policies/`` folder (None for a memory store: no proposals).
        registry: Where approvals are recorded.
        require_policy: Closed mode: every view needs an approved policy.
    """

    def __init__(
        self, folder: Path | None, registry: Registry, *, require_policy: bool, signed_approvals: bool = False
    ) -> None:
        self.folder = folder
        self.registry = registry
        self.require_policy = require_policy
        self.signed_approvals = signed_approvals

    def approvals(self) -> list[Approval]:
        """Every approval, oldest first, with its approved content parsed; with signed approvals on,
        only those whose signature verifies against their approver's registered key."""
        result = []
        keys = {(a.name, a.role): a.public_key for a in self.registry.approvers()} if self.signed_approvals else {}
        for row in self.registry.approvals():
            if self.signed_approvals and not verify(
                keys.get((row.approved_by, row.role), ""), row.sha256, row.signature
            ):
                continue  # unsigned, signed by another key, or by an approver not registered: not approved
            policy = parsed(row.content, row.file_name, row.sha256)
            result.append(Approval(row.id, policy, row.approved_by, row.role, row.approved_at))
        return result

    def proposals(self) -> list[Proposal]:
        """Every file under ``policies/``, as a proposal."""
        return [read_proposal(p) for p in policy_files(self.folder)] if self.folder is not None else []

    def snapshot(self) -> PolicySnapshot:
        """The policy in force now, with the pending proposals."""
        return decide_snapshot(self.proposals(), self.approvals(), require_policy=self.require_policy)
