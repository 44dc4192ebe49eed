"""What legal reads: a policy change in plain sentences, and a policy as a Markdown summary."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from datetime import timedelta

from ..durations import format_duration
from ..privacy.treatments import same, treatment_of
from .model import ColumnRule, Policy

RowsPastRetention = Callable[[str, timedelta], int]
"""(view name pattern, retention) -> how many stored rows are older than that retention."""


def _days(value: timedelta) -> str:
    return format_duration(value)


def _treatment(rule: ColumnRule) -> str:
    return treatment_of(rule).describe(rule)


def _changes(before: ColumnRule, after: ColumnRule) -> str:
    """The settings of a column rule that differ, as ``kind non personal -> quasi identifier``."""
    changed = [f.name for f in fields(ColumnRule) if getattr(before, f.name) != getattr(after, f.name)]
    return "; ".join(
        f"{name.replace('_', ' ')} {_setting(getattr(before, name))} -> {_setting(getattr(after, name))}"
        for name in changed
    )


def _setting(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    return str(value).replace("_", " ")


def _erasure_words(policy: Policy) -> str:
    if policy.erasure is None:
        return "no erasure rule"
    return f"one person is identified by `{policy.erasure.subject_key}`" + (
        f"; erased everywhere within {_days(policy.erasure.sla)}" if policy.erasure.sla else ""
    )


def plan_policy(old: Policy | None, new: Policy, *, rows_past_retention: RowsPastRetention | None = None) -> list[str]:
    """Sentences saying what approving `new` changes against the approved `old` (or None)."""
    lines: list[str] = []
    if old is None:
        lines.append(
            f"Policy '{new.id}' v{new.version} has no approved version yet: approving it puts all of it in force."
        )
        lines.append(f"It governs the feature views {', '.join(new.feature_views)}.")
        for rule in new.columns.values():
            if not treatment_of(rule).as_is:
                lines.append(
                    f"Column {rule.name} ({rule.kind.replace('_', ' ')}) will be {_treatment(rule)} before it is stored."
                )
        for p in new.purposes.values():
            lines.append(f"Purpose {p.name} will be allowed: {', '.join(p.access)} access.")
        for name, value in new.retention.limits().items():
            lines.append(f"{name.replace('_', ' ').capitalize()} data will be kept {_days(value)}.")
        return lines
    if old.sha256 == new.sha256:
        return [f"Policy '{new.id}' is approved exactly as written: approving it again changes nothing."]
    if new.version <= old.version:
        lines.append(
            f"Warning: the version stays {new.version} although the content changed; raise it to {old.version + 1}."
        )
    else:
        lines.append(f"Policy '{new.id}' goes from v{old.version} to v{new.version}.")
    for view in new.feature_views:
        if view not in old.feature_views:
            lines.append(f"Feature view {view} comes under this policy.")
    for view in old.feature_views:
        if view not in new.feature_views:
            lines.append(f"Feature view {view} leaves this policy: it is no longer governed by it.")
    for name, rule in new.columns.items():
        before = old.columns.get(name)
        if before is None:
            lines.append(f"Column {name} is newly classified as {rule.kind.replace('_', ' ')}: {_treatment(rule)}.")
        elif not same(before, rule):
            lines.append(
                f"Column {name}: was {before.kind.replace('_', ' ')}, {_treatment(before)}; "
                f"now {rule.kind.replace('_', ' ')}, {_treatment(rule)} {stored_before(before, rule)}"
            )
        elif before != rule:
            lines.append(
                f"Column {name}: {_changes(before, rule)}; it is still {_treatment(rule)}, "
                "so its stored values do not change."
            )
    for name in old.columns:
        if name not in new.columns:
            lines.append(f"Column {name} is no longer classified: a governed view holding it can no longer be applied.")
    for name, p in new.purposes.items():
        before_p = old.purposes.get(name)
        if before_p is None:
            lines.append(f"Purpose {name} is granted: {', '.join(p.access)} access.")
        elif before_p.access != p.access or before_p.sensitive_attributes != p.sensitive_attributes:
            lines.append(
                f"Purpose {name}: access changes from {', '.join(before_p.access)} to {', '.join(p.access)}"
                + (
                    " and now includes sensitive attributes"
                    if p.sensitive_attributes and not before_p.sensitive_attributes
                    else ""
                )
                + "."
            )
    for name in old.purposes:
        if name not in new.purposes:
            lines.append(f"Purpose {name} is revoked: reads for it will be refused.")
    for name in sorted(set(new.denied) - set(old.denied)):
        lines.append(f"Purpose {name} is now explicitly denied.")
    old_limits, new_limits = old.retention.limits(), new.retention.limits()
    for name in sorted(set(old_limits) | set(new_limits)):
        a, b = old_limits.get(name), new_limits.get(name)
        if a == b:
            continue
        label = name.replace("_", " ")
        if b is None:
            lines.append(f"The {label} retention limit of {_days(a)} is removed.")  # type: ignore[arg-type]
        elif a is None or b < a:
            sentence = f"The {label} retention is {'set' if a is None else 'shortened'} to {_days(b)}" + (
                "" if a is None else f" (was {_days(a)})"
            )
            if name == "offline" and rows_past_retention is not None:
                counts = {view: rows_past_retention(view, b) for view in new.feature_views}
                total = sum(counts.values())
                detail = ", ".join(f"{n:,} in {v}" for v, n in counts.items() if n)
                sentence += f": {total:,} stored rows are older than that and fall out of retention" + (
                    f" ({detail})" if detail else ""
                )
            lines.append(sentence + ".")
        else:
            lines.append(f"The {label} retention is lengthened to {_days(b)} (was {_days(a)}).")
    if old.erasure != new.erasure:
        lines.append(f"Erasure rules change: {_erasure_words(old)} -> {_erasure_words(new)}.")
    if old.differential_privacy != new.differential_privacy:
        lines.append("Differential-privacy rules change (budget, bounds or purposes).")
    if (old.legal_basis, old.owner) != (new.legal_basis, new.owner):
        lines.append(f"Legal basis / owner: {old.legal_basis}, {old.owner} -> {new.legal_basis}, {new.owner}.")
    if len(lines) == 1:
        lines.append("No rule changes; only wording, dates or comments differ.")
    return lines


def policy_markdown(policy: Policy, *, approvals: list[tuple[str, str, str | None, str]] | None = None) -> str:
    """A readable summary for legal. `approvals` are (by, role, ticket, when) of this exact content."""
    out = [
        f"# {policy.title or policy.id}",
        "",
        f"- Policy id: `{policy.id}`, version {policy.version}",
        f"- Owner: {policy.owner}",
        f"- Legal basis: {policy.legal_basis.replace('_', ' ')}",
        f"- In effect from {policy.effective_from.isoformat()}, review by {policy.review_by.isoformat()}",
        f"- Content SHA-256: `{policy.sha256}`",
    ]
    if approvals:
        for by, role, ticket, when in approvals:
            out.append(f"- Approved by {by} ({role}) on {when}" + (f", ticket {ticket}" if ticket else ""))
    else:
        out.append("- **Not approved**: data it governs can be neither written nor read.")
    out += [
        "",
        "## Feature views covered",
        "",
        *(f"- {v}" for v in policy.feature_views),
        "",
        "## Columns",
        "",
        "| column | kind | before storage |",
        "|---|---|---|",
    ]
    out += [f"| {r.name} | {r.kind.replace('_', ' ')} | {_treatment(r)} |" for r in policy.columns.values()]
    out += ["", "## Purposes", "", "| purpose | access | sensitive attributes |", "|---|---|---|"]
    out += [
        f"| {p.name} | {', '.join(p.access)} | {'yes' if p.sensitive_attributes else 'no'} |"
        for p in policy.purposes.values()
    ]
    if policy.denied:
        out += ["", f"Denied: {', '.join(policy.denied)}. Any purpose not listed is refused."]
    if policy.retention.limits():
        out += [
            "",
            "## Retention",
            "",
            *(f"- {k.replace('_', ' ')}: {_days(v)}" for k, v in policy.retention.limits().items()),
        ]
    if policy.erasure is not None:
        out += ["", "## Erasure", "", f"- {_erasure_words(policy).capitalize()}"]
    if policy.differential_privacy is not None:
        dp = policy.differential_privacy
        out += ["", "## Differential privacy", "", f"- For purposes: {', '.join(dp.purposes) or 'none'}"]
        if dp.budget is not None:
            out.append(
                f"- Budget: epsilon {dp.budget.epsilon}, delta {dp.budget.delta}"
                + (f" per {_days(dp.budget.period)}" if dp.budget.period else "")
            )
    return "\n".join(out) + "\n"


def stored_before(before: ColumnRule, after: ColumnRule) -> str:
    """What a change of a column's stored values means for the rows stored before it (the words
    end the plan's sentence): treat-existing rewrites raw values only, so values already treated
    another way must be ingested again, and a dropped column must leave the view."""
    if not treatment_of(after).stored:
        return (
            "(data ingested from now on drops it; a view that stores the column must remove it in a new version, "
            "and rows stored before keep it until retention or erasure removes them)."
        )
    if treatment_of(before).rewrites:
        return (
            "(data ingested from now on; rows stored before keep their old treated values, which --treat-existing "
            "cannot convert: ingest them again into a new view version)."
        )
    if not treatment_of(after).rewrites:
        return "(data ingested from now on; rows stored before keep their stored values)."
    return "(data ingested from now on; rows stored before need --treat-existing)."
