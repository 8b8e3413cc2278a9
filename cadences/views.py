"""The cadences' HTTP face: stop a lead's cadences, see them. Under /api/v1 with the API's own keys."""

from __future__ import annotations

import html
from typing import Any

from flask import Blueprint, Response, g, jsonify, redirect
from flask.typing import ResponseReturnValue
from sqlalchemy import select
from sqlalchemy.orm import Session

from cadences import channels, services
from cadences.models import CadenceEnrolment, CadenceStep, StopReason
from gateway import api, runtime, web
from gateway.api.leads import load_lead
from gateway.dashboard.auth import current_viewer
from gateway.dashboard.pages import error_page
from gateway.dashboard.present import local_time
from gateway.dashboard.queries import visible_lead
from gateway.dashboard.timeline import Action, Entry
from gateway.models import Lead
from gateway.serialize import iso
from gateway.web import ApiError

blueprint = Blueprint("cadences_api", __name__, url_prefix="/api/v1")


@blueprint.before_request
def authenticate() -> None:
    api.authenticate()


def enrolment_json(enrolment: CadenceEnrolment, steps: list[CadenceStep]) -> dict[str, Any]:
    return {
        "id": enrolment.id,
        "lead_id": enrolment.lead_id,
        "cadence": enrolment.cadence_key,
        "trigger": enrolment.trigger,
        "status": enrolment.status,
        "stop_reason": enrolment.stop_reason,
        "stop_detail": enrolment.stop_detail,
        "started_at": iso(enrolment.started_at),
        "appointment_at": iso(enrolment.anchor),
        "stopped_at": iso(enrolment.stopped_at),
        "completed_at": iso(enrolment.completed_at),
        "steps": [
            {
                "index": step.step_index,
                "relative_to": step.relative_to,
                "after": step.offset_seconds,
                "due_at": iso(step.due_at),
                "status": step.status,
                "skip_reason": step.skip_reason,
                "message_id": step.message_id,
                "channel": step.channel,
            }
            for step in steps
        ],
    }


def _enrolments(lead_id: int, ids: list[int] | None = None) -> list[dict[str, Any]]:
    session = web.session()
    query = select(CadenceEnrolment).where(CadenceEnrolment.lead_id == lead_id)
    if ids is not None:
        query = query.where(CadenceEnrolment.id.in_(ids))
    enrolments = list(session.scalars(query.order_by(CadenceEnrolment.id)))
    steps: dict[int, list[CadenceStep]] = {e.id: [] for e in enrolments}
    if enrolments:
        for step in session.scalars(
            select(CadenceStep)
            .where(CadenceStep.enrolment_id.in_(list(steps)))
            .order_by(CadenceStep.enrolment_id, CadenceStep.step_index)
        ):
            steps[step.enrolment_id].append(step)
    return [enrolment_json(e, steps[e.id]) for e in enrolments]


@blueprint.get("/leads/<int:lead_id>/cadences")
def list_cadences(lead_id: int) -> Response:
    lead = load_lead(lead_id)
    return jsonify({"items": _enrolments(lead.id), "next_cursor": None})


@blueprint.post("/leads/<int:lead_id>/cadence/stop")
def stop_cadence(lead_id: int) -> Response:
    """Stop the lead's active cadences (or only `cadence`); stopping nothing is not an error."""
    lead = load_lead(lead_id)
    body = api.json_body(optional=True)
    cadence = body.get("cadence")
    if cadence is not None and (not isinstance(cadence, str) or not cadence.strip()):
        raise ApiError(400, "invalid_cadence", "cadence must be a cadence key.")
    note = body.get("note")
    if note is not None and (not isinstance(note, str) or len(note) > 500):
        raise ApiError(400, "invalid_note", "note must be text of at most 500 characters.")
    session = web.session()
    detail = note or f"API key {g.api_key.name}"
    stopped = services.stop_for_lead(
        session, lead, StopReason.API, api.now(), detail, cadence_key=cadence.strip() if cadence else None
    )
    session.commit()
    return jsonify({"lead_id": lead.id, "stopped": _enrolments(lead.id, [e.id for e in stopped])})


# --- the workspace: the cadence in a lead's timeline, and its stop button -----------------------------------

page_blueprint = Blueprint("cadences_pages", __name__)

