"""The steps before a FeatureStore exists: creating a store directory, and opening its registry."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import closing
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from .config import CONFIG_FILE, DEFAULT_CONFIG_TEXT, StoreConfig, load_config
from .errors import ConfigError, FeatureStoreError, RegistryOutOfDate
from .offline import OfflineEngine
from .privacy.keys import MASTER_KEY_ENV, ConfigKeyProvider
from .recovery import lost_registry
from .registry import Registry

if TYPE_CHECKING:
    from .context import StoreContext
    from .privacy.keys import KeyProvider


def registry_of(config: StoreConfig) -> Registry:
    """The registry a config names (its project's schema on PostgreSQL)."""
    return Registry(config.registry_url, config.registry_schema)


def create_store_files(
    root: Path, registry_url: str | None, project: str | None = None, lake: str | None = None
) -> None:
    """Write the config, ``features/`` and ``policies/``, create the registry schema and the
    offline file (recording the project); ConfigError where a store already is. With `lake`
    (a directory, relative to the store, or a URI) the offline rows go to Delta tables there."""
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{root} exists and is not a directory: name a new or empty directory for the store")
    if (root / CONFIG_FILE).exists():
        raise ConfigError(f"{root} already holds a feature store ({CONFIG_FILE} exists)")
    root.mkdir(parents=True, exist_ok=True)
    (root / "features").mkdir(exist_ok=True)
    (root / "policies").mkdir(exist_ok=True)
    text = DEFAULT_CONFIG_TEXT
    if registry_url is not None:
        text = text.replace("registry: sqlite:///registry.db", f"registry: {registry_url}")
    if lake is not None:
        quoted = json.dumps(lake)  # a YAML string: any path or URI
        text = text.replace(
            "offline:\n  path: offline.duckdb",
            f"offline:\n  type: delta\n  path: {quoted}\n  bookkeeping: offline.duckdb",
        )
    if project is not None:  # checked by load_config below
        text = (
            f"# The project this store belongs to: its registry rows are namespaced by it.\nproject: {project}\n\n"
            + text
        )
    (root / CONFIG_FILE).write_text(text, encoding="utf-8")
    try:
        config = load_config(root.resolve())
    except ConfigError:
        (root / CONFIG_FILE).unlink()
        raise
    with closing(registry_of(config)) as registry:
        registry.upgrade()
    assert config.offline_path is not None
    open_offline_store(config, config.lock_timeout).initialize(config.project)


def open_registry(config: StoreConfig, registry: Registry | None, hint: str) -> Registry:
    """The store's registry, at the code's schema revision (else RegistryOutOfDate naming the
    upgrade, or StoreDamaged when an empty registry sits beside an offline file with batches)."""
    if config.root is None:
        registry = registry or Registry("sqlite://")
        registry.upgrade()
        return registry
    registry = registry or registry_of(config)
    try:
        registry.ensure_current(hint)
    except RegistryOutOfDate as exc:
        registry.close()
        raise (
            lost_registry(config, exc, registry.safe_url(), lambda: open_offline_store(config, config.lock_timeout))
            or exc
        ) from None
    except FeatureStoreError:
        registry.close()
        raise
    return registry


def default_actor() -> str:
    """Who acts when the caller does not say: the operating-system user (or ``uid-N``)."""
    import getpass
    import os

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in this environment
        return f"uid-{os.getuid()}"


def open_context(
    config: StoreConfig,
    registry: Registry,
    *,
    clock: Callable[[], datetime],
    lock_timeout: float | None,
    key_provider: KeyProvider | None,
    actor: str,
) -> StoreContext:
    """The parts of an open store: registry, offline store, keys, audit log, policy access, treatments."""
    from .audit import AuditLog
    from .context import StoreContext
    from .governance import Access, PolicySource, Treatments
    from .privacy.keys import KeyRing

    made: list[StoreContext] = []

    def now() -> datetime:  # the context's checked clock (UTC; a naive clock is an error)
        return made[0].now()

    timeout = config.lock_timeout if lock_timeout is None else lock_timeout
    offline = open_offline_store(config, timeout)
    keys = KeyRing(registry, key_provider or config_key_provider(config), now)
    audit = AuditLog(registry, now, keys)
    source = PolicySource(
        config.root / "policies" if config.root else None,
        registry,
        require_policy=config.require_policy,
        signed_approvals=config.signed_approvals,
    )
    made.append(
        StoreContext(
            config, registry, offline, keys, audit, Access(source, audit, actor, now), Treatments(keys), clock, actor
        )
    )
    return made[0]


def open_offline_store(config: StoreConfig, lock_timeout: float) -> OfflineEngine:
    """The offline store a config names: the embedded DuckDB file, or Delta tables (``type: delta``)."""
    if config.lake is None:
        from .offline.duckdb_store import OfflineStore

        return OfflineStore(config.offline_path, lock_timeout=lock_timeout, force_compression=config.force_compression)
    from .offline.lake import DeltaTables
    from .offline.lake_store import LakeOfflineStore

    assert config.offline_path is not None
    return LakeOfflineStore(
        config.offline_path, DeltaTables(config.lake, config.lake_options or None), lock_timeout=lock_timeout
    )


def config_key_provider(config: StoreConfig) -> ConfigKeyProvider:
    """The master key source the config names: ``keys.master_key_file`` or the environment variable."""
    return ConfigKeyProvider(
        config.root,
        env_var=str(config.keys.get("master_key_env") or MASTER_KEY_ENV),
        key_file=Path(config.keys["master_key_file"]) if config.keys.get("master_key_file") else None,
    )
