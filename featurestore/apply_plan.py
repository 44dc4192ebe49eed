"""What ``apply`` would change: a pure comparison of definitions against the registry's state.

>>> from featurestore.definitions import Entity, FeatureView
>>> e = Entity(name="customer", join_keys={"customer_id": "string"})
>>> v = FeatureView(name="profile", entity="customer", features={"age": "int64"})
>>> print(compute_plan([e], [v], registered_entities={}, registered_views={}))
+ create entity 'customer' (join keys: customer_id string)
+ create feature view 'profile' v1 (features: age int64)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .definitions import Entity, FeatureView
from .durations import format_duration
from .errors import DefinitionError, Problem, did_you_mean
from .feature_services import FeatureService
from .refs import FeatureRef


@dataclass(frozen=True)
class RegisteredView:
    """The latest registered version of a view, as the planner needs it."""

    view: FeatureView
    version: int
    join_keys: Mapping[str, str]
    schema_hash: str
    rows: int = 0
    """Rows its offline table holds (what a schema change could carry forward)."""


@dataclass(frozen=True)
class Change:
    """One change `apply` makes. `kind` is one of: create_entity, update_entity, create_view,
    new_version, update_view, create_service, new_service_version, update_service. A new view
    version with `carry_from` starts with that version's rows."""

    kind: str
    name: str
    detail: str
    version: int | None = None
    carry_from: int | None = None

    def __str__(self) -> str:
        mark = {
            "create_entity": "+",
            "create_view": "+",
            "new_version": "+",
            "create_service": "+",
            "new_service_version": "+",
        }.get(self.kind, "~")
        return f"{mark} {self.detail}"


@dataclass
class Plan:
    """The changes `apply` would make, in order; `unchanged` names what stays as it is."""

    changes: list[Change] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        if not self.changes:
            return "No changes: the registry matches the definitions."
        return "\n".join(str(c) for c in self.changes)


def _keys_text(keys: Mapping[str, str]) -> str:
    return ", ".join(f"{k} {t}" for k, t in keys.items())


def _schema_diff(
    old: FeatureView, old_keys: Mapping[str, str], new: FeatureView, new_keys: Mapping[str, str]
) -> list[str]:
    parts: list[str] = []
    old_f = {f.name: f.dtype for f in old.features}
    new_f = {f.name: f.dtype for f in new.features}
    added = [f"{n} {t}" for n, t in new_f.items() if n not in old_f]
    removed = [n for n in old_f if n not in new_f]
    retyped = [f"{n} {old_f[n]} -> {new_f[n]}" for n in new_f if n in old_f and old_f[n] != new_f[n]]
    if added:
        parts.append("adds " + ", ".join(added))
    if removed:
        parts.append("removes " + ", ".join(removed))
    if retyped:
        parts.append("retypes " + ", ".join(retyped))
    if old.timestamp_field != new.timestamp_field:
        parts.append(f"event time column {old.timestamp_field} -> {new.timestamp_field}")
    if old.created_timestamp_field != new.created_timestamp_field:
        parts.append(
            f"created time column {old.created_timestamp_field or 'none'} -> {new.created_timestamp_field or 'none'}"
        )
    if dict(old_keys) != dict(new_keys) or old.entity != new.entity:
        parts.append(f"entity {old.entity} ({_keys_text(old_keys)}) -> {new.entity} ({_keys_text(new_keys)})")
    return parts


def carries_forward(
    old: FeatureView, old_keys: Mapping[str, str], new: FeatureView, new_keys: Mapping[str, str]
) -> str | None:
    """None if a schema change can carry the old version's rows forward (features only added or
    removed: the new columns are null for the old rows), else why it cannot.

    >>> from featurestore.definitions import FeatureView
    >>> a = FeatureView(name="p", entity="c", features={"age": "int64"})
    >>> carries_forward(a, {"id": "string"}, FeatureView(name="p", entity="c", features={"age": "int64", "x": "bool"}), {"id": "string"}) is None
    True
    >>> carries_forward(a, {"id": "string"}, FeatureView(name="p", entity="c", features={"age": "string"}), {"id": "string"})
    'a type change (age int64 -> string)'
    """
    old_f = {f.name: f.dtype for f in old.features}
    retyped = [f"{n} {old_f[n]} -> {f.dtype}" for f in new.features if (n := f.name) in old_f and old_f[n] != f.dtype]
    if retyped:
        return f"a type change ({', '.join(retyped)})"
    if old.timestamp_field != new.timestamp_field:
        return f"a new event time column ({old.timestamp_field} -> {new.timestamp_field})"
    if old.created_timestamp_field != new.created_timestamp_field:
        return f"a new created time column ({old.created_timestamp_field or 'none'} -> {new.created_timestamp_field or 'none'})"
    if dict(old_keys) != dict(new_keys) or old.entity != new.entity:
        return "a change of entity or join keys"
    return None


