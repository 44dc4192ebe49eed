"""Feature services: a named, versioned list of the features one model needs, used by that one
name for training and serving (``features="service:fraud_v1"``).

A service's features are references as anywhere else: ``"view:feature"`` follows the view's
latest version, ``"view@v2:feature"`` stays pinned, ``"view:*"`` takes every feature. Changing
the list makes a new version of the service (``service:fraud_v1@v1`` stays usable); owner and
description are updated in place.

>>> s = FeatureService(name="fraud", features=("txn:amount_7d", "profile@v1:age"))
>>> s.refs, parse_service_ref("service:fraud@v2"), parse_service_ref("txn:amount")
(('txn:amount_7d', 'profile@v1:age'), ('fraud', 2), None)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .errors import DefinitionError, Problem, UnknownFeatureError
from .refs import NAME_RE, FeatureRef

SERVICE_PREFIX = "service:"
_SERVICE_RE = re.compile(r"service:([A-Za-z][A-Za-z0-9_]{0,99})(?:@v(\d+))?\Z")


def parse_service_ref(text: str) -> tuple[str, int | None] | None:
    """(name, version or None) of ``"service:NAME"`` / ``"service:NAME@vN"``; None for any
    other reference; UnknownFeatureError for a malformed service reference."""
    if not text.startswith(SERVICE_PREFIX):
        return None
    match = _SERVICE_RE.match(text.strip())
    if not match:
        raise UnknownFeatureError(
            f"invalid feature service reference {text!r}; write 'service:name' or 'service:name@v2'"
        )
    return match.group(1), int(match.group(2)) if match.group(2) else None


def service_problems(name: Any, features: Any) -> list[tuple[str, str]]:
    """Problems with a service's own fields, as (field, message) pairs."""
    problems: list[tuple[str, str]] = []
    if not isinstance(name, str) or not NAME_RE.match(name):
        problems.append(
            (
                "name",
                f"invalid name {str(name)[:40]!r}: use letters, digits and _, starting with a letter (at most 100)",
            )
        )
    if not features:
        problems.append(
            ("features", "a feature service needs at least one feature reference, e.g. [driver_stats:trips]")
        )
    seen: set[str] = set()
    for index, ref in enumerate(features or ()):
        where = f"features[{index}]"
        if not isinstance(ref, str):
            problems.append((where, "a feature reference is text, e.g. 'view:feature'"))
            continue
        if ref.startswith(SERVICE_PREFIX):
            problems.append((where, f"'{ref[:60]}': a service lists view features, not other services"))
            continue
        try:
            FeatureRef.parse(ref)
        except UnknownFeatureError as exc:
            problems.append((where, str(exc)))
            continue
        if ref in seen:
            problems.append((where, f"'{ref}' is listed twice"))
        seen.add(ref)
    return problems


@dataclass(frozen=True)
class FeatureService:
    """A named list of feature references for one model.

    Attributes:
        name: The service's name (``service:<name>`` in feature lists).
        features: Feature references, in output order.
        owner: Who answers for it.
        description: What model it serves.
    """

    name: str
    features: tuple[str, ...]
    owner: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", tuple(self.features))
        problems = service_problems(self.name, self.features)
        if problems:
            raise DefinitionError(
                [Problem(f"feature service '{self.name}': {field}: {message}") for field, message in problems]
            )

    @property
    def refs(self) -> tuple[str, ...]:
        """The references, as written."""
        return self.features

    def to_dict(self) -> dict[str, Any]:
        """A plain-data form, as stored in the registry."""
        return {
            "name": self.name,
            "features": list(self.features),
            "owner": self.owner,
            "description": self.description,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureService:
        """Rebuild a service from :meth:`to_dict` output."""
        return cls(
            name=data["name"],
            features=tuple(data["features"]),
            owner=data.get("owner", ""),
            description=data.get("description", ""),
        )


_SERVICE_KEYS = ("name", "features", "owner", "description")


def service_from_yaml(item: Any, services: list[FeatureService], at: Any) -> None:
    """Read one ``feature_services:`` item (a YMap), reporting problems through `at(pos, message)`."""
    from .yamlpos import YList, check_keys

    check_keys(item, _SERVICE_KEYS, lambda key: f"unknown field '{key}' in a feature service.", at)
    name = item.get("name")
    features = item.get("features")
    if name is None:
        at(item.pos, "a feature service is missing 'name'")
        return
    if not isinstance(features, YList):
        at(
            item.value_pos("features") if features is not None else item.pos,
            f"feature service '{name}': 'features' must be a list of references, e.g. [driver_stats:trips, 'driver_profile@v1:*']",
        )
        return
    problems = service_problems(name, list(features))
    for field, message in problems:
        index = int(field[9:-1]) if field.startswith("features[") else None
        at(
            features.item_pos(index) if index is not None else item.value_pos(field),
            f"feature service '{name}': {message}",
        )
    if problems:
        return
    for key in ("owner", "description"):
        if item.get(key) is not None and not isinstance(item.get(key), str):
            at(item.value_pos(key), f"'{key}' of feature service '{name}' must be text")
            return
    services.append(
        FeatureService(
            name=str(name),
            features=tuple(str(f) for f in features),
            owner=str(item.get("owner") or ""),
            description=str(item.get("description") or ""),
        )
    )
