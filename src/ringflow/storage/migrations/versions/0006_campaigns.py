"""campaigns: numbers called at a pace, contact lists from CSV, calls tagged with their campaign

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 21:30:00.000000
"""

import sqlalchemy as sa
from alembic import op

import ringflow.storage.models

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "campaigns",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("sid", sa.String(length=40), nullable=False),
        sa.Column(
            "account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("pause_reason", sa.String(length=16), nullable=True),
        sa.Column("caller_id", sa.String(length=64), nullable=False),
        sa.Column("app_id", sa.BigInteger(), nullable=True),
        sa.Column("stream_url", sa.Text(), nullable=True),
        sa.Column("stream_type", sa.String(length=16), nullable=True),
        sa.Column("calls_per_second", sa.Float(), nullable=False),
        sa.Column("max_concurrent", sa.Integer(), nullable=False),
        sa.Column("retries", sa.JSON(), nullable=False),
        sa.Column("calling_hours", sa.JSON(), nullable=True),
        sa.Column("send_at", ringflow.storage.models.UTCDateTime(), nullable=True),
        sa.Column("end_at", ringflow.storage.models.UTCDateTime(), nullable=True),
        sa.Column("custom_field", sa.String(length=128), nullable=True),
        sa.Column("machine_detection", sa.String(length=16), nullable=True),
        sa.Column("status_callback", sa.Text(), nullable=True),
        sa.Column("call_status_callback", sa.Text(), nullable=True),
        sa.Column("call_schedule_callback", sa.Text(), nullable=True),
        sa.Column("numbers_total", sa.Integer(), nullable=False),
        sa.Column("driver", sa.String(length=200), nullable=True),
        sa.Column("lease_until", ringflow.storage.models.UTCDateTime(), nullable=True),
        sa.Column("wake_at", ringflow.storage.models.UTCDateTime(), nullable=True),
        sa.Column("created_at", ringflow.storage.models.UTCDateTime(), nullable=False),
        sa.Column("updated_at", ringflow.storage.models.UTCDateTime(), nullable=False),
        sa.Column("started_at", ringflow.storage.models.UTCDateTime(), nullable=True),
        sa.Column("ended_at", ringflow.storage.models.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("sid"),
    )
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.create_index(
            "ix_campaigns_account_created", ["account_id", "created_at", "id"], unique=False
        )
        batch_op.create_index("ix_campaigns_wake_at", ["wake_at"], unique=False)

    op.create_table(
        "contact_lists",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("sid", sa.String(length=40), nullable=False),
        sa.Column(
            "account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("row_count", sa.Integer(), nullable=False),
        sa.Column("created_at", ringflow.storage.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("sid"),
    )
    with op.batch_alter_table("contact_lists", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_contact_lists_account_id"), ["account_id"], unique=False
        )

    op.create_table(
        "campaign_numbers",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "campaign_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("number", sa.String(length=128), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", ringflow.storage.models.UTCDateTime(), nullable=True),
        sa.Column("call_id", sa.BigInteger(), nullable=True),
        sa.Column("last_status", sa.String(length=16), nullable=True),
        sa.Column("updated_at", ringflow.storage.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaigns.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("campaign_id", "position"),
    )
    with op.batch_alter_table("campaign_numbers", schema=None) as batch_op:
        batch_op.create_index("ix_campaign_numbers_state", ["campaign_id", "state"], unique=False)

    op.create_table(
        "contact_uploads",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("sid", sa.String(length=40), nullable=False),
        sa.Column(
            "account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("list_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("file_name", sa.String(length=200), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("succeeded", sa.Integer(), nullable=False),
        sa.Column("duplicates", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("failures", sa.JSON(), nullable=False),
        sa.Column("created_at", ringflow.storage.models.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["list_id"], ["contact_lists.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("sid"),
    )
    with op.batch_alter_table("contact_uploads", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_contact_uploads_account_id"), ["account_id"], unique=False
        )

    op.create_table(
        "contacts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("list_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("number", sa.String(length=128), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(["list_id"], ["contact_lists.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("list_id", "position"),
    )
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.add_column(sa.Column("campaign_id", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("campaign_number_id", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("campaign_attempt", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_calls_campaign_id"), ["campaign_id"], unique=False)
        batch_op.create_unique_constraint(
            "uq_calls_campaign_attempt", ["campaign_number_id", "campaign_attempt"]
        )


def downgrade() -> None:
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.drop_constraint("uq_calls_campaign_attempt", type_="unique")
        batch_op.drop_index(batch_op.f("ix_calls_campaign_id"))
        batch_op.drop_column("campaign_attempt")
        batch_op.drop_column("campaign_number_id")
        batch_op.drop_column("campaign_id")

    op.drop_table("contacts")
    with op.batch_alter_table("contact_uploads", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_contact_uploads_account_id"))

    op.drop_table("contact_uploads")
    with op.batch_alter_table("campaign_numbers", schema=None) as batch_op:
        batch_op.drop_index("ix_campaign_numbers_state")

    op.drop_table("campaign_numbers")
    with op.batch_alter_table("contact_lists", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_contact_lists_account_id"))

    op.drop_table("contact_lists")
    with op.batch_alter_table("campaigns", schema=None) as batch_op:
        batch_op.drop_index("ix_campaigns_wake_at")
        batch_op.drop_index("ix_campaigns_account_created")

    op.drop_table("campaigns")
