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
            "email": {"type": ["string", "null"]},
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
            "caller_id_unverified": {
                "type": "boolean",
                "description": "its latest call's caller ID failed SHAKEN/STIR verification (may be spoofed)",
            },
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
            "caller_id_unverified": {
                "type": "boolean",
                "description": "the provider's SHAKEN/STIR check failed (StirVerstat TN-Validation-Failed-*)",
            },
            "reconciled": {
                "type": "boolean", "description": "settled from the provider's call log: its webhooks never came"
            },
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
            "reconciled": {
                "type": "boolean", "description": "found in the provider's message log: its webhook never came"
            },
        },
    },
    "NewMessage": {
        "type": "object",
        "properties": {
            "body": {"type": "string", "maxLength": 1600},
            "media_urls": {"type": "array", "maxItems": 10,
                           "items": {"type": "string", "pattern": "^https://[!-~]+$", "maxLength": 2000}},
            "agent": {"type": ["string", "null"], "minLength": 1, "maxLength": 64, "pattern": "\\S",
                      "description": "key of the agent of the lead's store who is writing (404 when there is none)"},
        },
        # A text has words or a picture: an empty body with no media is no text.
        "anyOf": [
            {"required": ["body"], "properties": {"body": {"pattern": "\\S"}}},
            {"required": ["media_urls"], "properties": {"media_urls": {"minItems": 1}}},
        ],
        "description": "body, media_urls or both; sent from the number the customer reached. Unless the send "
        "guard refuses it, it is the lead's human response: the first response, the reply task done, cadences "
        "stopped",
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
# Cursors are opaque to a client, but their shape is known: a row id, or for calls the settling time (Unix
# microseconds) and the id. Any cursor of that shape is a place in the list (gateway/api/__init__.py).
# An empty cursor is the first page (CRMs that poll start with `since=`).
_cursor_schema = {"type": "string", "pattern": "^([0-9]{1,10})?$"}
_cursor = _query("cursor", "next_cursor of the previous page", _cursor_schema)
_row_id = {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}
_lead_id = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}

PATHS: dict[str, Any] = {
    "/leads": {
        "get": {
            "summary": "List leads, newest first",
            "parameters": [
                _query("phone", "customer phone, any format", {"type": "string", "pattern": "^[0-9+ ().\\-]{1,32}$"}),
                _query("store", "store key"),
                _query("status", "lead status", {"type": "string", "enum": [
                    "new", "attempting_contact", "contacted", "appointment_set", "appointment_confirmed",
                    "no_show", "closed_won", "closed_lost"]}),
                _query("owner", "agent key"),
                _cursor,
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
                _query("status", "open, done or cancelled",
                       {"type": "string", "enum": ["open", "done", "cancelled"]}),
                _query("agent", "agent key"),
                _query("lead", "lead id", _row_id),
                _cursor,
                _limit,
            ],
            "responses": {**_ok(_list_of("Task")), **_errors(400, 401)},
        }
    },
    "/messages": {
        "get": {
            "summary": "Texts in and out, oldest first; lead= for one lead's conversation",
            "parameters": [
                _query("lead", "lead id", _row_id),
                _query("direction", "inbound or outbound", {"type": "string", "enum": ["inbound", "outbound"]}),
                _query("kind", "customer, agent, api, cadence, alert, relay, keyword or help"),
                _cursor,
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
            "parameters": [_query("since", "next_cursor of the previous call",
                                  {"type": "string", "pattern": "^([0-9]{1,17}-[0-9]{1,10})?$"}), _limit],
            "responses": {**_ok(_list_of("Call")), **_errors(400, 401)},
        }
    },
}


# --- CRM, lead changes, tasks, metrics, click-to-call, recordings ---------------------------------------

_int_path = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}
_count_map = {"type": "object", "additionalProperties": {"type": "integer"}}
_seconds = {"type": ["number", "null"]}
_ratio = {"type": ["number", "null"], "minimum": 0, "maximum": 1}

