"""Reading policy files: every problem is reported at once, each at ``file:line:column`` with
the closest valid word where one was misspelt.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "p.yaml"
>>> _ = path.write_text(EXAMPLE_MINIMAL.replace("keyed_hash", "keyed_hsh"))
>>> try:
...     load_policy(path)
... except PolicyError as exc:
...     print(exc.errors[0].message)
unknown treatment 'keyed_hsh'. Did you mean 'keyed_hash'?
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from ..errors import PolicyError, Problem, did_you_mean
from ..phones import known_country_code, known_region, region_of
from ..privacy.treatments import REGISTRY
from ..yamlpos import Report, YamlSyntaxError, YList, YMap, check_keys, load_yaml, read_yaml_text
from .model import (
    ACCESS,
    KINDS,
    LEGAL_BASES,
    NORMALIZERS,
    RETENTION_STORES,
    TREATMENTS,
    Budget,
    ColumnRule,
    ContributionBounds,
    DifferentialPrivacy,
    Erasure,
    Policy,
    Purpose,
    Retention,
    parse_duration,
)

POLICY_ID_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,99}\Z")
"""Policy ids: the name pattern, with - allowed (``customer-data``)."""
TOP_KEYS = (
    "api_version",
    "id",
    "version",
    "title",
    "owner",
    "legal_basis",
    "effective_from",
    "review_by",
    "scope",
    "classification",
    "treatments",
    "purposes",
    "retention",
    "erasure",
    "differential_privacy",
)
REQUIRED = (
    "id",
    "version",
    "owner",
    "legal_basis",
    "effective_from",
    "review_by",
    "scope",
    "classification",
    "treatments",
    "purposes",
)
COLUMN_KEYS = ("kind", "treatment", "normalize", "region", "country_code", "generalize", "category")
PURPOSE_KEYS = ("access", "sensitive_attributes")
RETENTION_KEYS = RETENTION_STORES
ERASURE_KEYS = ("subject_key", "sla")
DP_KEYS = (
    "purposes",
    "budget",
    "per_release",
    "contribution_bounds",
    "min_group_size",
    "public_groups",
    "per_consumer",
    "decimals",
)
API_VERSION = "featurestore.policy/v1"

EXAMPLE_MINIMAL = """\
api_version: featurestore.policy/v1
id: minimal
version: 1
owner: dpo@example.com
legal_basis: legitimate_interest
effective_from: 2026-01-01
review_by: 2027-01-01
scope: {feature_views: [profile]}
classification:
  customer_id: {kind: direct_identifier}
  age: non_personal
treatments: {direct_identifier: keyed_hash, non_personal: keep}
purposes:
  allowed: {fraud_detection: {access: [offline]}}
