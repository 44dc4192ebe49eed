"""The FeatureStore facade: every SDK and admin verb goes through this class."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
import dataclasses
import fnmatch
import time
import getpass
import hashlib
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

from . import ingest as ingest_mod
from .config import CONFIG_FILE, DEFAULT_CONFIG_TEXT, StoreConfig, load_config
from .definitions import NAME_RE, Definitions, Entity, FeatureRef, FeatureView, load_definitions, parse_view_ref
from .errors import (
    ConfigError,
    FeatureStoreError,
    AuditChainBroken,
    NotFoundError,
    PolicyError,
    PolicyViolation,
    Problem,
    RetrievalError,
    StoreLockedError,
    UnknownFeatureError,
    UnknownViewError,
    did_you_mean,
)
from .audit import AuditEntry, AuditLog
from .governance import Governance
from .offline.duckdb_store import BATCHES_TABLE, OfflineStore, utc_schema
from .online import KEY_SEPARATOR, VALUES_AT, OnlineStore, open_online_store
from .online.materialize import copy_rows, latest_rows_sql, stream_rows
from .online.serving import (
    EXPIRED,
    MISSING,
    PLAN_TTL_SECONDS,
    PRESENT,
    KeyForm,
    OnlineResponse,
    ServingPlan,
    ViewServing,
    converter,
    lookup,
)
from .offline.pit import ViewRequest, pit_sql
from .plan import Plan, RegisteredView, compute_plan
from .policy import Policy, load_policy, parse_policy, plan_policy, policy_json_schema, policy_markdown
from .privacy.pseudonymize import detokenize, tokenize
from .privacy.keys import MASTER_KEY_ENV, ConfigKeyProvider, DataKey, KeyProvider, KeyRing
from .registry import Registry
from .registry.models import (
    EntityRow,
    FeatureViewRow,
    FeatureViewVersionRow,
    IngestionBatchRow,
    PolicyApprovalRow,
    TrainingSetRow,
)
from .retrieval import KeyColumns, content_hash, join_frame, read_entity_frame
from .types import arrow_type

Clock = Callable[[], datetime]
Progress = Callable[[int, int | None], None]
"""Called with (rows written so far, total rows if known) while a batch is ingested."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _default_actor() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in this environment
        return f"uid-{os.getuid()}"


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
        return f"{self.view.name}@v{self.version}"


@dataclass(frozen=True)
class ResolvedFeature:
    """A feature reference resolved to one view version."""

    ref: str
    view: str
    version: int
    feature: str
    dtype: str


@dataclass(frozen=True)
class IngestResult:
    """What one ``ingest`` call wrote."""

    batch_id: int
    view: str
    version: int
    rows: int
    ingested_at: datetime


@dataclass(frozen=True)
class TrainingSet:
    """A saved training set's manifest."""

    name: str
    description: str
    features: list[dict[str, Any]]
    entity_columns: list[str]
    timestamp_column: str
    as_of: datetime
    known_at_prediction_time: bool
    row_count: int
    content_hash: str
    policy_hashes: list[str]
    """``"<policy id>@<sha256>"`` of every approved policy governing its views when built."""
    purpose: str | None
    protected_columns: list[str]
    """Entity columns saved as tokens (raw keys of pseudonymized join keys)."""
    location: str
    created_at: datetime


@dataclass
class JoinPart:
    """One view version's share of a point-in-time join."""

    vv: ViewVersion
    features: list[str]
    outputs: list[str]
    ttl: timedelta | None


@dataclass(frozen=True)
class Reproduction:
    """A rebuilt training set and whether it matches the saved one's content hash."""

    name: str
    expected_hash: str
    content_hash: str
    matches: bool
    table: pa.Table


@dataclass(frozen=True)
class MaterializeResult:
    """What one view version's materialization wrote."""

    view: str
    version: int
    entities: int
    full: bool
    end: datetime


@dataclass(frozen=True)
class Mismatch:
    """An entity whose online value differs from the point-in-time answer."""

    key: str
    feature: str
    online: Any
    offline: Any
    online_status: str


@dataclass(frozen=True)
class ConsistencyReport:
    """The consistency check of one view version."""

    view: str
    checked: int
    mismatches: list[Mismatch]


@dataclass(frozen=True)
class BatchInfo:
    """One ingestion batch as the registry records it."""

    batch_id: int
    view: str
    version: int
    status: str
    rows: int | None
    source: str
    ingested_at: datetime
    error: str | None


