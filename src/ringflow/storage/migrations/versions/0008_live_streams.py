"""streams to bots open now, shared by every process (the account's stream limit across workers)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06 00:10:00.000000
"""

import sqlalchemy as sa
from alembic import op

from ringflow.storage.models import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "live_streams",
        sa.Column("stream_sid", sa.String(length=34), nullable=False),
        sa.Column(
            "account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("call_sid", sa.String(length=32), nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("bidirectional", sa.Boolean(), nullable=False),
        sa.Column("track", sa.String(length=16), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("stream_sid"),
    )
    op.create_index("ix_live_streams_account", "live_streams", ["account_id", "started_at"])
    op.create_index("ix_live_streams_owner", "live_streams", ["owner"])


def downgrade() -> None:
    op.drop_index("ix_live_streams_owner", table_name="live_streams")
    op.drop_index("ix_live_streams_account", table_name="live_streams")
    op.drop_table("live_streams")