"""


def load_policy(path: str | Path) -> Policy:
    """Load and check one policy file; raise PolicyError listing every problem."""
    path = Path(path)
    try:
        text = read_yaml_text(path)
    except YamlSyntaxError as exc:
        raise PolicyError([exc.problem]) from None
    return parse_policy(text, str(path), hashlib.sha256(text.encode("utf-8")).hexdigest())


def load_policies(folder: Path) -> list[Policy]:
    """Every ``*.yaml`` / ``*.yml`` policy in a folder (problems of all files raised together)."""
    policies: list[Policy] = []
    problems: list[Problem] = []
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        try:
            policies.append(load_policy(path))
        except PolicyError as exc:
            problems += exc.errors
    seen: dict[str, str] = {}
    for p in policies:
        if p.id in seen:
            problems.append(
                Problem(f"policy id '{p.id}' is also used by {seen[p.id]}; each policy needs its own id", p.file)
            )
        seen[p.id] = p.file
    if problems:
        raise PolicyError(problems)
    return policies


def parse_policy(text: str, file: str, sha256: str | None = None) -> Policy:
    """Check a policy's text; `file` names it in messages."""
    problems: list[Problem] = []

    def at(pos: tuple[int, int], message: str) -> None:
        problems.append(Problem(message, file, pos[0], pos[1]))

    try:
        doc = load_yaml(text, file)
    except YamlSyntaxError as exc:
        raise PolicyError([exc.problem]) from exc
    if not isinstance(doc, YMap):
        raise PolicyError([Problem("a policy is a mapping of sections (id, version, classification, ...)", file, 1, 1)])
    _keys(doc, TOP_KEYS, "section", at)
    for key in REQUIRED:
        if key not in doc:
            at((1, 1), f"missing '{key}'")
    if doc.get("api_version", API_VERSION) != API_VERSION:
        at(doc.value_pos("api_version"), f"api_version must be '{API_VERSION}'")
    version = doc.get("version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        at(doc.value_pos("version"), "version must be a whole number from 1 up; raise it with every change")
    legal_basis = doc.get("legal_basis", "")
    if "legal_basis" in doc and legal_basis not in LEGAL_BASES:
        at(
            doc.value_pos("legal_basis"),
            f"unknown legal basis {legal_basis!r} (GDPR Art. 6: {', '.join(LEGAL_BASES)})."
            + did_you_mean(str(legal_basis), LEGAL_BASES),
        )
    dates: dict[str, date] = {}
    for key in ("effective_from", "review_by"):
        value = doc.get(key)
        if key in doc and not isinstance(value, date):
            at(doc.value_pos(key), f"'{key}' must be a date like 2026-01-31")
        elif isinstance(value, date):
            dates[key] = value
    if len(dates) == 2 and dates["review_by"] <= dates["effective_from"]:
        at(doc.value_pos("review_by"), "'review_by' must come after 'effective_from'")

    if "id" in doc and not (isinstance(doc["id"], str) and POLICY_ID_RE.match(doc["id"])):
        at(
            doc.value_pos("id"),
            f"invalid policy id {doc['id']!r}: use letters, digits, _ and -, starting with a letter (at most 100)",
        )
    views = _scope(doc, at)
    treatments = _treatments(doc, at)
    columns, positions = _classification(doc, treatments, at)
    purposes, denied = _purposes(doc, at)
    retention = _retention(doc, at)
    erasure = _erasure(doc, columns, at)
    dp = _dp(doc, purposes, columns, at)
    if problems:
        raise PolicyError(problems)
    return Policy(
        id=str(doc["id"]),
        version=int(version),
        title=str(doc.get("title") or ""),
        owner=str(doc["owner"]),
        legal_basis=str(legal_basis),
        effective_from=dates["effective_from"],
        review_by=dates["review_by"],
        feature_views=tuple(views),
        columns=columns,
        purposes=purposes,
        denied=tuple(denied),
        retention=retention,
        erasure=erasure,
        differential_privacy=dp,
        sha256=sha256 or hashlib.sha256(text.encode("utf-8")).hexdigest(),
        text=text,
        file=file,
        positions=positions,
    )


def _keys(section: YMap, allowed: Iterable[str], what: str, at: Report) -> None:
    check_keys(section, tuple(allowed), lambda key: f"unknown {what} '{key}'.", at)


def _section(doc: YMap, key: str, at: Report, label: str | None = None) -> YMap | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, YMap):
        at(doc.value_pos(key), f"'{label or key}' must be a mapping")
        return None
    return value


def _scope(doc: YMap, at: Report) -> list[str]:
    scope = _section(doc, "scope", at)
    if scope is None:
        return []
    _keys(scope, ("feature_views",), "scope entry", at)
    views = scope.get("feature_views")
    if not isinstance(views, YList) or not views or not all(isinstance(v, str) for v in views):
        at(
            scope.value_pos("feature_views"),
            "'feature_views' must list the views this policy governs, e.g. [customer_profile]",
        )
        return []
    return list(views)


def _treatments(doc: YMap, at: Report) -> dict[str, str]:
    section = _section(doc, "treatments", at)
    if section is None:
        return {}
    result: dict[str, str] = {}
    for kind, treatment in section.items():
        if kind not in KINDS:
            at(section.key_pos(kind), f"unknown kind '{kind}'." + did_you_mean(str(kind), KINDS))
        elif treatment not in TREATMENTS:
            at(section.value_pos(kind), f"unknown treatment '{treatment}'." + did_you_mean(str(treatment), TREATMENTS))
        elif kind == "direct_identifier" and REGISTRY[str(treatment)].as_is:
            at(section.value_pos(kind), "direct identifiers cannot be kept in clear; use keyed_hash, tokenize or drop")
        else:
            result[str(kind)] = str(treatment)
    return result


