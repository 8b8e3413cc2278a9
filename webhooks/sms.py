"""SMS webhooks: a text arrives (SmsUrl, SmsFallbackUrl), a sent text's status changes (StatusCallback).

Thin: check the signature, parse the form into a frozen dataclass, call one service, commit, answer.
Texts are answered with an empty <Response/>: replies go out through the send guard, never in TwiML.

Database down: the text is kept (gateway/calls/failsafe.py: an RQ job when Redis is up, else a file in the
instance spool that the sweep replays) and the provider gets its 200, so no text is lost to an outage.
The replay is the same service, keyed by the MessageSid, with the time the text arrived.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from flask import Blueprint, Flask, Response, request
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from gateway import runtime, web
from gateway.calls import failsafe
from gateway.calls.routes import load_route, route_cache
from gateway.messaging.inbound import MAX_MEDIA, IncomingText, StatusUpdate, receive_text, record_status
from gateway.phones import InvalidPhone, mask, to_e164
from webhooks import payloads
from webhooks.signature import provider_webhook

log = logging.getLogger(__name__)

blueprint = Blueprint("sms", __name__, url_prefix="/webhooks/sms")

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response />'
_MESSAGE_SID = re.compile(r"^(?:SM|MM)[0-9A-Za-z]{8,64}$")
_STATUS = re.compile(r"^[a-z_]{1,32}$")
MAX_URL = 2000


def init_app(app: Flask) -> None:
    app.register_blueprint(blueprint)
    failsafe.register_replayer("text", replay_text)


def empty_twiml() -> Response:
    return Response(EMPTY_TWIML, status=200, mimetype="text/xml")


def _bad_request(error: ValueError) -> Response:
    return web.json_error(400, "bad_request", str(error))


def message_sid(form: Mapping[str, str]) -> str:
    value = (form.get("MessageSid") or form.get("SmsMessageSid") or form.get("SmsSid") or "").strip()
    if not value:
        raise ValueError("MessageSid is missing")
    if not _MESSAGE_SID.match(value):
        raise ValueError("MessageSid is not a message SID")
    return value


def _small_number(form: Mapping[str, str], name: str) -> int | None:
    raw = (form.get(name) or "").strip()
    return int(raw) if raw.isdigit() and len(raw) <= 4 else None


def incoming_text(form: Mapping[str, str]) -> IncomingText:
    raw_from = (form.get("From") or "").strip()
    if not raw_from:
        raise ValueError("From is missing")
    try:
        sender = to_e164(raw_from)
    except InvalidPhone as error:
        raise ValueError(f"From is not a phone number: {error}") from None
    media: list[str] = []
    for index in range(min(_small_number(form, "NumMedia") or 0, MAX_MEDIA)):
        url = (form.get(f"MediaUrl{index}") or "").strip()
        if url.startswith(("https://", "http://")) and len(url) <= MAX_URL:
            media.append(url)
    return IncomingText(
        sid=message_sid(form),
        sender=sender,
        to=payloads.tracked_number(form),
        body=form.get("Body") or "",
        segments=_small_number(form, "NumSegments"),
        media_urls=tuple(media),
    )


def status_update(form: Mapping[str, str]) -> StatusUpdate:
    status = (form.get("MessageStatus") or form.get("SmsStatus") or "").strip().lower()
    if not status:
        raise ValueError("MessageStatus is missing")
    if not _STATUS.match(status):
        raise ValueError("MessageStatus is not a status")
    raw_code = (form.get("ErrorCode") or "").strip()
    if raw_code and not (raw_code.isdigit() and len(raw_code) <= 9):
        raise ValueError("ErrorCode is not a number")
    return StatusUpdate(sid=message_sid(form), status=status, error_code=int(raw_code) if raw_code else None)


def _receive() -> Response:
    try:
        text = incoming_text(request.form)
    except ValueError as error:
        return _bad_request(error)
    current = runtime.current()
    now = current.clock.now()
    session = web.session()
    try:
        route = route_cache().get(session, text.to)
        if route is None:
            log.error("text %s from %s to %s: not a tracked number", text.sid, mask(text.sender), text.to)
            session.rollback()
            return empty_twiml()
        receive_text(session, text, route.origin, now, keyword_replies=current.settings.keyword_replies)
        session.commit()
    except SQLAlchemyError:
        log.exception("database unavailable for text %s: kept for replay", text.sid)
        session.rollback()
        spool_text(text, now)
    return empty_twiml()


# --- the database was down ----------------------------------------------------------------------------------


def _as_data(text: IncomingText) -> dict[str, Any]:
    return {
        "sid": text.sid,
        "sender": text.sender,
        "to": text.to,
        "body": text.body,
        "segments": text.segments,
        "media_urls": list(text.media_urls),
    }


def spool_text(text: IncomingText, now: datetime) -> None:
    """Keep a text the database could not take (gateway/calls/failsafe.py: a job on Redis, else a file)."""
    failsafe.spool("text", _as_data(text), now)


def replay_text(session: Session, data: Mapping[str, Any], received_at: datetime) -> None:
    """Handle a kept text as if it had just arrived; a second replay finds its SID and does nothing."""
    text = IncomingText(
        sid=str(data["sid"]),
        sender=str(data["sender"]),
        to=str(data["to"]),
        body=str(data.get("body") or ""),
        segments=data.get("segments"),
        media_urls=tuple(str(url) for url in data.get("media_urls") or ()),
    )
    route = load_route(session, text.to)
    if route is None:
        log.error("kept text %s to %s: not a tracked number any more", text.sid, text.to)
        return
    keyword_replies = runtime.current().settings.keyword_replies
    receive_text(session, text, route.origin, received_at, keyword_replies=keyword_replies)


@blueprint.post("/incoming")
@provider_webhook
def text_incoming() -> Response:
    """Every text to a tracked number: logged once, joined to a lead, answered by people or the guard."""
    return _receive()


@blueprint.post("/fallback")
@provider_webhook
def text_fallback() -> Response:
    """The provider could not reach /incoming (or it failed): take the text here, once, all the same."""
    log.warning(
        "sms fallback used for %s: ErrorCode=%s",
        (request.form.get("MessageSid") or "?")[:64],
        (request.form.get("ErrorCode") or "-")[:16],
    )
    return _receive()


@blueprint.post("/status")
@provider_webhook
def text_status() -> Response:
    """A sent text moved on (queued, sent, delivered, undelivered, failed): applied once, never back."""
    try:
        update = status_update(request.form)
    except ValueError as error:
        return _bad_request(error)
    session = web.session()
    outcome = record_status(session, update, runtime.current().clock.now())
    session.commit()
    if outcome == "duplicate":
        log.debug("text %s: status %s replayed", update.sid, update.status)
    return Response(status=204)
