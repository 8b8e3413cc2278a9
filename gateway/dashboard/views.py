"""The workspace: the pages a dealership's people sign in to (DESIGN.md names the paths).

Server-rendered; every page works with JavaScript off. A small script (static/live.js) polls `/live` every
two seconds and refreshes the page's live regions when something new arrived.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Flask, Response, jsonify, redirect, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy import select

from gateway import kpis as figures_of
from gateway import runtime, web
from gateway.agents import click_to_call
from gateway.dashboard import auth, pages, queries
from gateway.dashboard.auth import TooManyAttempts, Viewer
from gateway.dashboard.present import iso_local, parse_local
from gateway.dashboard.timeline import message_state, timeline
from gateway.leads import UNCHANGED, OpenLeadExists, complete_task, update_lead
from gateway.messaging.replies import ReplyError, reply_to_customer
from gateway.models import Agent, Lead, LeadStatus, Message, Store, Task, TaskStatus

log = logging.getLogger(__name__)

blueprint = Blueprint(
    "dashboard", __name__, template_folder="templates", static_folder="static", static_url_path="/static/workspace"
)


def init_app(app: Flask) -> None:
    app.register_blueprint(blueprint)
    pages.init_app(app)


def _now() -> datetime:
    return runtime.current().clock.now()


def _viewer() -> Viewer:
    viewer = auth.current_viewer()
    if viewer is None:
        raise pages.SignInNeeded()
    return viewer


def _safe_next(target: str | None, default: str) -> str:
    """Only a path on this site: never an open redirect."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else default


# --- signing in and out ------------------------------------------------------------------------------------


@blueprint.get("/sign-in")
def sign_in_page() -> ResponseReturnValue:
    if auth.current_viewer() is not None:
        return redirect(_safe_next(request.args.get("next"), url_for("dashboard.today")))
    return pages.render("sign_in.html", step="phone", next=_safe_next(request.args.get("next"), "/"))


@blueprint.post("/sign-in")
def sign_in() -> ResponseReturnValue:
    session = web.session()
    now = _now()
    address = auth.client_address(request)
    next_path = _safe_next(request.form.get("next"), "/")
    try:
        auth.check_failures(session, address, auth.SIGN_IN_KINDS, auth.FAILURES_PER_ADDRESS, now)
    except TooManyAttempts as limit:
        response = pages.render_response(
            "sign_in.html", 429, step="phone", next=next_path,
            error=f"Too many failed sign-ins from here. Try again in {max(1, limit.retry_after // 60)} min.",
        )
        response.headers["Retry-After"] = str(limit.retry_after)
        return response
    if "key" in request.form:
        return _sign_in_with_key(session, address, now, next_path)
    phone = (request.form.get("phone") or "").strip()[:40]
    code = (request.form.get("code") or "").strip()[:12]
    agent = auth.agent_for_phone(session, phone) if phone else None
    if not code:
        if agent is None:
            auth.record_failure(session, address, "phone", now)
            session.commit()
            return pages.render_response(
                "sign_in.html", 400, step="phone", next=next_path, phone=phone,
                error="That mobile number is not one of the store's people. Check it, or ask your manager.",
            )
        sent = auth.send_code(session, agent, now)
        session.commit()
        notice = (
            "We texted you a six-digit code. It works for 10 minutes."
            if sent else "We already texted you codes a moment ago: use the latest one, or wait a few minutes."
        )
        return pages.render("sign_in.html", step="code", next=next_path, phone=phone, notice=notice)
    if agent is None or not auth.redeem_code(session, agent, code, now):
        auth.record_failure(session, address, "code", now)
        session.commit()
        return pages.render_response(
            "sign_in.html", 400, step="code", next=next_path, phone=phone,
            error="That code is wrong or has expired. Check the latest text, or ask for a new code.",
        )
    token = auth.start_session(session, now, agent=agent)
    session.commit()
    signed_in = redirect(next_path)
    auth.set_session_cookie(signed_in, token)
    return signed_in


def _sign_in_with_key(session: Any, address: str, now: datetime, next_path: str) -> ResponseReturnValue:
    key = auth.find_admin_key(session, (request.form.get("key") or "")[:200])
    if key is None:
        auth.record_failure(session, address, "key", now)
        session.commit()
        return pages.render_response(
            "sign_in.html", 400, step="phone", next=next_path, key_error="That API key is unknown or revoked."
        )
    token = auth.start_session(session, now, api_key=key)
    session.commit()
    response = redirect(next_path)
    auth.set_session_cookie(response, token)
    return response


