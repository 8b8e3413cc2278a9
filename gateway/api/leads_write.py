"""PATCH /leads/{id} (status, owner, appointment) and POST /tasks/{id}/complete."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Response, g, jsonify
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from gateway import serialize as out
from gateway import web
from gateway.api import blueprint, json_body, now, require_store
from gateway.api.leads import load_lead
from gateway.leads import UNCHANGED, OpenLeadExists, update_lead
from gateway.leads import complete_task as complete_task_row
from gateway.models import Agent, LeadStatus, Task, TaskStatus
from gateway.web import ApiError

PATCH_FIELDS = ("status", "owner", "appointment_at")


def parse_appointment(value: Any) -> datetime | None:
    """ISO 8601 with an offset (or Z), or null to clear it. Naive times are refused: whose 3 pm?"""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(400, "invalid_appointment_at", "appointment_at must be an ISO 8601 string or null.")
    try:
        return web.instant(value, name="appointment_at")
    except ValueError as error:
        raise ApiError(400, "invalid_appointment_at", f"{error}.") from None


@blueprint.patch("/leads/<int:lead_id>")
def patch_lead(lead_id: int) -> Response:
    body = json_body()
    unknown = sorted(set(body) - set(PATCH_FIELDS))
    if unknown:
        raise ApiError(
            400, "unknown_field", f"Cannot change {', '.join(unknown)}; fields: {', '.join(PATCH_FIELDS)}."
        )
    if not body:
        raise ApiError(400, "empty_patch", f"Send at least one of: {', '.join(PATCH_FIELDS)}.")
    lead = load_lead(lead_id)
    session = web.session()
    moment = now()

    # Validate everything before changing anything, so a bad field leaves the lead untouched.
    status: LeadStatus | None = None
    if "status" in body:
        if not isinstance(body["status"], str) or body["status"] not in {s.value for s in LeadStatus}:
            allowed = ", ".join(s.value for s in LeadStatus)
            raise ApiError(400, "invalid_status", f"status must be one of: {allowed}.")
        status = LeadStatus(body["status"])
    owner: Agent | None = None
    if "owner" in body:
        key = body["owner"]
        if not isinstance(key, str) or not key.strip():
            raise ApiError(400, "invalid_owner", "owner must be an agent key.")
        owner = session.scalar(select(Agent).where(Agent.key == key.strip()))
        # A well-formed key names an agent or not (404, as for POST /leads/{id}/call); one who left is a
        # conflict with the agent's state (409).
        if owner is None or owner.store_id != lead.store_id:
            raise ApiError(404, "unknown_agent", f"No agent {key!r} at the lead's store.")
        if not owner.active:
            raise ApiError(409, "inactive_agent", f"Agent {key!r} is no longer active.")
    appointment_given = "appointment_at" in body
    appointment = parse_appointment(body.get("appointment_at"))

    try:
        update_lead(
            session, lead, moment, _actor(), status=status, owner=owner,
            appointment=appointment if appointment_given else UNCHANGED,
        )
    except OpenLeadExists as conflict:
        what = f"Lead {conflict.other_id} is" if conflict.other_id else "Another lead for this phone"
        raise ApiError(409, "open_lead_exists", f"{what} open at this store; update that one.") from None
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise ApiError(
            409, "open_lead_exists", "This phone already has an open lead at this store; update that one."
        ) from None
    return jsonify(out.lead(lead))


def _actor() -> str:
    key = getattr(g, "api_key", None)
    return f"api:{key.prefix}" if key is not None else "api"


@blueprint.post("/tasks/<int:task_id>/complete")
def complete_task(task_id: int) -> Response:
    session = web.session()
    task = session.get(Task, task_id)
    if task is None:
        raise ApiError(404, "not_found", f"No task {task_id}.")
    require_store(task.lead.store_id)
    if task.status == TaskStatus.CANCELLED.value:
        raise ApiError(409, "task_cancelled", "The task was cancelled (its lead was closed).")
    moment = now()
    complete_task_row(session, task, _actor(), moment)
    session.commit()
    return jsonify(out.task(task))
