"""How the stores answer their customers, computed by the database in a few aggregates: the figures of
`GET /api/v1/metrics` and of the workspace's KPI page, from one set of queries so they always agree.

Leads are counted by when they were created, calls by when they started, inside [since, until).
Tasks are counted as they are now. First response time is first_response_at - created_at; a lead meets
its SLA when that is within its store's response SLA (leads still waiting past their SLA count as
misses, leads still inside it are not counted yet). Every query is a range scan of the
(store_id, created_at / started_at) indexes of migration 0005, so it stays fast at millions of rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, or_, select
from sqlalchemy.orm import Session

from gateway.models import Call, CallOutcome, Direction, Lead, Store, Task, TaskStatus, TrackedNumber

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


# --- breakdowns for the KPI page: the same expressions, grouped ------------------------------------------

APPOINTMENT_KEPT = ("closed_won", "closed_lost", "appointment_confirmed")


def _lead_aggregates(dialect: str, at: datetime) -> list[Any]:
    response = _seconds(Lead.first_response_at, Lead.created_at, dialect)
    deadline_passed = _seconds(
        func.coalesce(Lead.first_response_at, at), Lead.created_at, dialect
    ) > Store.response_sla_seconds
    within = and_(Lead.first_response_at.is_not(None), response <= Store.response_sla_seconds)
    measured = or_(Lead.first_response_at.is_not(None), deadline_passed)
    appointment_past = and_(Lead.appointment_at.is_not(None), Lead.appointment_at < at)
    return [
        func.count(),
        func.count(Lead.first_response_at),
        func.count(case((within, 1))),
        func.count(case((measured, 1))),
        func.count(Lead.leaked_at),
        func.count(Lead.appointment_at),
        func.count(case((appointment_past, 1))),
        func.count(case((and_(appointment_past, Lead.status != "no_show"), 1))),
    ]


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _lead_row(values: Sequence[Any]) -> dict[str, Any]:
    total, responded, met, measured, leaked, appointments, due, shown = (int(v or 0) for v in values)
    return {
        "leads": total,
        "responded": responded,
        "contact_rate": _ratio(responded, total),
        "sla_met": met,
        "sla_measured": measured,
        "sla_attainment": _ratio(met, measured),
        "leaked": leaked,
        "appointments": appointments,
        "appointment_rate": _ratio(appointments, total),
        "appointments_due": due,
        "show_rate": _ratio(shown, due),
    }


def breakdown(
    session: Session, store_ids: set[int] | None, since: datetime, until: datetime, at: datetime, by: str
) -> list[dict[str, Any]]:
    """Lead and call figures per store, source or agent (`by`), with median and p90 first response."""
    dialect = session.get_bind().dialect.name
    group: Any = {"store": Lead.store_id, "source": Lead.source, "agent": Lead.owner_id}[by]

    def scoped(query: Any, column: Any) -> Any:
        return query if store_ids is None else query.where(column.in_(store_ids))

    in_window = and_(Lead.created_at >= since, Lead.created_at < until)
    rows: dict[Any, dict[str, Any]] = {}
    for values in session.execute(
        scoped(select(group, *_lead_aggregates(dialect, at)).join(Store, Store.id == Lead.store_id)
               .where(in_window), Lead.store_id).group_by(group)
    ):
        rows[values[0]] = {"key": values[0], **_lead_row(values[1:])}

    response = _seconds(Lead.first_response_at, Lead.created_at, dialect)
    responded_filter = (in_window, Lead.first_response_at.is_not(None))
    if dialect == "postgresql":
        for key, median, p90 in session.execute(
            scoped(select(group, func.percentile_cont(0.5).within_group(response),
                          func.percentile_cont(0.9).within_group(response)).where(*responded_filter),
                   Lead.store_id).group_by(group)
        ):
            if key in rows:
                rows[key]["median_seconds"], rows[key]["p90_seconds"] = _round(median), _round(p90)
    else:
        values_by: dict[Any, list[float]] = {}
        for key, value in session.execute(scoped(select(group, response).where(*responded_filter), Lead.store_id)):
            if value is not None:
                values_by.setdefault(key, []).append(float(value))
        for key, seconds in values_by.items():
            if key in rows:
                rows[key]["median_seconds"] = _round(_percentile(seconds, 0.5))
                rows[key]["p90_seconds"] = _round(_percentile(seconds, 0.9))

    if by in {"store", "source"}:
        call_group: Any = Call.store_id if by == "store" else TrackedNumber.source
        query = select(call_group, Call.outcome, func.count()).where(
            Call.started_at >= since, Call.started_at < until,
            Call.direction == Direction.INBOUND.value, Call.kind == "customer",
        )
        if by == "source":
            query = query.join(TrackedNumber, TrackedNumber.id == Call.tracked_number_id)
        counts: dict[Any, dict[str, int]] = {}
        for key, outcome, count in session.execute(scoped(query, Call.store_id).group_by(call_group, Call.outcome)):
            counts.setdefault(key, {})[outcome] = count
        for key, outcomes in counts.items():
            row = rows.setdefault(key, {"key": key, **_lead_row([0] * 8)})
            settled = sum(c for o, c in outcomes.items() if o != CallOutcome.RINGING.value)
            missed = sum(c for o, c in outcomes.items() if o in UNANSWERED)
            row.update(calls=sum(outcomes.values()), missed=missed, missed_rate=_ratio(missed, settled))
    for row in rows.values():
        row.setdefault("median_seconds", None)
        row.setdefault("p90_seconds", None)
        row.setdefault("calls", None)
        row.setdefault("missed", None)
        row.setdefault("missed_rate", None)
    return sorted(rows.values(), key=lambda r: -int(r["leads"]))


def leaks_by_reason(
    session: Session, store_ids: set[int] | None, since: datetime, until: datetime
) -> dict[str, int]:
    query = select(Lead.leak_reason, func.count()).where(
        Lead.created_at >= since, Lead.created_at < until, Lead.leaked_at.is_not(None)
    )
    if store_ids is not None:
        query = query.where(Lead.store_id.in_(store_ids))
    return {reason or "unknown": int(count) for reason, count in session.execute(query.group_by(Lead.leak_reason))}


def _day(column: Any, dialect: str, zone: str, offset_hours: int) -> Any:
    """The calendar day of a UTC time in the store's zone (SQLite, with no zones: at its offset of now)."""
    if dialect == "postgresql":
        return func.to_char(func.timezone(zone, column), "YYYY-MM-DD")
    return func.strftime("%Y-%m-%d", column, f"{offset_hours:+d} hours")