def _new_version_detail(
    old: RegisteredView, view: FeatureView, keys: Mapping[str, str], version: int
) -> tuple[str, bool]:
    """The plan's line for a schema change, and whether it carries the old rows forward."""
    diff = "; ".join(_schema_diff(old.view, old.join_keys, view, keys))
    head = f"feature view '{view.name}': schema change ({diff}) makes v{version}"
    pinned = f"v{old.version} and older stay readable by pinned refs like '{view.name}@v{old.version}:...'"
    blocker = carries_forward(old.view, old.join_keys, view, keys)
    if blocker is None:
        if not old.rows:
            return f"{head}; {pinned}", True
        added = [f.name for f in view.features if f.name not in old.view.feature_names]
        nulls = f"; {', '.join(added)} {'is' if len(added) == 1 else 'are'} null for them" if added else ""
        return f"{head}; v{version} starts with v{old.version}'s {old.rows:,} rows{nulls}; {pinned}", True
    if not old.rows:
        return f"{head}; {pinned}", False
    return (
        f"{head}, which starts empty: {blocker} cannot carry v{old.version}'s {old.rows:,} rows forward. Backfill "
        f"by ingesting the history again into v{version} (`featurestore ingest {view.name} FILE`, or "
        f"store.ingest('{view.name}', ...)); {pinned}"
    ), False


def _metadata_diff(old: FeatureView, new: FeatureView) -> list[str]:
    parts: list[str] = []
    if old.ttl != new.ttl:
        parts.append(
            f"ttl {format_duration(old.ttl) if old.ttl else 'none'} -> {format_duration(new.ttl) if new.ttl else 'none'}"
        )
    if old.owner != new.owner:
        parts.append(f"owner {old.owner or '-'} -> {new.owner or '-'}")
    if dict(old.tags) != dict(new.tags):
        parts.append(f"tags {dict(old.tags)} -> {dict(new.tags)}")
    if old.description != new.description:
        parts.append("description")
    old_desc = {f.name: f.description for f in old.features}
    changed = [f.name for f in new.features if old_desc.get(f.name, f.description) != f.description]
    if changed:
        parts.append("feature descriptions of " + ", ".join(changed))
    if [f.name for f in old.features] != [f.name for f in new.features] and not _schema_diff(old, {}, new, {}):
        parts.append("feature order")
    return parts