@blueprint.post("/sign-out")
def sign_out() -> ResponseReturnValue:
    session = web.session()
    auth.end_session(session, request.cookies.get(auth.SESSION_COOKIE), _now())
    session.commit()
    response = redirect(url_for("dashboard.sign_in_page"))
    auth.clear_session_cookie(response)
    return response


# --- today ---------------------------------------------------------------------------------------------------


@blueprint.get("/")
def today() -> str:
    viewer = _viewer()
    session = web.session()
    now = _now()
    zone = queries.zone_of(session, viewer)
    data = queries.today(session, viewer, now, zone)
    return pages.render("today.html", page="today", zone=zone, **data)


@blueprint.get("/live")
def live() -> Response:
    viewer = auth.current_viewer()
    if viewer is None:
        response = jsonify({"signed_in": False})
        response.status_code = 401
        return response
    response = jsonify({"signed_in": True, "state": queries.live_state(web.session(), viewer)})
    response.headers["Cache-Control"] = "no-store"
    return response


# --- leads -------------------------------------------------------------------------------------------------


def _date_arg(name: str, zone: str, end: bool = False) -> datetime | None:
    raw = (request.args.get(name) or "").strip()
    if not raw:
        return None
    moment = parse_local(raw[:10] + "T00:00", zone)
    if moment is None:
        return None
    return moment + timedelta(days=1) if end else moment


def _int_arg(name: str) -> int | None:
    raw = (request.args.get(name) or "").strip()
    if not raw.isascii() or not raw.isdigit() or len(raw) > 10:
        return None
    return int(raw)


@blueprint.get("/leads")
def leads() -> str:
    viewer = _viewer()
    session = web.session()
    zone = queries.zone_of(session, viewer)
    filters = queries.LeadFilters(
        q=(request.args.get("q") or "")[:80],
        store=(request.args.get("store") or "")[:64],
        status=(request.args.get("status") or "")[:32],
        owner=(request.args.get("owner") or "")[:64],
        source=(request.args.get("source") or "")[:100],
        since=_date_arg("from", zone),
        until=_date_arg("to", zone, end=True),
        before=_int_arg("before"),
    )
    rows, next_before = queries.search_leads(session, viewer, filters)
    args = {k: v for k, v in request.args.items() if k != "before" and v}
    return pages.render(
        "leads.html", page="leads", zone=zone, leads=rows, filters=filters, args=args, next_before=next_before,
        stores=queries.stores(session, viewer), agents=queries.agents(session, viewer),
        sources=queries.sources(session, viewer), statuses=[s.value for s in LeadStatus],
        date_from=request.args.get("from", "")[:10], date_to=request.args.get("to", "")[:10],
    )


def _visible_lead(lead_id: int) -> Lead:
    lead = queries.visible_lead(web.session(), _viewer(), lead_id)
    if lead is None:
        raise pages.NotFoundPage("There is no such lead, or it belongs to a store you do not work for.")
    return lead


@blueprint.get("/leads/<int:lead_id>")
def lead_page(lead_id: int) -> str:
    lead = _visible_lead(lead_id)
    session = web.session()
    viewer = _viewer()
    sent = _int_arg("sent")
    sent_message = session.get(Message, sent) if sent else None
    if sent_message is not None and sent_message.lead_id != lead.id:
        sent_message = None
    return pages.render(
        "lead.html",
        page="leads",
        zone=lead.store.timezone,
        lead=lead,
        entries=timeline(session, lead),
        thread=queries.conversation(session, lead, 30),
        tasks=list(session.scalars(select(Task).where(Task.lead_id == lead.id, Task.status == TaskStatus.OPEN.value)
                                   .order_by(Task.due_at))),
        owners=[a for a in queries.agents(session, viewer) if a.store_id == lead.store_id],
        statuses=[s.value for s in LeadStatus],
        appointment_value=iso_local(lead.appointment_at, lead.store.timezone),
        sent_message=sent_message,
        message_state=message_state,
        notice=pages.notice_text(request.args.get("notice")),
    )


@blueprint.post("/leads/<int:lead_id>/reply")
def reply(lead_id: int) -> ResponseReturnValue:
    lead = _visible_lead(lead_id)
    viewer = _viewer()
    session = web.session()
    back = _safe_next(request.form.get("next"), url_for("dashboard.lead_page", lead_id=lead.id))
    body = (request.form.get("body") or "").replace("\x00", "").strip()
    if not body:
        return redirect(_with(back, notice="empty"))
    try:
        message = reply_to_customer(
            session, lead, body[:2000], _now(), kind="workspace", agent=viewer.agent, author=viewer.name,
        )
    except ReplyError as error:
        session.rollback()
        return redirect(_with(back, notice=error.code))
    session.commit()
    return redirect(_with(back, sent=str(message.id)) + "#reply")


