"""workspace: server-side sessions, texted sign-in codes, failed sign-ins by address

Revision ID: 0010_workspace
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gateway.database

revision = "0010_workspace"
down_revision = "0001"
branch_labels = ("workspace",)
depends_on = ("0005_crm",)  # it widens two of 0005's call indexes

_time = gateway.database.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "workspace_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("agent_id", sa.Integer(), nullable=True),
        sa.Column("api_key_id", sa.Integer(), nullable=True),
        sa.Column("created_at", _time, nullable=False),
        sa.Column("last_seen_at", _time, nullable=False),
        sa.Column("expires_at", _time, nullable=False),
        sa.Column("ended_at", _time, nullable=True),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"], name=op.f("fk_workspace_sessions_agent_id_agents")),
        sa.ForeignKeyConstraint(
            ["api_key_id"], ["api_keys.id"], name=op.f("fk_workspace_sessions_api_key_id_api_keys")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workspace_sessions")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_workspace_sessions_token_hash")),
    )
    op.create_table(
        "sign_in_codes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("agent_id", sa.Integer(), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", _time, nullable=False),
        sa.Column("expires_at", _time, nullable=False),
        sa.Column("used_at", _time, nullable=True),
        sa.ForeignKeyConstraint(["agent_id"], ["agents.id"], name=op.f("fk_sign_in_codes_agent_id_agents")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sign_in_codes")),
    )
    op.create_index("ix_sign_in_codes_agent_created", "sign_in_codes", ["agent_id", "created_at"])
    op.create_table(
        "sign_in_failures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("at", _time, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sign_in_failures")),
    )
    op.create_index("ix_sign_in_failures_address_at", "sign_in_failures", ["address", "at"])
    # The inbox reads one store's recent texts by lead, from the index alone on PostgreSQL.
    op.create_index(
        "ix_messages_store_created", "messages", ["store_id", "created_at"],
        postgresql_include=["id", "lead_id", "direction", "kind", "agent_id"],
    )


    # The KPI page counts calls by source too: the tracked number joins the covering indexes of 0005.
    if op.get_bind().dialect.name == "postgresql":
        for name, columns, include in _CALL_INDEXES:
            op.drop_index(name, table_name="calls")
            op.create_index(name, "calls", columns, postgresql_include=[*include, "tracked_number_id"])


_CALL_INDEXES = (
    ("ix_calls_store_started", ["store_id", "started_at"], ["outcome", "direction", "kind"]),
    ("ix_calls_started_covering", ["started_at"], ["store_id", "outcome", "direction", "kind"]),
)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name, columns, include in _CALL_INDEXES:
            op.drop_index(name, table_name="calls")
            op.create_index(name, "calls", columns, postgresql_include=include)
    op.drop_index("ix_messages_store_created", table_name="messages")
    op.drop_index("ix_sign_in_failures_address_at", table_name="sign_in_failures")
    op.drop_table("sign_in_failures")
    op.drop_index("ix_sign_in_codes_agent_created", table_name="sign_in_codes")
    op.drop_table("sign_in_codes")
    op.drop_table("workspace_sessions")
