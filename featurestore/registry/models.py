"""SQLAlchemy tables of the registry. Alembic revisions in ``migrations/`` mirror them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back time-zone aware (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("registry timestamps must be time-zone aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class Base(DeclarativeBase):
    metadata = metadata


class EntityRow(Base):
    """A registered entity."""

    __tablename__ = "entities"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    join_keys: Mapped[dict[str, Any]] = mapped_column(JSON)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class FeatureViewRow(Base):
    """A registered feature view; its versions are in FeatureViewVersionRow."""

    __tablename__ = "feature_views"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    entity_name: Mapped[str] = mapped_column(ForeignKey("entities.name"))
    latest_version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class FeatureViewVersionRow(Base):
    """One schema version of a feature view and the offline table that holds its rows."""

    __tablename__ = "feature_view_versions"
    __table_args__ = (UniqueConstraint("view_name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    view_name: Mapped[str] = mapped_column(ForeignKey("feature_views.name"))
    version: Mapped[int] = mapped_column(Integer)
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    join_keys: Mapped[dict[str, Any]] = mapped_column(JSON)
    schema_hash: Mapped[str] = mapped_column(String(64))
    table_name: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class FeatureServiceRow(Base):
    """One version of a feature service: its feature references as written."""

    __tablename__ = "feature_services"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[int] = mapped_column(Integer)
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class IngestionBatchRow(Base):
    """One ingestion: pending while it runs, then committed (visible) or aborted."""

    __tablename__ = "ingestion_batches"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    view_name: Mapped[str] = mapped_column(ForeignKey("feature_views.name"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), index=True)
    row_count: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    source: Mapped[str] = mapped_column(Text, default="")
    ingested_at: Mapped[datetime] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class TrainingSetRow(Base):
    """A saved training set: how it was built (enough to rebuild it) and a hash of its content."""

    __tablename__ = "training_sets"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    description: Mapped[str] = mapped_column(Text, default="")
    features: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    """Resolved features: ref, view, version, feature, output column, TTL (seconds), timestamp field."""
    entity_columns: Mapped[list[str]] = mapped_column(JSON)
    timestamp_column: Mapped[str] = mapped_column(String(200))
    as_of: Mapped[datetime] = mapped_column(UTCDateTime())
    known_at_prediction_time: Mapped[bool] = mapped_column(Boolean)
    full_feature_names: Mapped[bool] = mapped_column(Boolean)
    row_count: Mapped[int] = mapped_column(BigInteger)
    content_hash: Mapped[str] = mapped_column(String(64))
    policy_hashes: Mapped[list[str]] = mapped_column(JSON)
    purpose: Mapped[str | None] = mapped_column(String(200), nullable=True)
    protected_columns: Mapped[list[str]] = mapped_column(JSON, default=list)
    location: Mapped[str] = mapped_column(Text)
    notes: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON, nullable=True)
    """What happened to the saved rows since (left out past retention, erased, rewritten)."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class DataKeyRow(Base):
    """A data key (HMAC pepper or AES-SIV key), wrapped under the master key; never plaintext."""

    __tablename__ = "data_keys"

    id: Mapped[str] = mapped_column(String(50), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20), index=True)
    wrapped: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class PolicyApprovalRow(Base):
    """An approval of one policy file's exact content (bound to its SHA-256)."""

    __tablename__ = "policy_approvals"
    __table_args__ = (UniqueConstraint("policy_id", "sha256"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    policy_id: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    content: Mapped[str] = mapped_column(Text)
    file_name: Mapped[str] = mapped_column(String(500))
    approved_by: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(100))
    ticket: Mapped[str | None] = mapped_column(String(200), nullable=True)
    approved_at: Mapped[datetime] = mapped_column(UTCDateTime())
    signature: Mapped[str | None] = mapped_column(Text, nullable=True)
    """Base64 Ed25519 signature of the SHA-256 (hex) by the approver's registered key, if signed."""


class ApproverRow(Base):
    """Someone who may approve policies in a role, with the Ed25519 public key that signs them."""

    __tablename__ = "approvers"
    __table_args__ = (UniqueConstraint("name", "role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(100))
    public_key: Mapped[str] = mapped_column(Text)
    """Base64 of the raw 32-byte Ed25519 public key."""
    added_at: Mapped[datetime] = mapped_column(UTCDateTime())
    added_by: Mapped[str] = mapped_column(String(200))


class AuditRow(Base):
    """One audit log entry; `hash` covers the entry and the previous entry's hash."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(50), index=True)
    target: Mapped[str] = mapped_column(Text)
    purpose: Mapped[str | None] = mapped_column(String(200), nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String(64), unique=True)
    hash: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    """The audit key whose HMAC `hash` is (None: a plain SHA-256, written without the master key)."""


class MaterializationRow(Base):
    """How far a view version has been copied to the online store (its watermark)."""

    __tablename__ = "materializations"
    __table_args__ = (UniqueConstraint("view_name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    view_name: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    last_batch_id: Mapped[int] = mapped_column(BigInteger)
    """Every batch up to this id is reflected online."""
    end: Mapped[datetime] = mapped_column(UTCDateTime())
    """The event-time bound of the last run (rows after it were left out)."""
    entities: Mapped[int] = mapped_column(BigInteger)
    generation: Mapped[int] = mapped_column(BigInteger)
    """Run counter; online rows of older generations are pruned after a full rebuild."""
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class DeletionRequestRow(Base):
    """A deletion the store owes: an erasure of one subject or a retention run, pending until the
    compaction that removes its bytes from disk has committed."""

    __tablename__ = "deletion_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(20), index=True)
    """erasure or retention."""
    entity: Mapped[str | None] = mapped_column(String(200), nullable=True)
    subject: Mapped[str | None] = mapped_column(String(100), nullable=True, index=True)
    """The subject's pseudonym under the current HMAC key (never the raw id)."""
    status: Mapped[str] = mapped_column(String(20), index=True)
    """pending (deleted logically, bytes not yet compacted away), held, or done."""
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime())
    deadline: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    """Rows removed per place, and why it is held."""


class TombstoneRow(Base):
    """An erased subject of an entity: one of its subject hashes (per HMAC key id and
    normalization). Ingestion and materialization of any view of the entity, present or future,
    drop rows that match, so the subject cannot come back."""

    __tablename__ = "erasure_tombstones"
    __table_args__ = (UniqueConstraint("entity", "subject_hash"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    entity: Mapped[str] = mapped_column(String(200), index=True)
    subject_hash: Mapped[str] = mapped_column(String(100))
    request_id: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class HoldRow(Base):
    """A legal hold: retention and erasure are suspended for a subject or a whole view."""

    __tablename__ = "legal_holds"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(20))
    """subject or view."""
    entity: Mapped[str | None] = mapped_column(String(200), nullable=True)
    view_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    pseudonyms: Mapped[list[Any]] = mapped_column(JSON)
    """For a subject: its subject hashes (every HMAC key id and normalization; never the raw id)."""
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(200))
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)


class DpBudgetLockRow(Base):
    """One row per privacy budget (policy, purpose, consumer): a reservation updates it first, so
    concurrent reservations of one budget take turns (a row lock on PostgreSQL, the write lock on SQLite)."""

    __tablename__ = "dp_budget_locks"

    key: Mapped[str] = mapped_column(String(500), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)


class DpLedgerRow(Base):
    """One differentially private release's cost, reserved before any data is read."""

    __tablename__ = "dp_ledger"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    budget_key: Mapped[str] = mapped_column(String(500), index=True)
    policy_id: Mapped[str] = mapped_column(String(200))
    purpose: Mapped[str] = mapped_column(String(200))
    consumer: Mapped[str | None] = mapped_column(String(200), nullable=True)
    epsilon: Mapped[float] = mapped_column(Float)
    delta: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(20))
    """reserved (running), spent (released), failed (data may have been read: still counted)."""
    view: Mapped[str] = mapped_column(String(300))
    query_hash: Mapped[str] = mapped_column(String(64), index=True)
    data_version: Mapped[str] = mapped_column(String(200))
    release: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
