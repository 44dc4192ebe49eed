"""Reads and writes of the registry, and its schema revision (Alembic)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Engine, create_engine, event, func, insert, inspect, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from ..errors import ConfigError, PolicyViolation, RegistryOutOfDate, missing_extra
from ..faults import registry_fault
from .models import (
    ApproverRow,
    AuditRow,
    DataKeyRow,
    DeletionRequestRow,
    DpBudgetLockRow,
    DpLedgerRow,
    EntityRow,
    FeatureServiceRow,
    FeatureViewRow,
    FeatureViewVersionRow,
    HoldRow,
    IngestionBatchRow,
    MaterializationRow,
    PolicyApprovalRow,
    TombstoneRow,
    TrainingSetRow,
)

if TYPE_CHECKING:
    from alembic.config import Config

    from ..apply_plan import Change
    from ..definitions import Entity, FeatureView
    from ..feature_services import FeatureService

RowT = TypeVar("RowT")
AuditHasher = Callable[[int, datetime, str], str]
"""(entry id, time, previous hash) -> the entry's hash."""


def migrations_dir() -> Path:
    """The Alembic folder: inside the installed package, or ``migrations/`` in a checkout."""
    try:
        import featurestore.migrations as shipped

        if shipped.__file__ is not None:
            return Path(shipped.__file__).parent
    except ImportError:  # pragma: no cover - only in an unusual source layout
        pass
    return Path(__file__).resolve().parents[2] / "migrations"


HEAD_REVISION = "5d2a9c4e7b31"
"""The newest migration in ``migrations/versions`` (tests/test_migrations.py checks it)."""


