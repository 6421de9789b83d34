"""an index on each account's calls by status: admission counts an account's live calls and
finds its oldest waiting one without reading the rest of its history

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 14:00:00.000000
"""

from alembic import op
from sqlalchemy import text

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_calls_account_status", "calls", ["account_id", "status", "created_at", "id"]
    )
    if op.get_bind().dialect.name == "postgresql":
        # How many of each account's calls have each status, together (PostgreSQL 12 and
        # later): without it the planner takes an account's live calls for a share of all its
        # calls. Gathered now, not at the next automatic ANALYZE of a large table.
        op.execute(
            "CREATE STATISTICS st_calls_account_status (mcv) ON account_id, status FROM calls"
        )
        # Not on a new database: an empty table analyzed is one the planner knows to be empty,
        # and the plans the driver keeps for the first calls' statements (chosen for a table of
        # one page) read the whole table for every call until the next automatic ANALYZE, a
        # minute later. Never analyzed, it is planned as a table of some size.
        if op.get_bind().execute(text("SELECT EXISTS (SELECT 1 FROM calls)")).scalar():
            op.execute("ANALYZE calls")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP STATISTICS IF EXISTS st_calls_account_status")
    op.drop_index("ix_calls_account_status", table_name="calls")
