"""The FeatureStore facade: wiring, lifecycle, and one short delegating method per verb.

Capabilities live in their own modules: :mod:`.catalog` (definitions, versions, plan/apply),
:mod:`.ingestion` (batches; input reading in :mod:`.sources`), :mod:`.historical` (``read``,
point-in-time joins), :mod:`.training_sets`, :mod:`.online.service` (materialize, lookups),
:mod:`.online.consistency`, :mod:`.policy_workflow` (review and approval) with
:mod:`.treat_existing`, :mod:`.erasure`, :mod:`.erasure_proof`, :mod:`.lineage`,
:mod:`.retention`, :mod:`.holds`, :mod:`.compaction`, :mod:`.dp_queries`,
:mod:`.reidentification`, :mod:`.privacy.keys` and :mod:`.audit`. They are built on first use by
:mod:`.capabilities`; how the layers fit is in ``ARCHITECTURE.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import closing
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .apply_plan import Plan
from .audit import AuditEntry
from .capabilities import Capabilities
from .catalog import Catalog, DefinitionsLike
from .config import StoreConfig, load_config
from .context import Clock, Progress, StoreContext, system_clock
from .definitions import Definitions, Entity
from .errors import ConfigError
from .governance import PolicySnapshot
from .opening import create_store_files, default_actor, open_context, open_registry, registry_of
from .privacy.keys import KeyProvider
from .recovery import Recovery, RecoveryReport
from .registry import Registry
from .settling import Settler
from .versions import ResolvedFeature, ServiceVersion, ViewVersion

if TYPE_CHECKING:  # the capabilities are imported when first used: `featurestore views` starts without pyarrow
    import pyarrow as pa

    from .doctor import Check
    from .dp_queries import BudgetStatus, DpRelease
    from .erasure import DeletionRequest, ErasureResult
    from .erasure_proof import VerifyReport
    from .holds import Hold
    from .ingestion import BatchInfo, IngestResult
    from .offline import Compaction
    from .online import OnlineStore
    from .online.consistency import ConsistencyReport
    from .online.lookup import OnlineResponse
    from .online.service import MaterializeResult, OnlineService
    from .policy import Policy
    from .policy_workflow import PolicyStatus
    from .push import PushResult
    from .retention import RetentionReport
    from .training_sets import Reproduction, TrainingSet


class FeatureStore:
    """A feature store: open one with ``FeatureStore("path/to/store")`` or ``FeatureStore(memory=True)``.

    Args:
        path: A store directory made by :meth:`init` (``featurestore init DIR``); `memory`: a throwaway store.
        clock: Returns the current time (time-zone aware): ingestion times, retention cutoffs, deadlines.
        lock_timeout: Seconds to wait for another process holding the offline store (default: the config's).
        key_provider: Where the master key comes from (default: the config's environment variable or key file).
        actor: Who is acting, for the audit log (default: the operating-system user).
        online_store, registry: Parts to use instead of the ones the config names.

    Raises ConfigError (`path` is not a store), RegistryOutOfDate (run ``featurestore db upgrade``) or
    StoreDamaged (the registry does not match the offline file: see ``featurestore db recover``).
    `check_agreement=False` skips that comparison (for ``doctor`` and ``db recover`` only).
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
        online_store: OnlineStore | None = None,
        registry: Registry | None = None,
        check_agreement: bool = True,
    ) -> None:
        if memory == (path is not None):
            raise ConfigError("give either a store path, FeatureStore('dir'), or memory=True")
        config = (
            StoreConfig(root=None, registry_url="sqlite://", offline_path=None)
            if memory
            else load_config(Path(str(path)).resolve())
        )
        self.config = config
        self.actor = actor or default_actor()
        ctx = open_context(
            config,
            open_registry(config, registry, str(path)),
            clock=clock or system_clock,
            lock_timeout=lock_timeout,
            key_provider=key_provider,
            actor=self.actor,
        )
        self._ctx = ctx
        self._catalog = Catalog(ctx)
        self._caps = Capabilities(ctx, self._catalog, online_store)
        self._recovery = Recovery(ctx, self._catalog)
        try:
            Settler(ctx).reconcile(wait=False)
            if check_agreement:
                self._recovery.check()
        except BaseException:
            self.close()
            raise

    # --- lifecycle --------------------------------------------------------------------------

    @classmethod
    def init(
        cls,
        path: str | Path,
        *,
        registry_url: str | None = None,
        project: str | None = None,
        lake: str | None = None,
        **kwargs: Any,
    ) -> FeatureStore:
        """Create a store directory (config, ``features/``, ``policies/``, registry, offline file) where
        none is; `registry_url` names the registry database (default: SQLite ``registry.db`` inside),
        `project` the namespace of its rows there (needed for stores sharing a PostgreSQL registry),
        `lake` a directory or URI for the offline rows as Delta tables (default: one DuckDB file)."""
        create_store_files(Path(path), registry_url, project, lake)
        return cls(path, **kwargs)

    @staticmethod
    def registry_revision(path: str | Path) -> tuple[str | None, str]:
        """The registry's schema revision and the newest one this code knows: (current, head)."""
        with closing(registry_of(load_config(Path(path).resolve()))) as registry:
            return registry.current_revision(), registry.head_revision()

    @staticmethod
    def upgrade_registry(path: str | Path) -> tuple[str | None, str]:
        """Migrate the registry's schema to the newest revision: returns (before, after)."""
        with closing(registry_of(load_config(Path(path).resolve()))) as registry:
            before = registry.current_revision()
            registry.upgrade()
            return before, registry.head_revision()

    @classmethod
    def recover_registry(cls, path: str | Path, **kwargs: Any) -> RecoveryReport:
        """Rebuild the registry's views and batches from the offline file and ``features/`` (``db recover``)."""
        cls.upgrade_registry(path)
        with cls(path, check_agreement=False, **kwargs) as fs:
            return fs._recovery.recover(fs.load_definitions())

    @classmethod
    def doctor(cls, path: str | Path, **kwargs: Any) -> list[Check]:
        """Check the store end to end (``featurestore doctor``): what is wrong and how to fix it."""

        def open_store() -> tuple[FeatureStore, StoreContext, Callable[[], OnlineService]]:
            fs = cls(path, check_agreement=False, **kwargs)
            return fs, fs._ctx, lambda: fs._caps.online

        from .doctor import diagnose

        return diagnose(Path(path), open_store)

    def close(self) -> None:
        """Record pending online-read audit entries, then release every connection."""
        self._caps.close()
        self._ctx.offline.close()
        self._ctx.registry.close()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def root(self) -> Path | None:
        """The store directory (None for a memory store)."""
        return self.config.root

    @property
    def lock_timeout(self) -> float:
        """Seconds an operation waits for another process holding the offline store."""
        return self._ctx.offline.lock_timeout

    # --- definitions ------------------------------------------------------------------------

    def load_definitions(self) -> Definitions:
        """Read every ``*.yaml`` / ``*.yml`` under the store's ``features/`` folder."""
        return self._catalog.load_definitions()

    def plan(self, definitions: DefinitionsLike = None) -> Plan:
        """What :meth:`apply` would change (default: the definitions under ``features/``)."""
        return self._catalog.plan(definitions)

    def apply(self, definitions: DefinitionsLike = None) -> Plan:
        """Register entities and feature views (a schema change makes a new version; nothing is deleted);
        in closed mode a view no approved policy governs is refused, naming the policy file to write.
        A version that only adds or removes features starts with the old version's rows, offline and online."""
        plan = self._catalog.apply(definitions)
        self._caps.online.carry_forward(plan)
        return plan

    def list_entities(self) -> list[Entity]:
        """Every registered entity."""
        return self._catalog.list_entities()

    def list_views(self) -> list[ViewVersion]:
        """The latest version of every registered feature view."""
        return self._catalog.list_views()

    def view_versions(self, name: str) -> list[ViewVersion]:
        """Every version of one feature view, oldest first."""
        return self._catalog.view_versions(name)

    def get_view(self, ref: str) -> ViewVersion:
        """A view version: ``"name"`` (latest) or ``"name@v2"`` (pinned)."""
        return self._catalog.get_view(ref)

    def list_feature_services(self) -> list[ServiceVersion]:
        """The latest version of every feature service (use one as ``features="service:NAME"``)."""
        return self._catalog.list_services()

    def get_feature_service(self, ref: str) -> ServiceVersion:
        """A feature service version: ``"name"`` (latest) or ``"name@v2"``."""
        return self._catalog.get_service(ref)

    def resolve_features(self, refs: Sequence[str]) -> list[ResolvedFeature]:
        """Resolve ``"view:feature"``, ``"view@v2:feature"`` and ``"view:*"`` references."""
        return self._catalog.resolve_features(refs)

    # --- ingestion --------------------------------------------------------------------------

    def ingest(self, view: str, data: Any, *, progress: Progress | None = None) -> IngestResult:
        """Validate `data` and append it to a view version as one batch, atomically.

        Args:
            view: ``"name"`` (latest version) or ``"name@v1"``.
            data: A pyarrow Table or RecordBatchReader, a pandas or polars DataFrame, or the
                path of a Parquet or CSV file (streamed, so it may be larger than memory).
            progress: Called with (rows written, total rows if known) after each chunk.

        Raises IngestionError (the data does not fit), PolicyViolation (the view is blocked, or the
        data cannot be treated as the policy in force requires) or StoreLockedError; nothing is written then.
        """
        return self._caps.ingestion.ingest(view, data, progress=progress)

    def push(self, view: str, data: Any, *, to: str = "online") -> PushResult:
        """Write rows straight to serving (``to="online"``), as an offline batch (``"offline"``) or both,
        validated and treated as :meth:`ingest` does; online an older event never overwrites a newer one."""
        return self._caps.pusher.push(view, data, to=to)

    def list_batches(self, view: str | None = None) -> list[BatchInfo]:
        """Ingestion batches (all views, or one view's), oldest first; StoreDamaged if the offline file disagrees."""
        self._recovery.check(read_tables=True)
        return self._caps.ingestion.list_batches(view)

    # --- reads ------------------------------------------------------------------------------

    def read(
        self,
        view: str,
        *,
        features: Sequence[str] | None = None,
        as_of: datetime | None = None,
        purpose: str | None = None,
    ) -> pa.Table:
        """Every stored row of a view version: keys, event time, features, ``_ingested_at``, ``_batch_id``.

        `view` is ``"name"`` or ``"name@v1"``; `features` default to all; `as_of` keeps rows ingested at
        or before it (time travel); `purpose` is required, and checked for ``offline`` access, for a governed view.
        """
        return self._caps.historical.read(view, features=features, as_of=as_of, purpose=purpose)

    def get_historical_features(
        self,
        entity_df: Any,
        features: Sequence[str] | str,
        *,
        as_of: datetime | None = None,
        known_at_prediction_time: bool = False,
        timestamp_column: str = "event_timestamp",
        full_feature_names: bool = False,
        purpose: str | None = None,
        engine: str = "duckdb",
    ) -> pa.Table:
        """Point-in-time correct feature values for each row of `entity_df` (for training): every
        entity row once, in order, features appended; the rules are in :mod:`featurestore.offline.pit`.

        Args:
            entity_df: Join keys, a time-zone-aware timestamp column and any other columns
                (labels, ids): a pyarrow Table, a pandas or polars DataFrame, or a .parquet / .csv path.
            features: References: ``"view:feature"``, ``"view@v2:feature"``, ``"view:*"``, or a feature
                service, ``"service:fraud_v1"`` (also as the whole argument).
            as_of: Ignore rows ingested after this time (rebuild what was known then).
            known_at_prediction_time: Also ignore rows ingested after each entity row's time.
            timestamp_column: The entity timestamp column (default ``event_timestamp``).
            full_feature_names: Name output columns ``view__feature`` instead of ``feature``.
            purpose: Why; required, and checked for ``offline`` access, for governed views.
            engine: ``duckdb`` (default), or ``spark`` on the lake store (the active SparkSession, else a local one).
        """
        return self._caps.historical.get_historical_features(
            entity_df,
            features,
            as_of=as_of,
            known_at_prediction_time=known_at_prediction_time,
            timestamp_column=timestamp_column,
            full_feature_names=full_feature_names,
            purpose=purpose,
            engine=engine,
        )

    # --- training sets ------------------------------------------------------------------------

    def create_training_set(
        self,
        name: str,
        entity_df: Any,
        features: Sequence[str] | str,
        *,
        as_of: datetime | None = None,
        known_at_prediction_time: bool = False,
        timestamp_column: str = "event_timestamp",
        full_feature_names: bool = False,
        description: str = "",
        purpose: str | None = None,
        engine: str = "duckdb",
    ) -> TrainingSet:
        """Build a point-in-time training set (joined by `engine`, as in :meth:`get_historical_features`), save it and
        record its manifest: version-pinned features and TTLs, ``as_of`` (default: the last committed ingestion),
        row count, content hash, policy hashes."""
        return self._caps.training.create(
            name,
            entity_df,
            features,
            as_of=as_of,
            known_at_prediction_time=known_at_prediction_time,
            timestamp_column=timestamp_column,
            full_feature_names=full_feature_names,
            description=description,
            purpose=purpose,
            engine=engine,
        )

    def list_training_sets(self) -> list[TrainingSet]:
        """Every saved training set's manifest, by name."""
        return self._caps.training.list_all()

    def get_training_set(self, name: str) -> TrainingSet:
        """One training set's manifest (names and hashes, no feature values)."""
        return self._caps.training.get(name)

    def load_training_set(self, name: str, *, purpose: str | None = None) -> pa.Table:
        """The saved data of a training set, for a purpose its views' policies allow offline access now."""
        return self._caps.training.load(name, purpose=purpose)

    def reproduce_training_set(self, name: str, *, purpose: str | None = None) -> Reproduction:
        """Rebuild a training set with its manifest and compare content hashes, for the caller's purpose
        (checked now, not the one recorded when it was built); `notes` explain retention and erasure gaps."""
        return self._caps.training.reproduce(name, purpose=purpose)

    # --- online serving -----------------------------------------------------------------------

    def materialize(
        self,
        views: Sequence[str] | None = None,
        *,
        end: datetime | None = None,
        full: bool = False,
        progress: Progress | None = None,
    ) -> list[MaterializeResult]:
        """Copy, per entity, the latest value as of `end` (default now) to the online store.

        Incremental by default (entities touched since a per-version watermark); ``full=True`` rebuilds.
        """
        return self._caps.online.materialize(views, end=end, full=full, progress=progress)

    def materialized_views(self) -> list[str]:
        """References (``name@vN``) of the view versions in the online store."""
        return self._caps.online.materialized_views()

    def get_online_features(
        self,
        entity_rows: Mapping[str, Any] | Sequence[Mapping[str, Any]] | pa.Table,
        features: Sequence[str] | str,
        *,
        purpose: str | None = None,
        full_feature_names: bool = False,
    ) -> OnlineResponse:
        """Latest feature values for entities, from the online store, with a status per value.

        A value is ``present``, ``missing`` (never materialized, or materialized ahead of now) or
        ``expired`` (older than the view's TTL at this read: not served, as
        :meth:`get_historical_features` would answer for t = now). Raw keys are hashed in-process.

        `entity_rows`: one entity (``{"customer_id": "C1"}``), a list, or a table; `purpose` is checked
        for ``online`` access.
        """
        return self._caps.online.get_online_features(
            entity_rows, features, purpose=purpose, full_feature_names=full_feature_names
        )

    def check_consistency(
        self, views: Sequence[str] | None = None, *, sample: int = 1000, purpose: str | None = None, seed: int = 0
    ) -> list[ConsistencyReport]:
        """Compare online values with the point-in-time answer for the same instant.

        Up to `sample` entities per materialized view version; a governed view needs a purpose
        allowed both ``offline`` and ``online`` access.
        """
        return self._caps.consistency.check(views, sample=sample, purpose=purpose, seed=seed)

    # --- policies ---------------------------------------------------------------------------

    def lint_policy(self, path: str | Path) -> Policy:
        """Check a policy file and its fit with the registered views; raise PolicyError listing
        every problem (unknown or unclassified columns at ``file:line:column``)."""
        return self._caps.policies.lint(path)

    def plan_policy(self, path: str | Path) -> list[str]:
        """What approving a policy file would change against the version in force, in sentences."""
        return self._caps.policies.plan(path)

    def approve_policy(
        self,
        path: str | Path,
        *,
        by: str,
        role: str,
        ticket: str | None = None,
        treat_existing: bool = False,
        key: str | Path | None = None,
    ) -> Policy:
        """Approve a policy file's exact content (bound to its SHA-256), signed with the approver's Ed25519
        `key` file; refused over rows stored untreated unless `treat_existing` rewrites them first."""
        return self._caps.policies.approve(
            path, by=by, role=role, ticket=ticket, treat_existing=treat_existing, key=key
        )

    def add_approver(self, name: str, role: str, public_key: str | Path) -> str:
        """Register an approver's Ed25519 public key file for a role (audited); returns its fingerprint."""
        return self._caps.policies.add_approver(name, role, public_key)

    def show_policy(self, path: str | Path, *, format: str = "markdown") -> str:
        """A policy as Markdown for legal (``format="markdown"``) or its plan as text (``"plan"``)."""
        return self._caps.policies.show(path, format=format)

    def policy_status(self) -> list[PolicyStatus]:
        """Every policy id: the version in force, and drafts pending approval with what approving them changes."""
        return self._caps.policies.status()

    def policy_snapshot(self) -> PolicySnapshot:
        """The policy in force now (approved content only), with the files under ``policies/`` as proposals."""
        return self._ctx.access.snapshot()

    @staticmethod
    def policy_schema() -> dict[str, Any]:
        """The JSON Schema of policy files."""
        from .policy import policy_json_schema

        return policy_json_schema()

    # --- erasure, retention, legal holds --------------------------------------------------------

    def erase(self, entity: str, keys: Sequence[str], *, compact: bool = True) -> list[ErasureResult]:
        """Erase subjects (raw ids of the entity's key) from every version of every view of the entity, the online store
        and saved training sets, then compact; tombstones keep them from coming back (see :mod:`.erasure`)."""
        return self._caps.erasure.erase(entity, keys, compact=compact)

    def erasure_status(self) -> list[DeletionRequest]:
        """Every erasure and retention request: pending, held, done or overdue against its deadline."""
        return self._caps.erasure.status()

    def verify_erasure(self, entity: str, key: str) -> VerifyReport:
        """Query every table and scan every file under the store for a subject; the report is kept as evidence."""
        return self._caps.proofs.verify(entity, key)

    def where(self, entity: str, key: str) -> dict[str, int]:
        """Subject lineage: every view version, online table and training set holding the subject, with row counts."""
        return self._caps.lineage.where(entity, key)

    def run_retention(self, *, dry_run: bool = False) -> RetentionReport:
        """Delete rows past the policies' retention (except held ones) and compact; ``dry_run`` only counts."""
        return self._caps.retention.run(dry_run=dry_run)

    def compact(self, on_step: Callable[[str], None] | None = None) -> Compaction:
        """Rewrite the offline file so deleted rows leave no bytes; completes pending deletion requests."""
        return self._caps.compactor.compact(on_step)

    def add_hold(
        self, *, reason: str, entity: str | None = None, key: str | None = None, view: str | None = None
    ) -> Hold:
        """A legal hold on a subject (`entity`, `key`) or a `view`: retention and erasure wait for it."""
        return self._caps.holds.add_hold(reason=reason, entity=entity, key=key, view=view)

    def remove_hold(self, hold_id: int) -> None:
        """End a legal hold (audited)."""
        self._caps.holds.remove_hold(hold_id)

    def list_holds(self) -> list[Hold]:
        """The active legal holds."""
        return self._caps.holds.active()

    # --- differential privacy -------------------------------------------------------------------

    def dp_query(
        self,
        view: str,
        *,
        aggregates: Sequence[str],
        group_by: Sequence[str] = (),
        purpose: str | None,
        epsilon: float | None = None,
        delta: float | None = None,
        dry_run: bool = False,
        consumer: str | None = None,
        fresh: bool = False,
    ) -> DpRelease:
        """A differentially private ``count`` / ``sum:col`` / ``mean:col`` over a view, optionally grouped, for a
        purpose with ``dp_aggregates`` access, charged to the policy's budget (``dry_run``: accuracy, no cost;
        the same query of the same data is served from the ledger at no cost unless `fresh`)."""
        return self._caps.dp.query(
            view,
            aggregates=aggregates,
            group_by=group_by,
            purpose=purpose,
            epsilon=epsilon,
            delta=delta,
            dry_run=dry_run,
            consumer=consumer,
            fresh=fresh,
        )

    def release_dp_view(
        self,
        target: str,
        *,
        source: str,
        aggregates: Sequence[str],
        group_by: str,
        purpose: str | None,
        window: tuple[datetime, datetime],
        epsilon: float | None = None,
        delta: float | None = None,
    ) -> tuple[DpRelease, IngestResult]:
        """A DP aggregate feature view: one time window's DP release of `source` by `group_by`, ingested into
        `target` (keyed by the group, event time = the window's end) so it joins point-in-time by group."""
        return self._caps.dp.release_view(
            target,
            source=source,
            aggregates=aggregates,
            group_by=group_by,
            purpose=purpose,
            window=window,
            epsilon=epsilon,
            delta=delta,
            ingest=self.ingest,
        )

    def dp_budget(self, *, purpose: str | None = None) -> list[BudgetStatus]:
        """Privacy budgets: spent, reserved and remaining in the current period, and when they refresh."""
        return self._caps.dp.budget(purpose=purpose)

    # --- keys, audit, re-identification -----------------------------------------------------

    def rotate_key(self, kind: str = "hmac") -> str:
        """Make a new data key of a kind (``hmac`` or ``siv``); new data uses it, lookups use all."""
        key = self._ctx.keys.rotate(kind)
        self._ctx.audit.append(self.actor, "rotate_key", key.id, details={"kind": kind})
        return key.id

    def list_keys(self) -> list[tuple[str, str, datetime]]:
        """(key id, kind, created) of every data key; secrets are never shown."""
        return [
            (i, kind, at) for kind in ("hmac", "siv", "audit") for i, _w, at in self._ctx.registry.wrapped_keys(kind)
        ]

    def audit_entries(self, *, action: str | None = None, limit: int | None = None) -> list[AuditEntry]:
        """Audit log entries, oldest first (the newest `limit`)."""
        return self._ctx.audit.entries(action=action, limit=limit)

    def verify_audit(self, *, expect_head: str | None = None) -> tuple[int, str]:
        """Verify the audit chain (and that its head is `expect_head`): (entries, head hash); AuditChainBroken if not."""
        return self._ctx.audit.verify(expect_head=expect_head)

    def reidentify(self, view: str, column: str, token: str, *, purpose: str | None) -> str:
        """The value behind a token of a tokenized column, for a purpose with ``reidentify`` access (audited)."""
        return self._caps.reidentification.reidentify(view, column, token, purpose=purpose)
