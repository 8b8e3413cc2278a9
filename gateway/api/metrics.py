"""GET /metrics: the figures of gateway/kpis.py for the key's stores over a period. Any two times make a
valid request: a period longer than MAX_PERIOD is cut to the MAX_PERIOD before `until`, an inverted one is
empty, and the body's `since` and `until` say which period was measured."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flask import Response, jsonify, request
from sqlalchemy import select

from gateway import web
from gateway.api import blueprint, now, time_arg, visible_store_ids
from gateway.kpis import DEFAULT_PERIOD, MAX_PERIOD, compute_metrics
from gateway.models import Store
from gateway.web import ApiError


def _before(moment: datetime, span: timedelta) -> datetime:
    try:
        return moment - span
    except OverflowError:
        return datetime.min.replace(tzinfo=UTC)


@blueprint.get("/metrics")
def metrics() -> Response:
    session = web.session()
    at = now()
    until = time_arg("until") or at
    since = time_arg("since") or _before(until, DEFAULT_PERIOD)
    since = min(max(since, _before(until, MAX_PERIOD)), until)
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
