"""Registered versions as values: a view version, a feature service version, a resolved feature
reference, and the names of a view version's tables. Every layer may use them; they import
nothing of the store but the definitions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .definitions import FeatureView
from .feature_services import FeatureService


@dataclass(frozen=True)
class ViewVersion:
    """One registered version of a feature view."""

    view: FeatureView
    version: int
    join_keys: dict[str, str]
    table: str
    latest: bool
    created_at: datetime

    @property
    def ref(self) -> str:
        """``name@vN``."""
        return f"{self.view.name}@v{self.version}"


@dataclass(frozen=True)
class ResolvedFeature:
    """A feature reference resolved to one view version."""

    ref: str
    view: str
    version: int
    feature: str
    dtype: str
    service: str | None = None
    """The feature service (``name@vN``) the reference came from, if any."""


@dataclass(frozen=True)
class ServiceVersion:
    """One registered version of a feature service."""

    service: FeatureService
    version: int
    created_at: datetime

    @property
    def ref(self) -> str:
        """``name@vN``."""
        return f"{self.service.name}@v{self.version}"


def table_name(view: str, version: int) -> str:
    """The offline table of a view version."""
    return f"fv_{view}_v{version}"


def online_table(vv: ViewVersion) -> str:
    """The online table of a view version."""
    return f"ov_{vv.view.name}_v{vv.version}"
