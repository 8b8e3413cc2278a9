"""The intake's HTTP face under /api/v1, with the API's own keys: web-form leads and ADF/XML documents.

A view reads the request into an Inquiry (or an ADF document), calls one service, commits; the jobs the
service queued (the first text, the alert, the CRM deliveries) leave when the commit does. A form is
answered with its lead. An ADF document is answered 202 once its prospects are stored (one INSERT): a
lead site needs only the 2xx, and the worker builds the leads milliseconds later (`jobs.py`).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, g, jsonify, request
from sqlalchemy import bindparam, select

from gateway import api, runtime, web
from gateway import serialize as out
from gateway.models import Store
from gateway.web import ApiError
from intake import jobs, payloads, services
from intake.adf import AdfError, parse_adf
from intake.models import IntakeChannel

blueprint = Blueprint("intake_api", __name__, url_prefix="/api/v1")

ADF_MIMETYPES = frozenset({"application/xml", "application/x-adf+xml", "text/xml"})


@blueprint.before_request
def authenticate() -> None:
    api.authenticate()


_STORE_BY_KEY = select(Store).where(Store.key == bindparam("key"))


def _visible_store(key: str) -> Store | None:
    store = web.session().scalar(_STORE_BY_KEY, {"key": key})
    if store is None:
        return None
    ids = api.visible_store_ids()
    return store if ids is None or store.id in ids else None


def _lead_json(taken: services.Taken) -> dict[str, Any]:
    body = out.lead(taken.lead)
    body["joined"] = not taken.created
    body["duplicate"] = taken.duplicate
    return body


@blueprint.post("/leads")
def create_lead() -> Response:
    """A web-form lead: 201 with the new lead, 200 when it joined an open lead (or repeats an external_id)."""
    try:
        store_key, body = payloads.read_form(request.get_json(silent=True))
        store = _visible_store(store_key)
        if store is None:
            # As everywhere in the API: a store this key may not see does not exist for it.
            raise ApiError(404, "unknown_store", f"No store {store_key!r} for this API key.")
        form = payloads.web_lead(body, store, api.now())
    except payloads.InvalidForm as error:
        raise ApiError(
            422, "invalid_fields", f"Some fields are not valid: {error}", fields=error.problems
        ) from None
    session = web.session()
    key = f"web:{form.external_id}" if form.external_id else None
    taken = services.receive_inquiry(
        session, store, form.inquiry, channel=IntakeChannel.WEB, key=key, now=api.now()
    )
    session.commit()
    response = jsonify(_lead_json(taken))
    response.status_code = 201 if taken.created and not taken.duplicate else 200
    return response


@blueprint.post("/intake/adf")
def receive_adf() -> Response:
    """An ADF/XML document: each prospect stored, 202; the worker builds their leads right after."""
    if request.mimetype not in ADF_MIMETYPES:
        raise ApiError(
            415, "unsupported_media_type", "Send ADF/XML as application/xml or application/x-adf+xml."
        )
    # Parsed before the database is touched: on SQLite the store's lookup begins the writer's
    # transaction (the one write lock, which other requests and the worker's builds need), and the
    # INSERT follows it at once.
    try:
        document = parse_adf(request.get_data(cache=False))
    except AdfError as error:
        extra: dict[str, Any] = {"reason": error.code}
        if error.line is not None:
            extra.update(line=error.line, column=error.column)
        code = "invalid_adf" if error.code in {"malformed", "not-adf", "no-prospect", "too-large"} else "adf_refused"
        raise ApiError(400, code, f"The ADF document was refused: {error.describe()}.", **extra) from None
    store = _adf_store()
    session = web.session()
    stored = services.store_adf(session, store, document, IntakeChannel.ADF_HTTP, api.now())
    session.commit()
    if services.count_new(stored):
        jobs.request_build(runtime.current().redis, services.count_new(stored))
    response = jsonify({"store": store.key, "items": [_stored_json(item) for item in stored]})
    response.status_code = 202
    return response


def _stored_json(item: services.Stored) -> dict[str, Any]:
    lead = None
    if item.lead is not None:
        taken = services.Taken(lead=item.lead, created=item.created, duplicate=True, intake_id=item.intake_id)
        lead = _lead_json(taken)
    return {"intake_id": item.intake_id, "external_id": item.external_id, "duplicate": item.duplicate, "lead": lead}


def _adf_store() -> Store:
    """?store=, else the key's one store."""
    key = (request.args.get("store") or "").strip()
    if key:
        store = _visible_store(key)
        if store is None:
            raise ApiError(404, "unknown_store", f"No store {key!r} for this API key.")
        return store
    scoped = g.api_key.stores
    if scoped and len(scoped) == 1:
        store = _visible_store(str(scoped[0]))
        if store is not None:
            return store
    raise ApiError(400, "store_required", "Name the store: ?store=<store key> (this key may see several).")


# --- the API description: these routes join /api/v1/openapi.json when the package is wired in ---------