STOP_WORDS = {
    "reply": "the customer texted back",
    "opt_out": "the customer opted out",
    "human_contact": "a person reached the customer",
    "status": "the lead moved on",
    "appointment_cancelled": "the appointment was cancelled",
    "api": "stopped by hand",
}
STEP_WORDS = {
    "scheduled": "waiting",
    "claimed": "sending",
    "deferred": "waiting for the allowed time",
    "sent": "sent",
    "skipped": "not sent",
    "unknown": "send not confirmed",
}


def timeline_entries(session: Session, lead: Lead) -> list[Entry]:
    entries: list[Entry] = []
    enrolments = list(
        session.scalars(
            select(CadenceEnrolment).where(CadenceEnrolment.lead_id == lead.id).order_by(CadenceEnrolment.id)
        )
    )
    for enrolment in enrolments:
        steps = list(
            session.scalars(
                select(CadenceStep).where(CadenceStep.enrolment_id == enrolment.id).order_by(CadenceStep.step_index)
            )
        )
        sent = sum(1 for s in steps if s.status == "sent")
        details = [f"{sent} of {len(steps)} texts sent"]
        actions: list[Action] = []
        flag = None
        if enrolment.status == "active":
            waiting = [s for s in steps if s.status in {"scheduled", "deferred"}]
            if waiting:
                details.append(f"Next text {local_time(waiting[0].due_at, lead.store.timezone)}: "
                               f"\u201c{waiting[0].template[:140]}\u201d")
            actions.append(Action(f"/leads/{lead.id}/cadence/stop", "Stop automatic texts"))
            flag = "running"
        elif enrolment.status == "stopped":
            reason = STOP_WORDS.get(enrolment.stop_reason or "", (enrolment.stop_reason or "").replace("_", " "))
            details.append(f"Stopped {local_time(enrolment.stopped_at, lead.store.timezone)}: {reason}"
                           + (f" ({enrolment.stop_detail})" if enrolment.stop_detail else ""))
            flag = "stopped"
        else:
            flag = "finished"
        for step in steps:
            details.append(f"Text {step.step_index + 1}: {STEP_WORDS.get(step.status, step.status)}"
                           f" ({local_time(step.due_at, lead.store.timezone)})")
        entries.append(Entry(enrolment.started_at, "cadence", f"Automatic texts: {enrolment.cadence_key}",
                             details=details, actions=actions, flag=flag))
    return entries


@page_blueprint.post("/leads/<int:lead_id>/cadence/stop")
def stop_from_page(lead_id: int) -> ResponseReturnValue:
    """The stop button on the lead page (the CSRF token was checked before the view)."""
    g.workspace_page = True
    viewer = current_viewer()
    if viewer is None:
        return redirect("/sign-in")
    session = web.session()
    lead = visible_lead(session, viewer, lead_id)
    if lead is None:
        return error_page(404, "Not found", "There is no such lead, or it belongs to a store you do not work for.")
    stopped = services.stop_for_lead(session, lead, StopReason.API, api.now(), f"stopped by {viewer.name}")
    session.commit()
    return redirect(f"/leads/{lead.id}?notice={'cadence_stopped' if stopped else 'cadence_none'}")


# --- the API description: these routes join /api/v1/openapi.json when the package is wired in ---------

_time = {"type": ["string", "null"], "format": "date-time"}
_error_ref = {"$ref": "#/components/schemas/Error"}
_lead_id = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}

ENROLMENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "lead_id", "cadence", "trigger", "status", "stop_reason", "started_at", "steps"],
    "properties": {
        "id": {"type": "integer"},
        "lead_id": {"type": "integer"},
        "cadence": {"type": "string"},
        "trigger": {"type": "string", "description": "missed_call or the lead status that started it"},
        "status": {"type": "string", "enum": ["active", "stopped", "completed"]},
        "stop_reason": {
            "type": ["string", "null"],
            "enum": [
                "reply", "opt_out", "human_contact", "status", "appointment_cancelled", "api", "replaced", None,
            ],
        },
        "stop_detail": {"type": ["string", "null"]},
        "started_at": _time,
        "appointment_at": _time,
        "stopped_at": _time,
        "completed_at": _time,
        "steps": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["index", "due_at", "status"],
                "properties": {
                    "index": {"type": "integer"},
                    "relative_to": {"type": "string", "enum": ["start", "appointment"]},
                    "after": {"type": "integer", "description": "seconds from the start or the appointment"},
                    "due_at": _time,
                    "status": {
                        "type": "string",
                        "enum": ["scheduled", "claimed", "deferred", "sending", "sent", "skipped", "unknown"],
                    },
                    "channel": {"type": "string", "enum": ["sms", "email", "call"]},
                    "skip_reason": {"type": ["string", "null"]},
                    "message_id": {"type": ["integer", "null"]},
                },
            },
        },
    },
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    return {str(code): _json(_error_ref, "error") for code in codes}


