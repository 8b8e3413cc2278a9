"""number health and caller-ID verification: the health check's runs and known problems, a call's failed
caller-ID verification (and its lead's), a store's choice to text unverified callers and its recording
disclosure

Revision ID: 0009_number_health
Revises: 0001
Create Date: 2026-12-03 08:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gateway.database

revision = "0009_number_health"
down_revision = "0001"
branch_labels = ("number_health",)
depends_on = None


def upgrade() -> None:
    # A server default fills the rows already there, on SQLite and PostgreSQL alike.
    op.add_column(
        "calls", sa.Column("caller_id_unverified", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    op.add_column(
        "leads", sa.Column("caller_id_unverified", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    op.add_column(
        "stores", sa.Column("text_unverified_callers", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    op.add_column("stores", sa.Column("recording_disclosure", sa.Text(), nullable=True))
    op.create_table(
        "number_health_runs",
        sa.Column("store_id", sa.Integer(), nullable=False),
        sa.Column("checked_at", gateway.database.UTCDateTime(timezone=True), nullable=True),
        sa.Column("queued_at", gateway.database.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["store_id"], ["stores.id"], name=op.f("fk_number_health_runs_store_id_stores")),
        sa.PrimaryKeyConstraint("store_id", name=op.f("pk_number_health_runs")),
    )
    op.create_table(
        "number_health_problems",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("store_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("first_seen_at", gateway.database.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["store_id"], ["stores.id"], name=op.f("fk_number_health_problems_store_id_stores")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_number_health_problems")),
        sa.UniqueConstraint("key", name=op.f("uq_number_health_problems_key")),
    )
    op.create_index(
        op.f("ix_number_health_problems_store_id"), "number_health_problems", ["store_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_number_health_problems_store_id"), table_name="number_health_problems")
    op.drop_table("number_health_problems")
    op.drop_table("number_health_runs")
    with op.batch_alter_table("stores") as batch:
        batch.drop_column("recording_disclosure")
        batch.drop_column("text_unverified_callers")
    with op.batch_alter_table("leads") as batch:
        batch.drop_column("caller_id_unverified")
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("caller_id_unverified")