def _with(path: str, **params: str) -> str:
    from urllib.parse import urlencode

    base, _, _fragment = path.partition("#")
    joiner = "&" if "?" in base else "?"
    return f"{base}{joiner}{urlencode(params)}"


@blueprint.post("/leads/<int:lead_id>/call")
def call(lead_id: int) -> ResponseReturnValue:
    lead = _visible_lead(lead_id)
    viewer = _viewer()
    session = web.session()
    agent = viewer.agent if viewer.agent is not None and viewer.agent.store_id == lead.store_id else lead.owner
    if agent is None:
        return redirect(_with(url_for("dashboard.lead_page", lead_id=lead.id), notice="no_owner"))
    try:
        click_to_call.call_customer(session, lead, agent, _now())
    except click_to_call.LinkError as error:
        log.info("workspace call for lead %s not placed: %s", lead.id, error.code)
        session.rollback()
        return redirect(_with(url_for("dashboard.lead_page", lead_id=lead.id), notice="call_failed"))
    return redirect(_with(url_for("dashboard.lead_page", lead_id=lead.id), notice="calling"))


@blueprint.post("/leads/<int:lead_id>")
def change_lead(lead_id: int) -> ResponseReturnValue:
    lead = _visible_lead(lead_id)
    viewer = _viewer()
    session = web.session()
    page_url = url_for("dashboard.lead_page", lead_id=lead.id)
    status_raw = (request.form.get("status") or "").strip()
    status = LeadStatus(status_raw) if status_raw in {s.value for s in LeadStatus} else None
    if status_raw and status is None:
        return redirect(_with(page_url, notice="bad_status"))
    owner: Agent | None = None
    owner_key = (request.form.get("owner") or "").strip()
    if owner_key:
        owner = session.scalar(select(Agent).where(Agent.key == owner_key[:64]))
        if owner is None or owner.store_id != lead.store_id or not owner.active:
            return redirect(_with(page_url, notice="bad_owner"))
    appointment: Any = UNCHANGED
    if "appointment_at" in request.form:
        raw = request.form.get("appointment_at", "").strip()
        if raw:
            appointment = parse_local(raw[:16], lead.store.timezone)
            if appointment is None:
                return redirect(_with(page_url, notice="bad_appointment"))
            appointment = appointment.astimezone(_now().tzinfo)
        elif request.form.get("clear_appointment"):
            appointment = None
    by = viewer.agent.key if viewer.agent is not None else f"api:{viewer.api_key.prefix if viewer.api_key else ''}"
    try:
        update_lead(session, lead, _now(), by, status=status, owner=owner, appointment=appointment)
        session.commit()
    except OpenLeadExists:
        session.rollback()
        return redirect(_with(page_url, notice="open_lead_exists"))
    return redirect(_with(page_url, notice="saved"))


# --- inbox -------------------------------------------------------------------------------------------------


@blueprint.get("/inbox")
def inbox() -> str:
    viewer = _viewer()
    session = web.session()
    now = _now()
    zone = queries.zone_of(session, viewer)
    threads = queries.inbox(session, viewer, now)
    chosen_id = _int_arg("lead")
    chosen = queries.visible_lead(session, viewer, chosen_id) if chosen_id else None
    if chosen_id and chosen is None:
        raise pages.NotFoundPage("There is no such conversation, or it belongs to a store you do not work for.")
    if chosen is None and threads and request.args.get("pick") != "none":
        chosen = None  # on a phone the list comes first; a thread opens on its own page
    sent = _int_arg("sent")
    sent_message = session.get(Message, sent) if sent else None
    if sent_message is not None and (chosen is None or sent_message.lead_id != chosen.id):
        sent_message = None
    return pages.render(
        "inbox.html", page="inbox", zone=zone, threads=threads, chosen=chosen,
        thread=queries.conversation(session, chosen) if chosen is not None else [],
        sent_message=sent_message, message_state=message_state,
        notice=pages.notice_text(request.args.get("notice")),
    )


# --- tasks -------------------------------------------------------------------------------------------------


@blueprint.get("/tasks")
def tasks() -> str:
    viewer = _viewer()
    session = web.session()
    now = _now()
    mine_only = request.args.get("show") == "mine"
    return pages.render(
        "tasks.html", page="tasks", zone=queries.zone_of(session, viewer), mine_only=mine_only,
        rows=queries.open_tasks(session, viewer, now, mine_only), done=queries.recently_done(session, viewer, now),
        notice=pages.notice_text(request.args.get("notice")),
    )


