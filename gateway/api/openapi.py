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
            "direction": {"type": "string", "enum": ["inbound", "outbound"]},
            "kind": {"type": "string", "description": "customer, agent, api, cadence, alert, relay, keyword, help"},
            "from": {"type": "string"},
            "to": {"type": "string"},
            "body": {"type": "string"},
            "segments": {"type": "integer", "description": "parts billed: GSM-7 160/153, UCS-2 70/67"},
            "media_urls": {"type": "array", "items": {"type": "string"}},
            "status": {
                "type": "string",
                "description": "pending (waiting for the worker or for send_after), sending, queued, sent, "
                "delivered, undelivered, failed, refused (by the send guard), unknown, received (inbound)",
            },
            "refusal_code": {
                "type": ["string", "null"],
                "description": "why the send guard refused or deferred it: opted_out, not_textable, "
                "automation_paused, empty_body, body_too_long, invalid_number, quiet_hours, daily_cap",
            },
            "error_code": {"type": ["integer", "null"], "description": "the provider's error code"},
            "error_message": {"type": ["string", "null"]},
            "send_after": _time,
            "created_at": _time,
            "sent_at": _time,
        },
    },
    "NewMessage": {
        "type": "object",
        "properties": {
            "body": {"type": "string", "maxLength": 1600},
            "media_urls": {"type": "array", "maxItems": 10, "items": {"type": "string", "format": "uri"}},
        },
        "description": "body, media_urls or both; sent from the number the customer reached",
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
    "/messages": {
        "get": {
            "summary": "Texts in and out, oldest first; lead= for one lead's conversation",
            "parameters": [
                _query("lead", "lead id"),
                _query("direction", "inbound or outbound"),
                _query("kind", "customer, agent, api, cadence, alert, relay, keyword or help"),
                _query("cursor", "next_cursor of the previous page"),
                _limit,
            ],
            "responses": {**_ok(_list_of("Message")), **_errors(400, 401, 404)},
        }
    },
    "/leads/{id}/messages": {
        "post": {
            "summary": "Text the lead's customer through the send guard",
            "description": "The guard answers at once. 201: the text is pending and the worker sends it in "
            "a moment. 202: deferred (quiet hours in the customer's time, or a state's daily cap on "
            "automated texts); status pending with send_after and refusal_code, sent then. 409: "
            "refused, with the guard's code (opted_out, not_textable, body_too_long, invalid_number, "
            "no_sender) and a reason a person can read; the refused text stays in the log. The guard "
            "checks again when the worker sends. An Idempotency-Key header makes retries safe: the "
            "same key answers with the first text.",
            "parameters": [
                _lead_id,
                {"name": "Idempotency-Key", "in": "header", "required": False, "schema": {"type": "string",
                                                                                          "maxLength": 64}},
            ],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NewMessage"}}},
            },
            "responses": {
                **_ok({"$ref": "#/components/schemas/Message"}, 201),
                **_ok({"$ref": "#/components/schemas/Message"}, 202),
                **_errors(400, 401, 404, 409),
            },
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
