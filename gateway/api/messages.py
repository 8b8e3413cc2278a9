"""Texts of a lead: the conversation, and sending one through the send guard.

`POST /leads/{id}/messages` writes the text and asks the guard at once, so the caller learns the
answer now: 201 (pending, the worker sends it in a moment), 202 (pending with `send_after`: quiet
hours or a state's daily cap; the sweep sends it then) or 409 with the guard's code and a sentence a
person understands (opted out, not textable, too long...). The refused text stays in the log. The
worker asks the guard again when it sends, since the customer may text STOP in between.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Response, g, jsonify, request
from sqlalchemy import select

from gateway import serialize as out
from gateway import web
from gateway.api import (
    blueprint,
    cursor_id,
    decode_cursor,
    encode_cursor,
    id_arg,
    json_body,
    limit_arg,
    now,
    page,
    visible_store_ids,
)
from gateway.api.leads import load_lead
from gateway.messaging.replies import ReplyError, reply_to_customer
from gateway.models import Agent, Direction, Lead, Message, MessageStatus
from gateway.web import ApiError

MAX_MEDIA = 10
MEDIA_URL = re.compile(r"https://[!-~]{1,1992}")  # printable ASCII, as the OpenAPI document says
MAX_IDEMPOTENCY_KEY = 64


@blueprint.get("/messages")
def list_messages() -> Response:
    """Texts in the order they were written; `lead=` for one lead's conversation."""
    query = select(Message)
    ids = visible_store_ids()
    if ids is not None:
        query = query.where(Message.store_id.in_(ids))
    lead_arg = id_arg("lead")
    if lead_arg is not None:
        lead = load_lead(lead_arg)
        query = query.where(Message.lead_id == lead.id)
    direction = request.args.get("direction")
    if direction is not None:
        if direction not in {d.value for d in Direction}:
            raise ApiError(400, "invalid_direction", "direction must be inbound or outbound.")
        query = query.where(Message.direction == direction)
    kind = request.args.get("kind")
    if kind:
        query = query.where(Message.kind == kind[:16])
    cursor = decode_cursor(request.args.get("cursor"))
    if cursor is not None:
        query = query.where(Message.id > cursor_id(cursor))
    limit = limit_arg()
    rows = list(web.session().scalars(query.order_by(Message.id).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor({"id": rows[-1].id}) if more and rows else None
    return page([out.message(r) for r in rows], next_cursor)


def _request_body() -> tuple[str, list[str]]:
    data = json_body()
    body = data.get("body", "")
    if not isinstance(body, str):
        raise ApiError(400, "invalid_body", "body must be a string.")
    media = data.get("media_urls", [])
    if not isinstance(media, list) or len(media) > MAX_MEDIA or not all(
        isinstance(url, str) and MEDIA_URL.fullmatch(url) is not None for url in media
    ):
        raise ApiError(400, "invalid_media_urls", f"media_urls must be up to {MAX_MEDIA} https URLs.")
    if not body.strip() and not media:
        raise ApiError(400, "invalid_body", "body is required (or media_urls for a picture).")
    return body.replace("\x00", ""), media


def _agent_arg(lead: Lead) -> Agent | None:
    data = request.get_json(silent=True)
    key = data.get("agent") if isinstance(data, dict) else None
    if key is None:
        return None
    if not isinstance(key, str) or not key.strip() or len(key) > 64:
        raise ApiError(400, "invalid_agent", "agent must be the key of an agent of the lead's store.")
    agent = web.session().scalar(select(Agent).where(Agent.key == key.strip()))
    if agent is None or agent.store_id != lead.store_id or not agent.active:
        raise ApiError(404, "unknown_agent", f"No active agent {key.strip()!r} at the lead's store.")
    return agent


@blueprint.post("/leads/<int:lead_id>/messages")
def send_message(lead_id: int) -> Response:
    """A person's text to the customer: with `agent`, written as that agent's. Unless the guard refuses it,
    it is the lead's human response (first response, reply task done, cadences stopped)."""
    lead = load_lead(lead_id)
    body, media = _request_body()
    agent = _agent_arg(lead)
    idempotency = request.headers.get("Idempotency-Key", "").strip()
    if len(idempotency) > MAX_IDEMPOTENCY_KEY:
        raise ApiError(400, "invalid_idempotency_key", "Idempotency-Key is at most 64 characters.")
    origin = f"api:{g.api_key.id}:{idempotency}" if idempotency else None
    session = web.session()
    try:
        message = reply_to_customer(
            session, lead, body, now(), kind="api", agent=agent, author=f"API key {g.api_key.name}",
            origin=origin, media_urls=media,
        )
    except ReplyError as error:
        raise ApiError(409, error.code, error.message) from None
    session.commit()
    return _answer(message)


def _answer(message: Message) -> Response:
    if message.status == MessageStatus.REFUSED.value:
        return web.json_error(
            409,
            message.refusal_code or "refused",
            message.error_message or "The send guard refused this text.",
            message_id=message.id,
        )
    body: dict[str, Any] = out.message(message)
    response = jsonify(body)
    response.status_code = 202 if message.send_after is not None and message.sent_at is None else 201
    return response