class FeatureStore:
    """A feature store: open one with ``FeatureStore("path/to/store")`` or ``FeatureStore(memory=True)``.

    Args:
        path: A store directory made by :meth:`init` (``featurestore init DIR``).
        memory: A throwaway store held in memory (tests, notebooks).
        clock: Returns the current time (time-zone aware); stamps ingestion batches.
        lock_timeout: Seconds to wait for another process holding the offline store
            (default: the config's ``offline.lock_timeout_seconds``).
        key_provider: Where the master key comes from (default: the config's environment
            variable or key file).
        actor: Who is acting, for the audit log (default: the operating-system user).

    Raises:
        ConfigError: `path` is not a store.
        RegistryOutOfDate: the registry's schema is older than this code; run
            ``featurestore db upgrade``.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        memory: bool = False,
        clock: Clock | None = None,
        lock_timeout: float | None = None,
        key_provider: KeyProvider | None = None,
        actor: str | None = None,
    ) -> None:
        if memory == (path is not None):
            raise ConfigError("give either a store path, FeatureStore('dir'), or memory=True")
        self._clock = clock or _utc_now
        if memory:
            self.config = StoreConfig(root=None, registry_url="sqlite://", offline_path=None)
            self._registry = Registry("sqlite://")
            self._registry.upgrade()
        else:
            assert path is not None
            root = Path(path).resolve()
            self.config = load_config(root)
            self._registry = Registry(self.config.registry_url)
            try:
                self._registry.ensure_current(str(path))
            except FeatureStoreError:
                self._registry.close()
                raise
        timeout = self.config.lock_timeout if lock_timeout is None else lock_timeout
        self._offline = OfflineStore(self.config.offline_path, lock_timeout=timeout, force_compression=self.config.force_compression)
        self._memory_training_data: dict[str, pa.Table] = {}
        self.actor = actor or _default_actor()
        provider = key_provider or ConfigKeyProvider(
            self.config.root,
            env_var=str(self.config.keys.get("master_key_env") or MASTER_KEY_ENV),
            key_file=Path(self.config.keys["master_key_file"]) if self.config.keys.get("master_key_file") else None,
        )
        self._keys = KeyRing(self._registry, provider, self._now)
        self._governance = Governance(self.config.root, self._registry, self._keys)
        self._audit = AuditLog(self._registry, self._now)
        self._online: OnlineStore | None = None
        self._plans: dict[tuple[Any, ...], ServingPlan] = {}
        self._online_reads: dict[tuple[str | None, tuple[str, ...]], int] = {}
        self._online_flushed = time.monotonic()
        self._reconcile(wait=False)

    # --- lifecycle --------------------------------------------------------------------------

    @classmethod
    def init(cls, path: str | Path, *, registry_url: str | None = None, **kwargs: Any) -> FeatureStore:
        """Create a store directory (config, ``features/``, ``policies/``, registry, offline file).

        Args:
            path: The directory; created if missing, and must not hold a store already.
            registry_url: Registry database (default: SQLite ``registry.db`` in the directory).
        """
        root = Path(path)
        if (root / CONFIG_FILE).exists():
            raise ConfigError(f"{root} already holds a feature store ({CONFIG_FILE} exists)")
        root.mkdir(parents=True, exist_ok=True)
        (root / "features").mkdir(exist_ok=True)
        (root / "policies").mkdir(exist_ok=True)
        text = DEFAULT_CONFIG_TEXT
        if registry_url is not None:
            text = text.replace("registry: sqlite:///registry.db", f"registry: {registry_url}")
        (root / CONFIG_FILE).write_text(text, encoding="utf-8")
        config = load_config(root.resolve())
        registry = Registry(config.registry_url)
        try:
            registry.upgrade()
        finally:
            registry.close()
        assert config.offline_path is not None
        OfflineStore(config.offline_path, lock_timeout=config.lock_timeout).initialize()
        return cls(root, **kwargs)

    @staticmethod
    def registry_revision(path: str | Path) -> tuple[str | None, str]:
        """The registry's schema revision and the newest one this code knows: (current, head)."""
        registry = Registry(load_config(Path(path).resolve()).registry_url)
        try:
            return registry.current_revision(), registry.head_revision()
        finally:
            registry.close()

    @staticmethod
    def upgrade_registry(path: str | Path) -> tuple[str | None, str]:
        """Migrate the registry's schema to the newest revision: returns (before, after)."""
        registry = Registry(load_config(Path(path).resolve()).registry_url)
        try:
            before = registry.current_revision()
            registry.upgrade()
            return before, registry.head_revision()
        finally:
            registry.close()

    def close(self) -> None:
        """Record pending online-read audit entries, then release every connection."""
        self._flush_online_audit()
        if self._online is not None:
            self._online.close()
        self._offline.close()
        self._registry.close()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def root(self) -> Path | None:
        """The store directory (None for a memory store)."""
        return self.config.root

    # --- definitions ------------------------------------------------------------------------

    def load_definitions(self) -> Definitions:
        """Read every ``*.yaml`` / ``*.yml`` under the store's ``features/`` folder."""
        if self.root is None:
            raise ConfigError("a memory store has no features/ folder: pass definitions to plan/apply")
        folder = self.root / "features"
        files = sorted([*folder.rglob("*.yaml"), *folder.rglob("*.yml")])
        return load_definitions(files)

    def _as_definitions(self, definitions: Definitions | Iterable[Entity | FeatureView] | None) -> Definitions:
        if definitions is None:
            return self.load_definitions()
        if isinstance(definitions, Definitions):
            return definitions
        defs = Definitions()
        for obj in definitions:
            if isinstance(obj, Entity):
                defs.entities.append(obj)
            elif isinstance(obj, FeatureView):
                defs.views.append(obj)
            else:
                raise TypeError(f"apply takes Entity and FeatureView objects, not {type(obj).__name__}")
        return defs

    def plan(self, definitions: Definitions | Iterable[Entity | FeatureView] | None = None) -> Plan:
        """What :meth:`apply` would change (default: the definitions under ``features/``)."""
        defs = self._as_definitions(definitions)
        registered_entities = {
            row.name: Entity(name=row.name, join_keys=row.join_keys, description=row.description)
            for row in self._registry.entities()
        }
        registered_views = {
            vv.view.name: RegisteredView(vv.view, vv.version, vv.join_keys, self._schema_hash(vv))
            for vv in self.list_views()
        }
        plan = compute_plan(
            defs.entities,
            defs.views,
            registered_entities=registered_entities,
            registered_views=registered_views,
            entity_positions=defs.entity_positions,
        )
        known = {**registered_entities, **{e.name: e for e in defs.entities}}
        self._governance.check_definitions([
            (v.name, known[v.entity].join_keys, {f.name: f.dtype for f in v.features}) for v in defs.views
        ])
        return plan

    @staticmethod
    def _schema_hash(vv: ViewVersion) -> str:
        return vv.view.schema_hash(vv.join_keys)

    def apply(self, definitions: Definitions | Iterable[Entity | FeatureView] | None = None) -> Plan:
        """Register entities and feature views; a schema change makes a new view version.

        Returns the plan that was carried out. Nothing is deleted: views that are no longer
        defined stay registered with their data.
        """
        defs = self._as_definitions(definitions)
        plan = self.plan(defs)
        if not plan.changes:
            return plan
        entities = {e.name: e for e in defs.entities}
        views = {v.name: v for v in defs.views}
        now = self._now()
        # Tables first: a table without a registry row is an orphan that the next apply
        # replaces; a registry row without its table could not be ingested into.
        for change in plan.changes:
            if change.kind in ("create_view", "new_version"):
                view = views[change.name]
                keys = self._entity_keys(view.entity, entities)
                assert change.version is not None
                table = _table_name(view.name, change.version)
                self._offline.drop_table(table)
                self._offline.create_table(
                    table, {**keys, view.timestamp_field: "timestamp", **{f.name: f.dtype for f in view.features}}
                )
        with self._registry.session() as s:
            for change in plan.changes:
                if change.kind == "create_entity":
                    e = entities[change.name]
                    s.add(EntityRow(name=e.name, join_keys=dict(e.join_keys), description=e.description, created_at=now, updated_at=now))
                elif change.kind == "update_entity":
                    row = s.get(EntityRow, change.name)
                    assert row is not None
                    row.description = entities[change.name].description
                    row.updated_at = now
            s.flush()
            for change in plan.changes:
                if change.kind not in ("create_view", "new_version", "update_view"):
                    continue
                view = views[change.name]
                assert change.version is not None
                if change.kind == "update_view":
                    vrow = s.query(FeatureViewVersionRow).filter_by(view_name=view.name, version=change.version).one()
                    vrow.definition = view.to_dict()
                    vrow.updated_at = now
                    continue
                keys = self._entity_keys(view.entity, entities)
                head = s.get(FeatureViewRow, view.name)
                if head is None:
                    s.add(FeatureViewRow(name=view.name, entity_name=view.entity, latest_version=change.version, created_at=now, updated_at=now))
                else:
                    head.latest_version = change.version
                    head.entity_name = view.entity
                    head.updated_at = now
                s.flush()
                s.add(FeatureViewVersionRow(
                    view_name=view.name,
                    version=change.version,
                    definition=view.to_dict(),
                    join_keys=dict(keys),
                    schema_hash=view.schema_hash(keys),
                    table_name=_table_name(view.name, change.version),
                    created_at=now,
                    updated_at=now,
                ))
        self._audit.append(self.actor, "apply", ", ".join(c.name for c in plan.changes),
                          details={"changes": [str(c) for c in plan.changes]})
        return plan

    def _entity_keys(self, name: str, pending: dict[str, Entity]) -> dict[str, str]:
        if name in pending:
            return dict(pending[name].join_keys)
        row = self._registry.entity(name)
        assert row is not None, f"entity {name} vanished"
        return dict(row.join_keys)

    # --- lookups ----------------------------------------------------------------------------

    def list_entities(self) -> list[Entity]:
        """Every registered entity."""
        return [Entity(name=r.name, join_keys=r.join_keys, description=r.description) for r in self._registry.entities()]

    def list_views(self) -> list[ViewVersion]:
        """The latest version of every registered feature view."""
        latest = {row.name: row.latest_version for row in self._registry.views()}
        return [_view_version(r, latest[r.view_name]) for r in self._registry.view_versions() if r.version == latest[r.view_name]]

    def view_versions(self, name: str) -> list[ViewVersion]:
        """Every version of one feature view, oldest first."""
        head = self._view_row(name)
        return [_view_version(r, head.latest_version) for r in self._registry.view_versions(name)]

    def get_view(self, ref: str) -> ViewVersion:
        """A view version: ``"name"`` (latest) or ``"name@v2"`` (pinned)."""
        name, version = parse_view_ref(ref)
        head = self._view_row(name)
        wanted = head.latest_version if version is None else version
        row = self._registry.view_version(name, wanted)
        if row is None:
            raise UnknownViewError(
                f"feature view '{name}' has no version v{wanted}; it has v1 to v{head.latest_version}"
            )
        return _view_version(row, head.latest_version)

    def _view_row(self, name: str) -> FeatureViewRow:
        row = self._registry.view(name)
        if row is None:
            names = [r.name for r in self._registry.views()]
            hint = did_you_mean(name, names) or (" Register it with `featurestore apply`." if not names else "")
            raise UnknownViewError(f"unknown feature view '{name}'." + hint)
        return row

    def resolve_features(self, refs: Sequence[str]) -> list[ResolvedFeature]:
        """Resolve ``"view:feature"``, ``"view@v2:feature"`` and ``"view:*"`` references.

        A feature missing from the latest version but present in an older one gets an error
        that names the version to pin, so a dropped or renamed feature never breaks silently.
        """
        resolved: list[ResolvedFeature] = []
        for text in refs:
            ref = FeatureRef.parse(text)
            vv = self.get_view(f"{ref.view}@v{ref.version}" if ref.version is not None else ref.view)
            names = vv.view.feature_names if ref.feature == "*" else [ref.feature]
            for name in names:
                if name not in vv.view.feature_names:
                    raise UnknownFeatureError(self._missing_feature_message(vv, name, pinned=ref.version is not None))
                dtype = vv.view.feature(name).dtype
                resolved.append(ResolvedFeature(f"{vv.view.name}@v{vv.version}:{name}", vv.view.name, vv.version, name, dtype))
        return resolved

    def _missing_feature_message(self, vv: ViewVersion, name: str, *, pinned: bool) -> str:
        which = f"v{vv.version}" + ("" if pinned else " (latest)")
        message = f"feature view '{vv.view.name}' {which} has no feature '{name}'."
        holders = [o.version for o in self.view_versions(vv.view.name) if name in o.view.feature_names]
        if holders:
            return message + f" It is in v{holders[-1]}: pin it as '{vv.view.name}@v{holders[-1]}:{name}'."
        return message + did_you_mean(name, vv.view.feature_names)

    # --- ingestion --------------------------------------------------------------------------

    def ingest(self, view: str, data: Any, *, progress: Progress | None = None) -> IngestResult:
        """Validate `data` and append it to a view version as one batch, atomically.

        Args:
            view: ``"name"`` (latest version) or ``"name@v1"``.
            data: A pyarrow Table or RecordBatchReader, a pandas or polars DataFrame, or the
                path of a Parquet or CSV file (streamed, so it may be larger than memory).
            progress: Called with (rows written, total rows if known) after each chunk.

        Returns:
            The batch id, view version, row count and ingestion time.

        Raises:
            IngestionError: the data does not fit; nothing of it was written.
            PolicyViolation: the view's policy is not approved (or was edited since), or data
                cannot be treated as it requires; nothing was written.
            StoreLockedError: another process held the offline store past the lock timeout.

        A view governed by an approved policy has its columns treated in memory first:
        dropped columns are discarded, others generalized, hashed or tokenized.
        """
        vv = self.get_view(view)
        governing = self._governance.governing(vv.view.name)
        policy = governing.require(vv.view.name) if governing is not None else None
        stored = [*vv.join_keys, vv.view.timestamp_field, *vv.view.feature_names]
        target = ingest_mod.TargetSchema(
            view=vv.ref,
            join_keys=vv.join_keys,
            timestamp_field=vv.view.timestamp_field,
            features={f.name: f.dtype for f in vv.view.features},
            free_types=self._governance.treated(policy, stored) if policy else frozenset(),
        )
        source = ingest_mod.open_source(data, target)
        if policy is not None:
            target = dataclasses.replace(target, dropped=self._governance.dropped(policy, source.schema.names))
        ingest_mod.check_schema(source.schema, target)
        total = _known_rows(data)
        done = 0

        def validated() -> Iterator[pa.Table]:
            offset = 0
            for batch in source.batches:
                if batch.schema != source.schema:
                    ingest_mod.check_schema(batch.schema, target)
                if policy is not None:  # treatments happen in memory, before anything is written
                    batch = self._governance.treat(pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch, policy)
                table = ingest_mod.validate_batch(batch, target, row_offset=offset)
                offset += table.num_rows
                yield table

        def advance(rows: int) -> None:
            nonlocal done
            done += rows
            if progress is not None:
                progress(done, total)

        # The batch is recorded as pending while this process holds the offline store for
        # writing, so any process that can open the store knows no pending batch is in flight.
        with self._offline.connect(read_only=False) as con:
            self._reconcile_with(con)
            ingested_at = self._offline.next_ingestion_time(con, self._now())
            batch_id = self._registry.start_batch(vv.view.name, vv.version, source=source.description, ingested_at=ingested_at)
            try:
                rows = self._offline.append_on(
                    con, vv.table, ingest_mod.prefetched(validated()), batch_id=batch_id, ingested_at=ingested_at, on_rows=advance
                )
            except BaseException as exc:
                # A governed view's error may quote a raw value: the registry keeps only its kind.
                reason = (f"{type(exc).__name__}: details withheld, the view is governed by policy '{policy.id}'"
                          if policy is not None else str(exc) or type(exc).__name__)
                self._registry.finish_batch(batch_id, status="aborted", finished_at=self._now(), error=reason)
                raise
            self._registry.finish_batch(batch_id, status="committed", finished_at=self._now(), row_count=rows)
        self._audit.append(self.actor, "ingest", vv.ref, details={
            "batch": batch_id, "rows": rows, "policy": policy.id if policy else None,
            "policy_sha256": policy.sha256 if policy else None,
        })
        return IngestResult(batch_id, vv.view.name, vv.version, rows, ingested_at)

    def list_batches(self, view: str | None = None) -> list[BatchInfo]:
        """Ingestion batches (all views, or one view's), oldest first."""
        if view is not None:
            self._view_row(view)
        self._reconcile(wait=True)
        return [_batch_info(r) for r in self._registry.batches(view)]

    def _reconcile(self, *, wait: bool) -> None:
        """Settle batches left pending by a crashed process, against the offline store's record."""
        if not self._registry.batches(status="pending"):
            return
        try:
            with self._offline.connect(read_only=True) if wait else self._offline.try_connect() as con:
                if con is not None:
                    self._reconcile_with(con)
        except StoreLockedError:
            if wait:
                raise

    def _reconcile_with(self, con: Any) -> None:
        pending = self._registry.batches(status="pending")
        if not pending:
            return
        committed = self._offline.committed_batches_on(con, [b.id for b in pending])
        now = self._now()
        for batch in pending:
            if batch.id in committed:
                self._registry.finish_batch(batch.id, status="committed", finished_at=now, row_count=committed[batch.id])
            else:
                self._registry.finish_batch(
                    batch.id, status="aborted", finished_at=now,
                    error="the ingesting process stopped before its transaction committed; no row of this batch was written",
                )

    # --- reads ------------------------------------------------------------------------------

    def read(
        self, view: str, *, features: Sequence[str] | None = None, as_of: datetime | None = None, purpose: str | None = None
    ) -> pa.Table:
        """Every stored row of a view version: keys, event time, features, ``_ingested_at``, ``_batch_id``.

        Args:
            view: ``"name"`` (latest version) or ``"name@v1"`` (pinned).
            features: Feature names to return (default: all of that version).
            as_of: Only rows ingested at or before this time (time travel on ingestion time).
            purpose: Why the rows are read; required, and checked, for a governed view.
        """
        vv = self.get_view(view)
        names = list(features) if features is not None else vv.view.feature_names
        for name in names:
            if name not in vv.view.feature_names:
                raise UnknownFeatureError(self._missing_feature_message(vv, name, pinned="@" in view))
        if as_of is not None and as_of.tzinfo is None:
            raise FeatureStoreError("as_of must be time-zone aware, e.g. datetime(2025, 1, 1, tzinfo=UTC)")
        self._governance.check_read(vv.view.name, [*vv.join_keys, *names], purpose)
        columns = [*vv.join_keys, vv.view.timestamp_field, *names, "_ingested_at", "_batch_id"]
        table = self._offline.scan(vv.table, columns, as_of=as_of)
        self._audit.append(self.actor, "read", vv.ref, purpose=purpose, details={"features": names, "rows": table.num_rows})
        return table

    # --- point-in-time retrieval -------------------------------------------------------------

    def get_historical_features(
        self,
        entity_df: Any,
        features: Sequence[str],
        *,
        as_of: datetime | None = None,
        known_at_prediction_time: bool = False,
        timestamp_column: str = "event_timestamp",
        full_feature_names: bool = False,
        purpose: str | None = None,
    ) -> pa.Table:
        """Point-in-time correct feature values for each row of `entity_df` (for training).

        For an entity row (key k, time t) and a view with TTL d, each feature comes from the
        row with key k and t - d <= event time <= t that is latest in (event time, ingestion
        time, position in its batch); no match gives nulls. Every entity row comes back once,
        in input order, with its own columns untouched and the features appended. The full
        rules are in :mod:`featurestore.offline.pit`.

        Args:
            entity_df: Join keys, a time-zone-aware timestamp column and any other columns
                (labels, ids): a pyarrow Table, a pandas or polars DataFrame, or a
                .parquet / .csv path.
            features: References: ``"view:feature"``, ``"view@v2:feature"``, ``"view:*"``.
            as_of: Ignore rows ingested after this time (rebuild what was known then).
            known_at_prediction_time: Also ignore rows ingested after each entity row's time.
            timestamp_column: The entity timestamp column (default ``event_timestamp``).
            full_feature_names: Name output columns ``view__feature`` instead of ``feature``.
            purpose: Why the features are read; required, and checked, for governed views.
                Raw join keys of pseudonymized keys are hashed in-process to match.

        Returns:
            A pyarrow Table (``.to_pandas()``, ``polars.from_arrow(...)``).
        """
        entity = read_entity_frame(entity_df)
        if as_of is not None and as_of.tzinfo is None:
            raise RetrievalError("as_of must be time-zone aware, e.g. datetime(2025, 1, 1, tzinfo=UTC)")
        parts = self._requests(self.resolve_features(features), entity.column_names, full_feature_names)
        policies = self._check_parts(parts, purpose)
        table = self._point_in_time(entity, parts, policies, timestamp_column, as_of=as_of, known=known_at_prediction_time)
        self._audit.append(self.actor, "get_historical_features", ", ".join(p.vv.ref for p in parts), purpose=purpose,
                          details={"features": [f"{p.vv.ref}:{f}" for p in parts for f in p.features], "rows": table.num_rows})
        return table

    def _check_parts(self, parts: list[JoinPart], purpose: str | None) -> dict[str, Policy]:
        """Check every view's policy for this purpose; return the governing policies by view."""
        policies: dict[str, Policy] = {}
        for part in parts:
            policy = self._governance.check_read(part.vv.view.name, [*part.vv.join_keys, *part.features], purpose)
            if policy is not None:
                policies[part.vv.view.name] = policy
        return policies

    def _requests(self, resolved: list[ResolvedFeature], entity_columns: list[str], full_names: bool) -> list[JoinPart]:
        outputs = [f"{r.view}__{r.feature}" if full_names else r.feature for r in resolved]
        seen: dict[str, str] = {}
        for r, out in zip(resolved, outputs, strict=True):
            if out in seen or out in entity_columns:
                other = seen.get(out, "a column of entity_df")
                hint = " Pass full_feature_names=True to name columns view__feature." if not full_names else ""
                raise RetrievalError(f"two columns would be named '{out}': {r.ref} and {other}.{hint}")
            seen[out] = r.ref
        return self._group_requests([(r.view, r.version, r.feature, out) for r, out in zip(resolved, outputs, strict=True)])

    def _group_requests(
        self,
        entries: list[tuple[str, int, str, str]],
        ttls: dict[tuple[str, int], timedelta | None] | None = None,
    ) -> list[JoinPart]:
        """Group (view, version, feature, output) entries into one join part per view version.

        Each version's TTL is the one registered now, unless `ttls` gives it (a training set's
        manifest gives the TTLs recorded when it was built).
        """
        groups: dict[tuple[str, int], JoinPart] = {}
        for view, version, feature, out in entries:
            if (view, version) not in groups:
                vv = self.get_view(f"{view}@v{version}")
                ttl = ttls[(view, version)] if ttls is not None else vv.view.ttl
                groups[(view, version)] = JoinPart(vv, [], [], ttl)
            groups[(view, version)].features.append(feature)
            groups[(view, version)].outputs.append(out)
        return list(groups.values())

    def _point_in_time(
        self,
        entity: pa.Table,
        parts: list[JoinPart],
        policies: dict[str, Policy],
        timestamp_column: str,
        *,
        as_of: datetime | None,
        known: bool,
    ) -> pa.Table:
        groups = []
        for i, part in enumerate(parts):
            policy = policies.get(part.vv.view.name)
            free = self._governance.treated(policy, list(part.vv.join_keys)) if policy else frozenset()
            forms = (lambda key, raw, p=policy: self._governance.key_variants(p, key, raw)) if free else None
            groups.append(KeyColumns(part.vv.ref, part.vv.join_keys, f"_k{i}_", forms, free))
        frame, prefixes = join_frame(entity, timestamp_column, groups)
        requests = [
            ViewRequest(p.vv.table, list(p.vv.join_keys), pre, p.vv.view.timestamp_field, p.ttl, p.features, p.outputs)
            for p, pre in zip(parts, prefixes, strict=True)
        ]
        sql = pit_sql(requests, as_of=as_of, known_at_prediction_time=known)
        with self._offline.connect(read_only=True) as con:
            con.register("_fs_entities", frame)
            try:
                joined = utc_schema(con.sql(sql).to_arrow_table())
            finally:
                con.unregister("_fs_entities")
        assert joined.num_rows == entity.num_rows, "a point-in-time join returns each entity row once"
        result = entity
        for req in requests:
            for out in req.outputs:
                result = result.append_column(joined.schema.field(out), joined.column(out))
        return result

    # --- training sets ------------------------------------------------------------------------

    def create_training_set(
        self,
        name: str,
        entity_df: Any,
        features: Sequence[str],
        *,
        as_of: datetime | None = None,
        known_at_prediction_time: bool = False,
        timestamp_column: str = "event_timestamp",
        full_feature_names: bool = False,
        description: str = "",
        purpose: str | None = None,
    ) -> TrainingSet:
        """Build a point-in-time training set, save it in the store and record its manifest.

        The manifest holds the resolved, version-pinned features with the TTLs used, the
        ``as_of`` system time (default: the last committed ingestion, so later batches never
        change it), the row count and a SHA-256 content hash, so
        :meth:`reproduce_training_set` can rebuild it exactly.
        """
        if not NAME_RE.match(name):
            raise RetrievalError(f"invalid training set name {name!r}: use letters, digits and _, starting with a letter")
        if self._registry.training_set(name) is not None:
            raise RetrievalError(f"a training set named '{name}' exists already; choose another name")
        entity = read_entity_frame(entity_df)
        now = self._now()
        if as_of is None:
            as_of = self._last_ingestion() or now
        elif as_of.tzinfo is None:
            raise RetrievalError("as_of must be time-zone aware, e.g. datetime(2025, 1, 1, tzinfo=UTC)")
        elif as_of > now:
            raise RetrievalError(
                f"as_of {as_of.isoformat()} is in the future: rows ingested until then would change "
                "the training set, so it could not be reproduced. Omit as_of to use the last ingestion."
            )
        parts = self._requests(self.resolve_features(features), entity.column_names, full_feature_names)
        policies = self._check_parts(parts, purpose)
        table = self._point_in_time(entity, parts, policies, timestamp_column, as_of=as_of, known=known_at_prediction_time)
        manifest_features = [
            {
                "ref": f"{p.vv.view.name}@v{p.vv.version}:{feature}",
                "view": p.vv.view.name,
                "version": p.vv.version,
                "feature": feature,
                "output": out,
                "ttl_seconds": p.ttl.total_seconds() if p.ttl is not None else None,
            }
            for p in parts
            for feature, out in zip(p.features, p.outputs, strict=True)
        ]
        table, protected = self._protect_entity_columns(table, parts, policies, entity.column_names, timestamp_column)
        saved_entity_columns = [c for c in entity.column_names if c in table.column_names]
        location = self._save_training_data(name, table)
        with self._registry.session() as s:
            s.add(TrainingSetRow(
                name=name, description=description, features=manifest_features,
                entity_columns=saved_entity_columns, timestamp_column=timestamp_column, as_of=as_of,
                known_at_prediction_time=known_at_prediction_time, full_feature_names=full_feature_names,
                row_count=table.num_rows, content_hash=content_hash(table),
                policy_hashes=sorted({f"{p.id}@{p.sha256}" for p in policies.values()}),
                purpose=purpose, protected_columns=protected, location=location, created_at=now,
            ))
        self._audit.append(self.actor, "create_training_set", name, purpose=purpose,
                          details={"rows": table.num_rows, "features": [f["ref"] for f in manifest_features],
                                   "content_hash": content_hash(table)})
        return self.get_training_set(name)

    def list_training_sets(self) -> list[TrainingSet]:
        """Every saved training set's manifest, by name."""
        return [_training_set(row) for row in self._registry.training_sets()]

    def get_training_set(self, name: str) -> TrainingSet:
        """One training set's manifest."""
        row = self._registry.training_set(name)
        if row is None:
            names = [r.name for r in self._registry.training_sets()]
            raise NotFoundError(f"no training set named '{name}'." + did_you_mean(name, names))
        return _training_set(row)

    def load_training_set(self, name: str, *, purpose: str | None = None) -> pa.Table:
        """The saved data of a training set; for one built from governed views, `purpose` must
        be one their policies allow now (the read is audited)."""
        ts = self.get_training_set(name)
        views = sorted({f["view"] for f in ts.features})
        for view in views:
            self._governance.check_read(view, [f["feature"] for f in ts.features if f["view"] == view], purpose)
        table = self._load_training_data(ts)
        self._audit.append(self.actor, "load_training_set", name, purpose=purpose, details={"rows": table.num_rows})
        return table

    def _load_training_data(self, ts: TrainingSet) -> pa.Table:
        if self.root is None:
            return self._memory_training_data[ts.name]
        import pyarrow.parquet as pq

        return pq.read_table(self.root / ts.location)

    def reproduce_training_set(self, name: str) -> Reproduction:
        """Rebuild a training set from the offline store with its manifest and compare hashes.

        The saved entity columns, the pinned feature versions, the recorded TTLs and ``as_of``
        give the same content hash, however much was ingested since.
        """
        ts = self.get_training_set(name)
        saved_entity = self._load_training_data(ts).select(ts.entity_columns)
        entity = saved_entity
        for column in ts.protected_columns:  # tokens of raw keys: decrypted in memory only
            tokens = saved_entity.column(column).to_pylist()
            raw = [None if t is None else detokenize(t, self._keys.get(t.partition(":")[0]), context=f"training_set:{column}") for t in tokens]
            entity = entity.set_column(entity.column_names.index(column), column, pa.array(raw, pa.string()))
        recorded = {
            (f["view"], f["version"]): timedelta(seconds=f["ttl_seconds"]) if f["ttl_seconds"] is not None else None
            for f in ts.features
        }
        parts = self._group_requests([(f["view"], f["version"], f["feature"], f["output"]) for f in ts.features], recorded)
        policies = self._check_parts(parts, ts.purpose)  # a purpose revoked since is refused now
        table = self._point_in_time(entity, parts, policies, ts.timestamp_column, as_of=ts.as_of, known=ts.known_at_prediction_time)
        for column in ts.entity_columns:  # the saved entity columns, exactly as saved
            if column in table.column_names:
                table = table.set_column(table.column_names.index(column), column, saved_entity.column(column))
        self._audit.append(self.actor, "reproduce_training_set", name, purpose=ts.purpose, details={"rows": table.num_rows})
        digest = content_hash(table)
        return Reproduction(name, ts.content_hash, digest, digest == ts.content_hash, table)

    # --- online serving -----------------------------------------------------------------------

    @property
    def _online_store(self) -> OnlineStore:
        """The online store the config names (opened on first use)."""
        if self._online is None:
            self._online = open_online_store(self.config.online, self.config.root)
        return self._online

    def materialize(
        self,
        views: Sequence[str] | None = None,
        *,
        end: datetime | None = None,
        full: bool = False,
        progress: Progress | None = None,
    ) -> list[MaterializeResult]:
        """Copy, per entity, the latest value as of `end` (default now) to the online store.

        Incremental by default: only entities touched by batches since the last run (a
        watermark per view version in the registry); ``full=True`` rebuilds. The TTL is applied
        when values are read. Rows stream in chunks, so memory stays bounded.

        Args:
            views: ``"name"`` (latest version) or ``"name@v1"``; default every view's latest.
        """
        end = end or self._now()
        if end.tzinfo is None:
            raise FeatureStoreError("end must be time-zone aware")
        targets = [self.get_view(v) for v in views] if views else self.list_views()
        results: list[MaterializeResult] = []
        done = 0
        for vv in targets:
            governing = self._governance.governing(vv.view.name)
            if governing is not None:
                governing.require(vv.view.name)
            table = online_table(vv)
            features = {f.name: f.dtype for f in vv.view.features}
            self._online_store.ensure_table(table, list(features))
            state = self._registry.materialization(vv.view.name, vv.version)
            rebuild = full or state is None or end < state.end

            def advance(rows: int) -> None:
                nonlocal done
                done += rows
                if progress is not None:
                    progress(done, None)

            with self._offline.connect(read_only=True) as con:  # writers wait: a consistent snapshot
                [(last_batch,)] = con.execute(f"SELECT coalesce(max(batch_id), 0) FROM {BATCHES_TABLE} WHERE table_name = ?",
                                              [vv.table]).fetchall()
                generation = (state.generation if state is not None else 0) + 1
                sql = latest_rows_sql(
                    vv.table, list(vv.join_keys), vv.view.timestamp_field, features,
                    since_batch=None if rebuild else state.last_batch_id,  # type: ignore[union-attr]
                    previous_end=None if rebuild else state.end,  # type: ignore[union-attr]
                )
                count = copy_rows(stream_rows(con, sql, end), self._online_store, table, generation, advance)
            if rebuild:  # only now: readers saw old rows until each new one replaced it
                self._online_store.prune(table, generation)
            self._registry.set_materialization(vv.view.name, vv.version, last_batch_id=last_batch, end=end,
                                              entities=count, generation=generation, updated_at=self._now())
            self._audit.append(self.actor, "materialize", vv.ref, details={"entities": count, "full": rebuild, "end": end.isoformat()})
            self._plans.clear()
            results.append(MaterializeResult(vv.view.name, vv.version, count, rebuild, end))
        return results

    def materialized_views(self) -> list[str]:
        """References (``name@vN``) of the view versions in the online store."""
        return [vv.ref for vv in self.list_views() if self._registry.materialization(vv.view.name, vv.version) is not None]

    def get_online_features(
        self,
        entity_rows: Mapping[str, Any] | Sequence[Mapping[str, Any]] | pa.Table,
        features: Sequence[str],
        *,
        purpose: str | None = None,
        full_feature_names: bool = False,
    ) -> OnlineResponse:
        """Latest feature values for entities, from the online store, with a status per value.

        A value is ``present``, ``missing`` (never materialized for that entity) or ``expired``
        (its event time is older than the view's TTL at the moment of this read: it is not
        served, exactly as :meth:`get_historical_features` would answer for t = now). Raw keys
        of pseudonymized join keys are hashed in-process under every key id.

        Args:
            entity_rows: One entity (``{"customer_id": "C1"}``), a list of them, or a table.
            features: ``"view:feature"``, ``"view@v2:feature"`` or ``"view:*"`` references.
            purpose: Why; checked against the policy's ``online`` access for governed views.
        """
        if isinstance(entity_rows, pa.Table):
            rows: Sequence[Mapping[str, Any]] = entity_rows.to_pylist()
        elif isinstance(entity_rows, Mapping):
            rows = [entity_rows]
        else:
            rows = entity_rows
        plan = self._serving_plan(tuple(features), purpose, full_feature_names)
        now = self._clock()
        now_us = (now - _EPOCH) // _MICROSECOND
        response = lookup(plan, rows, self._online_store.read, now_us)  # type: ignore[arg-type]
        key = (purpose, plan.audit_key)
        self._online_reads[key] = self._online_reads.get(key, 0) + len(rows)
        if time.monotonic() - self._online_flushed > ONLINE_AUDIT_SECONDS or sum(self._online_reads.values()) >= ONLINE_AUDIT_READS:
            self._flush_online_audit()
        return response

    def _serving_plan(self, features: tuple[str, ...], purpose: str | None, full_names: bool) -> ServingPlan:
        cache_key = (features, purpose, full_names)
        plan = self._plans.get(cache_key)
        if plan is not None and time.monotonic() - plan.built_at < PLAN_TTL_SECONDS:
            return plan
        parts = self._requests(self.resolve_features(features), [], full_names)
        views: list[ViewServing] = []
        for part in parts:
            vv = part.vv
            policy = self._governance.check_read(vv.view.name, [*vv.join_keys, *part.features], purpose, access="online")
            if self._registry.materialization(vv.view.name, vv.version) is None:
                raise NotFoundError(f"{vv.ref} is not materialized: run `featurestore materialize {vv.ref}`")
            stored = vv.view.feature_names
            key_forms = []
            for key in vv.join_keys:
                rule = policy.rule(key) if policy is not None else None
                treatment = rule.treatment if rule is not None and rule.treatment in ("keyed_hash", "tokenize") else None
                hmac_keys: tuple[tuple[str, bytes], ...] = ()
                tokenizers: tuple[Callable[[str], str], ...] = ()
                if treatment == "keyed_hash":
                    hmac_keys = tuple((k.id, k.hmac_text.encode()) for k in (self._keys.keys("hmac") or [self._keys.current("hmac")]))
                elif treatment == "tokenize":
                    tokenizers = tuple(_tokenizer(k, key) for k in (self._keys.keys("siv") or [self._keys.current("siv")]))
                key_forms.append(KeyForm(key, treatment, rule.normalize if rule else "none",
                                         rule.country_code if rule else None, hmac_keys, tokenizers))
            views.append(ViewServing(
                ref=vv.ref, table=online_table(vv), keys=tuple(key_forms),
                positions=tuple(VALUES_AT + stored.index(f) for f in part.features), outputs=tuple(part.outputs),
                converters=tuple(converter(vv.view.feature(f).dtype) for f in part.features),
                ttl_us=None if part.ttl is None else part.ttl // _MICROSECOND,
            ))
        plan = ServingPlan(views, [o for v in views for o in v.outputs], time.monotonic(),
                           tuple(f"{v.ref}:{f}" for v, p in zip(views, parts, strict=True) for f in p.features))
        self._plans[cache_key] = plan
        return plan

    def _flush_online_audit(self) -> None:
        """Online reads are audited in aggregate: one entry per (purpose, features) and period."""
        pending, self._online_reads = self._online_reads, {}
        self._online_flushed = time.monotonic()
        for (purpose, features), entities in pending.items():
            self._audit.append(self.actor, "online_reads", ", ".join(sorted({f.rsplit(":", 1)[0] for f in features})),
                              purpose=purpose, details={"features": list(features), "entities": entities})

    def check_consistency(
        self, views: Sequence[str] | None = None, *, sample: int = 1000, purpose: str | None = None, seed: int = 0
    ) -> list[ConsistencyReport]:
        """Compare online values with the point-in-time answer for the same instant.

        Draws up to `sample` entities per materialized view version, reads them online, computes
        the offline answer at t = now (TTL included) and reports every value that differs.
        """
        targets = [self.get_view(v) for v in views] if views else self.list_views()
        reports: list[ConsistencyReport] = []
        for vv in targets:
            if self._registry.materialization(vv.view.name, vv.version) is None:
                continue
            names = vv.view.feature_names
            self._governance.check_read(vv.view.name, [*vv.join_keys, *names], purpose, access="online")
            table = online_table(vv)
            keys = self._online_store.sample_keys(table, sample, seed)
            now = self._now()
            now_us = (now - _EPOCH) // _MICROSECOND
            stored = self._online_store.read(table, keys)
            parts_of = [k.split(KEY_SEPARATOR) for k in keys]
            entity = pa.table({
                **{key: pa.array([p[i] for p in parts_of], pa.string()).cast(arrow_type(t)) for i, (key, t) in enumerate(vv.join_keys.items())},
                "_fs_t": pa.array([now] * len(keys), pa.timestamp("us", tz="UTC")),
            })
            part = JoinPart(vv, list(names), list(names), vv.view.ttl)
            offline = self._point_in_time(entity, [part], {}, "_fs_t", as_of=None, known=False)  # stored keys as they are
            mismatches: list[Mismatch] = []
            ttl_us = None if vv.view.ttl is None else vv.view.ttl // _MICROSECOND
            for i, (key, row) in enumerate(zip(keys, stored, strict=True)):
                if row is None:
                    status = MISSING
                elif ttl_us is not None and row[1] < now_us - ttl_us or row[1] > now_us:
                    status = EXPIRED
                else:
                    status = PRESENT
                for j, name in enumerate(names):
                    conv = converter(vv.view.feature(name).dtype)
                    online_value = None if status != PRESENT or row is None else row[VALUES_AT + j]
                    if conv is not None and online_value is not None:
                        online_value = conv(online_value)
                    offline_value = offline.column(name)[i].as_py()
                    if online_value != offline_value:
                        mismatches.append(Mismatch(key, name, online_value, offline_value, status))
            self._audit.append(self.actor, "check_consistency", vv.ref, purpose=purpose,
                              details={"checked": len(keys), "mismatches": len(mismatches)})
            reports.append(ConsistencyReport(vv.ref, len(keys), mismatches))
        return reports

    # --- policies ---------------------------------------------------------------------------

    def lint_policy(self, path: str | Path) -> Policy:
        """Check a policy file and its fit with the registered views; raise PolicyError listing
        every problem (unknown or unclassified columns at ``file:line:column``)."""
        policy = load_policy(path)
        problems: list[Problem] = []
        views = [vv for vv in self.list_views() if policy.governs(vv.view.name)]
        unclassified: set[str] = set()
        for vv in views:
            for column in [*vv.join_keys, *vv.view.feature_names]:
                if policy.rule(column) is None:
                    unclassified.add(column)
                    problems.append(Problem(f"column '{column}' of feature view '{vv.view.name}' is not classified "
                                            "(default deny: the view can be neither applied nor read)", policy.file))
        # A classified column no view has yet is fine (dropped columns never are in a view);
        # one that looks like a misspelt unclassified column is reported where it is written.
        for column, (line, col) in policy.positions.items():
            hint = did_you_mean(column, unclassified)
            if hint:
                problems.append(Problem(f"classified column '{column}' is in none of the governed views.{hint}",
                                        policy.file, line, col))
        for other in self._governance.policies():
            if other.policy.id != policy.id:
                shared = [v for v in (vv.view.name for vv in self.list_views()) if policy.governs(v) and other.policy.governs(v)]
                if shared:
                    problems.append(Problem(f"feature views {', '.join(shared)} are also governed by policy '{other.policy.id}'", policy.file))
        if problems:
            raise PolicyError(problems)
        return policy

    def plan_policy(self, path: str | Path) -> list[str]:
        """What approving a policy file would change against its approved version, in sentences."""
        policy = self.lint_policy(path)
        approved = [a for a in self._registry.approvals(policy.id)]
        old = parse_policy(approved[-1].content, approved[-1].file_name, approved[-1].sha256) if approved else None
        return plan_policy(old, policy, rows_past_retention=self._rows_older_than)

    def approve_policy(self, path: str | Path, *, by: str, role: str, ticket: str | None = None) -> Policy:
        """Approve a policy file's exact content (bound to its SHA-256); it is enforced from now on."""
        policy = self.lint_policy(path)
        if not by.strip() or not role.strip():
            raise PolicyViolation("an approval needs the approver's name (--by) and role (--role)")
        if any(a.sha256 == policy.sha256 for a in self._registry.approvals(policy.id)):
            raise PolicyViolation(f"policy '{policy.id}' is already approved with this exact content (SHA-256 {policy.sha256[:12]}...)")
        with self._registry.session() as s:
            s.add(PolicyApprovalRow(policy_id=policy.id, version=policy.version, sha256=policy.sha256, content=policy.text,
                                    file_name=Path(policy.file).name, approved_by=by, role=role, ticket=ticket,
                                    approved_at=self._now()))
        self._audit.append(by, "approve_policy", policy.id, details={
            "version": policy.version, "sha256": policy.sha256, "role": role, "ticket": ticket, "recorded_by": self.actor})
        return policy

    def show_policy(self, path: str | Path, *, format: str = "markdown") -> str:
        """A policy as Markdown for legal (``format="markdown"``) or its plan as text (``"plan"``)."""
        policy = load_policy(path)
        if format == "plan":
            return "\n".join(self.plan_policy(path))
        if format != "markdown":
            raise PolicyViolation(f"unknown format {format!r}; use markdown or plan")
        approvals = [(a.approved_by, a.role, a.ticket, a.approved_at.strftime("%Y-%m-%d"))
                     for a in self._registry.approvals(policy.id) if a.sha256 == policy.sha256]
        return policy_markdown(policy, approvals=approvals)

    @staticmethod
    def policy_schema() -> dict[str, Any]:
        """The JSON Schema of policy files."""
        return policy_json_schema()

    def _rows_older_than(self, view_pattern: str, age: timedelta) -> int:
        cutoff = self._now() - age
        total = 0
        for vv in self.list_views():
            if not fnmatch.fnmatchcase(vv.view.name, view_pattern):
                continue
            for version in self.view_versions(vv.view.name):
                total += self._offline.count_older(version.table, version.view.timestamp_field, cutoff)
        return total

    # --- keys, audit, re-identification -----------------------------------------------------

    def rotate_key(self, kind: str = "hmac") -> str:
        """Make a new data key of a kind (``hmac`` or ``siv``); new data uses it, lookups use all."""
        key = self._keys.rotate(kind)
        self._audit.append(self.actor, "rotate_key", key.id, details={"kind": kind})
        return key.id

    def list_keys(self) -> list[tuple[str, str, datetime]]:
        """(key id, kind, created) of every data key; secrets are never shown."""
        return [(i, kind, at) for kind in ("hmac", "siv") for i, _w, at in self._registry.wrapped_keys(kind)]

    def audit_entries(self, *, action: str | None = None, limit: int | None = None) -> list[AuditEntry]:
        """Audit log entries, oldest first (the newest `limit`)."""
        return self._audit.entries(action=action, limit=limit)

    def verify_audit(self, *, expect_head: str | None = None) -> tuple[int, str]:
        """Verify the audit chain: (entries, head hash); AuditChainBroken if it does not hold."""
        count, head = self._audit.verify()
        if expect_head is not None and head != expect_head:
            raise AuditChainBroken(
                f"the audit log's head is {head[:16]}... after {count} entries, not the expected {expect_head[:16]}...: "
                "entries were removed from its end, or it is another log"
            )
        return count, head

    def reidentify(self, view: str, column: str, token: str, *, purpose: str | None) -> str:
        """The original value behind a token of a tokenized column, for a purpose with
        ``reidentify`` access; every call is audited (never with the value)."""
        vv = self.get_view(view)
        governing = self._governance.governing(vv.view.name)
        if governing is None:
            raise PolicyViolation(f"feature view '{vv.view.name}' is not governed by a policy: it holds no tokens")
        policy = governing.require(vv.view.name)
        rule = policy.rule(column)
        if rule is None or rule.treatment != "tokenize":
            raise PolicyViolation(f"column '{column}' of '{vv.view.name}' is not tokenized under policy '{policy.id}'; only tokens can be re-identified")
        problem = policy.purpose_problem(purpose, "reidentify")
        if problem:
            self._audit.append(self.actor, "reidentify_refused", f"{vv.ref}.{column}", purpose=purpose, details={"reason": problem})
            raise PolicyViolation(f"re-identification refused: {problem}")
        key = self._keys.get(token.partition(":")[0])
        value = detokenize(token, key, context=column)
        self._audit.append(self.actor, "reidentify", f"{vv.ref}.{column}", purpose=purpose,
                          details={"token_sha256": hashlib.sha256(token.encode()).hexdigest()})
        return value

    def _protect_entity_columns(
        self, table: pa.Table, parts: list[JoinPart], policies: dict[str, Policy], entity_columns: list[str], timestamp_column: str
    ) -> tuple[pa.Table, list[str]]:
        """Before a training set is saved: raw keys of pseudonymized join keys become AES-SIV
        tokens (the store can still rebuild the set; the file holds no raw key), and other
        entity columns a governing policy classifies get that policy's treatment."""
        protected: list[str] = []
        for part in parts:
            policy = policies.get(part.vv.view.name)
            for key in self._governance.treated(policy, list(part.vv.join_keys)) if policy else ():
                if key not in protected:
                    protected.append(key)
                    tokens = tokenize(table.column(key), self._keys.current("siv"), context=f"training_set:{key}")
                    table = table.set_column(table.column_names.index(key), key, tokens)
        for policy in {p.id: p for p in policies.values()}.values():
            others = [c for c in entity_columns if c not in protected and c != timestamp_column
                      and (r := policy.rule(c)) is not None and r.treatment != "keep"]
            if others:  # treated in place, so the column order (and so the hash) is stable
                treated = self._governance.treat(table.select(others), policy)
                for column in others:
                    if column in treated.column_names:
                        table = table.set_column(table.column_names.index(column), column, treated.column(column))
                    else:
                        table = table.drop_columns([column])
        return table, protected

    def _save_training_data(self, name: str, table: pa.Table) -> str:
        if self.root is None:
            self._memory_training_data[name] = table
            return f"memory:{name}"
        import pyarrow.parquet as pq

        folder = self.root / "training_sets"
        folder.mkdir(exist_ok=True)
        final = folder / f"{name}.parquet"
        partial = folder / f".{name}.parquet.partial"
        pq.write_table(table, partial)
        os.replace(partial, final)
        return f"training_sets/{name}.parquet"

    def _last_ingestion(self) -> datetime | None:
        committed = [b.ingested_at for b in self._registry.batches(status="committed")]
        return max(committed) if committed else None

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise FeatureStoreError("the store's clock returned a time-zone-naive datetime")
        return now.astimezone(UTC)