def _classification(
    doc: YMap, treatments: dict[str, str], at: Report
) -> tuple[dict[str, ColumnRule], dict[str, tuple[int, int]]]:
    section = _section(doc, "classification", at)
    columns: dict[str, ColumnRule] = {}
    positions: dict[str, tuple[int, int]] = {}
    if section is None:
        return columns, positions
    for key, pos in section.duplicates:
        at(pos, f"column '{key}' is classified twice")
    for name, spec in section.items():
        name = str(name)
        positions[name] = section.key_pos(name)
        where = section.value_pos(name)
        entry = YMap() if isinstance(spec, str) else spec
        if isinstance(spec, str):
            entry["kind"] = spec
        elif not isinstance(spec, YMap):
            at(where, f"column '{name}': write a kind (e.g. non_personal) or a mapping with 'kind'")
            continue
        _keys(entry, COLUMN_KEYS, f"setting of column '{name}'", at)
        kind = entry.get("kind")
        kind_pos = entry.value_pos("kind") if "kind" in entry and entry is spec else where
        if kind not in KINDS:
            at(
                kind_pos,
                f"column '{name}' has unknown kind {kind!r}." + did_you_mean(str(kind), KINDS)
                if kind is not None
                else f"column '{name}' needs a kind ({', '.join(KINDS)})",
            )
            continue
        treatment = entry.get("treatment", treatments.get(str(kind)))
        if treatment is None:
            at(where, f"column '{name}' is classified {kind}, and 'treatments' says nothing for {kind}")
            continue
        if treatment not in TREATMENTS:
            at(
                entry.value_pos("treatment"),
                f"unknown treatment '{treatment}'." + did_you_mean(str(treatment), TREATMENTS),
            )
            continue
        if kind == "direct_identifier" and REGISTRY[str(treatment)].as_is:
            at(entry.value_pos("treatment"), f"column '{name}' is a direct identifier and cannot be kept in clear")
            continue
        normalize = entry.get("normalize", "none")
        if normalize not in NORMALIZERS:
            at(
                entry.value_pos("normalize"),
                f"unknown normalization '{normalize}'." + did_you_mean(str(normalize), NORMALIZERS),
            )
        country = entry.get("country_code")
        region = entry.get("region")
        if country is not None and not (
            re.fullmatch(r"[1-9][0-9]{0,2}", str(country)) and known_country_code(str(country))
        ):
            at(
                entry.value_pos("country_code"),
                f"country_code {str(country)[:8]!r} is not a calling code: write it without +, "
                'e.g. "49" (or name the region instead: region: DE)',
            )
            country = None
        if region is not None and not (
            isinstance(region, str) and re.fullmatch(r"[A-Za-z]{2}", region) and known_region(region)
        ):
            at(
                entry.value_pos("region"),
                f"region {str(region)[:8]!r} is not a region libphonenumber knows: use an ISO 3166 "
                "code, e.g. GB, US or DE",
            )
            region = None
        if (country is not None or region is not None) and normalize != "phone":
            at(
                entry.value_pos("region" if region is not None else "country_code"),
                f"column '{name}' names a phone region but its normalize is {normalize}: add normalize: phone or remove it",
            )
        rule = entry.get("generalize")
        if "generalize" in REGISTRY[str(treatment)].options:
            if not _valid_generalize(rule):
                at(
                    entry.value_pos("generalize") if "generalize" in entry else where,
                    f"column '{name}' is generalized: say how, e.g. generalize: {{to: year}}, {{to: month}}, "
                    "{width: 10} or {prefix: 3}",
                )
                continue
        elif rule is not None:
            at(entry.value_pos("generalize"), f"column '{name}' has a generalize rule but its treatment is {treatment}")
        columns[name] = ColumnRule(
            name=name,
            kind=str(kind),
            treatment=str(treatment),
            normalize=str(normalize),
            country_code=str(country) if country is not None else None,
            region=region_of(
                str(region) if region is not None else None, str(country) if country is not None else None
            ),
            generalize=dict(rule) if isinstance(rule, dict) else None,
            category=str(entry["category"]) if entry.get("category") else None,
        )
    return columns, positions


def _valid_generalize(rule: Any) -> bool:
    if not isinstance(rule, dict) or len(rule) != 1:
        return False
    ((key, value),) = rule.items()
    if key == "to":
        return value in ("month", "year")
    if key in ("width", "prefix"):
        return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    return False