def _make_engine(url: str, schema: str | None = None) -> Engine:
    if url.startswith("sqlite"):
        memory = url in ("sqlite://", "sqlite:///:memory:")
        engine = create_engine(
            url,
            connect_args={"timeout": 30, "check_same_thread": False},
            poolclass=StaticPool if memory else None,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            if not memory:
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.close()

        _translate_faults(engine)
        return engine
    try:
        engine = create_engine(url, pool_pre_ping=True)
    except ImportError as exc:  # the driver of a PostgreSQL registry is an extra
        if url.startswith("postgres"):
            raise missing_extra("a PostgreSQL registry", "postgres", exc) from None
        raise ConfigError(f"cannot use registry URL {url!r}: {exc}") from exc
    except Exception as exc:  # a malformed URL
        raise ConfigError(f"cannot use registry URL {url!r}: {exc}") from exc
    if schema is not None and engine.dialect.name == "postgresql":
        quoted = '"' + schema.replace('"', '""') + '"'

        @event.listens_for(engine, "connect")
        def _project_schema(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute(
                f"SET search_path TO {quoted}"
            )  # every table, alembic_version too, lives in the project's schema
            cursor.close()
            dbapi_connection.commit()

    _translate_faults(engine)
    return engine


def _translate_faults(engine: Engine) -> None:
    """Raise StoreDamaged (naming the registry and the fix) for file faults: damaged, full, read-only."""
    where = engine.url.render_as_string(hide_password=True)
    if engine.url.database and engine.dialect.name == "sqlite":
        where = engine.url.database

    @event.listens_for(engine, "handle_error")
    def _fault(context: Any) -> None:
        fault = registry_fault(where, context.original_exception)
        if fault is not None:
            raise fault from None


class BatchAlreadySettled(Exception):
    """A pending batch was settled by another process first."""


class Registry:
    """The store's metadata, through SQLAlchemy.

    Args:
        url: A SQLAlchemy URL (``sqlite:///path``, ``postgresql+psycopg://...``).
        schema: On PostgreSQL, the schema that holds this registry's tables (one per project, so
            several stores share one database without seeing each other); None: the URL's default.
    """

    def __init__(self, url: str, schema: str | None = None) -> None:
        self.url = url
        self.schema = schema
        self.engine = _make_engine(url, schema)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def close(self) -> None:
        """Release every pooled connection."""
        self.engine.dispose()

    # --- schema revision -------------------------------------------------------------------

    def _alembic_config(self) -> Config:
        from alembic.config import Config  # alembic is imported only to migrate or check

        cfg = Config()
        cfg.set_main_option("script_location", str(migrations_dir()))
        cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        return cfg

    def head_revision(self) -> str:
        """The newest revision the code knows (``HEAD_REVISION``; a test checks it is Alembic's head,
        so opening a store does not parse every migration script)."""
        return HEAD_REVISION

    def current_revision(self) -> str | None:
        """The revision the registry database is at (None if it was never migrated)."""
        try:
            with self.engine.connect() as conn:
                if not inspect(conn).has_table("alembic_version"):
                    return None
                rows = conn.execute(text("SELECT version_num FROM alembic_version")).fetchall()
        except OperationalError as exc:
            raise ConfigError(f"cannot reach the registry at {self.safe_url()}: {exc.orig}") from exc
        return str(rows[0][0]) if rows else None

    def upgrade(self, revision: str = "head") -> None:
        """Migrate the registry schema up to `revision` (default: the newest); a project's
        PostgreSQL schema is created first if it does not exist."""
        cfg = self._alembic_config()
        if self.schema is not None and self.engine.dialect.name == "postgresql":
            with self.engine.begin() as conn:
                conn.execute(text('CREATE SCHEMA IF NOT EXISTS "' + self.schema.replace('"', '""') + '"'))
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            from alembic import command

            command.upgrade(cfg, revision)

    def integrity_problems(self) -> int:
        """How many problems SQLite's ``PRAGMA integrity_check`` finds in a registry file (0 when
        it is intact, or when the registry is not a SQLite file: PostgreSQL checks its own pages)."""
        if self.engine.dialect.name != "sqlite" or not self.engine.url.database:
            return 0
        with self.engine.connect() as conn:
            result = [r[0] for r in conn.execute(text("PRAGMA integrity_check"))]
        return 0 if result == ["ok"] else len(result)

    def check(self) -> None:
        """Raise if the models and the migrations disagree (Alembic's ``check``)."""
        cfg = self._alembic_config()
        with self.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            from alembic import command

            command.check(cfg)

    def ensure_current(self, store_hint: str) -> None:
        """Raise RegistryOutOfDate, naming the upgrade command, unless the schema is at head."""
        current, head = self.current_revision(), self.head_revision()
        if current != head:
            state = "has no schema yet" if current is None else f"is at revision {current}"
            raise RegistryOutOfDate(
                f"the registry ({self.safe_url()}) {state}, but this version of featurestore "
                f"needs revision {head}. Run `featurestore db upgrade --store {store_hint}` "
                "(back up the registry first).",
                current=current,
                head=head,
            )

    def safe_url(self) -> str:
        """The registry URL without its password (and the project's schema), for messages."""
        where = self.engine.url.render_as_string(hide_password=True)
        return (
            f"{where}, schema {self.schema}"
            if self.schema is not None and self.engine.dialect.name == "postgresql"
            else where
        )

    # --- sessions ----------------------------------------------------------------------------

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session committed on success and rolled back on error."""
        with self._sessions() as session, session.begin():
            yield session

    # --- reads ---------------------------------------------------------------------------

    def entity(self, name: str) -> EntityRow | None:
        with self._sessions() as s:
            return s.get(EntityRow, name)

    def entities(self) -> list[EntityRow]:
        with self._sessions() as s:
            return list(s.scalars(select(EntityRow).order_by(EntityRow.name)))

    def view(self, name: str) -> FeatureViewRow | None:
        with self._sessions() as s:
            return s.get(FeatureViewRow, name)

    def views(self) -> list[FeatureViewRow]:
        with self._sessions() as s:
            return list(s.scalars(select(FeatureViewRow).order_by(FeatureViewRow.name)))

    def view_versions(self, name: str | None = None) -> list[FeatureViewVersionRow]:
        query = select(FeatureViewVersionRow).order_by(FeatureViewVersionRow.view_name, FeatureViewVersionRow.version)
        if name is not None:
            query = query.where(FeatureViewVersionRow.view_name == name)
        with self._sessions() as s:
            return list(s.scalars(query))

    def services(self, name: str | None = None) -> list[FeatureServiceRow]:
        """Every version of every feature service (or of one), by name and version."""
        query = select(FeatureServiceRow).order_by(FeatureServiceRow.name, FeatureServiceRow.version)
        if name is not None:
            query = query.where(FeatureServiceRow.name == name)
        with self._sessions() as s:
            return list(s.scalars(query))

    def view_version(self, name: str, version: int) -> FeatureViewVersionRow | None:
        with self._sessions() as s:
            return s.scalars(
                select(FeatureViewVersionRow).where(
                    FeatureViewVersionRow.view_name == name,
                    FeatureViewVersionRow.version == version,
                )
            ).first()

    def batches(self, view: str | None = None, *, status: str | None = None) -> list[IngestionBatchRow]:
        """Ingestion batches, oldest first (of one view, or with one status)."""
        return self._rows(IngestionBatchRow, view_name=view, status=status)

    def training_set(self, name: str) -> TrainingSetRow | None:
        with self._sessions() as s:
            return s.get(TrainingSetRow, name)

    def training_sets(self) -> list[TrainingSetRow]:
        with self._sessions() as s:
            return list(s.scalars(select(TrainingSetRow).order_by(TrainingSetRow.name)))

    # --- keys and approvals ---------------------------------------------------------------

    def wrapped_keys(self, kind: str) -> list[tuple[str, str, datetime]]:
        """(id, wrapped key, created) of every data key of a kind, oldest first."""
        with self._sessions() as s:
            rows = s.scalars(
                select(DataKeyRow).where(DataKeyRow.kind == kind).order_by(DataKeyRow.created_at, DataKeyRow.id)
            )
            return [(r.id, r.wrapped, r.created_at) for r in rows]

    def add_wrapped_key(self, key_id: str, kind: str, wrapped: str, created_at: datetime) -> None:
        with self.session() as s:
            s.add(DataKeyRow(id=key_id, kind=kind, wrapped=wrapped, created_at=created_at))

    def approvals(self, policy_id: str | None = None) -> list[PolicyApprovalRow]:
        """Policy approvals, oldest first."""
        query = select(PolicyApprovalRow).order_by(PolicyApprovalRow.id)
        if policy_id is not None:
            query = query.where(PolicyApprovalRow.policy_id == policy_id)
        with self._sessions() as s:
            return list(s.scalars(query))

    def materialization(self, view: str, version: int) -> MaterializationRow | None:
        with self._sessions() as s:
            return s.scalars(
                select(MaterializationRow).where(
                    MaterializationRow.view_name == view, MaterializationRow.version == version
                )
            ).first()

    def set_materialization(
        self,
        view: str,
        version: int,
        *,
        last_batch_id: int,
        end: datetime,
        entities: int,
        generation: int,
        updated_at: datetime,
    ) -> None:
        with self.session() as s:
            row = s.scalars(
                select(MaterializationRow).where(
                    MaterializationRow.view_name == view, MaterializationRow.version == version
                )
            ).first()
            if row is None:
                row = MaterializationRow(view_name=view, version=version)
                s.add(row)
            row.last_batch_id, row.end, row.entities, row.generation, row.updated_at = (
                last_batch_id,
                end,
                entities,
                generation,
                updated_at,
            )

    # --- writes of definitions, approvals, training sets and the audit log ---------------------

    def apply_changes(
        self,
        changes: Sequence[Change],
        entities: Mapping[str, Entity],
        views: Mapping[str, FeatureView],
        keys: Mapping[str, Mapping[str, str]],
        tables: Mapping[str, str],
        now: datetime,
        services: Mapping[str, FeatureService] | None = None,
    ) -> None:
        """Record a plan's changes in one transaction. `keys` and `tables` give, per view name,
        its entity's join keys and the offline table of its new version."""
        with self.session() as s:
            for change in changes:
                if change.kind in ("create_service", "new_service_version"):
                    assert services is not None and change.version is not None
                    s.add(
                        FeatureServiceRow(
                            name=change.name,
                            version=change.version,
                            definition=services[change.name].to_dict(),
                            created_at=now,
                            updated_at=now,
                        )
                    )
                elif change.kind == "update_service":
                    assert services is not None
                    srow = s.scalars(
                        select(FeatureServiceRow).where(
                            FeatureServiceRow.name == change.name, FeatureServiceRow.version == change.version
                        )
                    ).one()
                    srow.definition, srow.updated_at = services[change.name].to_dict(), now
            for change in changes:
                if change.kind == "create_entity":
                    e = entities[change.name]
                    s.add(
                        EntityRow(
                            name=e.name,
                            join_keys=dict(e.join_keys),
                            description=e.description,
                            created_at=now,
                            updated_at=now,
                        )
                    )
                elif change.kind == "update_entity":
                    row = s.get(EntityRow, change.name)
                    assert row is not None
                    row.description = entities[change.name].description
                    row.updated_at = now
            s.flush()
            for change in changes:
                if change.kind not in ("create_view", "new_version", "update_view"):
                    continue
                view = views[change.name]
                assert change.version is not None
                if change.kind == "update_view":
                    vrow = s.query(FeatureViewVersionRow).filter_by(view_name=view.name, version=change.version).one()
                    vrow.definition = view.to_dict()
                    vrow.updated_at = now
                    continue
                head = s.get(FeatureViewRow, view.name)
                if head is None:
                    s.add(
                        FeatureViewRow(
                            name=view.name,
                            entity_name=view.entity,
                            latest_version=change.version,
                            created_at=now,
                            updated_at=now,
                        )
                    )
                else:
                    head.latest_version = change.version
                    head.entity_name = view.entity
                    head.updated_at = now
                s.flush()
                s.add(
                    FeatureViewVersionRow(
                        view_name=view.name,
                        version=change.version,
                        definition=view.to_dict(),
                        join_keys=dict(keys[view.name]),
                        schema_hash=view.schema_hash(dict(keys[view.name])),
                        table_name=tables[view.name],
                        created_at=now,
                        updated_at=now,
                    )
                )

    def add_approval(
        self,
        *,
        policy_id: str,
        version: int,
        sha256: str,
        content: str,
        file_name: str,
        approved_by: str,
        role: str,
        ticket: str | None,
        approved_at: datetime,
        signature: str | None = None,
    ) -> None:
        """Record an approval of a policy's exact content (with the approver's signature, if signed)."""
        with self.session() as s:
            s.add(
                PolicyApprovalRow(
                    policy_id=policy_id,
                    version=version,
                    sha256=sha256,
                    content=content,
                    file_name=file_name,
                    approved_by=approved_by,
                    role=role,
                    ticket=ticket,
                    approved_at=approved_at,
                    signature=signature,
                )
            )

    def add_approver(self, *, name: str, role: str, public_key: str, added_at: datetime, added_by: str) -> None:
        """Register an approver's Ed25519 public key for a role (one key per name and role)."""
        with self.session() as s:
            if (
                s.scalars(select(ApproverRow).where(ApproverRow.name == name, ApproverRow.role == role)).first()
                is not None
            ):
                raise PolicyViolation(f"approver '{name}' is already registered as {role}")
            s.add(ApproverRow(name=name, role=role, public_key=public_key, added_at=added_at, added_by=added_by))

    def approvers(self) -> list[ApproverRow]:
        """Every registered approver, oldest first."""
        return self._rows(ApproverRow)

    def add_training_set(self, **manifest: Any) -> None:
        """Record a training set's manifest (the columns of TrainingSetRow)."""
        with self.session() as s:
            s.add(TrainingSetRow(**manifest))

    def append_audit(
        self,
        at: Callable[[], datetime],
        actor: str,
        action: str,
        target: str,
        purpose: str | None,
        details: dict[str, Any],
        hasher: AuditHasher,
        genesis: str,
        change: Callable[[Session], None] | None = None,
        key_id: str | None = None,
    ) -> AuditRow | None:
        """Append one audit entry after the current head; None if another writer took that place
        first (the caller retries, linking to the new head). `change` runs in the same
        transaction, so the change and its entry commit together or not at all."""
        try:
            with self.session() as s:
                if change is not None:
                    change(s)
                head = s.scalars(select(AuditRow).order_by(AuditRow.id.desc()).limit(1)).first()
                prev = head.hash if head is not None else genesis
                entry_id = (head.id if head is not None else 0) + 1
                when = at()
                row = AuditRow(
                    id=entry_id,
                    at=when,
                    actor=actor,
                    action=action,
                    target=target,
                    purpose=purpose,
                    details=details,
                    prev_hash=prev,
                    hash=hasher(entry_id, when, prev),
                    key_id=key_id,
                )
                s.add(row)
            return row
        except IntegrityError:
            return None

    def audit_rows(self, *, action: str | None = None, limit: int | None = None) -> list[AuditRow]:
        """Audit entries, oldest first (the newest `limit` if given)."""
        query = select(AuditRow).order_by(AuditRow.id.desc())
        if action is not None:
            query = query.where(AuditRow.action == action)
        if limit is not None:
            query = query.limit(limit)
        with self._sessions() as s:
            return list(reversed(list(s.scalars(query))))

    # --- erasure, retention and legal holds -------------------------------------------------------

    def add_deletion_request(
        self,
        *,
        kind: str,
        entity: str | None,
        subject: str | None,
        status: str,
        requested_at: datetime,
        deadline: datetime | None,
        details: dict[str, Any],
    ) -> int:
        """Record a deletion the store owes; returns its id."""
        with self.session() as s:
            row = DeletionRequestRow(
                kind=kind,
                entity=entity,
                subject=subject,
                status=status,
                requested_at=requested_at,
                deadline=deadline,
                details=details,
            )
            s.add(row)
            s.flush()
            return row.id

    def add_deletion_requests(self, requests: Sequence[dict[str, Any]]) -> list[int]:
        """Record several deletion requests (the columns of DeletionRequestRow) in one transaction."""
        with self.session() as s:
            rows = [DeletionRequestRow(**r) for r in requests]
            s.add_all(rows)
            s.flush()
            return [r.id for r in rows]

    def update_deletion_requests(self, details: dict[int, dict[str, Any]]) -> None:
        """Set the details of several deletion requests in one statement."""
        if details:
            with self.session() as s:
                s.execute(update(DeletionRequestRow), [{"id": i, "details": d} for i, d in details.items()])

    def complete_deletion_requests(self, request_ids: Sequence[int], done_at: datetime) -> None:
        """Mark deletion requests done (their compaction committed), in one statement."""
        if request_ids:
            with self.session() as s:
                s.execute(
                    update(DeletionRequestRow), [{"id": i, "status": "done", "done_at": done_at} for i in request_ids]
                )

    def update_deletion_request(
        self,
        request_id: int,
        *,
        status: str | None = None,
        done_at: datetime | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Change a deletion request's status, completion time or details."""
        with self.session() as s:
            row = s.get(DeletionRequestRow, request_id)
            assert row is not None
            if status is not None:
                row.status = status
            if done_at is not None:
                row.done_at = done_at
            if details is not None:
                row.details = details

    def deletion_requests(self, *, status: str | None = None, kind: str | None = None) -> list[DeletionRequestRow]:
        """Deletion requests, oldest first."""
        return self._rows(DeletionRequestRow, status=status, kind=kind)

    def _rows(self, model: type[RowT], **equal: Any) -> list[RowT]:
        """Rows of a table with an ``id``, oldest first, where each given column equals its value (None: any)."""
        query = select(model).order_by(model.id)  # type: ignore[attr-defined]
        for column, value in equal.items():
            if value is not None:
                query = query.where(getattr(model, column) == value)
        with self._sessions() as s:
            return list(s.scalars(query))

    def add_tombstones(self, entity: str, hashes: Sequence[tuple[str, int]], created_at: datetime) -> None:
        """Record (subject hash, request id) tombstones of erased subjects of `entity` in one
        transaction (hashes already recorded are kept)."""
        with self.session() as s:
            known = set(s.scalars(select(TombstoneRow.subject_hash).where(TombstoneRow.entity == entity)))
            rows = [
                {"entity": entity, "subject_hash": digest, "request_id": request_id, "created_at": created_at}
                for digest, request_id in dict(hashes).items()
                if digest not in known
            ]
            if rows:
                s.execute(insert(TombstoneRow), rows)

    def tombstones(self, entity: str) -> set[str]:
        """The subject hashes erased from an entity."""
        with self._sessions() as s:
            return set(s.scalars(select(TombstoneRow.subject_hash).where(TombstoneRow.entity == entity)))

    def add_hold(
        self,
        *,
        kind: str,
        entity: str | None,
        view_name: str | None,
        pseudonyms: list[Any],
        reason: str,
        created_at: datetime,
        created_by: str,
    ) -> int:
        """Record a legal hold; returns its id."""
        with self.session() as s:
            row = HoldRow(
                kind=kind,
                entity=entity,
                view_name=view_name,
                pseudonyms=pseudonyms,
                reason=reason,
                created_at=created_at,
                created_by=created_by,
            )
            s.add(row)
            s.flush()
            return row.id

    def remove_hold(self, hold_id: int, removed_at: datetime) -> bool:
        """End a hold; False if there is no active hold with that id."""
        with self.session() as s:
            row = s.get(HoldRow, hold_id)
            if row is None or row.removed_at is not None:
                return False
            row.removed_at = removed_at
            return True

    def holds(self, *, active: bool = True) -> list[HoldRow]:
        """Legal holds (the active ones by default), oldest first."""
        query = select(HoldRow).order_by(HoldRow.id)
        if active:
            query = query.where(HoldRow.removed_at.is_(None))
        with self._sessions() as s:
            return list(s.scalars(query))

    def update_training_set(self, name: str, **fields: Any) -> None:
        """Change a saved training set's manifest (after its file was rewritten)."""
        with self.session() as s:
            row = s.get(TrainingSetRow, name)
            assert row is not None
            for key, value in fields.items():
                setattr(row, key, value)

    def delete_training_set(self, name: str) -> None:
        """Remove a training set's manifest (its file is deleted by the caller)."""
        with self.session() as s:
            row = s.get(TrainingSetRow, name)
            if row is not None:
                s.delete(row)

    # --- the privacy budget ledger ------------------------------------------------------------

    def reserve_dp(
        self, budget_key: str, since: datetime | None, check: Callable[[list[DpLedgerRow]], None], entry: dict[str, Any]
    ) -> int:
        """Reserve a release's cost atomically: lock the budget (an UPDATE of its lock row, so
        concurrent reservations take turns on PostgreSQL and SQLite alike), read its charges since
        `since`, let `check` refuse, then record `entry` (the columns of DpLedgerRow) as reserved."""
        for attempt in range(200):
            try:
                with self.session() as s:
                    locked = s.execute(
                        update(DpBudgetLockRow)
                        .where(DpBudgetLockRow.key == budget_key)
                        .values(version=DpBudgetLockRow.version + 1)
                    )
                    if locked.rowcount == 0:  # type: ignore[attr-defined]
                        s.add(DpBudgetLockRow(key=budget_key, version=1))
                        s.flush()
                    query = select(DpLedgerRow).where(DpLedgerRow.budget_key == budget_key)
                    if since is not None:
                        query = query.where(DpLedgerRow.created_at > since)
                    check(list(s.scalars(query)))
                    row = DpLedgerRow(budget_key=budget_key, status="reserved", **entry)
                    s.add(row)
                    s.flush()
                    return row.id
            except IntegrityError:
                continue  # another process created the lock row first: lock it instead
            except OperationalError as exc:  # SQLite in WAL mode: another writer committed after our snapshot
                if "locked" not in str(exc.orig) and "busy" not in str(exc.orig).lower():
                    raise
                time.sleep(min(0.005 * (attempt + 1), 0.1))
        raise ConfigError(f"could not reserve privacy budget {budget_key!r}: the registry stayed busy; try again")

    def settle_dp(self, entry_id: int, *, status: str, release: dict[str, Any] | None) -> None:
        """Mark a reservation spent (with its release) or failed."""
        with self.session() as s:
            row = s.get(DpLedgerRow, entry_id)
            assert row is not None
            row.status = status
            row.release = release

    def dp_entries(self, *, budget_key: str | None = None, query_hash: str | None = None) -> list[DpLedgerRow]:
        """Ledger entries, oldest first."""
        return self._rows(DpLedgerRow, budget_key=budget_key, query_hash=query_hash)

    # --- batch bookkeeping ---------------------------------------------------------------------

    def batch_summary(self) -> tuple[int, int, int]:
        """(count, largest id, total rows) of the committed batches."""
        committed = IngestionBatchRow.status == "committed"
        with self._sessions() as s:
            count, last, rows = s.execute(
                select(
                    func.count(IngestionBatchRow.id),
                    func.coalesce(func.max(IngestionBatchRow.id), 0),
                    func.coalesce(func.sum(IngestionBatchRow.row_count), 0),
                ).where(committed)
            ).one()
        return int(count or 0), int(last or 0), int(rows or 0)

    def recover_batches(self, upserts: Mapping[int, Mapping[str, Any]], lost: Sequence[int], now: datetime) -> None:
        """Make batches committed as the offline file records them (`upserts`: id -> view_name,
        version, row_count, ingested_at) and mark `lost` ones aborted, in one transaction; the
        next batch id then follows the largest one."""
        with self.session() as s:
            for batch_id, fields in upserts.items():
                row = s.get(IngestionBatchRow, batch_id)
                if row is None:
                    row = IngestionBatchRow(
                        id=batch_id,
                        source="recovered from the offline store's batch record",
                        started_at=fields["ingested_at"],
                    )
                    s.add(row)
                row.view_name, row.version = fields["view_name"], fields["version"]
                row.row_count, row.ingested_at = fields["row_count"], fields["ingested_at"]
                row.status, row.finished_at, row.error = "committed", now, None
            for batch_id in lost:
                row = s.get(IngestionBatchRow, batch_id)
                assert row is not None
                row.status, row.finished_at = "aborted", now
                row.error = "db recover: the offline store has no record of this batch, so none of its rows exist"
            s.flush()
            if self.engine.dialect.name == "postgresql":
                s.execute(
                    text(
                        "SELECT setval(pg_get_serial_sequence('ingestion_batches', 'id'), "
                        "greatest((SELECT max(id) FROM ingestion_batches), 1))"
                    )
                )

    def start_batch(self, view: str, version: int, *, source: str, ingested_at: datetime) -> int:
        """Record a pending batch and return its id (committed at once, before any data)."""
        with self.session() as s:
            row = IngestionBatchRow(
                view_name=view,
                version=version,
                status="pending",
                source=source,
                ingested_at=ingested_at,
                started_at=ingested_at,
            )
            s.add(row)
            s.flush()
            return row.id

    def finish_batch(
        self,
        batch_id: int,
        *,
        status: str,
        finished_at: datetime,
        row_count: int | None = None,
        error: str | None = None,
    ) -> None:
        """Mark a batch committed (with its row count) or aborted (with the reason)."""
        with self.session() as s:
            self.batch_finisher(batch_id, status=status, finished_at=finished_at, row_count=row_count, error=error)(s)

    @staticmethod
    def batch_finisher(
        batch_id: int, *, status: str, finished_at: datetime, row_count: int | None = None, error: str | None = None
    ) -> Callable[[Session], None]:
        """The change that settles a pending batch, to run in the transaction of its audit entry;
        raises BatchAlreadySettled (rolling the transaction back) if another process settled it."""

        def change(s: Session) -> None:
            # One conditional UPDATE: it takes the write lock first (SQLite) or the row lock (PostgreSQL).
            result = s.execute(
                update(IngestionBatchRow)
                .where(IngestionBatchRow.id == batch_id, IngestionBatchRow.status == "pending")
                .values(status=status, row_count=row_count, finished_at=finished_at, error=error)
            )
            if getattr(result, "rowcount", 1) == 0:
                raise BatchAlreadySettled(batch_id)

        return change
