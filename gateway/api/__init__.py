"""The REST API under /api/v1: bearer keys scoped to stores, JSON errors, cursors."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from flask import Blueprint, Flask, Response, g, jsonify, request

from gateway import attempts, runtime, web
from gateway.api.keys import find_key, store_ids
from gateway.web import ApiError

blueprint = Blueprint("api", __name__, url_prefix="/api/v1")

DEFAULT_LIMIT = 50
MAX_LIMIT = 200



def init_app(app: Flask) -> None:
    """Every module of this package adds its routes to `blueprint` when imported; then register it."""
    import importlib
    import pkgutil

    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    app.register_blueprint(blueprint)


MAX_ID = 2**31 - 1  # ids are INTEGER (32-bit on PostgreSQL): larger ones cannot exist, and would not bind
FAILED_KEYS_PER_ADDRESS = 30  # unknown bearer keys from one address per 15 minutes, then 429


@blueprint.before_request
def authenticate() -> None:
    if request.endpoint == "api.openapi":
        return
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthorized", "Send 'Authorization: Bearer <api key>'.")
    session = web.session()
    address = (request.remote_addr or "unknown")[:64]
    moment = runtime.current().clock.now()
    try:
        attempts.check_failures(session, address, ("api_key",), FAILED_KEYS_PER_ADDRESS, moment)
    except attempts.TooManyAttempts as limit:
        raise ApiError(
            429, "too_many_failed_keys", "Too many unknown API keys from this address; wait and try again.",
            retry_after=limit.retry_after,
        ) from None
    key = find_key(session, token.strip())
    if key is None:
        attempts.record_failure(session, address, "api_key", moment)
        session.commit()
        raise ApiError(401, "unauthorized", "The API key is unknown or revoked.")
    g.api_key = key
    g.store_ids = store_ids(session, key)
    limiter = rate_limiter()
    if limiter is not None:
        limiter(key.prefix)
    for value in (request.view_args or {}).values():
        if isinstance(value, int) and value > MAX_ID:
            raise ApiError(404, "not_found", "No such resource.")


RateLimiter = Callable[[str], None]
_rate_limiter: RateLimiter | None = None


def set_rate_limiter(limiter: RateLimiter | None) -> None:
    global _rate_limiter
    _rate_limiter = limiter


def rate_limiter() -> RateLimiter | None:
    return _rate_limiter


def visible_store_ids() -> set[int] | None:
    ids: set[int] | None = g.store_ids
    return ids


def require_store(store_id: int | None) -> None:
    """A row of a store the key may not see is reported as not found, never as forbidden."""
    ids = visible_store_ids()
    if ids is not None and store_id not in ids:
        raise ApiError(404, "not_found", "No such resource.")


def limit_arg() -> int:
    raw = request.args.get("limit", str(DEFAULT_LIMIT))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise ApiError(400, "invalid_limit", f"limit must be a whole number from 1 to {MAX_LIMIT}.")
    return int(raw)


def encode_cursor(values: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(raw: str | None) -> dict[str, Any] | None:
    if not raw:
        return None
    try:
        padded = raw + "=" * (-len(raw) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise ApiError(400, "invalid_cursor", "The cursor is not one this API gave out.") from None
    if not isinstance(value, dict):
        raise ApiError(400, "invalid_cursor", "The cursor is not one this API gave out.")
    return value


def cursor_id(cursor: dict[str, Any]) -> int:
    """The row id a cursor points after; a tampered cursor is a 400, not a 500."""
    value = cursor.get("id")
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ID:
        raise ApiError(400, "invalid_cursor", "The cursor is not one this API gave out.")
    return value


def page(items: list[dict[str, Any]], next_cursor: str | None) -> Response:
    return jsonify({"items": items, "next_cursor": next_cursor})


def now() -> datetime:
    return runtime.current().clock.now()