def _purposes(doc: YMap, at: Report) -> tuple[dict[str, Purpose], list[str]]:
    section = _section(doc, "purposes", at)
    if section is None:
        return {}, []
    _keys(section, ("allowed", "denied"), "purposes entry", at)
    purposes: dict[str, Purpose] = {}
    allowed = section.get("allowed") or YMap()
    if not isinstance(allowed, YMap):
        at(
            section.value_pos("allowed"),
            "'allowed' maps each purpose to its access, e.g. fraud_detection: {access: [offline]}",
        )
        allowed = YMap()
    for name, spec in allowed.items():
        if not isinstance(spec, YMap):
            at(allowed.value_pos(name), f"purpose '{name}' needs a mapping with 'access'")
            continue
        _keys(spec, PURPOSE_KEYS, f"setting of purpose '{name}'", at)
        access = spec.get("access")
        if not isinstance(access, YList) or not access:
            at(spec.value_pos("access"), f"purpose '{name}' needs 'access': a list of {', '.join(ACCESS)}")
            continue
        bad = [a for a in access if a not in ACCESS]
        for a in bad:
            at(access.item_pos(list(access).index(a)), f"unknown access '{a}'." + did_you_mean(str(a), ACCESS))
        sensitive = spec.get("sensitive_attributes", False)
        if not isinstance(sensitive, bool):
            at(spec.value_pos("sensitive_attributes"), "'sensitive_attributes' is true or false")
        if not bad:
            purposes[str(name)] = Purpose(str(name), tuple(str(a) for a in access), bool(sensitive))
    denied = section.get("denied") or []
    if not isinstance(denied, list):
        at(section.value_pos("denied"), "'denied' is a list of purposes")
        denied = []
    for i, name in enumerate(denied):
        if name in allowed:
            at(
                denied.item_pos(i) if isinstance(denied, YList) else section.pos,
                f"purpose '{name}' is both allowed and denied",
            )
    return purposes, [str(d) for d in denied]


def _retention(doc: YMap, at: Report) -> Retention:
    section = _section(doc, "retention", at)
    if section is None:
        return Retention()
    _keys(section, (*RETENTION_KEYS, "expired_training_sets"), "retention entry", at)
    limits = {
        str(name): value
        for name in section
        if name in RETENTION_KEYS and (value := _duration(section, name, f"retention.{name}", at)) is not None
    }
    action = section.get("expired_training_sets", "rewrite")
    if action not in ("rewrite", "delete"):
        at(
            section.value_pos("expired_training_sets"),
            "retention.expired_training_sets is rewrite or delete." + did_you_mean(str(action), ("rewrite", "delete")),
        )
        action = "rewrite"
    return Retention(**limits, expired_training_sets=str(action))


def _duration(section: YMap, name: str, label: str, at: Report) -> timedelta | None:
    """`section[name]` as an ISO 8601 duration, or None after reporting why it is not one."""
    try:
        return parse_duration(str(section[name]))
    except ValueError as exc:
        at(section.value_pos(name), f"{label}: {exc}")
        return None


def _erasure(doc: YMap, columns: dict[str, ColumnRule], at: Report) -> Erasure | None:
    section = _section(doc, "erasure", at)
    if section is None:
        return None
    _keys(section, ERASURE_KEYS, "erasure entry", at)
    subject = section.get("subject_key")
    sla = _duration(section, "sla", "erasure.sla", at) if "sla" in section else None
    if subject is None or (columns and subject not in columns):
        at(
            section.value_pos("subject_key") if subject is not None else section.pos,
            "erasure.subject_key must name a classified column."
            + (did_you_mean(str(subject), columns) if subject else ""),
        )
        return None
    return Erasure(subject_key=str(subject), sla=sla)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _budget(section: YMap, block: str, at: Report) -> Budget | None:
    spec = _section(section, block, at, f"differential_privacy.{block}")
    if spec is None:
        return None
    _keys(spec, ("epsilon", "delta", "period"), f"{block} entry", at)
    eps: Any = spec.get("epsilon")
    ok = True
    if not _number(eps) or eps <= 0:
        at(spec.value_pos("epsilon"), f"{block}.epsilon must be a number above 0")
        ok = False
    delta: Any = spec.get("delta", 0.0)
    if not _number(delta) or not 0 <= delta < 1:
        at(spec.value_pos("delta"), f"{block}.delta must be at least 0 and below 1")
        ok = False
    period = _duration(spec, "period", f"{block}.period", at) if "period" in spec else None
    return Budget(float(eps), float(delta), period) if ok else None


