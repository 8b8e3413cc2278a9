"""What every HTTP face shares: the request's database session and JSON errors."""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, g, jsonify
from flask.json.provider import DefaultJSONProvider
from sqlalchemy.orm import Session
from werkzeug.routing import IntegerConverter, Map

from gateway import inputs, runtime


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
        kwargs.setdefault("max", inputs.MAX_ID)
        super().__init__(map, *args, **kwargs)


class BoundedJSONProvider(DefaultJSONProvider):
    """Every `request.get_json()` parses with gateway/inputs.py's bounds: a body nested 100,000 deep or
    holding NaN is a ValueError (so a 400), never a RecursionError."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return inputs.json_document(s)


def harden(app: Flask) -> None:
    """Before any route is added: bounded ids in URLs, bounded JSON in bodies."""
    app.url_map.converters["int"] = RowIdConverter
    app.json = BoundedJSONProvider(app)
