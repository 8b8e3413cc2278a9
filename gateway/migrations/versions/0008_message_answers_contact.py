"""messages.answers_contact: the text answers the customer's own call or text

Only such a text may go at once in quiet hours, within a few minutes of the customer's contact: a
cadence's first step and texts a person wrote. Later cadence steps wait for the recipient's window.

Revision ID: 0008_message_answers_contact
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_message_answers_contact"
down_revision = "0001"
branch_labels = ("message_answers_contact",)
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("answers_contact", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("answers_contact")