def _bounds(section: YMap, columns: dict[str, ColumnRule], at: Report) -> ContributionBounds:
    bounds = section.get("contribution_bounds")
    if bounds is None:
        return ContributionBounds()
    if not isinstance(bounds, YMap):
        at(section.value_pos("contribution_bounds"), "contribution_bounds must be a mapping")
        return ContributionBounds()
    _keys(bounds, ("max_rows_per_subject", "max_groups_per_subject", "clamp"), "contribution_bounds entry", at)
    rows = _positive_int(bounds, "max_rows_per_subject", at)
    groups = _positive_int(bounds, "max_groups_per_subject", at)
    clamp = [
        (column, float(pair[0]), float(pair[1]))
        for column, pair in _column_entries(
            bounds,
            "clamp",
            columns,
            at,
            "clamp maps columns to [lower, upper], e.g. clamp: {spend_total: [0, 5000]}",
            lambda pair: (
                isinstance(pair, list) and len(pair) == 2 and all(_number(v) for v in pair) and pair[0] < pair[1]
            ),
            "clamp of '{column}' must be [lower, upper] with lower below upper, e.g. [0, 5000]",
        )
    ]
    return ContributionBounds(rows, tuple(clamp), groups)


def _positive_int(section: YMap, key: str, at: Report) -> int | None:
    """`section[key]` if it is a whole number from 1 up; reported (and None) otherwise."""
    value = section.get(key)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        at(section.value_pos(key), f"{key} must be a whole number from 1 up")
        return None
    return value


def _column_entries(
    section: YMap,
    key: str,
    columns: dict[str, ColumnRule],
    at: Report,
    shape: str,
    valid: Callable[[Any], bool],
    invalid: str,
) -> list[tuple[str, Any]]:
    """The (column, value) entries of a mapping of classified columns (`section[key]`), each
    unknown column or invalid value reported where it is written."""
    spec = section.get(key)
    if spec is None:
        return []
    if not isinstance(spec, YMap):
        at(section.value_pos(key), shape)
        return []
    entries = []
    for column, value in spec.items():
        if columns and column not in columns:
            at(
                spec.key_pos(column),
                f"{key} names column '{column}', which is not classified." + did_you_mean(str(column), columns),
            )
        elif not valid(value):
            at(spec.value_pos(column), invalid.format(column=column))
        else:
            entries.append((str(column), value))
    return entries


def _dp(
    doc: YMap, purposes: dict[str, Purpose], columns: dict[str, ColumnRule], at: Report
) -> DifferentialPrivacy | None:
    section = _section(doc, "differential_privacy", at)
    if section is None:
        return None
    _keys(section, DP_KEYS, "differential_privacy entry", at)
    listed = section.get("purposes") or []
    if not isinstance(listed, list):
        at(section.value_pos("purposes"), "differential_privacy.purposes is a list of purposes")
        listed = []
    for i, name in enumerate(listed):
        purpose = purposes.get(name)
        if purpose is None or "dp_aggregates" not in purpose.access:
            at(
                listed.item_pos(i) if isinstance(listed, YList) else section.pos,
                f"DP purpose '{name}' must be an allowed purpose with access [dp_aggregates]",
            )
    budget = _budget(section, "budget", at)
    per_release = _budget(section, "per_release", at)
    if budget is not None and per_release is not None and per_release.epsilon > budget.epsilon:
        at(section.value_pos("per_release"), "per_release.epsilon cannot exceed budget.epsilon")
    size = _positive_int(section, "min_group_size", at)
    groups = [
        (column, tuple(str(v) for v in values))
        for column, values in _column_entries(
            section,
            "public_groups",
            columns,
            at,
            "public_groups maps group columns to their public values, e.g. {segment: [retail, premium]}",
            lambda values: isinstance(values, list) and bool(values),
            "public_groups.{column} lists the column's public values, e.g. [retail, premium]",
        )
    ]
    per_consumer = section.get("per_consumer", False)
    if not isinstance(per_consumer, bool):
        at(section.value_pos("per_consumer"), "per_consumer is true or false")
        per_consumer = False
    decimals = section.get("decimals", 2)
    if not isinstance(decimals, int) or isinstance(decimals, bool) or not 0 <= decimals <= 6:
        at(
            section.value_pos("decimals"),
            "decimals is a whole number from 0 to 6 (the fixed-point precision of sums and means)",
        )
        decimals = 2
    return DifferentialPrivacy(
        purposes=tuple(str(p) for p in listed),
        budget=budget,
        per_release=per_release,
        contribution_bounds=_bounds(section, columns, at),
        min_group_size=size,
        public_groups=tuple(groups),
        per_consumer=per_consumer,
        decimals=decimals,
    )
