"""CRM deliveries: partial indexes over the unfinished rows, for the claim and the sweep

Revision ID: 0012_crm_unfinished
Revises: 0005_crm
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_crm_unfinished"
down_revision = "0005_crm"
branch_labels = None
depends_on = None

_PENDING = "status = 'pending'"
_UNFINISHED = "status IN ('pending', 'delivering')"


def upgrade() -> None:
    op.create_index(
        "ix_crm_deliveries_pending", "crm_deliveries", ["next_attempt_at", "id"], unique=False,
        postgresql_where=sa.text(_PENDING), sqlite_where=sa.text(_PENDING),
    )
    op.create_index(
        "ix_crm_deliveries_unfinished_stream", "crm_deliveries", ["stream", "id"], unique=False,
        postgresql_where=sa.text(_UNFINISHED), sqlite_where=sa.text(_UNFINISHED),
    )


def downgrade() -> None:
    op.drop_index("ix_crm_deliveries_unfinished_stream", table_name="crm_deliveries")
    op.drop_index("ix_crm_deliveries_pending", table_name="crm_deliveries")
