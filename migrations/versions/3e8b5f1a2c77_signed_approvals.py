"""signed approvals

Revision ID: 3e8b5f1a2c77
Revises: 7a1c2e9b4d10
Create Date: 2026-12-01 12:56:00.000000

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "3e8b5f1a2c77"
down_revision: str | Sequence[str] | None = "7a1c2e9b4d10"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "approvers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=100), nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("added_by", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_approvers")),
        sa.UniqueConstraint("name", "role", name=op.f("uq_approvers_name")),
    )
    with op.batch_alter_table("policy_approvals", schema=None) as batch_op:
        batch_op.add_column(sa.Column("signature", sa.Text(), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("policy_approvals", schema=None) as batch_op:
        batch_op.drop_column("signature")
    op.drop_table("approvers")
