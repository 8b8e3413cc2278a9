"""Key figures: how the stores answer their customers, computed by the database in a few aggregates: the figures of
`GET /api/v1/metrics` and of the workspace's KPI page, from one set of queries so they always agree.

Leads are counted by when they were created, calls by when they started, inside [since, until).
Tasks are counted as they are now; calls and texts found by reconciliation (gateway/reconcile/) by when
they started or were sent. First response time is first_response_at - created_at; a lead meets
its SLA when that is within its store's response SLA (leads still waiting past their SLA count as
misses, leads still inside it are not counted yet). Every query is a range scan of the
(store_id, created_at / started_at) indexes of migration 0005, so it stays fast at millions of rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Date, and_, case, cast, func, or_, select, tuple_
from sqlalchemy.orm import Session

from gateway.models import Call, CallOutcome, Direction, Lead, Message, Store, Task, TaskStatus, TrackedNumber

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

    # Calls and texts found only in the provider's log (gateway/reconcile/), by the same windows; the
    # partial indexes on `reconciled` keep these two counts small however many rows there are.
    reconciled_calls = session.scalar(
        scoped(
            select(func.count()).select_from(Call).where(
                Call.reconciled, Call.started_at >= since, Call.started_at < until
            ),
            Call.store_id,
        )
    )
    reconciled_messages = session.scalar(
        scoped(
            select(func.count()).select_from(Message).where(
                Message.reconciled, Message.created_at >= since, Message.created_at < until
            ),
            Message.store_id,
        )
    )

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
        "reconciled_calls": int(reconciled_calls or 0),
        "reconciled_messages": int(reconciled_messages or 0),
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


def _day(column: Any, dialect: str, zone: str, offset_hours: int) -> Any:
    """The calendar day of a UTC time in the store's zone (SQLite, with no zones: at its offset of now)."""
    if dialect == "postgresql":
        return cast(func.timezone(zone, column), Date)
    return func.strftime("%Y-%m-%d", column, f"{offset_hours:+d} hours")


def _blank() -> dict[str, int]:
    return dict.fromkeys(("total", "responded", "met", "measured", "leaked", "appointments", "due", "shown"), 0)


def _row_of(counts: dict[str, int]) -> dict[str, Any]:
    return _lead_row([counts[k] for k in ("total", "responded", "met", "measured", "leaked", "appointments", "due",
                                          "shown")])


def breakdowns(
    session: Session,
    store_ids: set[int] | None,
    since: datetime,
    until: datetime,
    at: datetime,
    zone: str,
    offset_hours: int,
) -> dict[str, Any]:
    """The KPI page's figures per store, source, agent and day, and leaks by reason, from one grouped pass
    over the leads, one over the calls and one for the percentiles: the expressions of compute_metrics,
    grouped, so a breakdown's rows add up to its totals."""
    dialect = session.get_bind().dialect.name
    lead_day = _day(Lead.created_at, dialect, zone, offset_hours)
    keys = (Lead.store_id, Lead.source, Lead.owner_id, lead_day, Lead.leak_reason)
    query = (
        select(*keys, *_lead_aggregates(dialect, at))
        .join(Store, Store.id == Lead.store_id)
        .where(Lead.created_at >= since, Lead.created_at < until)
        .group_by(*keys)
    )
    if store_ids is not None:
        query = query.where(Lead.store_id.in_(store_ids))
    groups: dict[str, dict[Any, dict[str, int]]] = {"store": {}, "source": {}, "agent": {}, "day": {}}
    leaks: dict[str, int] = {}
    names = ("total", "responded", "met", "measured", "leaked", "appointments", "due", "shown")
    for store_id, source, owner_id, day, leak_reason, *values in session.execute(query):
        counts = dict(zip(names, (int(v or 0) for v in values), strict=True))
        for by, key in (("store", store_id), ("source", source), ("agent", owner_id), ("day", str(day))):
            bucket = groups[by].setdefault(key, _blank())
            for name, value in counts.items():
                bucket[name] += value
        if counts["leaked"]:
            reason = leak_reason or "unknown"
            leaks[reason] = leaks.get(reason, 0) + counts["leaked"]

    rows: dict[str, dict[Any, dict[str, Any]]] = {
        by: {key: {"key": key, **_row_of(c), "median_seconds": None, "p90_seconds": None, "calls": None,
                   "missed": None, "missed_rate": None} for key, c in found.items()}
        for by, found in groups.items()
    }
    _add_percentiles(session, dialect, store_ids, since, until, rows)
    _add_calls(session, dialect, store_ids, since, until, zone, offset_hours, rows)
    days = {
        day: {"leads": r["leads"], "sla_met": r["sla_met"], "sla_measured": r["sla_measured"],
              "calls": r.get("calls") or 0, "missed": r.get("missed") or 0}
        for day, r in rows["day"].items()
    }
    return {
        "store": sorted(rows["store"].values(), key=lambda r: -int(r["leads"])),
        "source": sorted(rows["source"].values(), key=lambda r: -int(r["leads"])),
        "agent": sorted(rows["agent"].values(), key=lambda r: -int(r["leads"])),
        "days": dict(sorted(days.items())),
        "leaks": dict(sorted(leaks.items(), key=lambda item: -item[1])),
    }


