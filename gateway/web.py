"""What every HTTP face shares: the request's database session, JSON errors, untrusted input parsed in
one place per kind, and per-address limits on failed attempts."""

from __future__ import annotations

import json
import math
import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Flask, Response, g, jsonify
from flask.json.provider import DefaultJSONProvider
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session
from werkzeug.routing import IntegerConverter, Map

from gateway import runtime
from gateway.models import SignInFailure


class ApiError(Exception):
    """An error a client caused or must know about; becomes {"error": {"code", "message"}}."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra


def session() -> Session:
    """The request's session, opened on first use and closed when the request ends."""
    if "db_session" not in g:
        g.db_session = runtime.current().database.sessions()
    db_session: Session = g.db_session
    return db_session


def close_session(_exc: BaseException | None = None) -> None:
    db_session: Session | None = g.pop("db_session", None)
    if db_session is not None:
        db_session.close()


def json_error(status: int, code: str, message: str, **extra: Any) -> Response:
    body: dict[str, Any] = {"code": code, "message": message}
    body.update(extra)
    response = jsonify({"error": body})
    response.status_code = status
    return response


class RowIdConverter(IntegerConverter):
    """`<int:...>` in every route: ASCII digits only and at most MAX_ID, else the route does not match
    (404). Werkzeug's own takes any Unicode digit ('١٢' is 12 to int()) and any size (a 500 at bind)."""

    regex = r"[0-9]{1,10}"

    def __init__(self, map: Map, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max", MAX_ID)
        super().__init__(map, *args, **kwargs)


class BoundedJSONProvider(DefaultJSONProvider):
    """Every `request.get_json()` parses with gateway/web.py's bounds: a body nested 100,000 deep or
    holding NaN is a ValueError (so a 400), never a RecursionError."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return json_document(s)


def harden(app: Flask) -> None:
    """Before any route is added: bounded ids in URLs, bounded JSON in bodies."""
    app.url_map.converters["int"] = RowIdConverter
    app.json = BoundedJSONProvider(app)


# --- untrusted values, parsed in one place per kind ------------------------------------------------------

# ids are INTEGER columns, 32-bit on PostgreSQL: a larger id cannot exist, and would not bind.
MAX_ID = 2**31 - 1
# The largest whole number any query parameter or claim may carry (fits a signed 64-bit column).
MAX_INTEGER = 2**63 - 1
# JSON documents: deeper nesting than this is no request a client of ours sends.
MAX_JSON_DEPTH = 32
MAX_JSON_BYTES = 256 * 1024

_DIGITS = re.compile(r"[0-9]{1,19}")
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_JSON_BRACKET = re.compile(rb"[\[\]{}]")


def whole_number(raw: str, *, low: int = 0, high: int = MAX_INTEGER, name: str = "value") -> int:
    """ASCII digits only, within [low, high]: '²' and Arabic-Indic digits pass str.isdigit, and int()
    takes the latter, but no client of ours means them."""
    text = raw.strip()
    if not _DIGITS.fullmatch(text):
        raise ValueError(f"{name} must be a whole number from {low} to {high}")
    value = int(text)
    if not low <= value <= high:
        raise ValueError(f"{name} must be a whole number from {low} to {high}")
    return value


def row_id(raw: str, *, name: str = "id") -> int:
    """A row id from text: a whole number from 1 to MAX_ID."""
    return whole_number(raw, low=1, high=MAX_ID, name=name)


def is_row_id(value: Any) -> bool:
    """A row id from a decoded document (a cursor, a signed claim): an int, not a bool, not a float."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_ID


def instant(text: str, *, name: str = "time") -> datetime:
    """ISO 8601 with an offset (or Z), as UTC. Naive times are refused (whose 3 pm?), and so is any
    instant that has no UTC equivalent a database can store (0001-01-01T00:00:00+05:00)."""
    if not isinstance(text, str) or len(text) > 64:
        raise ValueError(f"{name} must be an ISO 8601 time with an offset")
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name} must be ISO 8601 with an offset, e.g. 2026-11-27T15:30:00-05:00") from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} needs an offset, e.g. 2026-11-27T15:30:00-05:00")
    try:
        return moment.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError(f"{name} is out of range") from None


def epoch_instant(value: Any, *, name: str = "time") -> datetime:
    """Unix seconds from a decoded document, as UTC; years 1970 to 9999 only."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 253402300799:
        raise ValueError(f"{name} is out of range")
    return datetime.fromtimestamp(value, UTC)


def json_depth(data: bytes) -> int:
    """How deeply a JSON text nests, counted without parsing it (so without recursion)."""
    depth = deepest = 0
    for match in _JSON_BRACKET.finditer(_JSON_STRING.sub(b'""', data)):
        if match.group() in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text[:20]} is out of range")
    return value


def json_document(data: str | bytes, *, max_depth: int = MAX_JSON_DEPTH, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Parse JSON with bounds: size, nesting depth, and no NaN or Infinity (a database takes neither)."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if len(raw) > max_bytes:
        raise ValueError(f"the JSON document is larger than {max_bytes} bytes")
    if json_depth(raw) > max_depth:
        raise ValueError(f"the JSON document nests deeper than {max_depth} levels")
    try:
        return json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:  # a bracket count the scan could not see; never a 500
        raise ValueError(f"the JSON document nests deeper than {max_depth} levels") from None


# --- per-address limits on failed attempts ---------------------------------------------------------------

WINDOW = timedelta(minutes=15)


class TooManyAttempts(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__("too many failed attempts")
        self.retry_after = retry_after


def check_failures(session: Session, address: str, kinds: tuple[str, ...], limit: int, now: datetime) -> None:
    """Raise TooManyAttempts when the address failed `limit` times within the window."""
    count, oldest = session.execute(
        select(func.count(), func.min(SignInFailure.at)).where(
            SignInFailure.address == address, SignInFailure.kind.in_(kinds), SignInFailure.at >= now - WINDOW
        )
    ).one()
    if int(count or 0) >= limit:
        release = (oldest or now) + WINDOW
        raise TooManyAttempts(max(1, int((release - now).total_seconds()) + 1))


def record_failure(session: Session, address: str, kind: str, now: datetime) -> None:
    session.add(SignInFailure(address=address[:64], kind=kind, at=now))
    # Old rows are of no use to any limit: drop them now and then, as failures are written.
    if secrets.randbelow(50) == 0:
        session.execute(delete(SignInFailure).where(SignInFailure.at < now - WINDOW))
