"""feature services

Revision ID: 5d2a9c4e7b31
Revises: 3e8b5f1a2c77
Create Date: 2026-12-01 14:20:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "5d2a9c4e7b31"
down_revision: str | Sequence[str] | None = "3e8b5f1a2c77"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "feature_services",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_feature_services")),
        sa.UniqueConstraint("name", "version", name=op.f("uq_feature_services_name")),
    )
    with op.batch_alter_table("feature_services", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_feature_services_name"), ["name"], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("feature_services", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_feature_services_name"))
    op.drop_table("feature_services")
