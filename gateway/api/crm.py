"""CRM deliveries for operators: the dead letters (or any status) and a replay."""

from __future__ import annotations

import urllib.parse
from typing import Any

from flask import Response, jsonify, request
from sqlalchemy import select

from gateway import web
from gateway.api import (
    blueprint,
    cursor_id,
    decode_cursor,
    encode_cursor,
    limit_arg,
    now,
    page,
    require_store,
    visible_store_ids,
)
from gateway.crm import outbox
from gateway.crm.models import CrmDelivery, DeliveryStatus
from gateway.models import Store
from gateway.serialize import iso
from gateway.web import ApiError


def delivery(row: CrmDelivery, store_key: str | None) -> dict[str, Any]:
    return {
        "id": row.id,
        "store": store_key,
        "lead_id": row.lead_id,
        "destination": {"index": row.destination_index, "type": row.kind, "target": _public(row.target)},
        "event": row.event,
        "status": row.status,
        "attempts": row.attempts,
        "idempotency_key": row.idempotency_key,
        "next_attempt_at": iso(row.next_attempt_at),
        "retry_until": iso(row.retry_until),
        "last_error": row.last_error,
        "created_at": iso(row.created_at),
        "delivered_at": iso(row.delivered_at),
    }


def _public(target: str) -> str:
    """A CRM URL may carry a token in its query or user part: show scheme, host and path only."""
    if "://" not in target:
        return target  # an e-mail address
    parts = urllib.parse.urlsplit(target)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _store_keys(ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    session = web.session()
    return {store_id: key for store_id, key in session.execute(select(Store.id, Store.key).where(Store.id.in_(ids)))}


@blueprint.get("/crm/deliveries")
def list_deliveries() -> Response:
    status = request.args.get("status", DeliveryStatus.DEAD.value)
    if status not in {s.value for s in DeliveryStatus}:
        allowed = ", ".join(s.value for s in DeliveryStatus)
        raise ApiError(400, "invalid_status", f"status must be one of: {allowed}.")
    cursor = decode_cursor(request.args.get("cursor"))
    after_id = cursor_id(cursor) if cursor is not None else 0
    limit = limit_arg()
    rows = outbox.dead_letters(web.session(), visible_store_ids(), status=status, after_id=after_id, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    keys = _store_keys({r.store_id for r in rows})
    next_cursor = encode_cursor({"id": rows[-1].id}) if more and rows else None
    return page([delivery(r, keys.get(r.store_id)) for r in rows], next_cursor)


@blueprint.post("/crm/deliveries/<int:delivery_id>/replay")
def replay_delivery(delivery_id: int) -> Response:
    session = web.session()
    row = session.get(CrmDelivery, delivery_id)
    if row is None:
        raise ApiError(404, "not_found", f"No CRM delivery {delivery_id}.")
    require_store(row.store_id)
    try:
        outbox.replay(session, [delivery_id], now())
    except outbox.NotDead as error:
        raise ApiError(409, "not_dead", str(error)) from None
    session.commit()
    return jsonify(delivery(row, _store_keys({row.store_id}).get(row.store_id)))