_error_ref = {"$ref": "#/components/schemas/Error"}
_text = {"type": "string"}
_lead_result = {
    "allOf": [
        {"$ref": "#/components/schemas/Lead"},
        {
            "type": "object",
            "required": ["joined", "duplicate"],
            "properties": {
                "email": {"type": ["string", "null"]},
                "joined": {"type": "boolean", "description": "it joined the open lead of that phone or e-mail"},
                "duplicate": {"type": "boolean", "description": "the external_id or ADF <id> was seen before"},
            },
        },
    ]
}
_stored_item = {
    "type": "object",
    "required": ["intake_id", "external_id", "duplicate", "lead"],
    "properties": {
        "intake_id": {"type": "integer", "description": "the prospect's intake record"},
        "external_id": {"type": ["string", "null"], "description": "the prospect's first ADF <id>"},
        "duplicate": {"type": "boolean", "description": "the store had this <id> already: nothing changed"},
        "lead": {
            "oneOf": [_lead_result, {"type": "null"}],
            "description": "the lead of the earlier prospect a duplicate repeats, once built; else null",
        },
    },
}
_invalid = {
    "description": "the fields that are not valid, each named in error.fields",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {
                        "type": "object",
                        "required": ["code", "message", "fields"],
                        "properties": {
                            "code": {"type": "string", "enum": ["invalid_fields"]},
                            "message": _text,
                            "fields": {"type": "object", "additionalProperties": _text},
                        },
                    }
                },
            }
        }
    },
}

WEB_LEAD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["store"],
    "anyOf": [{"required": ["phone"]}, {"required": ["email"]}],
    "description": "A phone or an e-mail address is required. Fields not listed are ignored.",
    "properties": {
        "store": {"type": "string", "minLength": 1, "pattern": "\\S",
                  "description": "the store key (the API key must be scoped to it)"},
        "department": {"type": "string", "description": "default: sales"},
        "source": {
            "type": "string", "maxLength": 100, "description": "picks the store's lead cadence; default Website",
        },
        "first_name": {"type": "string", "maxLength": 100},
        "last_name": {"type": "string", "maxLength": 100},
        "phone": {"type": "string"},
        "email": {"type": "string", "format": "email"},
        "vehicle": {
            "type": "object",
            "properties": {
                "year": {"type": ["integer", "string"]},
                "make": _text, "model": _text, "trim": _text, "vin": _text, "stock": _text,
            },
        },
        "message": {"type": "string", "maxLength": 5000},
        "external_id": {
            "type": ["string", "integer"], "maxLength": 200,
            "description": "the form's own id: the same one twice changes nothing",
        },
        "sms_consent": {
            "type": "object",
            "required": ["granted"],
            "properties": {
                "granted": {"type": "boolean"},
                "text": {"type": "string", "description": "the consent wording shown; required when granted"},
                "at": {"type": "string", "format": "date-time", "description": "default: now"},
                "ip": {"type": "string"},
            },
        },
    },
}

PATHS: dict[str, Any] = {
    "/leads": {
        "post": {
            "summary": "A web-form lead: an owner, a task, the alert, the CRM and the store's cadence at once",
            "requestBody": {"required": True, "content": {"application/json": {"schema": WEB_LEAD_SCHEMA}}},
            "responses": {
                "404": {"description": "no such store for this API key"},
                "201": {"description": "a new lead", "content": {"application/json": {"schema": _lead_result}}},
                "200": {
                    "description": "it joined the open lead of that phone or e-mail, or repeated an external_id",
                    "content": {"application/json": {"schema": _lead_result}},
                },
                "422": _invalid,
                **{str(code): {"description": "error", "content": {"application/json": {"schema": _error_ref}}}
                   for code in (400, 401, 429)},
            },
        }
    },
    "/intake/adf": {
        "post": {
            "summary": "An ADF/XML 1.0 document: each prospect stored, its lead built right after; a resent <id> "
                       "changes nothing",
            "description": (
                "The document is parsed and each prospect stored (one intake record each) before the answer, "
                "202 Accepted; the worker builds each lead (owner, task, alert, CRM records, cadence) within "
                "milliseconds after. A lead site needs only the 2xx, and storing alone lets the intake take "
                "200 documents a second. A prospect whose first <id> the store has already is a duplicate: it "
                "changes nothing, and its item carries that earlier prospect's lead once built."
            ),
            "parameters": [
                {"name": "store", "in": "query", "required": True,
                 "schema": {"type": "string", "minLength": 1, "pattern": "\\S"},
                 "description": "the store key (a key scoped to one store may leave it out)"},
            ],
            "requestBody": {
                "required": True,
                "content": {"application/xml": {"schema": _text}, "application/x-adf+xml": {"schema": _text}},
            },
            "responses": {
                "202": {
                    "description": "every prospect stored (or recognised as a resend); the leads follow",
                    "content": {"application/json": {"schema": {
                        "type": "object",
                        "required": ["store", "items"],
                        "properties": {"store": _text, "items": {"type": "array", "items": _stored_item}},
                    }}},
                },
                "400": {
                    "description": "not well-formed (line and column given), unsafe (entities) or not ADF",
                    "content": {"application/json": {"schema": _error_ref}},
                },
                **{str(code): {"description": "error", "content": {"application/json": {"schema": _error_ref}}}
                   for code in (401, 404, 413, 415, 429)},
            },
        }
    },
}


def describe_api() -> None:
    """Add these routes to the API's OpenAPI document (its PATHS)."""
    from gateway.api import openapi

    for path, operations in PATHS.items():
        for method, operation in operations.items():
            openapi.PATHS.setdefault(path, {}).setdefault(method, operation)
