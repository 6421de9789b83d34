"""answering machine detection: what a call asked for, how long it took, longer AnsweredBy

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 21:30:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.add_column(sa.Column("machine_detection", sa.String(length=24), nullable=True))
        batch_op.add_column(sa.Column("machine_detection_ms", sa.Integer(), nullable=True))
    # "machine_end_silence" is longer than the 16 characters "human" needed.
    with op.batch_alter_table("legs", schema=None) as batch_op:
        batch_op.alter_column(
            "answered_by",
            existing_type=sa.String(length=16),
            type_=sa.String(length=24),
            existing_nullable=True,
        )


def downgrade() -> None:
    with op.batch_alter_table("legs", schema=None) as batch_op:
        batch_op.alter_column(
            "answered_by",
            existing_type=sa.String(length=24),
            type_=sa.String(length=16),
            existing_nullable=True,
            postgresql_using="left(answered_by, 16)",
        )
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.drop_column("machine_detection_ms")
        batch_op.drop_column("machine_detection")
