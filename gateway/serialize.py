"""Rows to JSON: the field names of the external contract."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from gateway.models import Call, Lead, LeadEvent, Message, Task


def iso(moment: datetime | None) -> str | None:
    """A time as ISO 8601 with its offset, as every time the gateway puts in JSON."""
    return moment.isoformat() if moment is not None else None


def lead(row: Lead) -> dict[str, Any]:
    return {
        "id": row.id,
        "code": row.code,
        "phone": row.contact.phone,
        "withheld": row.contact.phone is None,
        "store": row.store.key,
        "department": row.department,
        "source": row.source,
        "tracked_number": row.tracked_number,
        "status": row.status,
        "owner": row.owner.key if row.owner else None,
        "priority": row.priority,
        "priority_reasons": row.priority_reasons or [],
        "appointment_at": iso(row.appointment_at),
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
        "first_response_at": iso(row.first_response_at),
        "leaked": row.leaked_at is not None,
        "leak_reason": row.leak_reason,
        "opted_out": row.contact.opted_out,
        "caller_id_unverified": row.caller_id_unverified,
    }


def task(row: Task) -> dict[str, Any]:
    return {
        "id": row.id,
        "lead_id": row.lead_id,
        "kind": row.kind,
        "owner": row.owner.key if row.owner else None,
        "due_at": iso(row.due_at),
        "status": row.status,
        "note": row.note,
        "escalation_level": row.escalation_level,
        "created_at": iso(row.created_at),
        "completed_at": iso(row.completed_at),
    }


def call(row: Call) -> dict[str, Any]:
    return {
        "id": row.id,
        "sid": row.sid,
        "lead_id": row.lead_id,
        "from": row.from_number,
        "to": row.to_number,
        "direction": row.direction,
        "kind": row.kind,
        "status": row.status,
        "outcome": row.outcome,
        "answered_by": row.answered_by.key if row.answered_by else None,
        "duration": row.duration,
        "voicemail_seconds": row.voicemail_seconds,
        "caller_id_unverified": row.caller_id_unverified,
        "started_at": iso(row.started_at),
        "ended_at": iso(row.ended_at),
        "reconciled": row.reconciled,
    }


def message(row: Message) -> dict[str, Any]:
    return {
        "id": row.id,
        "sid": row.sid,
        "lead_id": row.lead_id,
        "direction": row.direction,
        "kind": row.kind,
        "from": row.from_number,
        "to": row.to_number,
        "body": row.body,
        "segments": row.segments,
        "media_urls": row.media_urls or [],
        "status": row.status,
        "refusal_code": row.refusal_code,
        "error_code": row.error_code,
        "error_message": row.error_message,
        "send_after": iso(row.send_after),
        "created_at": iso(row.created_at),
        "sent_at": iso(row.sent_at),
        "reconciled": row.reconciled,
    }


def event(row: LeadEvent) -> dict[str, Any]:
    return {"kind": row.kind, "text": row.text, "data": row.data or {}, "at": iso(row.at)}
