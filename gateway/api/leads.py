"""Leads and tasks: lists with filters and cursors, a lead with its timeline."""

from __future__ import annotations

import re
from typing import Any

from flask import Response, jsonify, request
from sqlalchemy import Select, select

from gateway import serialize as out
from gateway import web
from gateway.api import (
    blueprint,
    cursor_id,
    decode_cursor,
    encode_cursor,
    id_arg,
    limit_arg,
    page,
    require_store,
    visible_store_ids,
)
from gateway.models import (
    Agent,
    Call,
    Contact,
    Lead,
    LeadEvent,
    LeadStatus,
    Message,
    Store,
    Task,
    TaskStatus,
)
from gateway.phones import InvalidPhone, to_e164
from gateway.web import ApiError

# What a phone filter may hold (as the OpenAPI document says): digits and the marks numbers are written with.
PHONE_FILTER = re.compile(r"[0-9+ ().\-]{1,32}")


def _scoped(query: Select[Any], store_column: Any) -> Select[Any]:
    ids = visible_store_ids()
    return query if ids is None else query.where(store_column.in_(ids))


def load_lead(lead_id: int) -> Lead:
    lead = web.session().get(Lead, lead_id)
    if lead is None:
        raise ApiError(404, "not_found", f"No lead {lead_id}.")
    require_store(lead.store_id)
    return lead


@blueprint.get("/leads")
def list_leads() -> Response:
    query = _scoped(select(Lead), Lead.store_id)
    phone = request.args.get("phone")
    if phone is not None:
        if not PHONE_FILTER.fullmatch(phone):
            raise ApiError(400, "invalid_phone", f"phone {phone!r} is not a phone number.")
        try:
            e164 = to_e164(phone)
        except InvalidPhone:
            e164 = phone  # written like a number but none: no contact has it, so no lead matches
        query = query.join(Contact, Contact.id == Lead.contact_id).where(Contact.phone == e164)
    store_key = request.args.get("store")
    if store_key:
        query = query.join(Store, Store.id == Lead.store_id).where(Store.key == store_key)
    status = request.args.get("status")
    if status is not None:
        if status not in {s.value for s in LeadStatus}:
            allowed = ", ".join(s.value for s in LeadStatus)
            raise ApiError(400, "invalid_status", f"status must be one of: {allowed}.")
        query = query.where(Lead.status == status)
    owner = request.args.get("owner")
    if owner:
        query = query.join(Agent, Agent.id == Lead.owner_id).where(Agent.key == owner)
    cursor = decode_cursor(request.args.get("cursor"))
    if cursor is not None:
        query = query.where(Lead.id < cursor_id(cursor))
    limit = limit_arg()
    rows = list(web.session().scalars(query.order_by(Lead.id.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor({"id": rows[-1].id}) if more and rows else None
    return page([out.lead(r) for r in rows], next_cursor)


@blueprint.get("/leads/<int:lead_id>")
def get_lead(lead_id: int) -> Response:
    lead = load_lead(lead_id)
    session = web.session()
    body = out.lead(lead)
    calls = list(session.scalars(select(Call).where(Call.lead_id == lead.id).order_by(Call.id)))
    tasks = list(session.scalars(select(Task).where(Task.lead_id == lead.id).order_by(Task.id)))
    messages = list(
        session.scalars(select(Message).where(Message.lead_id == lead.id).order_by(Message.id))
    )
    events = list(
        session.scalars(select(LeadEvent).where(LeadEvent.lead_id == lead.id).order_by(LeadEvent.id))
    )
    body["calls"] = [out.call(c) for c in calls]
    body["tasks"] = [out.task(t) for t in tasks]
    body["messages"] = [out.message(m) for m in messages]
    timeline: list[dict[str, Any]] = []
    timeline += [{"type": "call", "at": c["started_at"], "call": c} for c in body["calls"]]
    timeline += [{"type": "message", "at": m["created_at"], "message": m} for m in body["messages"]]
    timeline += [{"type": "task", "at": t["created_at"], "task": t} for t in body["tasks"]]
    timeline += [{"type": "event", "at": e.at.isoformat(), "event": out.event(e)} for e in events]
    timeline.sort(key=lambda item: item["at"] or "")
    body["timeline"] = timeline
    return jsonify(body)


@blueprint.get("/tasks")
def list_tasks() -> Response:
    query = _scoped(select(Task).join(Lead, Lead.id == Task.lead_id), Lead.store_id)
    status = request.args.get("status")
    if status is not None:
        if status not in {s.value for s in TaskStatus}:
            allowed = ", ".join(s.value for s in TaskStatus)
            raise ApiError(400, "invalid_status", f"status must be one of: {allowed}.")
        query = query.where(Task.status == status)
    agent = request.args.get("agent")
    if agent:
        query = query.join(Agent, Agent.id == Task.owner_id).where(Agent.key == agent)
    lead_id = id_arg("lead")
    if lead_id is not None:
        query = query.where(Task.lead_id == lead_id)
    cursor = decode_cursor(request.args.get("cursor"))
    if cursor is not None:
        query = query.where(Task.id > cursor_id(cursor))
    limit = limit_arg()
    rows = list(web.session().scalars(query.order_by(Task.id).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor({"id": rows[-1].id}) if more and rows else None
    return page([out.task(r) for r in rows], next_cursor)