SCHEMAS.update(
    {
        "LeadDetail": {
            "allOf": [{"$ref": "#/components/schemas/Lead"}],
            "type": "object",
            "required": ["calls", "tasks", "messages", "timeline"],
            "properties": {
                "calls": {"type": "array", "items": {"$ref": "#/components/schemas/Call"}},
                "tasks": {"type": "array", "items": {"$ref": "#/components/schemas/Task"}},
                "messages": {"type": "array", "items": {"$ref": "#/components/schemas/Message"}},
                "timeline": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["type", "at"],
                        "properties": {
                            "type": {"type": "string", "enum": ["call", "message", "task", "event"]},
                            "at": _time,
                        },
                    },
                },
            },
        },
        "LeadPatch": {
            "type": "object",
            "minProperties": 1,
            "additionalProperties": False,
            "properties": {
                "status": {
                    "type": "string",
                    "enum": ["new", "attempting_contact", "contacted", "appointment_set",
                             "appointment_confirmed", "no_show", "closed_won", "closed_lost"],
                },
                "owner": {"type": "string", "minLength": 1, "pattern": "\\S",
                          "description": "agent key of the lead's store"},
                "appointment_at": {
                    "type": ["string", "null"],
                    "format": "date-time",
                    "description": "ISO 8601 with an offset; null clears it",
                },
            },
        },
        "CallRequest": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"agent": {"type": ["string", "null"], "minLength": 1, "pattern": "\\S",
                                     "description": "agent key; default (or null): the lead's owner"}},
        },
        "CrmDelivery": {
            "type": "object",
            "required": ["id", "store", "lead_id", "destination", "event", "status", "attempts",
                         "idempotency_key", "next_attempt_at", "retry_until", "last_error", "created_at",
                         "delivered_at"],
            "properties": {
                "id": {"type": "integer"},
                "store": {"type": ["string", "null"]},
                "lead_id": {"type": ["integer", "null"]},
                "destination": {
                    "type": "object",
                    "required": ["index", "type", "target"],
                    "properties": {
                        "index": {"type": "integer"},
                        "type": {"type": "string", "enum": ["adf-http", "adf-email", "webhook"]},
                        "target": {"type": "string"},
                    },
                },
                "event": {"type": "string"},
                "status": {"type": "string", "enum": ["pending", "delivering", "delivered", "dead"]},
                "attempts": {"type": "integer"},
                "idempotency_key": {"type": "string"},
                "next_attempt_at": _time,
                "retry_until": _time,
                "last_error": {"type": ["string", "null"]},
                "created_at": _time,
                "delivered_at": _time,
            },
        },
        "Metrics": {
            "type": "object",
            "required": ["store", "since", "until", "leads", "calls", "first_response", "sla", "leaked_leads",
                         "tasks"],
            "properties": {
                "store": {"type": ["string", "null"]},
                "since": {"type": "string", "format": "date-time"},
                "until": {"type": "string", "format": "date-time"},
                "leads": {
                    "type": "object",
                    "required": ["total", "by_status", "by_source", "leaked"],
                    "properties": {"total": {"type": "integer"}, "by_status": _count_map,
                                   "by_source": _count_map, "leaked": {"type": "integer"}},
                },
                "calls": {
                    "type": "object",
                    "required": ["total", "by_outcome", "missed", "missed_rate"],
                    "properties": {"total": {"type": "integer"}, "by_outcome": _count_map,
                                   "missed": {"type": "integer"}, "missed_rate": _ratio},
                },
                "first_response": {
                    "type": "object",
                    "required": ["responded", "median_seconds", "p90_seconds"],
                    "properties": {"responded": {"type": "integer"}, "median_seconds": _seconds,
                                   "p90_seconds": _seconds},
                },
                "sla": {
                    "type": "object",
                    "required": ["met", "measured", "attainment"],
                    "properties": {"met": {"type": "integer"}, "measured": {"type": "integer"},
                                   "attainment": _ratio},
                },
                "leaked_leads": {"type": "integer"},
                "reconciled_calls": {
                    "type": "integer",
                    "description": "calls of the period found in the provider's log, their webhooks lost",
                },
                "reconciled_messages": {
                    "type": "integer",
                    "description": "inbound texts of the period found in the provider's log, their webhooks lost",
                },
                "tasks": {
                    "type": "object",
                    "required": ["open", "overdue"],
                    "properties": {"open": {"type": "integer"}, "overdue": {"type": "integer"}},
                },
            },
        },
    }
)

