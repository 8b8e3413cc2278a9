"""Call logs for CRMs that pull: ended calls in the order they ended, with a cursor that never skips.

A row is listed only once it has settled for `HORIZON`: a transaction that began earlier but commits
later cannot slip in behind a cursor that has already moved past it.
"""

from __future__ import annotations

from datetime import timedelta

from flask import Response, request
from sqlalchemy import and_, or_, select

from gateway import serialize as out
from gateway import web
from gateway.api import (
    blueprint,
    cursor_id,
    cursor_time,
    decode_cursor,
    encode_cursor,
    limit_arg,
    now,
    page,
    visible_store_ids,
)
from gateway.database import required
from gateway.models import Call

HORIZON = timedelta(seconds=2)


@blueprint.get("/calls")
def list_calls() -> Response:
    query = select(Call).where(Call.processed_at.is_not(None), Call.processed_at <= now() - HORIZON)
    ids = visible_store_ids()
    if ids is not None:
        query = query.where(Call.store_id.in_(ids))
    since = request.args.get("since")
    since = request.args.get("cursor") if since is None else since
    cursor = decode_cursor(since)
    if cursor is not None:
        at = cursor_time(cursor)
        last_id = cursor_id(cursor)
        query = query.where(
            or_(Call.processed_at > at, and_(Call.processed_at == at, Call.id > last_id))
        )
    limit = limit_arg()
    rows = list(web.session().scalars(query.order_by(Call.processed_at, Call.id).limit(limit)))
    if rows:
        last = rows[-1]
        settled = required(last.processed_at, "processed_at")
        next_cursor: str | None = encode_cursor({"at": settled, "id": last.id})
    else:
        next_cursor = since
    return page([out.call(r) for r in rows], next_cursor)
