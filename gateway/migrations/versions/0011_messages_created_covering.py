"""workspace: the texts' time index covers the inbox's columns on PostgreSQL

The inbox of a viewer over every store (an administrator's key) picks its threads from the last 30 days of
texts of all stores: with no store to lead the (store_id, created_at) index of 0010, PostgreSQL read them
through the plain (created_at) index and fetched every text's row (5,000 pages for 50k texts, 25-30 ms of
the page's 60). The same index with the inbox's columns included (lead, id, direction, kind, agent) is read
alone. It replaces the plain one, which it serves as well, so each text still writes one index entry here.

Like 0010, it rebuilds the index in the migration's transaction: writes to `messages` wait while it is built
(about a second per million texts).

Revision ID: 0011_messages_created_covering
Revises: 0010_workspace
"""

from __future__ import annotations

from alembic import op

revision = "0011_messages_created_covering"
down_revision = "0010_workspace"
branch_labels = None
depends_on = None

_INBOX_COLUMNS = ["lead_id", "id", "direction", "kind", "agent_id"]


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_messages_created_at", table_name="messages")
        op.create_index("ix_messages_created_at", "messages", ["created_at"], postgresql_include=_INBOX_COLUMNS)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_messages_created_at", table_name="messages")
        op.create_index("ix_messages_created_at", "messages", ["created_at"])
