"""CRM outbox and the indexes the metrics endpoint reads through

Revision ID: 0005_crm
Revises: 0001
Create Date: 2026-11-24 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gateway.database

revision = "0005_crm"
down_revision = "0001"
branch_labels = ("crm",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "crm_deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("store_id", sa.Integer(), nullable=False),
        sa.Column("lead_id", sa.Integer(), nullable=True),
        sa.Column("destination_index", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("target", sa.String(length=500), nullable=False),
        sa.Column("stream", sa.String(length=64), nullable=False),
        sa.Column("event", sa.String(length=64), nullable=False),
        sa.Column("content_type", sa.String(length=64), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", gateway.database.UTCDateTime(timezone=True), nullable=False),
        sa.Column("retry_until", gateway.database.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("claimed_at", gateway.database.UTCDateTime(timezone=True), nullable=True),
        sa.Column("queued_at", gateway.database.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", gateway.database.UTCDateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", gateway.database.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", gateway.database.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["lead_id"], ["leads.id"], name=op.f("fk_crm_deliveries_lead_id_leads")),
        sa.ForeignKeyConstraint(["store_id"], ["stores.id"], name=op.f("fk_crm_deliveries_store_id_stores")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_crm_deliveries")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_crm_deliveries_idempotency_key")),
    )
    with op.batch_alter_table("crm_deliveries", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_crm_deliveries_lead_id"), ["lead_id"], unique=False)
        batch_op.create_index("ix_crm_deliveries_status_next", ["status", "next_attempt_at"], unique=False)
        batch_op.create_index("ix_crm_deliveries_stream_id", ["stream", "id"], unique=False)

    # GET /api/v1/metrics: every aggregate is a range scan of one store's rows in a time window.
    op.create_index(
        "ix_calls_store_started", "calls", ["store_id", "started_at"], unique=False,
        postgresql_include=["outcome", "direction", "kind"],
    )
    op.create_index(
        "ix_leads_store_created", "leads", ["store_id", "created_at"], unique=False,
        postgresql_include=["status", "source", "first_response_at", "leaked_at"],
    )
    # The same for every store the key sees: the time range alone, covering the grouped columns.
    op.create_index(
        "ix_calls_started_covering", "calls", ["started_at"], unique=False,
        postgresql_include=["store_id", "outcome", "direction", "kind"],
    )
    op.create_index(
        "ix_tasks_open_due", "tasks", ["due_at"], unique=False,
        postgresql_where=sa.text("status = 'open'"), sqlite_where=sa.text("status = 'open'"),
    )


def downgrade() -> None:
    op.drop_index("ix_tasks_open_due", table_name="tasks")
    op.drop_index("ix_calls_started_covering", table_name="calls")
    op.drop_index("ix_leads_store_created", table_name="leads")
    op.drop_index("ix_calls_store_started", table_name="calls")
    with op.batch_alter_table("crm_deliveries", schema=None) as batch_op:
        batch_op.drop_index("ix_crm_deliveries_stream_id")
        batch_op.drop_index("ix_crm_deliveries_status_next")
        batch_op.drop_index(batch_op.f("ix_crm_deliveries_lead_id"))
    op.drop_table("crm_deliveries")
