"""reconcile: watermarks per tracked number, and which calls and texts were found only at the provider

Revision ID: 0009_reconcile
Revises: 0002_sms
Create Date: 2026-12-03 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gateway.database

revision = "0009_reconcile"
# `messages` is made by 0001 and `message_status_callbacks` by 0002_sms: after both, on a branch of its own.
down_revision = "0002_sms"
branch_labels = ("reconcile",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reconcile_marks",
        sa.Column("tracked_number_id", sa.Integer(), nullable=False),
        sa.Column("calls_through", gateway.database.UTCDateTime(timezone=True), nullable=False),
        sa.Column("texts_through", gateway.database.UTCDateTime(timezone=True), nullable=False),
        sa.Column("checked_at", gateway.database.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.ForeignKeyConstraint(
            ["tracked_number_id"], ["tracked_numbers.id"],
            name=op.f("fk_reconcile_marks_tracked_number_id_tracked_numbers"),
        ),
        sa.PrimaryKeyConstraint("tracked_number_id", name=op.f("pk_reconcile_marks")),
    )
    for table in ("calls", "messages"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("reconciled", sa.Boolean(), server_default=sa.false(), nullable=False))
    op.create_index(
        "ix_calls_reconciled_started", "calls", ["started_at"], unique=False,
        postgresql_where=sa.text("reconciled"), sqlite_where=sa.text("reconciled"),
    )
    op.create_index(
        "ix_messages_reconciled_created", "messages", ["created_at"], unique=False,
        postgresql_where=sa.text("reconciled"), sqlite_where=sa.text("reconciled"),
    )


def downgrade() -> None:
    op.drop_index("ix_messages_reconciled_created", table_name="messages")
    op.drop_index("ix_calls_reconciled_started", table_name="calls")
    for table in ("messages", "calls"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("reconciled")
    op.drop_table("reconcile_marks")
