"""agent loop: voicemails and used click-to-call links

Revision ID: 0004_agent_loop
Revises: 0001
Create Date: 2026-11-24 09:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gateway.database

revision = '0004_agent_loop'
down_revision = '0001'
branch_labels = ('agent_loop',)
depends_on = None


def upgrade() -> None:
    op.create_table('voicemails',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('call_id', sa.Integer(), nullable=False),
    sa.Column('lead_id', sa.Integer(), nullable=True),
    sa.Column('recording_sid', sa.String(length=64), nullable=True),
    sa.Column('recording_url', sa.Text(), nullable=True),
    sa.Column('duration', sa.Integer(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('error_code', sa.Integer(), nullable=True),
    sa.Column('transcription_sid', sa.String(length=64), nullable=True),
    sa.Column('transcription_status', sa.String(length=16), nullable=True),
    sa.Column('transcript', sa.Text(), nullable=True),
    sa.Column('department_hint', sa.String(length=32), nullable=True),
    sa.Column('intents', sa.JSON(), nullable=False),
    sa.Column('time_frames', sa.JSON(), nullable=False),
    sa.Column('transcript_handled_at', gateway.database.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', gateway.database.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', gateway.database.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['call_id'], ['calls.id'], name=op.f('fk_voicemails_call_id_calls')),
    sa.ForeignKeyConstraint(['lead_id'], ['leads.id'], name=op.f('fk_voicemails_lead_id_leads')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_voicemails')),
    sa.UniqueConstraint('call_id', name=op.f('uq_voicemails_call_id')),
    sa.UniqueConstraint('recording_sid', name=op.f('uq_voicemails_recording_sid')),
    sa.UniqueConstraint('transcription_sid', name=op.f('uq_voicemails_transcription_sid'))
    )
    op.create_index(op.f('ix_voicemails_lead_id'), 'voicemails', ['lead_id'], unique=False)
    op.create_table('click_to_call_uses',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('nonce', sa.String(length=64), nullable=False),
    sa.Column('lead_id', sa.Integer(), nullable=False),
    sa.Column('agent_id', sa.Integer(), nullable=False),
    sa.Column('call_id', sa.Integer(), nullable=True),
    sa.Column('used_at', gateway.database.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['agent_id'], ['agents.id'], name=op.f('fk_click_to_call_uses_agent_id_agents')),
    sa.ForeignKeyConstraint(['call_id'], ['calls.id'], name=op.f('fk_click_to_call_uses_call_id_calls')),
    sa.ForeignKeyConstraint(['lead_id'], ['leads.id'], name=op.f('fk_click_to_call_uses_lead_id_leads')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_click_to_call_uses')),
    sa.UniqueConstraint('nonce', name=op.f('uq_click_to_call_uses_nonce'))
    )


def downgrade() -> None:
    op.drop_table('click_to_call_uses')
    op.drop_index(op.f('ix_voicemails_lead_id'), table_name='voicemails')
    op.drop_table('voicemails')
