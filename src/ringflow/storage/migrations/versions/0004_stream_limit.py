"""streams to bots: StreamUrl calls, and an account's own limit on concurrent streams

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05 18:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("max_concurrent_streams", sa.Integer(), nullable=True))
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.add_column(sa.Column("stream_url", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("stream_type", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("stream_name", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.drop_column("stream_name")
        batch_op.drop_column("stream_type")
        batch_op.drop_column("stream_url")
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_column("max_concurrent_streams")
