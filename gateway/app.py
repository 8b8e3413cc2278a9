"""The app factory: settings, database, Redis, provider and clock in; every package wired together.

With the CLI entry (gateway/cli.py) this is the one module of the core that imports the feature packages
and the HTTP layer: it wires them, by name, so a broken import fails at start-up."""

from __future__ import annotations

import logging

from flask import Flask, Request, Response, request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from redis import Redis
from sqlalchemy.exc import (
    DataError,
    DisconnectionError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
    StatementError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

import cadences
import intake
import tracked_numbers
import voicemail
import webhooks
from gateway import agents, api, crm, dashboard, messaging, metrics, reconcile, runtime, web
from gateway.calls import failsafe, hotpath, owners
from gateway.database import Database
from gateway.jobs import SESSION_REDIS_KEY
from gateway.logs import configure_logging
from gateway.provider import Provider, make_provider
from gateway.runtime import Clock, SystemClock
from gateway.settings import Settings, load_settings

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 1024 * 1024


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
    web.harden(app)
    app.json.sort_keys = False  # type: ignore[attr-defined]

    database = Database(settings.database_url)
    redis = redis or Redis.from_url(
        settings.redis_address, socket_connect_timeout=0.5, socket_timeout=5, health_check_interval=30
    )
    database.sessions.configure(info={SESSION_REDIS_KEY: redis})
    app.extensions[runtime.EXTENSION] = runtime.Runtime(
        settings=settings,
        database=database,
        provider=provider or make_provider(settings),
        clock=clock or SystemClock(),
        redis=redis,
    )
    app.teardown_appcontext(web.close_session)
    _register_errors(app)

    # Every package, wired by name and in this order (event subscribers run in the order they connect).
    messaging.init_app(app)
    api.init_app(app)
    owners.init_app(app, hotpath.install(app).read)
    failsafe.init_app(app)
    tracked_numbers.init_app(app)
    webhooks.init_app(app)
    voicemail.init_app(app)
    cadences.init_app(app)
    intake.init_app(app)
    agents.init_app(app)
    crm.init_app(app)
    reconcile.init_app(app)
    dashboard.init_app(app)
    metrics.init_app(app)

    return app


class PageSessions(SecureCookieSessionInterface):
    """Cookie sessions only where a person signs in (the dashboard): the provider's webhooks and the API
    never carry one, and opening a signed session costs every webhook a few percent of its time."""

    stateless_prefixes = ("/webhooks/", "/api/")

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if request.path.startswith(self.stateless_prefixes):
            return self.make_null_session(app)
        return super().open_session(app, request)


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
        if dashboard.is_page(request):  # a person's browser gets a page, the API and webhooks JSON
            return dashboard.page_for_error(error.code or 500)
        code = (error.name or "error").lower().replace(" ", "_")
        response = web.json_error(error.code or 500, code, error.description or error.name)
        for name, value in error.get_headers():  # Allow on a 405, Retry-After, WWW-Authenticate
            if name.lower() not in {"content-type", "content-length"}:
                response.headers[name] = value
        return response

    @app.errorhandler(SQLAlchemyError)
    def database_error(error: SQLAlchemyError) -> Response:
        # Only a database that cannot be reached (or is busy) says so; a value it refused is the client's.
        if isinstance(error, OperationalError | InterfaceError | DisconnectionError | PoolTimeout):
            log.exception("database unavailable on %s %s", request.method, request.path)
            if dashboard.is_page(request):
                return dashboard.page_for_error(503)
            return web.json_error(503, "database_unavailable", "The database is unavailable; try again.")
        if isinstance(error, DataError) or (
            isinstance(error, StatementError) and isinstance(error.orig, OverflowError | ValueError)
        ):
            log.warning(
                "value refused by the database on %s %s: %s", request.method, request.path, type(error.orig).__name__
            )
            return web.json_error(400, "invalid_value", "A value in the request is out of range.")
        log.exception("unexpected database error on %s %s", request.method, request.path)
        return web.json_error(500, "internal_error", "Something went wrong on our side; it was logged.")

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.path)
        if dashboard.is_page(request):
            return dashboard.page_for_error(500)
        return web.json_error(500, "internal_error", "Something went wrong on our side; it was logged.")