PATHS: dict[str, Any] = {
    "/leads/{id}/cadences": {
        "get": {
            "summary": "The lead's cadence enrolments with their steps",
            "parameters": [_lead_id],
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["items", "next_cursor"],
                        "properties": {
                            "items": {"type": "array", "items": {"$ref": "#/components/schemas/CadenceEnrolment"}},
                            "next_cursor": {"type": "null"},
                        },
                    },
                    "ok",
                ),
                **_errors(401, 404),
            },
        }
    },
    "/leads/{id}/cadence/stop": {
        "post": {
            "summary": "Stop the lead's active cadences (all, or the one named); stopping none is not an error",
            "parameters": [_lead_id],
            "requestBody": {
                "required": False,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "cadence": {"type": ["string", "null"], "minLength": 1, "pattern": "\\S",
                                            "description": "a cadence key; all when left out or null"},
                                "note": {"type": ["string", "null"], "maxLength": 500},
                            },
                        }
                    }
                },
            },
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "required": ["lead_id", "stopped"],
                        "properties": {
                            "lead_id": {"type": "integer"},
                            "stopped": {"type": "array", "items": {"$ref": "#/components/schemas/CadenceEnrolment"}},
                        },
                    },
                    "the enrolments this request stopped",
                ),
                **_errors(400, 401, 404),
            },
        }
    },
}


def describe_api() -> None:
    """Add these routes to the API's OpenAPI document (its PATHS and SCHEMAS)."""
    from gateway.api import openapi

    openapi.SCHEMAS.setdefault("CadenceEnrolment", ENROLMENT_SCHEMA)
    for path, operations in PATHS.items():
        openapi.PATHS.setdefault(path, operations)


# --- the one-click unsubscribe (RFC 8058): a page for people, a POST that acts at once --------------------

pages = Blueprint("cadences_unsubscribe", __name__)

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<meta name="robots" content="noindex"><title>{title}</title></head>
<body style="font-family: sans-serif; max-width: 32rem; margin: 3rem auto; padding: 0 1rem">
<h1 style="font-size: 1.4rem">{title}</h1><p>{text}</p>{form}</body></html>"""


def _page(title: str, text: str, status: int = 200, form: str = "") -> Response:
    body = _PAGE.format(title=html.escape(title), text=html.escape(text), form=form)
    return Response(body, status=status, mimetype="text/html")


def _claim(token: str) -> channels.UnsubscribeClaim | None:
    return channels.read_unsubscribe_token(runtime.current().settings, token)


@pages.get(f"{channels.UNSUBSCRIBE_PATH}<token>")
def unsubscribe_page(token: str) -> Response:
    """A GET never unsubscribes (mail scanners and previews fetch links); it shows the button."""
    if _claim(token) is None:
        return _page("Link not valid", "This unsubscribe link is not valid. Reply to the e-mail instead.", 404)
    form = (
        f'<form method="post" action="{html.escape(channels.UNSUBSCRIBE_PATH + token, quote=True)}">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit" style="font-size: 1.1rem; padding: .6rem 1.2rem">Unsubscribe</button></form>'
    )
    return _page("Unsubscribe from e-mail", "Stop the e-mails about your request? Texts are not affected.", form=form)


@pages.post(f"{channels.UNSUBSCRIBE_PATH}<token>")
def unsubscribe(token: str) -> Response:
    """The one-click POST (body List-Unsubscribe=One-Click from a mail client, or the page's button)."""
    claim = _claim(token)
    if claim is None:
        return _page("Link not valid", "This unsubscribe link is not valid. Reply to the e-mail instead.", 404)
    session = web.session()
    services.unsubscribe_email(session, claim.contact_id, claim.email, runtime.current().clock.now())
    session.commit()
    return _page("Unsubscribed", "You will get no more e-mails about your request. Texts are not affected.")
