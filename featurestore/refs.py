"""Names and references as users write them: a definition's name, ``view:feature``,
``view@v2:feature``, ``view:*`` and ``view@v2``. A leaf: it imports only the errors.

>>> FeatureRef.parse("profile@v2:age")
FeatureRef(view='profile', version=2, feature='age')
>>> parse_view_ref("profile@v3")
('profile', 3)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import UnknownFeatureError

NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,99}\Z")
"""A valid name of an entity, view, feature, key or service."""


@dataclass(frozen=True)
class FeatureRef:
    """A parsed reference: ``"view:feature"`` (latest version), ``"view@v2:feature"`` (pinned),
    or ``"view:*"`` (every feature of the view)."""

    view: str
    version: int | None
    feature: str

    @classmethod
    def parse(cls, text: str) -> FeatureRef:
        """Parse a reference string; raise UnknownFeatureError with the expected form if bad."""
        match = re.match(r"^([A-Za-z][A-Za-z0-9_]*)(?:@v(\d+))?:([A-Za-z][A-Za-z0-9_]*|\*)$", text.strip())
        if not match:
            raise UnknownFeatureError(
                f"invalid feature reference {text!r}; write 'view:feature', 'view@v2:feature' or 'view:*'"
            )
        version = int(match.group(2)) if match.group(2) else None
        return cls(match.group(1), version, match.group(3))

    def __str__(self) -> str:
        pinned = f"@v{self.version}" if self.version is not None else ""
        return f"{self.view}{pinned}:{self.feature}"


def parse_view_ref(text: str) -> tuple[str, int | None]:
    """Parse ``"view"`` or ``"view@v2"`` into (name, version or None)."""
    match = re.match(r"^([A-Za-z][A-Za-z0-9_]*)(?:@v(\d+))?$", text.strip())
    if not match:
        from .errors import UnknownViewError

        raise UnknownViewError(f"invalid feature view reference {text!r}; write 'view' or 'view@v2'")
    return match.group(1), int(match.group(2)) if match.group(2) else None
