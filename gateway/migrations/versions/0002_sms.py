"""sms: the ledger of text status callbacks

Revision ID: 0002_sms
Revises: 0001
Create Date: 2026-11-24 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gateway.database

revision = "0002_sms"
down_revision = "0001"
branch_labels = ("sms",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "message_status_callbacks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sid", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("error_code", sa.Integer(), nullable=True),
        sa.Column("received_at", gateway.database.UTCDateTime(timezone=True), nullable=False),
        sa.Column("applied_at", gateway.database.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_message_status_callbacks")),
        sa.UniqueConstraint("sid", "status", name=op.f("uq_message_status_callbacks_sid_status")),
    )
    op.create_index(
        op.f("ix_message_status_callbacks_applied_at"),
        "message_status_callbacks",
        ["applied_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_message_status_callbacks_applied_at"), table_name="message_status_callbacks")
    op.drop_table("message_status_callbacks")
