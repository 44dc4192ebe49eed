"""The one place that picks an online store for a config (nothing else asks which store it has)."""

from __future__ import annotations

from typing import Any

from . import OnlineStore


def open_online_store(settings: dict[str, Any], root: Any) -> OnlineStore:
    """The online store a config names: ``type: embedded`` (``path``) or ``type: redis`` (``url``)."""
    from ..errors import ConfigError

    kind = settings.get("type", "embedded")
    if kind == "embedded":
        from .embedded import SQLiteOnlineStore

        if root is None:
            return SQLiteOnlineStore(None)
        return SQLiteOnlineStore(root / str(settings.get("path", "online.db")))
    if kind == "redis":
        from .redis_store import RedisOnlineStore

        url = settings.get("url")
        if not url:
            raise ConfigError("online.type is redis but online.url is missing (e.g. redis://127.0.0.1:6379/0)")
        prefix = str(settings.get("prefix") or "fs")
        return RedisOnlineStore(str(url), prefix)
    raise ConfigError(f"unknown online store type {kind!r}; use embedded or redis")
