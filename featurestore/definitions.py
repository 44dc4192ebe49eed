"""Entities and feature views, written in Python or in YAML files under ``features/``.

A feature view's *schema* is its entity's join keys, its event-timestamp column and its typed
features. Changing the schema makes a new version of the view (v1 -> v2); old versions stay
readable through pinned references such as ``"customer_profile@v1:country"``. Everything else
(description, owner, tags, TTL) is metadata and is updated on the latest version in place.

>>> view = FeatureView(name="profile", entity="customer", features={"age": "int64"}, ttl="30d")
>>> view.ttl
datetime.timedelta(days=30)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from .durations import GRAMMAR, parse_duration, short_duration
from .errors import DefinitionError, Problem, UnknownFeatureError, did_you_mean
from .feature_services import FeatureService, service_from_yaml
from .refs import NAME_RE
from .types import KEY_TYPE_NAMES, TYPE_NAMES
from .yamlpos import YamlSyntaxError, YList, YMap, check_keys, load_yaml, read_yaml_text

"""The one pattern for entity, view, feature, key and training-set names: a letter, then up to 99
letters, digits or _ (``\\Z``, not ``$``: a trailing newline is not part of a name)."""
DEFAULT_TIMESTAMP_FIELD = "event_timestamp"


def parse_ttl(value: str | int | timedelta | None) -> timedelta | None:
    """Parse a TTL in the one duration grammar (:mod:`featurestore.durations`): ``"30d"``,
    ``"12h"``, ``"1d6h"``, ISO ``"P30D"`` or ``"P3M"``, seconds; None for no TTL.

    >>> parse_ttl("P1DT2H")
    datetime.timedelta(days=1, seconds=7200)
    >>> parse_ttl(None) is None
    True
    """
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError:
        raise ValueError(f"invalid TTL {str(value)[:40]!r}; write {GRAMMAR} (omit it for no TTL)") from None


def format_ttl(ttl: timedelta | None) -> str | None:
    """Write a TTL back in the short form ``parse_ttl`` reads (``"30d"``, ``"1h30m"``...)."""
    return None if ttl is None else short_duration(ttl)


@dataclass(frozen=True)
class Feature:
    """One typed feature column of a feature view."""

    name: str
    dtype: str
    description: str = ""


@dataclass(frozen=True)
class Entity:
    """What features describe (a customer, a merchant), identified by typed join keys.

    Args:
        name: The entity's name, e.g. ``"customer"``.
        join_keys: Key column names and their types (``int32``, ``int64`` or ``string``).
        description: Free text shown in listings.
    """

    name: str
    join_keys: Mapping[str, str]
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "join_keys", dict(self.join_keys))
        problems = entity_problems(self.name, self.join_keys)
        if problems:
            raise DefinitionError([Problem(f"entity '{self.name}': {m}") for _, m in problems])

    def to_dict(self) -> dict[str, Any]:
        """A plain-data form, as stored in the registry."""
        return {"name": self.name, "join_keys": dict(self.join_keys), "description": self.description}


@dataclass(frozen=True)
class FeatureView:
    """A named, versioned group of features about one entity, stamped with an event time.

    Args:
        name: The view's name, used in references like ``"name:feature"``.
        entity: The entity's name (or the :class:`Entity` itself).
        features: Feature names and types, as a mapping or as :class:`Feature` objects.
        timestamp_field: The event-time column (time-zone aware), default ``event_timestamp``.
        created_timestamp_field: An optional column (Feast's ``created_timestamp_column``) that
            breaks ties of equal event time before ingestion order does: the later created row
            wins (a null created time ranks below any other).
        ttl: How far back a value stays valid (``"30d"``, a timedelta, or None for forever).
        owner: Who answers for this view.
        tags: Free-form labels.
        description: Free text shown in listings.
    """

    name: str
    entity: str
    features: tuple[Feature, ...]
    timestamp_field: str = DEFAULT_TIMESTAMP_FIELD
    ttl: timedelta | None = None
    owner: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)
    description: str = ""
    created_timestamp_field: str | None = None

    def __init__(
        self,
        *,
        name: str,
        entity: str | Entity,
        features: Mapping[str, str] | Iterable[Feature],
        timestamp_field: str = DEFAULT_TIMESTAMP_FIELD,
        ttl: str | int | timedelta | None = None,
        owner: str = "",
        tags: Mapping[str, str] | None = None,
        description: str = "",
        created_timestamp_field: str | None = None,
    ) -> None:
        if isinstance(features, Mapping):
            feats = tuple(Feature(str(k), str(v)) for k, v in features.items())
        else:
            feats = tuple(features)
        problems: list[str] = []
        try:
            parsed_ttl = parse_ttl(ttl)
        except ValueError as exc:
            problems.append(str(exc))
            parsed_ttl = None
        set_ = object.__setattr__
        set_(self, "name", name)
        set_(self, "entity", entity.name if isinstance(entity, Entity) else entity)
        set_(self, "features", feats)
        set_(self, "timestamp_field", timestamp_field)
        set_(self, "ttl", parsed_ttl)
        set_(self, "owner", owner)
        set_(self, "tags", dict(tags or {}))
        set_(self, "description", description)
        set_(self, "created_timestamp_field", created_timestamp_field)
        problems += [m for _, m in view_problems(name, timestamp_field, feats, created_timestamp_field)]
        if problems:
            raise DefinitionError([Problem(f"feature view '{name}': {m}") for m in problems])

    def stored_columns(self, join_keys: Mapping[str, str]) -> dict[str, str]:
        """Every column a version's table holds, in order, with its type: the join keys, the event
        time, the created time (if any) and the features."""
        times = {
            self.timestamp_field: "timestamp",
            **({self.created_timestamp_field: "timestamp"} if self.created_timestamp_field else {}),
        }
        return {**join_keys, **times, **{f.name: f.dtype for f in self.features}}

    @property
    def time_columns(self) -> list[str]:
        """The event-time column and the created-time column, if any."""
        return [self.timestamp_field, *([self.created_timestamp_field] if self.created_timestamp_field else [])]

    @property
    def feature_names(self) -> list[str]:
        """The feature names, in definition order."""
        return [f.name for f in self.features]

    def feature(self, name: str) -> Feature:
        """The feature called `name`, or UnknownFeatureError with the closest name."""
        for f in self.features:
            if f.name == name:
                return f
        raise UnknownFeatureError(
            f"feature view '{self.name}' has no feature '{name}'." + did_you_mean(name, self.feature_names)
        )

    def schema_hash(self, join_keys: Mapping[str, str]) -> str:
        """A hash of what makes a version: join keys, timestamp column, feature names and types.

        Feature order, descriptions, TTL, owner and tags do not count.
        """
        payload: dict[str, Any] = {
            "join_keys": sorted(join_keys.items()),
            "timestamp_field": self.timestamp_field,
            "features": sorted((f.name, f.dtype) for f in self.features),
        }
        if self.created_timestamp_field:  # only when set: hashes of existing views stay as they were
            payload["created_timestamp_field"] = self.created_timestamp_field
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        """A plain-data form, as stored in the registry and written back to YAML."""
        return {
            "name": self.name,
            "entity": self.entity,
            "timestamp_field": self.timestamp_field,
            "ttl": format_ttl(self.ttl),
            "owner": self.owner,
            "tags": dict(self.tags),
            "description": self.description,
            "features": [{"name": f.name, "type": f.dtype, "description": f.description} for f in self.features],
            **({"created_timestamp_field": self.created_timestamp_field} if self.created_timestamp_field else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureView:
        """Rebuild a view from :meth:`to_dict` output."""
        return cls(
            name=data["name"],
            entity=data["entity"],
            features=[Feature(f["name"], f["type"], f.get("description", "")) for f in data["features"]],
            timestamp_field=data["timestamp_field"],
            ttl=data.get("ttl"),
            owner=data.get("owner", ""),
            tags=data.get("tags") or {},
            description=data.get("description", ""),
            created_timestamp_field=data.get("created_timestamp_field"),
        )


def entity_problems(name: str, join_keys: Mapping[str, str]) -> list[tuple[str, str]]:
    """Problems with an entity's fields, as (field, message) pairs."""
    problems: list[tuple[str, str]] = []
    if not isinstance(name, str) or not NAME_RE.match(name):
        problems.append(
            ("name", f"invalid name {name!r}: use letters, digits and _, starting with a letter (at most 100)")
        )
    if not join_keys:
        problems.append(("join_keys", "an entity needs at least one join key, e.g. {customer_id: string}"))
    for key, dtype in join_keys.items():
        if not isinstance(key, str) or not NAME_RE.match(key):
            problems.append((f"join_keys.{key}", f"invalid join key name {key!r}"))
        if dtype not in KEY_TYPE_NAMES:
            problems.append(
                (
                    f"join_keys.{key}",
                    f"join key '{key}' has type {dtype!r}; a join key must be one of "
                    f"{', '.join(KEY_TYPE_NAMES)}." + did_you_mean(str(dtype), KEY_TYPE_NAMES),
                )
            )
    return problems


def view_problems(
    name: str, timestamp_field: str, features: tuple[Feature, ...], created: str | None = None
) -> list[tuple[str, str]]:
    """Problems with a feature view's own fields, as (field, message) pairs."""
    problems: list[tuple[str, str]] = []
    if created is not None:
        if not isinstance(created, str) or not NAME_RE.match(created):
            problems.append(("created_timestamp_field", f"invalid created timestamp column name {str(created)[:40]!r}"))
        elif created == timestamp_field:
            problems.append(("created_timestamp_field", f"'{created}' is the event time column; name another column"))
        elif created in {f.name for f in features}:
            problems.append(
                ("created_timestamp_field", f"'{created}' is a feature; the created time is a column of its own")
            )
    if not isinstance(name, str) or not NAME_RE.match(name):
        problems.append(
            ("name", f"invalid name {name!r}: use letters, digits and _, starting with a letter (at most 100)")
        )
    if not isinstance(timestamp_field, str) or not NAME_RE.match(timestamp_field):
        problems.append(("timestamp_field", f"invalid timestamp column name {timestamp_field!r}"))
    if not features:
        problems.append(("features", "a feature view needs at least one feature"))
    seen: set[str] = set()
    for f in features:
        where = f"features.{f.name}"
        if not isinstance(f.name, str) or not NAME_RE.match(f.name):
            problems.append(
                (where, f"invalid feature name {f.name!r}: use letters, digits and _, starting with a letter")
            )
        elif f.name in seen:
            problems.append((where, f"feature '{f.name}' is defined twice"))
        elif f.name == timestamp_field:
            problems.append((where, f"feature '{f.name}' has the name of the timestamp column"))
        seen.add(str(f.name))
        if f.dtype not in TYPE_NAMES:
            problems.append(
                (
                    where,
                    f"feature '{f.name}' has unknown type {f.dtype!r}; use one of "
                    f"{', '.join(TYPE_NAMES)}." + did_you_mean(str(f.dtype), TYPE_NAMES),
                )
            )
    return problems


# --- YAML -------------------------------------------------------------------------------

_ENTITY_KEYS = ("name", "join_keys", "description")
_VIEW_KEYS = (
    "name",
    "entity",
    "features",
    "timestamp_field",
    "created_timestamp_field",
    "ttl",
    "owner",
    "tags",
    "description",
)
_FEATURE_KEYS = ("type", "description")


@dataclass
class Definitions:
    """Entities and feature views read from files (or built in Python), ready for ``apply``."""

    entities: list[Entity] = field(default_factory=list)
    views: list[FeatureView] = field(default_factory=list)
    entity_positions: dict[str, Problem] = field(default_factory=dict)
    """Where each view names its entity, to point at an unknown entity in its file."""
    services: list[FeatureService] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    """Problems found while reading (from :func:`read_definitions`); the items they are in are left out."""
    unchecked_entities: dict[str, tuple[str, Problem]] = field(default_factory=dict)
    """The entity each view left out for its problems names, with where (a position without a
    message): ``plan`` still reports an unknown one, so every problem shows in one pass."""


def load_definitions(paths: Iterable[Path]) -> Definitions:
    """Read entity and feature view definitions from YAML files.

    Every problem in every file is collected and raised once as a DefinitionError, each with
    its ``file:line:column`` and, for a misspelt name, the closest valid one.
    """
    defs = read_definitions(paths)
    if defs.problems:
        raise DefinitionError(defs.problems)
    return defs


def read_definitions(paths: Iterable[Path]) -> Definitions:
    """:func:`load_definitions` that keeps going: the valid items, and every problem in `problems`."""
    defs = Definitions()
    for path in paths:
        _load_file(Path(path), defs, defs.problems)
    _check_names_unique(defs, defs.problems)
    return defs


def _load_file(path: Path, defs: Definitions, problems: list[Problem]) -> None:
    fname = str(path)
    try:
        doc = load_yaml(read_yaml_text(path), fname)
    except YamlSyntaxError as exc:
        problems.append(exc.problem)
        return
    except OSError as exc:
        problems.append(Problem(f"cannot read file: {exc.strerror}", fname))
        return
    if doc is None:
        return
    if not isinstance(doc, YMap):
        problems.append(
            Problem("expected a mapping with 'entities:', 'feature_views:' and/or 'feature_services:'", fname, 1, 1)
        )
        return

    def at(pos: tuple[int, int], message: str) -> None:
        problems.append(Problem(message, fname, pos[0], pos[1]))

    check_keys(doc, ("entities", "feature_views", "feature_services"), lambda k: f"unknown section '{k}'.", at)
    for section, loader in (
        ("entities", _entity_from_yaml),
        ("feature_views", _view_from_yaml),
        ("feature_services", lambda item, d, at_, _f: service_from_yaml(item, d.services, at_)),
    ):
        items = doc.get(section)
        if items is None:
            continue
        if not isinstance(items, YList):
            at(doc.value_pos(section), f"'{section}' must be a list (items start with '- ')")
            continue
        for index, item in enumerate(items):
            if not isinstance(item, YMap):
                at(items.item_pos(index), f"each item of '{section}' must be a mapping")
                continue
            loader(item, defs, at, fname)


def _unknown_keys(item: YMap, allowed: tuple[str, ...], what: str, at: Any) -> None:
    check_keys(item, allowed, lambda key: f"unknown field '{key}' in {what}.", at)


def _required_str(item: YMap, key: str, what: str, at: Any) -> str | None:
    value = item.get(key)
    if value is None:
        at(item.pos, f"{what} is missing '{key}'")
        return None
    if not isinstance(value, str):
        at(item.value_pos(key), f"'{key}' of {what} must be text")
        return None
    return value


def _entity_from_yaml(item: YMap, defs: Definitions, at: Any, fname: str) -> None:
    name = _required_str(item, "name", "an entity", at)
    what = f"entity '{name}'"
    _unknown_keys(item, _ENTITY_KEYS, what, at)
    keys = item.get("join_keys")
    if not isinstance(keys, YMap):
        at(
            item.value_pos("join_keys") if "join_keys" in item else item.pos,
            f"{what} needs 'join_keys', a mapping of key name to type, e.g. 'customer_id: string'",
        )
        return
    if name is None:
        return
    join_keys = {str(k): str(v) for k, v in keys.items()}
    found = entity_problems(name, join_keys)
    for fld, message in found:
        if fld.startswith("join_keys."):
            key = fld.split(".", 1)[1]
            at(keys.value_pos(key), f"{what}: {message}")
        else:
            at(item.value_pos(fld), f"{what}: {message}")
    if not found:
        defs.entities.append(Entity(name=name, join_keys=join_keys, description=str(item.get("description") or "")))


def _view_from_yaml(item: YMap, defs: Definitions, at: Any, fname: str) -> None:
    name = _required_str(item, "name", "a feature view", at)
    what = f"feature view '{name}'"
    _unknown_keys(item, _VIEW_KEYS, what, at)
    entity = _required_str(item, "entity", what, at)
    if name is not None and entity is not None:  # checked by plan even if this view is left out for other problems
        line, column = item.value_pos("entity")
        defs.entity_positions[name] = Problem("", fname, line, column)
        defs.unchecked_entities[name] = (entity, defs.entity_positions[name])
    raw_features = item.get("features")
    if not isinstance(raw_features, YMap):
        at(
            item.value_pos("features") if "features" in item else item.pos,
            f"{what} needs 'features', a mapping of feature name to type, e.g. 'amount: float64'",
        )
        return
    features: list[Feature] = []
    feature_pos: dict[str, tuple[int, int]] = {}
    for key, pos in raw_features.duplicates:
        at(pos, f"{what}: feature '{key}' is written twice")
    for feature_name, spec in raw_features.items():
        feature_pos[str(feature_name)] = raw_features.value_pos(feature_name)
        if isinstance(spec, YMap):
            _unknown_keys(spec, _FEATURE_KEYS, f"feature '{feature_name}'", at)
            features.append(Feature(str(feature_name), str(spec.get("type")), str(spec.get("description") or "")))
        else:
            features.append(Feature(str(feature_name), str(spec)))
    ttl = item.get("ttl")
    try:
        parse_ttl(ttl)
    except ValueError as exc:
        at(item.value_pos("ttl"), f"{what}: {exc}")
        ttl = None
    tags = item.get("tags") or {}
    if not isinstance(tags, dict):
        at(item.value_pos("tags"), f"{what}: 'tags' must be a mapping of label to value")
        tags = {}
    timestamp_field = str(item.get("timestamp_field") or DEFAULT_TIMESTAMP_FIELD)
    created = item.get("created_timestamp_field")
    created = str(created) if created is not None else None
    found = view_problems(name or "", timestamp_field, tuple(features), created) if name else []
    for fld, message in found:
        if fld.startswith("features."):
            pos = feature_pos.get(fld.split(".", 1)[1], raw_features.pos)
        else:
            pos = item.value_pos(fld)
        at(pos, f"{what}: {message}")
    if name is None or entity is None or found:
        return
    defs.unchecked_entities.pop(name, None)
    view = FeatureView(
        name=name,
        entity=entity,
        features=features,
        timestamp_field=timestamp_field,
        ttl=ttl,
        owner=str(item.get("owner") or ""),
        tags={str(k): str(v) for k, v in tags.items()},
        description=str(item.get("description") or ""),
        created_timestamp_field=created,
    )
    defs.views.append(view)


def _check_names_unique(defs: Definitions, problems: list[Problem]) -> None:
    for kind, names in (
        ("entity", [e.name for e in defs.entities]),
        ("feature view", [v.name for v in defs.views]),
        ("feature service", [s.name for s in defs.services]),
    ):
        dupes = sorted({n for n in names if names.count(n) > 1})
        for n in dupes:
            problems.append(Problem(f"{kind} '{n}' is defined more than once"))
