"""The app factory: settings, database, Redis, provider and clock in; every package wired together."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable

from flask import Flask, Request, Response, request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from redis import Redis
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

from gateway import runtime, web
from gateway.clock import Clock, SystemClock
from gateway.database import Database
from gateway.jobs import SESSION_QUEUE_KEY, make_queue
from gateway.logs import configure_logging
from gateway.provider import Provider, make_provider
from gateway.settings import Settings, load_settings

log = logging.getLogger(__name__)

# The packages `create_app` wires in, in order. Each has `init_app(app)`: blueprints, event
# subscribers, sweepers. The core never imports them anywhere else.
FEATURES = (
    "gateway.messaging",
    "gateway.api",
    "webhooks",
)
OPTIONAL_FEATURES = (
    "gateway.sms",
    "voicemail",
    "cadences",
    "gateway.alerts",
    "gateway.crm",
    "gateway.agent_loop",
    "gateway.dashboard",
)

MAX_REQUEST_BYTES = 1024 * 1024


def redis_url(settings: Settings) -> str:
    return settings.redis_url or f"redis://127.0.0.1:{settings.embedded_redis_port}/0"


def create_app(
    settings: Settings | None = None,
    *,
    clock: Clock | None = None,
    provider: Provider | None = None,
    redis: Redis | None = None,
) -> Flask:
    settings = settings or load_settings()
    configure_logging(json_logs=not settings.testing)
    app = Flask(__name__, instance_path=str(settings.instance_dir))
    app.config.update(SECRET_KEY=settings.secret_key, MAX_CONTENT_LENGTH=MAX_REQUEST_BYTES)
    app.session_interface = PageSessions()
    app.json.sort_keys = False  # type: ignore[attr-defined]

    database = Database(settings.database_url)
    redis = redis or Redis.from_url(
        redis_url(settings), socket_connect_timeout=0.5, socket_timeout=5, health_check_interval=30
    )
    database.sessions.configure(info={SESSION_QUEUE_KEY: make_queue(redis)})
    app.extensions[runtime.EXTENSION] = runtime.Runtime(
        settings=settings,
        database=database,
        provider=provider or make_provider(settings),
        clock=clock or SystemClock(),
        redis=redis,
    )
    app.teardown_appcontext(web.close_session)
    _register_errors(app)

    for name in FEATURES:
        importlib.import_module(name).init_app(app)
    for name in OPTIONAL_FEATURES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            if error.name != name:
                raise
            continue
        init = getattr(module, "init_app", None)
        if init is not None:  # a package directory without code yet has nothing to wire
            init(app)

    @app.get("/healthz")
    def health() -> Response:
        return Response("ok\n", mimetype="text/plain")

    return app


class PageSessions(SecureCookieSessionInterface):
    """Cookie sessions only where a person signs in (the dashboard): the provider's webhooks and the API
    never carry one, and opening a signed session costs every webhook a few percent of its time."""

    stateless_prefixes = ("/webhooks/", "/api/")

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if request.path.startswith(self.stateless_prefixes):
            return self.make_null_session(app)
        return super().open_session(app, request)


def on_shutdown(app: Flask, close: Callable[[], None]) -> None:
    """Something to close when the app shuts down (connections held outside the engine's pool)."""
    app.extensions.setdefault("gateway.closers", []).append(close)


def shutdown(app: Flask) -> None:
    for close in app.extensions.pop("gateway.closers", []):
        close()
    runtime_of(app).database.dispose()


def runtime_of(app: Flask) -> runtime.Runtime:
    current: runtime.Runtime = app.extensions[runtime.EXTENSION]
    return current


def _register_errors(app: Flask) -> None:
    """JSON errors with codes; never a stack trace to a client."""

    @app.errorhandler(web.ApiError)
    def api_error(error: web.ApiError) -> Response:
        response = web.json_error(error.status, error.code, error.message, **error.extra)
        if error.status == 429 and "retry_after" in error.extra:
            response.headers["Retry-After"] = str(error.extra["retry_after"])
        return response

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        code = (error.name or "error").lower().replace(" ", "_")
        return web.json_error(error.code or 500, code, error.description or error.name)

    @app.errorhandler(SQLAlchemyError)
    def database_error(error: SQLAlchemyError) -> Response:
        log.exception("database error on %s %s", request.method, request.path)
        return web.json_error(503, "database_unavailable", "The database is unavailable; try again.")

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return web.json_error(500, "internal_error", "Something went wrong on our side; it was logged.")
