"""an index of live call control's requests: each process's poll for the requests on the calls
it carries reads those rows, not the timelines of every call

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 19:00:00.000000
"""

from alembic import op
from sqlalchemy import text

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

REQUESTS = text("kind = 'control.request'")


def upgrade() -> None:
    op.create_index(
        "ix_call_events_control_requests",
        "call_events",
        ["call_id"],
        postgresql_where=REQUESTS,
        sqlite_where=REQUESTS,
    )


def downgrade() -> None:
    op.drop_index("ix_call_events_control_requests", table_name="call_events")
