"""an index on each account's calls by status: admission counts an account's live calls and
finds its oldest waiting one without reading the rest of its history

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 14:00:00.000000
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_calls_account_status", "calls", ["account_id", "status", "created_at", "id"]
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE STATISTICS st_calls_account_status (mcv) ON account_id, status FROM calls"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP STATISTICS IF EXISTS st_calls_account_status")
    op.drop_index("ix_calls_account_status", table_name="calls")