def by_day(
    session: Session, store_ids: set[int] | None, since: datetime, until: datetime, at: datetime, zone: str,
    offset_hours: int,
) -> dict[str, dict[str, Any]]:
    """Per calendar day: leads, SLA met and measured, calls and missed calls."""
    dialect = session.get_bind().dialect.name
    days: dict[str, dict[str, Any]] = {}
    lead_day = _day(Lead.created_at, dialect, zone, offset_hours)
    aggregates = _lead_aggregates(dialect, at)
    query = (
        select(lead_day, aggregates[0], aggregates[2], aggregates[3])
        .join(Store, Store.id == Lead.store_id)
        .where(Lead.created_at >= since, Lead.created_at < until)
    )
    if store_ids is not None:
        query = query.where(Lead.store_id.in_(store_ids))
    for day, total, met, measured in session.execute(query.group_by(lead_day)):
        days[str(day)] = {"leads": int(total), "sla_met": int(met or 0), "sla_measured": int(measured or 0),
                          "calls": 0, "missed": 0}
    call_day = _day(Call.started_at, dialect, zone, offset_hours)
    calls = select(
        call_day, func.count(case((Call.outcome != CallOutcome.RINGING.value, 1))),
        func.count(case((Call.outcome.in_(UNANSWERED), 1))),
    ).where(
        Call.started_at >= since, Call.started_at < until,
        Call.direction == Direction.INBOUND.value, Call.kind == "customer",
    )
    if store_ids is not None:
        calls = calls.where(Call.store_id.in_(store_ids))
    for day, settled, missed in session.execute(calls.group_by(call_day)):
        row = days.setdefault(str(day), {"leads": 0, "sla_met": 0, "sla_measured": 0, "calls": 0, "missed": 0})
        row["calls"], row["missed"] = int(settled or 0), int(missed or 0)
    return dict(sorted(days.items()))
