"""GET /metrics: how the stores answer their customers, computed by the database in a few aggregates.

Leads are counted by when they were created, calls by when they started, inside [since, until).
Any two times make a valid request (the OpenAPI document cannot say "since before until"): a period
longer than MAX_PERIOD is cut to the MAX_PERIOD before `until`, an inverted one is empty, and the body's
`since` and `until` say which period was measured.
Tasks are counted as they are now. First response time is first_response_at - created_at; a lead meets
its SLA when that is within its store's response SLA (leads still waiting past their SLA count as
misses, leads still inside it are not counted yet). Every query is a range scan of the
(store_id, created_at / started_at) indexes of migration 0005, so it stays fast at millions of rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Response, jsonify, request
from sqlalchemy import ColumnElement, and_, case, func, or_, select
from sqlalchemy.orm import Session

from gateway import web
from gateway.api import blueprint, now, time_arg, visible_store_ids
from gateway.models import Call, CallOutcome, Direction, Lead, Store, Task, TaskStatus
from gateway.web import ApiError

DEFAULT_PERIOD = timedelta(days=30)
MAX_PERIOD = timedelta(days=400)
UNANSWERED = tuple(o.value for o in CallOutcome if o.unanswered)


def _seconds(later: Any, earlier: Any, dialect: str) -> ColumnElement[Any]:
    if dialect == "postgresql":
        return func.extract("epoch", later - earlier)
    return (func.julianday(later) - func.julianday(earlier)) * 86400.0


def _percentile(values: Sequence[float], fraction: float) -> float | None:
    """Linear interpolation between closest ranks: what PostgreSQL's percentile_cont computes."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def compute_metrics(
    session: Session, store_ids: set[int] | None, since: datetime, until: datetime, at: datetime
) -> dict[str, Any]:
    dialect = session.get_bind().dialect.name

    def scoped(query: Any, column: Any) -> Any:
        return query if store_ids is None else query.where(column.in_(store_ids))

    in_window = and_(Lead.created_at >= since, Lead.created_at < until)

    # Leads by status and source, in one pass.
    by_status: dict[str, int] = {}
    by_source: dict[str, int] = {}
    total_leads = 0
    for status, source, count in session.execute(
        scoped(select(Lead.status, Lead.source, func.count()).where(in_window), Lead.store_id).group_by(
            Lead.status, Lead.source
        )
    ):
        total_leads += count
        by_status[status] = by_status.get(status, 0) + count
        label = source or "unknown"
        by_source[label] = by_source.get(label, 0) + count

    # First response, SLA and leaks: one more pass over the same index range.
    response = _seconds(Lead.first_response_at, Lead.created_at, dialect)
    deadline_passed = _seconds(
        func.coalesce(Lead.first_response_at, at), Lead.created_at, dialect
    ) > Store.response_sla_seconds
    within = and_(Lead.first_response_at.is_not(None), response <= Store.response_sla_seconds)
    measured = or_(Lead.first_response_at.is_not(None), deadline_passed)
    summary = session.execute(
        scoped(
            select(
                func.count(case((within, 1))),
                func.count(case((measured, 1))),
                func.count(Lead.leaked_at),
                func.count(Lead.first_response_at),
            )
            .join(Store, Store.id == Lead.store_id)
            .where(in_window),
            Lead.store_id,
        )
    ).one()
    sla_within, sla_measured, leaked, responded = (int(v or 0) for v in summary)

    responded_filter = (in_window, Lead.first_response_at.is_not(None))
    if dialect == "postgresql":
        median, p90 = session.execute(
            scoped(
                select(
                    func.percentile_cont(0.5).within_group(response),
                    func.percentile_cont(0.9).within_group(response),
                ).where(*responded_filter),
                Lead.store_id,
            )
        ).one()
    else:  # SQLite has no percentile aggregate; the embedded database holds few enough leads to sort
        values = [
            float(v)
            for v in session.scalars(scoped(select(response).where(*responded_filter), Lead.store_id))
            if v is not None
        ]
        median, p90 = _percentile(values, 0.5), _percentile(values, 0.9)

    # Calls by outcome (customer calls into the stores).
    by_outcome: dict[str, int] = {}
    for outcome, count in session.execute(
        scoped(
            select(Call.outcome, func.count()).where(
                Call.started_at >= since,
                Call.started_at < until,
                Call.direction == Direction.INBOUND.value,
                Call.kind == "customer",
            ),
            Call.store_id,
        ).group_by(Call.outcome)
    ):
        by_outcome[outcome] = count
    settled = sum(c for o, c in by_outcome.items() if o != CallOutcome.RINGING.value)
    missed = sum(c for o, c in by_outcome.items() if o in UNANSWERED)

    # Tasks as they stand now.
    task_counts = session.execute(
        scoped(
            select(func.count(), func.count(case((Task.due_at < at, 1))))
            .select_from(Task)
            .join(Lead, Lead.id == Task.lead_id)
            .where(Task.status == TaskStatus.OPEN.value),
            Lead.store_id,
        )
    ).one()

    return {
        "since": since.isoformat(),
        "until": until.isoformat(),
        "leads": {"total": total_leads, "by_status": by_status, "by_source": by_source, "leaked": leaked},
        "calls": {
            "total": sum(by_outcome.values()),
            "by_outcome": by_outcome,
            "missed": missed,
            "missed_rate": round(missed / settled, 4) if settled else None,
        },
        "first_response": {
            "responded": responded,
            "median_seconds": _round(median),
            "p90_seconds": _round(p90),
        },
        "sla": {
            "met": sla_within,
            "measured": sla_measured,
            "attainment": round(sla_within / sla_measured, 4) if sla_measured else None,
        },
        "leaked_leads": leaked,
        "tasks": {"open": int(task_counts[0] or 0), "overdue": int(task_counts[1] or 0)},
    }


def _round(value: Any) -> float | None:
    return None if value is None else round(float(value), 1)


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
