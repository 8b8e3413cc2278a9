"""cadences: enrolments and their scheduled steps

Revision ID: 0003_cadences
Revises: 0001
Create Date: 2026-11-23 19:54:20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gateway.database

revision = '0003_cadences'
down_revision = '0001'
branch_labels = ('cadences',)
depends_on = None


def upgrade() -> None:
    op.create_table('cadence_enrolments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('lead_id', sa.Integer(), nullable=False),
    sa.Column('contact_id', sa.Integer(), nullable=False),
    sa.Column('cadence_key', sa.String(length=64), nullable=False),
    sa.Column('trigger', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('active_key', sa.String(length=100), nullable=True),
    sa.Column('stop_reason', sa.String(length=32), nullable=True),
    sa.Column('stop_detail', sa.Text(), nullable=True),
    sa.Column('from_number', sa.String(length=32), nullable=False),
    sa.Column('started_at', gateway.database.UTCDateTime(timezone=True), nullable=False),
    sa.Column('anchor', gateway.database.UTCDateTime(timezone=True), nullable=True),
    sa.Column('stopped_at', gateway.database.UTCDateTime(timezone=True), nullable=True),
    sa.Column('completed_at', gateway.database.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', gateway.database.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['contact_id'], ['contacts.id'], name=op.f('fk_cadence_enrolments_contact_id_contacts')),
    sa.ForeignKeyConstraint(['lead_id'], ['leads.id'], name=op.f('fk_cadence_enrolments_lead_id_leads')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_cadence_enrolments')),
    sa.UniqueConstraint('active_key', name=op.f('uq_cadence_enrolments_active_key'))
    )
    with op.batch_alter_table('cadence_enrolments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_cadence_enrolments_contact_id'), ['contact_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_cadence_enrolments_lead_id'), ['lead_id'], unique=False)

    op.create_table('cadence_steps',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('enrolment_id', sa.Integer(), nullable=False),
    sa.Column('step_index', sa.Integer(), nullable=False),
    sa.Column('relative_to', sa.String(length=16), nullable=False),
    sa.Column('offset_seconds', sa.Integer(), nullable=False),
    sa.Column('template', sa.Text(), nullable=False),
    sa.Column('due_at', gateway.database.UTCDateTime(timezone=True), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('skip_reason', sa.String(length=32), nullable=True),
    sa.Column('message_id', sa.Integer(), nullable=True),
    sa.Column('enqueued_at', gateway.database.UTCDateTime(timezone=True), nullable=True),
    sa.Column('claimed_at', gateway.database.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', gateway.database.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['enrolment_id'], ['cadence_enrolments.id'], name=op.f('fk_cadence_steps_enrolment_id_cadence_enrolments')),
    sa.ForeignKeyConstraint(['message_id'], ['messages.id'], name=op.f('fk_cadence_steps_message_id_messages')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_cadence_steps')),
    sa.UniqueConstraint('enrolment_id', 'step_index', name=op.f('uq_cadence_steps_enrolment_id_step_index'))
    )
    with op.batch_alter_table('cadence_steps', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_cadence_steps_enrolment_id'), ['enrolment_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_cadence_steps_message_id'), ['message_id'], unique=False)
        batch_op.create_index('ix_cadence_steps_status_due_at', ['status', 'due_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('cadence_steps', schema=None) as batch_op:
        batch_op.drop_index('ix_cadence_steps_status_due_at')
        batch_op.drop_index(batch_op.f('ix_cadence_steps_message_id'))
        batch_op.drop_index(batch_op.f('ix_cadence_steps_enrolment_id'))
    op.drop_table('cadence_steps')
    with op.batch_alter_table('cadence_enrolments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_cadence_enrolments_lead_id'))
        batch_op.drop_index(batch_op.f('ix_cadence_enrolments_contact_id'))
    op.drop_table('cadence_enrolments')
