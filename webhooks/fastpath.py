"""The incoming-call webhook answered below Flask, when nothing about the request is unusual.

Every call to a tracked number waits on this answer, and dealerships' busiest hours arrive all at once.
Flask's request handling (context, routing, form parsing, response object) costs several times what the
answer itself does, so this WSGI middleware answers an ordinary ring directly: a signed form POST with
one value per field, for a number whose route is cached, logged by the same code the Flask view runs
(`webhooks.voice.answer_ring`). Anything else goes to the Flask app untouched, with the body it sent: a missing
or non-matching signature (the 403 and its log line), a malformed payload (400), a number not in the
route cache (loaded there, or the polite unknown-number answer), the database refusing the write (marked
in the environ, so the view goes straight to the failsafe that dials the store's main line) and any
surprise. The fast path never answers differently
from the view; it only answers sooner.
"""

from __future__ import annotations

import hmac
import io
import logging
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl

from flask import Flask
from sqlalchemy.exc import SQLAlchemyError
from twilio.request_validator import RequestValidator

from gateway.calls.hotpath import DatabaseUnavailable
from gateway.calls.routes import route_cache
from gateway.runtime import runtime_of
from webhooks import payloads, voice

log = logging.getLogger(__name__)

PATH = "/webhooks/voice/incoming"
FORM = "application/x-www-form-urlencoded"
# The provider's call webhook is a few hundred bytes; anything much larger is Flask's to judge.
MAX_BODY = 16 * 1024
HEADERS = [("Content-Type", "text/xml; charset=utf-8")]

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class IncomingCallFastPath:
    """WSGI middleware: POST /webhooks/voice/incoming answered without Flask when it is ordinary."""

    def __init__(self, app: Flask, inner: WSGIApp) -> None:
        current = runtime_of(app)
        self.app = app
        self.inner = inner
        self.runtime = current
        self.url = current.settings.public_base_url + PATH
        self.validator = RequestValidator(current.settings.webhook_auth_token)
        self.account_sid = None if current.settings.sandbox else current.settings.twilio_account_sid

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if (
            environ.get("PATH_INFO") != PATH
            or environ.get("REQUEST_METHOD") != "POST"
            or environ.get("QUERY_STRING")
            or not environ.get("CONTENT_TYPE", "").startswith(FORM)
        ):
            return self.inner(environ, start_response)
        length = environ.get("CONTENT_LENGTH") or ""
        if not length.isdigit() or not 0 < int(length) <= MAX_BODY:
            return self.inner(environ, start_response)
        body = environ["wsgi.input"].read(int(length))
        # Whatever happens next, Flask may need to read the body again.
        environ["wsgi.input"] = io.BytesIO(body)
        try:
            answer = self.answer(environ.get("HTTP_X_TWILIO_SIGNATURE", ""), body)
        except (SQLAlchemyError, DatabaseUnavailable):
            environ[voice.DATABASE_FAILED] = True
            answer = None
        except Exception:
            log.exception("incoming-call fast path failed; the full handler answers instead")
            answer = None
        if answer is None:
            return self.inner(environ, start_response)
        start_response("200 OK", [*HEADERS, ("Content-Length", str(len(answer)))])
        return [answer]

    def answer(self, signature: str, body: bytes) -> bytes | None:
        """The TwiML for an ordinary ring, or None for the Flask app to handle the request."""
        if not signature:
            return None
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return None
        pairs = parse_qsl(text, keep_blank_values=True)
        form = dict(pairs)
        if len(form) != len(pairs):
            return None  # a repeated field: the signature covers every value, Flask's check handles it
        if self.account_sid is not None and form.get("AccountSid") not in (None, self.account_sid):
            return None  # another account's request: Flask's check refuses it
        expected = self.validator.compute_signature(self.url, form)
        if not hmac.compare_digest(expected, signature):
            return None
        try:
            call = payloads.incoming_call(form)
        except ValueError:
            return None
        known, route = route_cache(self.app).fresh(call.to)
        if not known or route is None:
            return None
        return voice.answer_ring(self.app, call, route, self.runtime.clock.now()).encode("utf-8")


def init_app(app: Flask) -> None:
    app.wsgi_app = IncomingCallFastPath(app, app.wsgi_app)  # type: ignore[method-assign]
