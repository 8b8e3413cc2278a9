"""/api/v1/openapi.json: the API described for CRM engineers and for the schema-driven tests."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify

from gateway.api import blueprint

_error = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}
_time = {"type": ["string", "null"], "format": "date-time"}

SCHEMAS: dict[str, Any] = {
    "Error": _error,
    "Lead": {
        "type": "object",
        "required": ["id", "phone", "store", "department", "source", "status", "owner", "priority",
                     "created_at", "first_response_at"],
        "properties": {
            "id": {"type": "integer"},
            "code": {"type": "string"},
            "phone": {"type": ["string", "null"]},
            "withheld": {"type": "boolean"},
            "store": {"type": "string"},
            "department": {"type": "string"},
            "source": {"type": ["string", "null"]},
            "tracked_number": {"type": ["string", "null"]},
            "status": {"type": "string"},
            "owner": {"type": ["string", "null"]},
            "priority": {"type": "integer"},
            "priority_reasons": {"type": "array"},
            "appointment_at": _time,
            "created_at": _time,
            "updated_at": _time,
            "first_response_at": _time,
            "leaked": {"type": "boolean"},
            "leak_reason": {"type": ["string", "null"]},
            "opted_out": {"type": "boolean"},
        },
    },
    "Task": {
        "type": "object",
        "required": ["id", "lead_id", "kind", "owner", "due_at", "status"],
        "properties": {
            "id": {"type": "integer"},
            "lead_id": {"type": "integer"},
            "kind": {"type": "string"},
            "owner": {"type": ["string", "null"]},
            "due_at": _time,
            "status": {"type": "string"},
        },
    },
    "Call": {
        "type": "object",
        "required": ["id", "sid", "lead_id", "from", "to", "direction", "outcome", "answered_by",
                     "duration", "started_at"],
        "properties": {
            "id": {"type": "integer"},
            "sid": {"type": "string"},
            "lead_id": {"type": ["integer", "null"]},
            "from": {"type": ["string", "null"]},
            "to": {"type": "string"},
            "direction": {"type": "string"},
            "outcome": {"type": "string"},
            "answered_by": {"type": ["string", "null"]},
            "duration": {"type": ["integer", "null"]},
            "started_at": _time,
        },
    },
    "Message": {
        "type": "object",
        "required": ["id", "sid", "lead_id", "direction", "body", "status", "error_code", "created_at"],
        "properties": {
            "id": {"type": "integer"},
            "sid": {"type": ["string", "null"]},
            "lead_id": {"type": ["integer", "null"]},
            "direction": {"type": "string"},
            "body": {"type": "string"},
            "status": {"type": "string"},
            "error_code": {"type": ["integer", "null"]},
            "created_at": _time,
        },
    },
}


def _list_of(schema: str) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["items", "next_cursor"],
        "properties": {
            "items": {"type": "array", "items": {"$ref": f"#/components/schemas/{schema}"}},
            "next_cursor": {"type": ["string", "null"]},
        },
    }


def _errors(*codes: int) -> dict[str, Any]:
    return {
        str(code): {
            "description": "error",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        for code in codes
    }


def _ok(schema: dict[str, Any], status: int = 200) -> dict[str, Any]:
    return {str(status): {"description": "ok", "content": {"application/json": {"schema": schema}}}}


def _query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema or {"type": "string"}}


_limit = _query("limit", "page size, 1-200", {"type": "integer", "minimum": 1, "maximum": 200})
_lead_id = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}

PATHS: dict[str, Any] = {
    "/leads": {
        "get": {
            "summary": "List leads, newest first",
            "parameters": [
                _query("phone", "customer phone, any format"),
                _query("store", "store key"),
                _query("status", "lead status"),
                _query("owner", "agent key"),
                _query("cursor", "next_cursor of the previous page"),
                _limit,
            ],
            "responses": {**_ok(_list_of("Lead")), **_errors(400, 401)},
        }
    },
    "/leads/{id}": {
        "get": {
            "summary": "One lead with its calls, messages, tasks and timeline",
            "parameters": [_lead_id],
            "responses": {**_ok({"$ref": "#/components/schemas/Lead"}), **_errors(401, 404)},
        }
    },
    "/tasks": {
        "get": {
            "summary": "List follow-up tasks",
            "parameters": [
                _query("status", "open, done or cancelled"),
                _query("agent", "agent key"),
                _query("lead", "lead id"),
                _query("cursor", "next_cursor of the previous page"),
                _limit,
            ],
            "responses": {**_ok(_list_of("Task")), **_errors(400, 401)},
        }
    },
    "/calls": {
        "get": {
            "summary": "Ended calls in the order they ended; poll with since=next_cursor",
            "parameters": [_query("since", "next_cursor of the previous call"), _limit],
            "responses": {**_ok(_list_of("Call")), **_errors(400, 401)},
        }
    },
}


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Dealer Gateway API", "version": "1"},
        "servers": [{"url": "/api/v1"}],
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": PATHS,
    }


@blueprint.get("/openapi.json")
def openapi() -> Response:
    return jsonify(document())