def compute_plan(
    entities: Sequence[Entity],
    views: Sequence[FeatureView],
    *,
    registered_entities: Mapping[str, Entity],
    registered_views: Mapping[str, RegisteredView],
    entity_positions: Mapping[str, Problem] | None = None,
    services: Sequence[FeatureService] = (),
    registered_services: Mapping[str, tuple[FeatureService, int]] | None = None,
    registered_features: Mapping[tuple[str, int], Sequence[str]] | None = None,
) -> Plan:
    """Compare definitions with what is registered; raise DefinitionError for what cannot apply.

    A view's schema change (keys, event-time column, feature names or types) makes a new
    version, which starts with the old version's rows when only features were added or removed
    (`carry_from`); a change of TTL, owner, tags or descriptions updates the latest version in
    place. An entity's join keys never change once registered. Nothing is ever deleted by apply.
    """
    plan = Plan()
    problems: list[Problem] = []
    known: dict[str, Entity] = dict(registered_entities)
    for entity in entities:
        old = registered_entities.get(entity.name)
        if old is None:
            plan.changes.append(
                Change(
                    "create_entity",
                    entity.name,
                    f"create entity '{entity.name}' (join keys: {_keys_text(entity.join_keys)})",
                )
            )
        elif dict(old.join_keys) != dict(entity.join_keys):
            problems.append(
                Problem(
                    f"entity '{entity.name}' is registered with join keys ({_keys_text(old.join_keys)}); "
                    f"they cannot change to ({_keys_text(entity.join_keys)}). Define a new entity "
                    f"(e.g. '{entity.name}_v2') and point the views at it."
                )
            )
        elif old.description != entity.description:
            plan.changes.append(Change("update_entity", entity.name, f"update entity '{entity.name}': description"))
        else:
            plan.unchanged.append(f"entity '{entity.name}'")
        known[entity.name] = entity
    for view in views:
        found = known.get(view.entity)
        if found is None:
            where = (entity_positions or {}).get(view.name)
            message = f"feature view '{view.name}' names unknown entity '{view.entity}'." + did_you_mean(
                view.entity, known
            )
            problems.append(Problem(message, where.file, where.line, where.column) if where else Problem(message))
            continue
        entity = found
        clash = (
            set(view.feature_names) | {view.timestamp_field, view.created_timestamp_field or view.timestamp_field}
        ) & set(entity.join_keys)
        if clash:
            problems.append(
                Problem(
                    f"feature view '{view.name}': {', '.join(sorted(clash))} "
                    f"is a join key of entity '{entity.name}' and cannot also be a feature, the event time or the created time"
                )
            )
            continue
        new_hash = view.schema_hash(entity.join_keys)
        old_reg = registered_views.get(view.name)
        feats = ", ".join(f"{f.name} {f.dtype}" for f in view.features)
        if old_reg is None:
            plan.changes.append(
                Change("create_view", view.name, f"create feature view '{view.name}' v1 (features: {feats})", 1)
            )
        elif old_reg.schema_hash != new_hash:
            new_version = old_reg.version + 1
            detail, carry = _new_version_detail(old_reg, view, entity.join_keys, new_version)
            plan.changes.append(
                Change("new_version", view.name, detail, new_version, old_reg.version if carry else None)
            )
        else:
            meta = _metadata_diff(old_reg.view, view)
            if meta:
                plan.changes.append(
                    Change(
                        "update_view",
                        view.name,
                        f"update feature view '{view.name}' v{old_reg.version}: {', '.join(meta)}",
                        old_reg.version,
                    )
                )
            else:
                plan.unchanged.append(f"feature view '{view.name}' v{old_reg.version}")
    latest = {name: (reg.version, reg.view.feature_names) for name, reg in registered_views.items()}
    for change in plan.changes:
        if change.kind in ("create_view", "new_version") and change.version is not None:
            latest[change.name] = (change.version, next(v for v in views if v.name == change.name).feature_names)
    features = {**(registered_features or {}), **{(n, v): f for n, (v, f) in latest.items()}}
    for service in services:
        problems += _service_problems(service, latest, features)
        _plan_service(plan, service, (registered_services or {}).get(service.name))
    if problems:
        raise DefinitionError(problems)
    return plan


def _service_problems(
    service: FeatureService,
    latest: Mapping[str, tuple[int, Sequence[str]]],
    features: Mapping[tuple[str, int], Sequence[str]],
) -> list[Problem]:
    problems: list[Problem] = []
    for text in service.features:
        ref = FeatureRef.parse(text)
        if ref.view not in latest:
            problems.append(
                Problem(
                    f"feature service '{service.name}': '{text}' names unknown feature view '{ref.view}'."
                    + did_you_mean(ref.view, latest)
                )
            )
            continue
        version = latest[ref.view][0] if ref.version is None else ref.version
        names = features.get((ref.view, version))
        if names is None:
            problems.append(
                Problem(
                    f"feature service '{service.name}': '{text}': feature view '{ref.view}' has no version "
                    f"v{version}; it has v1 to v{latest[ref.view][0]}"
                )
            )
        elif ref.feature != "*" and ref.feature not in names:
            problems.append(
                Problem(
                    f"feature service '{service.name}': '{text}': feature view '{ref.view}' v{version} has no "
                    f"feature '{ref.feature}'." + did_you_mean(ref.feature, names)
                )
            )
    return problems


def _plan_service(plan: Plan, service: FeatureService, registered: tuple[FeatureService, int] | None) -> None:
    refs = ", ".join(service.features)
    if registered is None:
        plan.changes.append(
            Change("create_service", service.name, f"create feature service '{service.name}' v1 (features: {refs})", 1)
        )
        return
    old, version = registered
    if old.features != service.features:
        added = [f for f in service.features if f not in old.features]
        removed = [f for f in old.features if f not in service.features]
        what = "; ".join(
            [*(["adds " + ", ".join(added)] if added else []), *(["removes " + ", ".join(removed)] if removed else [])]
        )
        plan.changes.append(
            Change(
                "new_service_version",
                service.name,
                f"feature service '{service.name}': features change ({what or 'order'}) makes v{version + 1}; "
                f"v{version} stays usable as 'service:{service.name}@v{version}'",
                version + 1,
            )
        )
    elif (old.owner, old.description) != (service.owner, service.description):
        changed = [
            n
            for n, a, b in (("owner", old.owner, service.owner), ("description", old.description, service.description))
            if a != b
        ]
        plan.changes.append(
            Change(
                "update_service",
                service.name,
                f"update feature service '{service.name}' v{version}: {', '.join(changed)}",
                version,
            )
        )
    else:
        plan.unchanged.append(f"feature service '{service.name}' v{version}")
