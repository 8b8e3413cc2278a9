"""What every workspace page shares: rendering with the viewer and CSRF token, error pages (404, 403, 429,
500 as pages, not JSON), the CSRF check on every form, security headers, and the SVG charts."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any
from urllib.parse import quote

from flask import Flask, Request, Response, g, redirect, render_template, request
from werkzeug.exceptions import HTTPException

from gateway import runtime
from gateway.dashboard import auth, present
from gateway.dashboard.present import FILTERS, iso_local, local_time, waited

log = logging.getLogger(__name__)

# Paths that are not pages: the API and the provider's webhooks answer JSON or TwiML; a click-to-call
# link's page carries its own single-use secret in the URL.
NOT_PAGES = ("/api/", "/webhooks/", "/healthz", "/readyz", "/metrics")
# Signed links carry their own authority (click-to-call, the one-click unsubscribe a mail provider POSTs).
CSRF_EXEMPT = ("/api/", "/webhooks/", "/c/", "/unsubscribe/")

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self'; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
# Pages of other packages (the click-to-call page) keep their inline style and nothing else.
OTHER_PAGES_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; " \
    "base-uri 'none'; frame-ancestors 'none'"

NOTICES = {
    "empty": "Write something first.",
    "invalid_number": "The customer withheld their number, so they cannot be texted.",
    "no_sender": "This store has no tracked number to text from.",
    "no_owner": "Nobody to ring: the lead has no owner. Pick an owner first.",
    "call_failed": "The call could not be placed right now. Try again in a moment.",
    "calling": "Calling your phone now: answer it and press 1, then we ring the customer.",
    "bad_status": "That is not a status.",
    "bad_owner": "That person is not an active agent of this store.",
    "bad_appointment": "Give the appointment as a date and a time.",
    "open_lead_exists": "This customer already has another open lead at this store: update that one.",
    "saved": "Saved.",
    "task_done": "Task done.",
    "task_not_open": "That task was already done or cancelled.",
    "cadence_stopped": "The automatic texts are stopped.",
    "cadence_none": "There were no automatic texts running.",
}


class SignInNeeded(Exception):
    """The page needs a signed-in person: off to /sign-in, and back afterwards."""


class NotFoundPage(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def zone(name: str) -> Any:
    return present.zone_info(name)


def notice_text(code: str | None) -> str | None:
    return NOTICES.get(code or "")


def _context(values: dict[str, Any]) -> dict[str, Any]:
    now = runtime.current().clock.now()
    zone_name = values.get("zone") or present.DEFAULT_ZONE
    return {
        "viewer": auth.current_viewer() if "viewer" not in values else values["viewer"],
        "csrf_token": auth.csrf_token(),
        "sandbox": runtime.current().settings.sandbox,
        "now": now,
        "when": lambda moment, z=None: local_time(moment, z or zone_name, now),
        "waited": lambda moment: waited(moment, now),
        "iso_local": iso_local,
        "page": None,
        **values,
    }


def render(template: str, **values: Any) -> str:
    return render_template(template, **_context(values))


def render_response(template: str, status: int, **values: Any) -> Response:
    return Response(render(template, **values), status=status, mimetype="text/html")


def error_page(status: int, title: str, message: str) -> Response:
    try:
        body = render("error.html", status=status, title=title, message=message)
    except Exception:  # the error page must not fail too (e.g. the database is down)
        log.exception("error page %s could not be rendered", status)
        body = (
            f"<!doctype html><html lang=en><meta charset=utf-8><title>{status} {title}</title>"
            f"<h1>{title}</h1><p>{message}</p></html>"
        )
    return Response(body, status=status, mimetype="text/html")


def is_page(req: Request) -> bool:
    return not req.path.startswith(NOT_PAGES)


TITLES = {
    400: ("Something is wrong with that request", "Go back and try again."),
    403: ("Not allowed", "This form has expired or was not sent from the workspace. Go back, reload, and try again."),
    404: ("Not found", "There is nothing here. It may have been moved, or it belongs to another store."),
    405: ("Not allowed", "That page cannot be used that way."),
    413: ("Too large", "That was too much to send at once."),
    429: ("Too many tries", "Wait a little and try again."),
    500: ("Something went wrong", "It was logged and we will look at it. Try again in a moment."),
    503: ("Unavailable", "The workspace cannot reach its database right now. Try again in a moment."),
}


def page_for_error(status: int) -> Response:
    title, message = TITLES.get(status, TITLES[500] if status >= 500 else TITLES[400])
    return error_page(status, title, message)


def init_app(app: Flask) -> None:
    app.jinja_env.filters.update(FILTERS)

    @app.before_request
    def check_csrf() -> Response | None:
        if request.method != "POST" or request.path.startswith(CSRF_EXEMPT):
            return None
        if request.url_rule is None or "POST" not in (request.url_rule.methods or ()):
            return None  # no form here to forge: routing answers 404 or 405
        if not auth.csrf_valid():
            return error_page(403, "Not allowed", TITLES[403][1])
        return None

    @app.errorhandler(SignInNeeded)
    def sign_in_needed(_error: SignInNeeded) -> Response:
        target = request.full_path.rstrip("?") if request.method == "GET" else "/"
        return redirect("/sign-in?next=" + quote(target, safe="/"))  # type: ignore[return-value]

    @app.errorhandler(NotFoundPage)
    def not_found_page(error: NotFoundPage) -> Response:
        return error_page(404, "Not found", error.message)

    @app.after_request
    def security_headers(response: Response) -> Response:
        if response.mimetype == "text/html":
            response.headers.setdefault("X-Frame-Options", "DENY")
            response.headers.setdefault("X-Content-Type-Options", "nosniff")
            response.headers.setdefault("Referrer-Policy", "same-origin")
            own = request.blueprint == "dashboard" or g.get("workspace_page") or response.status_code >= 400
            response.headers.setdefault(
                "Content-Security-Policy", CONTENT_SECURITY_POLICY if own else OTHER_PAGES_POLICY
            )
            if request.blueprint == "dashboard" or g.get("workspace_page"):
                response.headers.setdefault("Cache-Control", "no-store")
        elif request.path.startswith("/static/"):
            response.headers.setdefault("X-Content-Type-Options", "nosniff")
        auth.set_csrf_cookie(response)
        return response


def http_error_page(error: HTTPException) -> Response | None:
    """The page for an HTTP error on a page path; None where JSON is the answer (API, webhooks)."""
    if not is_page(request):
        return None
    return page_for_error(error.code or 500)


# --- charts: SVG drawn on the server (no script, no library) -------------------------------------------------


def _bars(values: Sequence[tuple[str, float | None]], height: int = 120, width: int = 600) -> dict[str, Any]:
    top = max([v for _, v in values if v is not None] + [0.0])
    count = max(1, len(values))
    slot = width / count
    bars = []
    for index, (label, value) in enumerate(values):
        h = 0.0 if not top or value is None else (value / top) * (height - 16)
        bar = min(max(1.0, slot * 0.76), 48.0)
        bars.append({
            "x": round(index * slot + (slot - bar) / 2, 1), "w": round(bar, 1),
            "y": round(height - h, 1), "h": round(h, 1), "label": label, "value": value,
        })
    return {"bars": bars, "width": width, "height": height, "top": top,
            "first": values[0][0] if values else "", "last": values[-1][0] if values else ""}


def every_day(days: dict[str, dict[str, Any]], first: date, last: date) -> dict[str, dict[str, Any]]:
    """Every calendar day of the range, a day without leads or calls as zeros, so the axis is the range."""
    empty = {"leads": 0, "sla_met": 0, "sla_measured": 0, "calls": 0, "missed": 0}
    filled: dict[str, dict[str, Any]] = {}
    day = first
    while day <= last and len(filled) <= 400:
        filled[day.isoformat()] = days.get(day.isoformat(), empty)
        day += timedelta(days=1)
    return filled


def charts(days: dict[str, dict[str, Any]]) -> dict[str, Any]:
    def short(day: str) -> str:
        try:
            parsed = datetime.strptime(day, "%Y-%m-%d")  # noqa: DTZ007 - a calendar day, no time
        except ValueError:
            return day
        return f"{parsed.strftime('%b')} {parsed.day}"

    leads = [(short(d), float(v["leads"])) for d, v in days.items()]
    missed = [(short(d), (v["missed"] / v["calls"] * 100) if v["calls"] else None) for d, v in days.items()]
    sla = [
        (short(d), (v["sla_met"] / v["sla_measured"] * 100) if v["sla_measured"] else None) for d, v in days.items()
    ]
    return {"leads": _bars(leads), "missed": _bars(missed), "sla": _bars(sla)}
