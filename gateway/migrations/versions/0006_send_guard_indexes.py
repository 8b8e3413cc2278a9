"""Indexes for the send guard's per-recipient look-ups

The guard reads, for every text, the automated texts sent to the number in the last 24 hours and the
customer's latest call and text: without these, each is a scan of a table that only grows.

Revision ID: 0006_send_guard_indexes
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0006_send_guard_indexes"
down_revision = "0001"
branch_labels = ("send_guard_indexes",)
depends_on = None


def upgrade() -> None:
    op.create_index("ix_messages_to_number_sent_at", "messages", ["to_number", "sent_at"], unique=False)
    op.create_index(
        "ix_messages_contact_direction_created", "messages", ["contact_id", "direction", "created_at"], unique=False
    )
    op.create_index("ix_calls_from_number_started", "calls", ["from_number", "started_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_calls_from_number_started", table_name="calls")
    op.drop_index("ix_messages_contact_direction_created", table_name="messages")
    op.drop_index("ix_messages_to_number_sent_at", table_name="messages")
