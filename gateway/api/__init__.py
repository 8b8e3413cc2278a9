"""The REST API under /api/v1: bearer keys scoped to stores, JSON errors, cursors."""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Blueprint, Flask, Response, g, jsonify, request

from gateway import runtime, web
from gateway.api.keys import find_key, store_ids
from gateway.database import begin_reading
from gateway.web import MAX_ID, ApiError

blueprint = Blueprint("api", __name__, url_prefix="/api/v1")

DEFAULT_LIMIT = 50
MAX_LIMIT = 200

__all__ = ["MAX_ID", "blueprint"]


def init_app(app: Flask) -> None:
    """Every module of this package adds its routes to `blueprint` when imported; then register it."""
    import importlib
    import pkgutil

    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    app.register_blueprint(blueprint)


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
    # The key check only reads: it waits for no writer, whatever the method (on SQLite a POST's own
    # writes take the write lock once, after it, instead of twice).
    begin_reading(session)
    key = find_key(session, token.strip())
    if key is None:
        # Failures are counted per address only for unknown keys: a key is 256 random bits, so the
        # limit is there to keep scanners off the database, not to guard a key that was guessed; a
        # client with a good key is served even from an address a scanner shares.
        address = (request.remote_addr or "unknown")[:64]
        moment = runtime.current().clock.now()
        try:
            web.check_failures(session, address, ("api_key",), FAILED_KEYS_PER_ADDRESS, moment)
        except web.TooManyAttempts as limit:
            raise ApiError(
                429, "too_many_failed_keys", "Too many unknown API keys from this address; wait and try again.",
                retry_after=limit.retry_after,
            ) from None
        session.rollback()  # the failure is written in a transaction of its own
        web.record_failure(session, address, "api_key", moment)
        session.commit()
        raise ApiError(401, "unauthorized", "The API key is unknown or revoked.")
    g.api_key = key
    g.store_ids = store_ids(session, key)
    if request.method not in ("GET", "HEAD"):
        # The request writes: its transaction begins as a writer. The key (columns only, all loaded) is
        # kept as read, not read again.
        session.expunge(key)
        session.rollback()
    limiter = rate_limiter()
    if limiter is not None:
        limiter(key.prefix)


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


# Query parameters, cursors and JSON bodies are read through these helpers (over gateway/web.py), so
# an endpoint gets the bounds and the 400s without writing them.


def limit_arg() -> int:
    raw = request.args.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    try:
        return web.whole_number(raw, low=1, high=MAX_LIMIT, name="limit")
    except ValueError:
        raise ApiError(400, "invalid_limit", f"limit must be a whole number from 1 to {MAX_LIMIT}.") from None


def id_arg(name: str) -> int | None:
    """A row id from the query (`lead=`), None when absent; 400 `invalid_<name>` when it is no id."""
    raw = request.args.get(name)
    if raw is None:
        return None
    try:
        return web.row_id(raw, name=name)
    except ValueError:
        raise ApiError(400, f"invalid_{name}", f"{name} must be a {name} id.") from None


def time_arg(name: str) -> datetime | None:
    """An ISO 8601 time with offset from the query, as UTC; None when absent."""
    raw = request.args.get(name)
    if raw is None:
        return None
    try:
        return web.instant(raw, name=name)
    except ValueError as error:
        raise ApiError(400, f"invalid_{name}", f"{error}.") from None


def json_body(*, optional: bool = False) -> dict[str, Any]:
    """The request's JSON object, bounded in size and depth. `optional`: no body at all is {}."""
    if optional and not request.content_length and not request.data:
        return {}
    if (request.content_length or 0) > web.MAX_JSON_BYTES:
        raise ApiError(413, "body_too_large", f"A JSON body is at most {web.MAX_JSON_BYTES} bytes.")
    if not request.is_json:
        raise ApiError(400, "invalid_body", "Send a JSON object with Content-Type: application/json.")
    try:
        value = web.json_document(request.get_data(cache=True))
    except ValueError as error:
        raise ApiError(400, "invalid_json", f"The body is not usable JSON: {error}.") from None
    if not isinstance(value, dict):
        raise ApiError(400, "invalid_body", "Send a JSON object with Content-Type: application/json.")
    return value


# Cursors: a row id ("1234"), or a settling time in Unix microseconds and a row id ("1764...-1234").
# Any string of that shape is a place in the list, so the OpenAPI document can describe it exactly;
# an id beyond any row (MAX_ID) is the end of the list. The base64 JSON cursors given out before are
# still read.
_ID_CURSOR = re.compile(r"[0-9]{1,10}")
_TIME_CURSOR = re.compile(r"([0-9]{1,17})-([0-9]{1,10})")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def encode_cursor(values: dict[str, Any]) -> str:
    if set(values) == {"id"}:
        return str(values["id"])
    if set(values) == {"at", "id"} and isinstance(values["at"], datetime):
        micros = (values["at"] - _EPOCH) // timedelta(microseconds=1)
        return f"{micros}-{values['id']}"
    return base64.urlsafe_b64encode(json.dumps(values, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(raw: str | None) -> dict[str, Any] | None:
    """The place a cursor names; None (the first page) for none at all or an empty one."""
    if not raw:
        return None
    if _ID_CURSOR.fullmatch(raw):
        return {"id": min(int(raw), MAX_ID)}
    timed = _TIME_CURSOR.fullmatch(raw)
    if timed:
        at = _EPOCH + timedelta(microseconds=int(timed.group(1)))
        return {"at": at.isoformat(), "id": min(int(timed.group(2)), MAX_ID)}
    try:
        padded = raw + "=" * (-len(raw) % 4)
        value = web.json_document(base64.urlsafe_b64decode(padded.encode()), max_bytes=4096)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise ApiError(400, "invalid_cursor", "The cursor is not one this API gave out.") from None
    if not isinstance(value, dict):
        raise ApiError(400, "invalid_cursor", "The cursor is not one this API gave out.")
    return value


def cursor_id(cursor: dict[str, Any]) -> int:
    """The row id a cursor points after; a tampered cursor is a 400, not a 500."""
    value: int = cursor.get("id", -1)
    if not web.is_row_id(value):
        raise ApiError(400, "invalid_cursor", "The cursor is not one this API gave out.")
    return value


def cursor_time(cursor: dict[str, Any], name: str = "at") -> datetime:
    """The instant a cursor points after, as UTC; one no database can store is a 400."""
    try:
        return web.instant(cursor.get(name), name="the cursor's time")  # type: ignore[arg-type]
    except ValueError:
        raise ApiError(400, "invalid_cursor", "The cursor is not one this API gave out.") from None


def page(items: list[dict[str, Any]], next_cursor: str | None) -> Response:
    return jsonify({"items": items, "next_cursor": next_cursor})


def now() -> datetime:
    return runtime.current().clock.now()
