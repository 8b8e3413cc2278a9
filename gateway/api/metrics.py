"""GET /metrics: the figures of gateway/metrics.py for the key's stores over a period."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Response, jsonify, request
from sqlalchemy import select

from gateway import web
from gateway.api import blueprint, now, visible_store_ids
from gateway.kpis import DEFAULT_PERIOD, MAX_PERIOD, compute_metrics
from gateway.models import Store
from gateway.web import ApiError


def _time_arg(name: str) -> datetime | None:
    raw = request.args.get(name)
    if not raw:
        return None
    text = raw.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ApiError(400, f"invalid_{name}", f"{name} must be ISO 8601 with an offset.") from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ApiError(400, f"invalid_{name}", f"{name} needs an offset, e.g. 2026-11-01T00:00:00-05:00.")
    try:
        return moment.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ApiError(400, f"invalid_{name}", f"{name} is out of range.") from None


@blueprint.get("/metrics")
def metrics() -> Response:
    session = web.session()
    at = now()
    until = _time_arg("until") or at
    try:
        since = _time_arg("since") or until - DEFAULT_PERIOD
    except OverflowError:
        raise ApiError(400, "invalid_until", "until is out of range.") from None
    if since >= until:
        raise ApiError(400, "invalid_period", "since must be before until.")
    if until - since > MAX_PERIOD:
        raise ApiError(400, "invalid_period", f"The period may span at most {MAX_PERIOD.days} days.")
    ids = visible_store_ids()
    store_key = request.args.get("store")
    if store_key:
        store_id = session.scalar(select(Store.id).where(Store.key == store_key))
        if store_id is None or (ids is not None and store_id not in ids):
            raise ApiError(404, "not_found", f"No store {store_key!r}.")
        ids = {store_id}
    body = compute_metrics(session, ids, since, until, at)
    body["store"] = store_key or None
    return jsonify(body)
