"""One index on cadence steps by (enrolment, status)

Completing a job's enrolments asks, for each, whether a step is still scheduled. With an index on the
enrolment and another on (status, due_at), PostgreSQL combined both and read every scheduled step once per
enrolment: 120 ms for a job of 500 with 20k steps waiting, growing with the backlog. One index on
(enrolment_id, status) answers each question with one probe, and serves the enrolment look-ups the
single-column index served.

Revision ID: 0007_step_enrolment_status
Revises: 0003_cadences
"""

from __future__ import annotations

from alembic import op

revision = "0007_step_enrolment_status"
down_revision = "0003_cadences"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_cadence_steps_enrolment_status", "cadence_steps", ["enrolment_id", "status"], unique=False)
    op.drop_index("ix_cadence_steps_enrolment_id", table_name="cadence_steps")


def downgrade() -> None:
    op.create_index("ix_cadence_steps_enrolment_id", "cadence_steps", ["enrolment_id"], unique=False)
    op.drop_index("ix_cadence_steps_enrolment_status", table_name="cadence_steps")
