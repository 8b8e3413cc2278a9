"""The cadences' HTTP face: stop a lead's cadences, see them. Under /api/v1 with the API's own keys."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, g, jsonify
from sqlalchemy import select

from cadences import services
from cadences.models import CadenceEnrolment, CadenceStep, StopReason
from gateway import api, web
from gateway.api.leads import load_lead
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
            "enum": ["reply", "opt_out", "human_contact", "status", "appointment_cancelled", "api", None],
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
                        "enum": ["scheduled", "claimed", "deferred", "sent", "skipped", "unknown"],
                    },
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