@blueprint.post("/tasks/<int:task_id>/complete")
def complete(task_id: int) -> ResponseReturnValue:
    viewer = _viewer()
    session = web.session()
    task = session.get(Task, task_id) if 0 < task_id <= 2**31 - 1 else None
    if task is None or not queries.can_see(viewer, task.lead):
        raise pages.NotFoundPage("There is no such task, or it belongs to a store you do not work for.")
    by = viewer.agent.key if viewer.agent is not None else f"api:{viewer.api_key.prefix if viewer.api_key else ''}"
    done = complete_task(session, task, by, _now())
    session.commit()
    back = _safe_next(request.form.get("next"), url_for("dashboard.tasks"))
    return redirect(_with(back, notice="task_done" if done else "task_not_open"))


# --- calls -------------------------------------------------------------------------------------------------


@blueprint.get("/calls")
def calls() -> str:
    viewer = _viewer()
    session = web.session()
    zone = queries.zone_of(session, viewer)
    before_raw = (request.args.get("before") or "")[:40]
    try:
        before = datetime.fromisoformat(before_raw) if before_raw else None
    except ValueError:
        before = None
    if before is not None and before.tzinfo is None:
        before = None
    filters = queries.CallFilters(
        store=(request.args.get("store") or "")[:64],
        outcome=(request.args.get("outcome") or "")[:32],
        agent=(request.args.get("agent") or "")[:64],
        since=_date_arg("from", zone),
        until=_date_arg("to", zone, end=True),
        voicemail=request.args.get("voicemail") == "1",
        before=before,
    )
    rows, next_before = queries.call_log(session, viewer, filters)
    args = {k: v for k, v in request.args.items() if k != "before" and v}
    store_zones = {s.id: s.timezone for s in session.scalars(select(Store))}
    return pages.render(
        "calls.html", page="calls", zone=zone, rows=rows, filters=filters, args=args,
        next_before=next_before.isoformat() if next_before else None, store_zones=store_zones,
        stores=queries.stores(session, viewer), agents=queries.agents(session, viewer),
        date_from=request.args.get("from", "")[:10], date_to=request.args.get("to", "")[:10],
    )


# --- KPIs --------------------------------------------------------------------------------------------------


@blueprint.get("/kpis")
def kpis() -> str:
    viewer = _viewer()
    session = web.session()
    now = _now()
    zone = queries.zone_of(session, viewer)
    until = _date_arg("to", zone, end=True) or now
    since = _date_arg("from", zone) or until - figures_of.DEFAULT_PERIOD
    error = None
    if since >= until or until - since > figures_of.MAX_PERIOD:
        error = (
            f"Pick a start before the end, at most {figures_of.MAX_PERIOD.days} days apart; "
            "showing the last 30 days."
        )
        until, since = now, now - figures_of.DEFAULT_PERIOD
    ids: set[int] | None = set(viewer.store_ids) if viewer.store_ids is not None else None
    store_key = (request.args.get("store") or "")[:64]
    all_stores = queries.stores(session, viewer)
    if store_key:
        match = [s for s in all_stores if s.key == store_key]
        if not match:
            raise pages.NotFoundPage("There is no such store among yours.")
        ids = {match[0].id}
    offset = int((now.astimezone(pages.zone(zone)).utcoffset() or timedelta()).total_seconds() // 3600)
    summary, figures = figures_of.page_figures(session, ids, since, until, now, zone, offset)
    first_day = since.astimezone(pages.zone(zone)).date()
    last_day = (until - timedelta(seconds=1)).astimezone(pages.zone(zone)).date()
    names = {s.id: s.name for s in all_stores}
    agent_names = {agent_id: name for agent_id, name in session.execute(select(Agent.id, Agent.name))}
    for row in figures["store"]:
        row["label"] = names.get(row["key"], "another store")
    for row in figures["source"]:
        row["label"] = row["key"] or "unknown"
    for row in figures["agent"]:
        row["label"] = agent_names.get(row["key"], "no owner") if row["key"] else "no owner"
    return pages.render(
        "kpis.html", page="kpis", zone=zone, summary=summary, per_store=figures["store"],
        per_source=figures["source"], per_agent=figures["agent"], leaks=figures["leaks"],
        stores=all_stores, store_key=store_key,
        date_from=since.astimezone(pages.zone(zone)).strftime("%Y-%m-%d"),
        date_to=(until - timedelta(seconds=1)).astimezone(pages.zone(zone)).strftime("%Y-%m-%d"),
        error=error, charts=pages.charts(pages.every_day(figures["days"], first_day, last_day)),
    )
