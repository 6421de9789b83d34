"""dashboard sign-in: an account's dashboard password, the instance's operators

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 19:30:00.000000
"""

import sqlalchemy as sa
from alembic import op

import ringflow.storage.models

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("dashboard_password_hash", sa.String(length=255), nullable=True)
        )
    op.create_table(
        "operators",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("created_at", ringflow.storage.models.UTCDateTime(), nullable=False),
        sa.Column("updated_at", ringflow.storage.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("operators")
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_column("dashboard_password_hash")