def _add_percentiles(
    session: Session, dialect: str, store_ids: set[int] | None, since: datetime, until: datetime,
    rows: dict[str, dict[Any, dict[str, Any]]],
) -> None:
    response = _seconds(Lead.first_response_at, Lead.created_at, dialect)
    where = [Lead.created_at >= since, Lead.created_at < until, Lead.first_response_at.is_not(None)]
    if store_ids is not None:
        where.append(Lead.store_id.in_(store_ids))
    if dialect == "postgresql":
        # One scan, three groupings: which grouping a row belongs to shows in GROUPING(...).
        query = (
            select(
                Lead.store_id, Lead.source, Lead.owner_id,
                func.grouping(Lead.store_id), func.grouping(Lead.source),
                func.percentile_cont(0.5).within_group(response), func.percentile_cont(0.9).within_group(response),
            )
            .where(*where)
            .group_by(func.grouping_sets(tuple_(Lead.store_id), tuple_(Lead.source), tuple_(Lead.owner_id)))
        )
        for store_id, source, owner_id, g_store, g_source, median, p90 in session.execute(query):
            by, key = (
                ("store", store_id) if not g_store else ("source", source) if not g_source else ("agent", owner_id)
            )
            if key in rows[by]:
                rows[by][key]["median_seconds"], rows[by][key]["p90_seconds"] = _round(median), _round(p90)
        return
    values: dict[tuple[str, Any], list[float]] = {}
    for store_id, source, owner_id, value in session.execute(
        select(Lead.store_id, Lead.source, Lead.owner_id, response).where(*where)
    ):
        if value is None:
            continue
        for pair in (("store", store_id), ("source", source), ("agent", owner_id)):
            values.setdefault(pair, []).append(float(value))
    for (by, key), seconds in values.items():
        if key in rows[by]:
            rows[by][key]["median_seconds"] = _round(_percentile(seconds, 0.5))
            rows[by][key]["p90_seconds"] = _round(_percentile(seconds, 0.9))


def _add_calls(
    session: Session, dialect: str, store_ids: set[int] | None, since: datetime, until: datetime, zone: str,
    offset_hours: int, rows: dict[str, dict[Any, dict[str, Any]]],
) -> None:
    numbers = session.execute(select(TrackedNumber.id, TrackedNumber.source))
    sources = {number_id: source for number_id, source in numbers}
    call_day = _day(Call.started_at, dialect, zone, offset_hours)
    query = (
        select(Call.store_id, Call.tracked_number_id, call_day, Call.outcome, func.count())
        .where(
            Call.started_at >= since, Call.started_at < until,
            Call.direction == Direction.INBOUND.value, Call.kind == "customer",
        )
        .group_by(Call.store_id, Call.tracked_number_id, call_day, Call.outcome)
    )
    if store_ids is not None:
        query = query.where(Call.store_id.in_(store_ids))
    tally: dict[tuple[str, Any], list[int]] = {}  # (grouping, key) -> [calls, settled, missed]
    for store_id, number_id, day, outcome, count in session.execute(query):
        settled = count if outcome != CallOutcome.RINGING.value else 0
        missed = count if outcome in UNANSWERED else 0
        for pair in (("store", store_id), ("source", sources.get(number_id)), ("day", str(day))):
            totals = tally.setdefault(pair, [0, 0, 0])
            totals[0] += count
            totals[1] += settled
            totals[2] += missed
    for (by, key), (calls, settled, missed) in tally.items():
        row = rows[by].setdefault(
            key, {"key": key, **_row_of(_blank()), "median_seconds": None, "p90_seconds": None}
        )
        row.update(calls=calls if by != "day" else settled, missed=missed, missed_rate=_ratio(missed, settled))
