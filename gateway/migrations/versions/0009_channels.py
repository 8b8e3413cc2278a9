"""Leads from every channel: e-mail and consent on contacts, intake settings on stores, e-mail and call
steps in cadences, and the intake's own records

Revision ID: 0009_channels
Revises: 0007_step_enrolment_status
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gateway.database

revision = "0009_channels"
down_revision = "0007_step_enrolment_status"
branch_labels = None
depends_on = None

_time = gateway.database.UTCDateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("email", sa.String(length=254), nullable=True))
        batch_op.add_column(sa.Column("email_opted_out", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column("email_opted_out_at", _time, nullable=True))
        batch_op.add_column(sa.Column("sms_consent", sa.JSON(), nullable=True))
        batch_op.create_index(batch_op.f("ix_contacts_email"), ["email"], unique=False)
    with op.batch_alter_table("stores", schema=None) as batch_op:
        batch_op.add_column(sa.Column("intake_emails", sa.JSON(), nullable=False, server_default="[]"))
        batch_op.add_column(sa.Column("email_from", sa.String(length=254), nullable=True))
        batch_op.add_column(sa.Column("lead_cadences", sa.JSON(), nullable=False, server_default="{}"))
    with op.batch_alter_table("cadence_steps", schema=None) as batch_op:
        batch_op.add_column(sa.Column("channel", sa.String(length=8), nullable=False, server_default="sms"))
        batch_op.add_column(sa.Column("subject", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("last_error", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("sent_at", _time, nullable=True))
    op.create_table(
        "intake_records",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("store_id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("dedupe_key", sa.String(length=300), nullable=True),
        sa.Column("lead_id", sa.Integer(), nullable=True),
        sa.Column("created", sa.Boolean(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("received_at", _time, nullable=False),
        sa.ForeignKeyConstraint(["lead_id"], ["leads.id"], name=op.f("fk_intake_records_lead_id_leads")),
        sa.ForeignKeyConstraint(["store_id"], ["stores.id"], name=op.f("fk_intake_records_store_id_stores")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_intake_records")),
        sa.UniqueConstraint("store_id", "dedupe_key", name=op.f("uq_intake_records_store_id_dedupe_key")),
    )
    op.create_index(op.f("ix_intake_records_lead_id"), "intake_records", ["lead_id"], unique=False)
    op.create_table(
        "intake_mails",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("store_id", sa.Integer(), nullable=False),
        sa.Column("lead_id", sa.Integer(), nullable=True),
        sa.Column("sender", sa.String(length=320), nullable=True),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("message_id", sa.String(length=998), nullable=True),
        sa.Column("problem", sa.Text(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("received_at", _time, nullable=False),
        sa.ForeignKeyConstraint(["lead_id"], ["leads.id"], name=op.f("fk_intake_mails_lead_id_leads")),
        sa.ForeignKeyConstraint(["store_id"], ["stores.id"], name=op.f("fk_intake_mails_store_id_stores")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_intake_mails")),
    )
    op.create_index(op.f("ix_intake_mails_lead_id"), "intake_mails", ["lead_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_intake_mails_lead_id"), table_name="intake_mails")
    op.drop_table("intake_mails")
    op.drop_index(op.f("ix_intake_records_lead_id"), table_name="intake_records")
    op.drop_table("intake_records")
    with op.batch_alter_table("cadence_steps", schema=None) as batch_op:
        for column in ("sent_at", "last_error", "attempts", "subject", "channel"):
            batch_op.drop_column(column)
    with op.batch_alter_table("stores", schema=None) as batch_op:
        for column in ("lead_cadences", "email_from", "intake_emails"):
            batch_op.drop_column(column)
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_contacts_email"))
        for column in ("sms_consent", "email_opted_out_at", "email_opted_out", "email"):
            batch_op.drop_column(column)