def _table_name(view: str, version: int) -> str:
    return f"fv_{view}_v{version}"


def _tokenizer(key: DataKey, column: str) -> Callable[[str], str]:
    """Tokenize one value of `column` with `key` (for raw keys of tokenized join keys)."""

    def token(value: str) -> str:
        result: str = tokenize(pa.array([value]), key, context=column)[0].as_py()
        return result

    return token


def online_table(vv: ViewVersion) -> str:
    """The online table of a view version."""
    return f"ov_{vv.view.name}_v{vv.version}"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
ONLINE_AUDIT_SECONDS = 10.0
ONLINE_AUDIT_READS = 10_000


def _view_version(row: FeatureViewVersionRow, latest: int) -> ViewVersion:
    return ViewVersion(
        view=FeatureView.from_dict(row.definition),
        version=row.version,
        join_keys=dict(row.join_keys),
        table=row.table_name,
        latest=row.version == latest,
        created_at=row.created_at,
    )


def _training_set(row: TrainingSetRow) -> TrainingSet:
    return TrainingSet(
        row.name, row.description, list(row.features), list(row.entity_columns), row.timestamp_column,
        row.as_of, row.known_at_prediction_time, row.row_count, row.content_hash, list(row.policy_hashes),
        row.purpose, list(row.protected_columns or []), row.location, row.created_at,
    )


def _batch_info(row: IngestionBatchRow) -> BatchInfo:
    return BatchInfo(row.id, row.view_name, row.version, row.status, row.row_count, row.source, row.ingested_at, row.error)


def _known_rows(data: Any) -> int | None:
    if isinstance(data, (pa.Table, pa.RecordBatch)):
        return int(data.num_rows)
    if isinstance(data, (str, Path)) and str(data).lower().endswith((".parquet", ".pq")):
        import pyarrow.parquet as pq

        try:
            return int(pq.ParquetFile(data).metadata.num_rows)
        except (pa.ArrowInvalid, OSError):
            return None
    shape = getattr(data, "shape", None)
    if isinstance(shape, tuple) and shape:
        return int(shape[0])
    return None


