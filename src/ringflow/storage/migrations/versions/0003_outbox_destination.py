"""outbox destination: the receiving server of each callback, for per-destination delivery

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 10:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

from ringflow.webhooks.destinations import destination_of

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("destination", sa.String(length=300), nullable=False, server_default="")
        )
        batch_op.create_index("ix_outbox_destination", ["destination", "state"], unique=False)
    # Rows still to be sent learn their destination; delivered and failed ones never need it.
    outbox = sa.table(
        "outbox",
        sa.column("id", sa.Integer),
        sa.column("url", sa.Text),
        sa.column("state", sa.String),
        sa.column("destination", sa.String),
    )
    bind = op.get_bind()
    pending = bind.execute(
        sa.select(outbox.c.id, outbox.c.url).where(outbox.c.state == "pending")
    ).all()
    for row_id, url in pending:
        bind.execute(
            outbox.update().where(outbox.c.id == row_id).values(destination=destination_of(url))
        )


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_outbox_destination")
        batch_op.drop_column("destination")
