"""ADF prospects stored first and built into leads by the worker: the build's claim, attempts and error

Revision ID: 0011_intake_build
Revises: 0009_channels
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gateway.database

revision = "0011_intake_build"
down_revision = "0009_channels"
branch_labels = None
depends_on = None

_time = gateway.database.UTCDateTime(timezone=True)
_PENDING = "lead_id IS NULL AND error IS NULL"


def upgrade() -> None:
    with op.batch_alter_table("intake_records", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claimed_at", _time, nullable=True))
        batch_op.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("error", sa.Text(), nullable=True))
    op.create_index(
        "ix_intake_records_pending", "intake_records", ["id"], unique=False,
        postgresql_where=sa.text(_PENDING), sqlite_where=sa.text(_PENDING),
    )


def downgrade() -> None:
    op.drop_index("ix_intake_records_pending", table_name="intake_records")
    with op.batch_alter_table("intake_records", schema=None) as batch_op:
        for column in ("error", "attempts", "claimed_at"):
            batch_op.drop_column(column)
