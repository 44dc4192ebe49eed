"""The review workflow legal uses: lint a proposal, plan what approving it changes against the
version in force, approve its exact bytes, show it as Markdown, and list pending drafts."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from . import treat_existing as treating
from .errors import PolicyError, PolicyViolation, Problem, did_you_mean
from .governance import signatures
from .governance.access import MAINTAIN
from .governance.rules import PolicySnapshot
from .policy import Policy, load_policy, plan_policy, policy_markdown

if TYPE_CHECKING:
    from .catalog import Catalog
    from .context import StoreContext
    from .online.service import OnlineService
    from .training_sets import TrainingSets


@dataclass(frozen=True)
class PolicyStatus:
    """One policy id's state: the version in force, and the drafts pending approval."""

    policy_id: str
    in_force: Policy | None
    """The latest approved version (None: never approved)."""
    approved_by: str | None
    drafts: list[tuple[str, list[str]]]
    """(file, what approving it would change, in sentences) per pending draft."""
    problems: list[str]
    """Files of this id (or of no readable id) that cannot be parsed, with why."""


class PolicyWorkflow:
    """Lint, plan, approve, show and status of policy files."""

    def __init__(self, ctx: StoreContext, catalog: Catalog, online: OnlineService, training_sets: TrainingSets) -> None:
        self.ctx = ctx
        self.catalog = catalog
        self.online = online
        self.training_sets = training_sets

    def lint(self, path: str | Path, snapshot: PolicySnapshot | None = None) -> Policy:
        """Check a policy file and its fit with the registered views; raise PolicyError listing
        every problem (unknown or unclassified columns at ``file:line:column``)."""
        policy = load_policy(path)
        snapshot = snapshot or self.ctx.access.snapshot()
        problems: list[Problem] = []
        views = self.catalog.list_views()
        unclassified: set[str] = set()
        for vv in views:
            if not policy.governs(vv.view.name):
                continue
            for column in [*vv.join_keys, *vv.view.feature_names]:
                if policy.rule(column) is None:
                    unclassified.add(column)
                    problems.append(
                        Problem(
                            f"column '{column}' of feature view '{vv.view.name}' is not classified "
                            "(default deny: the view can be neither applied nor read)",
                            policy.file,
                        )
                    )
        # A classified column no view has yet is fine (dropped columns never are in a view);
        # one that looks like a misspelt unclassified column is reported where it is written.
        for column, (line, col) in policy.positions.items():
            hint = did_you_mean(column, unclassified)
            if hint:
                problems.append(
                    Problem(
                        f"classified column '{column}' is in none of the governed views.{hint}", policy.file, line, col
                    )
                )
        others = {a.policy.id: a.policy for a in snapshot.in_force if a.policy.id != policy.id}
        for other in others.values():
            shared = [vv.view.name for vv in views if policy.governs(vv.view.name) and other.governs(vv.view.name)]
            if shared:
                problems.append(
                    Problem(f"feature views {', '.join(shared)} are also governed by policy '{other.id}'", policy.file)
                )
        for proposal in snapshot.proposals:
            if proposal.policy_id in (policy.id, *others) or proposal.scope is None:
                continue
            named = [
                vv.view.name
                for vv in views
                if policy.governs(vv.view.name) and any(fnmatch.fnmatchcase(vv.view.name, p) for p in proposal.scope)
            ]
            if named:
                problems.append(
                    Problem(
                        f"feature views {', '.join(named)} are also named by {proposal.file} (policy "
                        f"'{proposal.policy_id}'), which keeps them blocked; remove them from one of the files",
                        policy.file,
                    )
                )
        if problems:
            raise PolicyError(problems)
        return policy

    def plan(self, path: str | Path) -> list[str]:
        """What approving a policy file would change against the version in force, in sentences."""
        snapshot = self.ctx.access.snapshot()
        policy = self.lint(path, snapshot)
        return self._plan(snapshot, policy)

    def _plan(self, snapshot: PolicySnapshot, policy: Policy) -> list[str]:
        old = snapshot.policy(policy.id)
        lines = plan_policy(old, policy, rows_past_retention=self._rows_older_than)
        released = [v for v in (old.feature_views if old else ()) if v not in policy.feature_views]
        for pattern in released:
            for vv in self.catalog.list_views():
                if not fnmatch.fnmatchcase(vv.view.name, pattern) or policy.governs(vv.view.name):
                    continue
                if snapshot.require_policy:
                    lines.append(
                        f"Feature view {vv.view.name} will be governed by no policy: in closed mode "
                        "(governance.require_policy) it can then be neither written nor read."
                    )
                else:
                    lines.append(
                        f"Feature view {vv.view.name} will be governed by no policy: its future data will be "
                        "stored untreated (raw) and read without a purpose; rows stored so far keep their treatment."
                    )
        items = treating.untreated(self.ctx, self.catalog, policy, snapshot)
        if items:
            lines.append(
                f"Stored rows this policy would treat are untreated: {treating.describe(items)}. Approving needs "
                "--treat-existing, which rewrites them under the policy and compacts the store."
            )
        return lines

    def add_approver(self, name: str, role: str, public_key_file: str | Path) -> str:
        """Register an approver's Ed25519 public key for a role (audited); returns its fingerprint."""
        if not name.strip() or not role.strip():
            raise PolicyViolation("an approver needs a name and a role")
        public = signatures.public_key_text(Path(public_key_file))
        self.ctx.registry.add_approver(
            name=name, role=role, public_key=public, added_at=self.ctx.now(), added_by=self.ctx.actor
        )
        printed = signatures.fingerprint(public)
        self.ctx.audit.append(self.ctx.actor, "add_approver", name, details={"role": role, "public_key": printed})
        return printed

    def approve(
        self,
        path: str | Path,
        *,
        by: str,
        role: str,
        ticket: str | None = None,
        treat_existing: bool = False,
        key: str | Path | None = None,
    ) -> Policy:
        """Approve a policy file's exact content (bound to its SHA-256); it is in force from now on.
        Refused while stored rows hold values the policy treats untreated, unless `treat_existing`:
        then those rows are rewritten under it first (see :mod:`.treat_existing`)."""
        snapshot = self.ctx.access.snapshot()
        policy = self.lint(path, snapshot)
        if not by.strip() or not role.strip():
            raise PolicyViolation("an approval needs the approver's name (--by) and role (--role)")
        approvals = self.ctx.registry.approvals(policy.id)
        if any(a.sha256 == policy.sha256 for a in approvals):
            raise PolicyViolation(
                f"policy '{policy.id}' is already approved with this exact content (SHA-256 {policy.sha256[:12]}...)"
                + (
                    ""
                    if approvals[-1].sha256 == policy.sha256
                    else "; it is an older version: a newer one is in force. To go back, raise its version "
                    f"above {approvals[-1].version} and approve that"
                )
            )
        current = snapshot.policy(policy.id)
        if current is not None and policy.version <= current.version:
            raise PolicyViolation(
                f"policy '{policy.id}' v{current.version} is in force; the content changed, so raise "
                f"'version' to {current.version + 1} (it is {policy.version}) and approve again"
            )
        signature = self._signature(policy, by, role, key)
        items = treating.untreated(self.ctx, self.catalog, policy, snapshot)
        if items and not treat_existing:
            raise PolicyViolation(
                f"approving policy '{policy.id}' would leave stored values readable untreated: {treating.describe(items)}. "
                "Approve with --treat-existing to rewrite those rows under the policy (and compact the store, so the raw "
                "bytes go), or delete them first"
            )
        treated = (
            treating.treat_existing(
                self.ctx, self.catalog, policy, items, self.ctx.treatments, self.online, self.training_sets
            )
            if items
            else {}
        )
        if treated:
            self.ctx.audit.append(
                self.ctx.actor,
                "treat_existing",
                policy.id,
                details={
                    "sha256": policy.sha256,
                    "rows": treated,
                    "columns": sorted({f"{i.view}:{i.column}" for i in items}),
                },
            )
        self.ctx.registry.add_approval(
            policy_id=policy.id,
            version=policy.version,
            sha256=policy.sha256,
            content=policy.text,
            file_name=Path(policy.file).name,
            approved_by=by,
            role=role,
            ticket=ticket,
            approved_at=self.ctx.now(),
            signature=signature,
        )
        self.ctx.audit.append(
            by,
            "approve_policy",
            policy.id,
            details={
                "version": policy.version,
                "sha256": policy.sha256,
                "role": role,
                "ticket": ticket,
                "recorded_by": self.ctx.actor,
            },
        )
        return policy

    def _signature(self, policy: Policy, by: str, role: str, key: str | Path | None) -> str | None:
        """The approver's signature of the policy's SHA-256, checked against their registered key."""
        if key is None:
            if self.ctx.config.signed_approvals:
                raise PolicyViolation(
                    "this store counts only signed approvals (governance.signed_approvals): pass the "
                    "approver's private key with --key FILE"
                )
            return None
        registered = {(a.name, a.role): a.public_key for a in self.ctx.registry.approvers()}
        if (by, role) not in registered:
            raise PolicyViolation(
                f"'{by}' is not a registered approver in the role {role}: register their public key first "
                "(featurestore approvers add NAME ROLE --public-key FILE)"
            )
        signature, public = signatures.sign(Path(key), policy.sha256)
        if public != registered[(by, role)] or not signatures.verify(registered[(by, role)], policy.sha256, signature):
            raise PolicyViolation(
                f"the key {key} is not the one registered for '{by}' as {role} "
                f"({signatures.fingerprint(registered[(by, role)])})"
            )
        return signature

    def show(self, path: str | Path, *, format: str = "markdown") -> str:
        """A policy as Markdown for legal (``format="markdown"``) or its plan as text (``"plan"``)."""
        if format == "plan":
            return "\n".join(self.plan(path))
        if format != "markdown":
            raise PolicyViolation(f"unknown format {format!r}; use markdown or plan")
        policy = load_policy(path)
        approvals = [
            (a.approved_by, a.role, a.ticket, a.approved_at.strftime("%Y-%m-%d"))
            for a in self.ctx.registry.approvals(policy.id)
            if a.sha256 == policy.sha256
        ]
        return policy_markdown(policy, approvals=approvals)

    def status(self) -> list[PolicyStatus]:
        """Every policy id in force or proposed, with its pending drafts and what approving them changes."""
        snapshot = self.ctx.access.snapshot()
        ids = [a.policy.id for a in snapshot.in_force]
        ids += [p.policy_id for p in snapshot.proposals if p.policy_id is not None and p.policy_id not in ids]
        result = []
        for policy_id in ids:
            in_force = next((a for a in snapshot.in_force if a.policy.id == policy_id), None)
            drafts: list[tuple[str, list[str]]] = []
            problems: list[str] = []
            for draft in snapshot.drafts():
                proposal = draft.proposal
                if proposal.policy_id != policy_id:
                    continue
                if proposal.policy is None:
                    problems.append(f"{proposal.file}: {proposal.problem}")
                    continue
                try:
                    self.lint(proposal.file, snapshot)
                    drafts.append((proposal.file, self._plan(snapshot, proposal.policy)))
                except PolicyError as exc:
                    drafts.append((proposal.file, [f"Cannot be approved as it is: {e}" for e in exc.errors]))
            result.append(
                PolicyStatus(
                    policy_id,
                    in_force.policy if in_force else None,
                    in_force.approved_by if in_force else None,
                    drafts,
                    problems,
                )
            )
        unreadable = [f"{p.file}: {p.problem}" for p in snapshot.proposals if p.policy_id is None]
        if unreadable:
            result.append(PolicyStatus("(unreadable)", None, None, [], unreadable))
        return result

    def _rows_older_than(self, view_pattern: str, age: timedelta) -> int:
        cutoff = self.ctx.now() - age
        snapshot = self.ctx.access.snapshot()
        total = 0
        for vv in self.catalog.list_views():
            if not fnmatch.fnmatchcase(vv.view.name, view_pattern):
                continue
            for version in self.catalog.view_versions(vv.view.name):  # counted, never read: a maintain grant
                grant = self.ctx.access.grant(snapshot, version, (), "policy_plan", (MAINTAIN,))
                total += self.ctx.offline.older(grant, cutoff)
        return total
