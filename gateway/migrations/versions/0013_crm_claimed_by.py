"""CRM deliveries: the worker process that claimed a delivery, so that a killed worker's claims are
handed out again as soon as it is known dead

Revision ID: 0013_crm_claimed_by
Revises: 0012_crm_unfinished
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_crm_claimed_by"
down_revision = "0012_crm_unfinished"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN on both databases: SQLite's table copy (batch mode) is not needed, and would have
    # to rebuild the partial indexes of 0012.
    op.add_column("crm_deliveries", sa.Column("claimed_by", sa.String(length=80), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("crm_deliveries") as batch:
        batch.drop_column("claimed_by")