PATHS["/leads/{id}"]["get"]["responses"] = {
    **_ok({"$ref": "#/components/schemas/LeadDetail"}), **_errors(401, 404)
}
PATHS["/leads/{id}"]["patch"] = {
    "summary": "Change a lead's status, owner or appointment",
    "description": "Reopening a closed lead (an open status) is refused with 409 while another lead of the "
    "same phone is open at the store. Every change is in the lead's timeline and goes to the CRMs as "
    "lead.updated.",
    "parameters": [_lead_id],
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/LeadPatch"}}},
    },
    "responses": {**_ok({"$ref": "#/components/schemas/Lead"}), **_errors(400, 401, 404, 409)},
}
PATHS["/tasks/{id}/complete"] = {
    "post": {
        "summary": "Mark a follow-up task done (again: no change)",
        "parameters": [_int_path],
        "responses": {**_ok({"$ref": "#/components/schemas/Task"}), **_errors(401, 404, 409)},
    }
}
PATHS.setdefault("/leads/{id}/call", {})["post"] = {
    "summary": "Click-to-call: ring the agent, then bridge the customer once the agent presses 1",
    "parameters": [_lead_id],
    "requestBody": {
        "required": False,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CallRequest"}}},
    },
    "responses": {**_ok({"$ref": "#/components/schemas/Call"}, 201), **_errors(400, 401, 403, 404, 409, 502)},
}
PATHS.setdefault("/calls/{id}/recording", {})["get"] = {
    "summary": "The voicemail recording of a call, streamed from the provider",
    "parameters": [_int_path],
    "responses": {
        "200": {"description": "audio", "content": {"audio/mpeg": {"schema": {"type": "string",
                                                                               "format": "binary"}}}},
        **_errors(401, 404, 502, 503),
    },
}
PATHS["/crm/deliveries"] = {
    "get": {
        "summary": "CRM deliveries by status (default: dead letters), oldest first",
        "parameters": [
            _query("status", "pending, delivering, delivered or dead",
                   {"type": "string", "enum": ["pending", "delivering", "delivered", "dead"]}),
            _cursor,
            _limit,
        ],
        "responses": {**_ok(_list_of("CrmDelivery")), **_errors(400, 401)},
    }
}
PATHS["/crm/deliveries/{id}/replay"] = {
    "post": {
        "summary": "Send a dead letter again: same body, same idempotency key, a fresh 24 h of retries",
        "parameters": [_int_path],
        "responses": {**_ok({"$ref": "#/components/schemas/CrmDelivery"}), **_errors(401, 404, 409)},
    }
}
PATHS["/metrics"] = {
    "get": {
        "summary": "Leads, calls, response times, SLA attainment, leaks and tasks for a period",
        "parameters": [
            _query("store", "store key (default: every store the key sees)"),
            _query("since", "ISO 8601 with offset; default until - 30 days; at most 400 days before until "
                   "(an earlier one is moved up; the body's since says which)", {"type": "string",
                                                                                 "format": "date-time"}),
            _query("until", "ISO 8601 with offset; default now", {"type": "string", "format": "date-time"}),
        ],
        "responses": {**_ok({"$ref": "#/components/schemas/Metrics"}), **_errors(400, 401, 404)},
    }
}
PATHS["/openapi.json"] = {
    "get": {
        "summary": "This document",
        "security": [],
        "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {
            "type": "object"}}}}},
    }
}


def _complete(paths: dict[str, Any]) -> dict[str, Any]:
    """Every authenticated operation can answer 401 (no key), 429 (rate limit) and 503 (database down)."""
    done: dict[str, Any] = {}
    for path, operations in paths.items():
        done[path] = {}
        for method, operation in operations.items():
            operation = dict(operation)
            if operation.get("security") != []:
                operation["responses"] = {**_errors(401, 429, 503), **operation.get("responses", {})}
            done[path][method] = operation
    return done


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
        "paths": _complete(PATHS),
    }


@blueprint.get("/openapi.json")
def openapi() -> Response:
    return jsonify(document())
