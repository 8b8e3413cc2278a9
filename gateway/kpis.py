"""Key figures: how the stores answer their customers, computed by the database in a few aggregates: the figures of
`GET /api/v1/metrics` (compute_metrics) and of the workspace's KPI page (page_figures), from the same passes so
they always agree.

Leads are counted by when they were created, calls by when they started, inside [since, until).
Tasks are counted as they are now; calls and texts found by reconciliation (gateway/reconcile/) by when
they started or were sent. First response time is first_response_at - created_at; a lead meets
its SLA when that is within its store's response SLA (leads still waiting past their SLA count as
misses, leads still inside it are not counted yet).

What keeps it fast at 100k leads and a million calls, for one store or every store: each figure comes from one
pass over its rows, however many breakdowns it feeds. On PostgreSQL the leads are read once for every breakdown
(GROUPING SETS) and once for the percentiles, the calls once (index-only, from the (store_id, started_at) and
(started_at) covering indexes of migrations 0005 and 0010), and the small counts (tasks, reconciled calls and
texts) in one more statement. Calendar days are buckets between the zone's midnights (width_bucket), computed
here, instead of a zone conversion per row. SQLite, the embedded database, holds few rows: there each grouping is
its own query and the percentiles are computed here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import ColumnElement, Date, DateTime, and_, bindparam, case, cast, func, or_, select, tuple_
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from gateway.models import Call, CallOutcome, Direction, Lead, Message, Store, Task, TaskStatus, TrackedNumber

DEFAULT_PERIOD = timedelta(days=30)
MAX_PERIOD = timedelta(days=400)
UNANSWERED = tuple(o.value for o in CallOutcome if o.unanswered)
APPOINTMENT_KEPT = ("closed_won", "closed_lost", "appointment_confirmed")

# The counts of one group of leads, in the order of _lead_aggregates.
LEAD_COUNTS = ("total", "responded", "met", "measured", "leaked", "appointments", "due", "shown")

Key = Any  # a grouping's key: the value of its one column, or a tuple of its columns' values
Groupings = Mapping[str, Sequence[Any]]  # name -> the columns it groups by


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


def _round(value: Any) -> float | None:
    return None if value is None else round(float(value), 1)


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _key(values: Sequence[Any]) -> Key:
    return values[0] if len(values) == 1 else tuple(values)


# --- the passes ------------------------------------------------------------------------------------------------


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


def _lead_scope(store_ids: set[int] | None, since: datetime, until: datetime) -> list[Any]:
    where: list[Any] = [Lead.created_at >= since, Lead.created_at < until]
    if store_ids is not None:
        where.append(Lead.store_id.in_(store_ids))
    return where


def _columns_of(groupings: Groupings) -> tuple[list[Any], dict[str, list[int]]]:
    """Every grouping's columns once (the same expression object, so a bound parameter in it is one parameter
    throughout a statement), and where each grouping's columns are among them."""
    columns: list[Any] = []
    for grouping in groupings.values():
        columns.extend(c for c in grouping if not any(c is seen for seen in columns))
    positions = {name: [next(i for i, c in enumerate(columns) if c is k) for k in g] for name, g in groupings.items()}
    return columns, positions


def _grouped(
    session: Session, dialect: str, outputs: Sequence[Any], where: Sequence[Any], groupings: Groupings,
    joins: Callable[[Any], Any] = lambda query: query,
) -> dict[str, dict[Key, Sequence[Any]]]:
    """`outputs` (aggregates) for each grouping: {name: {key: outputs}}. PostgreSQL computes every grouping in one
    scan (GROUPING SETS; GROUPING() says which set a row belongs to); SQLite runs one GROUP BY a grouping."""
    found: dict[str, dict[Key, Sequence[Any]]] = {name: {} for name in groupings}
    if dialect != "postgresql" or len(groupings) == 1:
        for name, keys in groupings.items():
            query = joins(select(*keys, *outputs)).where(*where)
            if keys:
                query = query.group_by(*keys)
            for row in session.execute(query):
                found[name][_key(row[: len(keys)])] = row[len(keys):]
        return found
    columns, positions = _columns_of(groupings)
    # GROUPING(columns...) has a 1 bit for each column the row's set does not group by, the last column lowest.
    by_mask = {
        sum(1 << (len(columns) - 1 - i) for i in range(len(columns)) if i not in at): name
        for name, at in positions.items()
    }
    if len(by_mask) != len(groupings):
        raise ValueError("two groupings over the same columns")
    query = (
        joins(select(*columns, func.grouping(*columns), *outputs))
        .where(*where)
        .group_by(func.grouping_sets(*(tuple_(*g) for g in groupings.values())))
    )
    for row in session.execute(query):
        name = by_mask[row[len(columns)]]
        found[name][_key([row[i] for i in positions[name]])] = row[len(columns) + 1:]
    return found


def _lead_counts(
    session: Session, dialect: str, store_ids: set[int] | None, since: datetime, until: datetime, at: datetime,
    groupings: Groupings,
) -> dict[str, dict[Key, dict[str, int]]]:
    """The LEAD_COUNTS of the leads created in [since, until), for each grouping."""
    found = _grouped(
        session, dialect, _lead_aggregates(dialect, at), _lead_scope(store_ids, since, until), groupings,
        joins=lambda query: query.join(Store, Store.id == Lead.store_id),
    )
    return {
        name: {key: dict(zip(LEAD_COUNTS, (int(v or 0) for v in values), strict=True)) for key, values in rows.items()}
        for name, rows in found.items()
    }


def _response_percentiles(
    session: Session, dialect: str, store_ids: set[int] | None, since: datetime, until: datetime,
    groupings: Groupings,
) -> dict[str, dict[Key, tuple[float | None, float | None]]]:
    """Median and p90 of the first response time of the responded leads, for each grouping (() is every lead)."""
    response = _seconds(Lead.first_response_at, Lead.created_at, dialect)
    where = [*_lead_scope(store_ids, since, until), Lead.first_response_at.is_not(None)]
    if dialect == "postgresql":
        outputs = [
            func.percentile_cont(0.5).within_group(response), func.percentile_cont(0.9).within_group(response),
        ]
        return {
            name: {key: (_round(median), _round(p90)) for key, (median, p90) in rows.items()}
            for name, rows in _grouped(session, dialect, outputs, where, groupings).items()
        }
    # SQLite has no percentile aggregate; the embedded database holds few enough leads to sort here.
    columns, positions = _columns_of(groupings)
    values: dict[str, dict[Key, list[float]]] = {name: {} for name in groupings}
    for *keys, value in session.execute(select(*columns, response).where(*where)):
        if value is None:
            continue
        for name, at in positions.items():
            values[name].setdefault(_key([keys[i] for i in at]), []).append(float(value))
    return {
        name: {key: (_round(_percentile(v, 0.5)), _round(_percentile(v, 0.9))) for key, v in rows.items()}
        for name, rows in values.items()
    }


def _call_counts(
    session: Session, store_ids: set[int] | None, since: datetime, until: datetime, keys: Sequence[Any]
) -> list[Any]:
    """Customer calls into the stores that started in [since, until): rows of (*keys, outcome, count)."""
    query = (
        select(*keys, Call.outcome, func.count())
        .where(
            Call.started_at >= since, Call.started_at < until,
            Call.direction == Direction.INBOUND.value, Call.kind == "customer",
        )
        .group_by(*keys, Call.outcome)
    )
    if store_ids is not None:
        query = query.where(Call.store_id.in_(store_ids))
    return list(session.execute(query))


def _small_counts(
    session: Session, store_ids: set[int] | None, since: datetime, until: datetime, at: datetime
) -> tuple[int, int, int, int]:
    """Calls and texts found only in the provider's log (gateway/reconcile/), by the same window (the partial
    indexes on `reconciled` keep these small however many rows there are), and the open and overdue tasks as they
    stand now: one statement."""
    calls = select(func.count()).select_from(Call).where(
        Call.reconciled, Call.started_at >= since, Call.started_at < until
    )
    texts = select(func.count()).select_from(Message).where(
        Message.reconciled, Message.created_at >= since, Message.created_at < until
    )
    tasks = (
        select(func.count().label("open"), func.count(case((Task.due_at < at, 1))).label("overdue"))
        .select_from(Task)
        .where(Task.status == TaskStatus.OPEN.value)
    )
    if store_ids is not None:  # (every task has its lead, a foreign key: for every store, no join)
        calls = calls.where(Call.store_id.in_(store_ids))
        texts = texts.where(Message.store_id.in_(store_ids))
        tasks = tasks.join(Lead, Lead.id == Task.lead_id).where(Lead.store_id.in_(store_ids))
    open_tasks = tasks.subquery()
    row = session.execute(
        select(open_tasks.c.open, open_tasks.c.overdue, calls.scalar_subquery(), texts.scalar_subquery())
    ).one()
    reconciled_calls, reconciled_texts, open_count, overdue = (int(v or 0) for v in (row[2], row[3], row[0], row[1]))
    return reconciled_calls, reconciled_texts, open_count, overdue


# --- the figures ---------------------------------------------------------------------------------------------


def _summary(
    since: datetime, until: datetime, by_status_source: Mapping[Key, Mapping[str, int]],
    percentiles: tuple[float | None, float | None], by_outcome: dict[str, int], small: tuple[int, int, int, int],
) -> dict[str, Any]:
    by_status: dict[str, int] = {}
    by_source: dict[str, int] = {}
    totals = dict.fromkeys(LEAD_COUNTS, 0)
    for (status, source), counts in by_status_source.items():
        by_status[status] = by_status.get(status, 0) + counts["total"]
        label = source or "unknown"
        by_source[label] = by_source.get(label, 0) + counts["total"]
        for name, value in counts.items():
            totals[name] += value
    settled = sum(c for o, c in by_outcome.items() if o != CallOutcome.RINGING.value)
    missed = sum(c for o, c in by_outcome.items() if o in UNANSWERED)
    reconciled_calls, reconciled_texts, open_tasks, overdue_tasks = small
    median, p90 = percentiles
    return {
        "since": since.isoformat(),
        "until": until.isoformat(),
        "leads": {"total": totals["total"], "by_status": by_status, "by_source": by_source,
                  "leaked": totals["leaked"]},
        "calls": {
            "total": sum(by_outcome.values()),
            "by_outcome": by_outcome,
            "missed": missed,
            "missed_rate": round(missed / settled, 4) if settled else None,
        },
        "first_response": {"responded": totals["responded"], "median_seconds": median, "p90_seconds": p90},
        "sla": {
            "met": totals["met"],
            "measured": totals["measured"],
            "attainment": round(totals["met"] / totals["measured"], 4) if totals["measured"] else None,
        },
        "leaked_leads": totals["leaked"],
        "reconciled_calls": reconciled_calls,
        "reconciled_messages": reconciled_texts,
        "tasks": {"open": open_tasks, "overdue": overdue_tasks},
    }


def compute_metrics(
    session: Session, store_ids: set[int] | None, since: datetime, until: datetime, at: datetime
) -> dict[str, Any]:
    """The figures of GET /api/v1/metrics for the stores (None: every store) over [since, until)."""
    dialect = session.get_bind().dialect.name
    leads = _lead_counts(session, dialect, store_ids, since, until, at, {"status": (Lead.status, Lead.source)})
    percentiles = _response_percentiles(session, dialect, store_ids, since, until, {"all": ()})
    by_outcome = {outcome: count for outcome, count in _call_counts(session, store_ids, since, until, ())}
    return _summary(
        since, until, leads["status"], percentiles["all"].get((), (None, None)), by_outcome,
        _small_counts(session, store_ids, since, until, at),
    )


# --- the KPI page: the same passes, grouped by store, source, agent and day ----------------------------------


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


def _row_of(counts: Mapping[str, int]) -> dict[str, Any]:
    return _lead_row([counts[k] for k in LEAD_COUNTS])


def day_starts(zone: str, first: date, last: date) -> list[datetime] | None:
    """The instants (UTC) at which the zone's calendar days first .. last + 1 begin, when each is a plain local
    midnight (neither skipped nor repeated by a clock change): the edges that width_bucket sorts times into.
    None when a midnight is not plain (a few zones change their clocks at midnight) or the days are out of range:
    then the caller converts every time to the zone instead."""
    try:
        tz = ZoneInfo(zone)
        starts = []
        day = first
        while day <= last + timedelta(days=1):
            midnight = datetime.combine(day, time(), tzinfo=tz)
            if midnight.utcoffset() != midnight.replace(fold=1).utcoffset():
                return None
            starts.append(midnight.astimezone(UTC))
            day += timedelta(days=1)
        return starts
    except (ZoneInfoNotFoundError, ValueError, OverflowError):
        return None


def _day(
    column: Any, dialect: str, zone: str, offset_hours: int, since: datetime, until: datetime
) -> tuple[Any, Callable[[Any], str]]:
    """The calendar day of a UTC time in the store's zone, as an expression and what turns its value into
    'YYYY-MM-DD'. PostgreSQL: the bucket between the zone's midnights (or, where a midnight is not plain, the time
    converted to the zone); SQLite, with no zones: the time at the zone's offset of now."""
    if dialect != "postgresql":
        return func.strftime("%Y-%m-%d", column, f"{offset_hours:+d} hours"), str
    first = last = None
    try:
        tz = ZoneInfo(zone)
        first, last = since.astimezone(tz).date(), until.astimezone(tz).date()
    except (ZoneInfoNotFoundError, ValueError, OverflowError):
        pass
    starts = day_starts(zone, first, last) if first is not None and last is not None else None
    if starts is None or first is None:
        return cast(func.timezone(zone, column), Date), str
    edges = bindparam("day_starts", starts, type_=ARRAY(DateTime(timezone=True)))
    start = first  # width_bucket: 1 for [starts[0], starts[1]), 0 before starts[0]; day first + bucket - 1
    return func.width_bucket(column, edges), lambda bucket: (start + timedelta(days=int(bucket) - 1)).isoformat()


def page_figures(
    session: Session,
    store_ids: set[int] | None,
    since: datetime,
    until: datetime,
    at: datetime,
    zone: str,
    offset_hours: int,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The KPI page's figures: the summary (what compute_metrics gives for the same arguments) and the figures per
    store, source, agent and day, and leaks by reason, from one pass over the leads (every breakdown at once), one
    for the percentiles, one over the calls and one for the small counts. A breakdown's rows add up to its
    totals."""
    dialect = session.get_bind().dialect.name
    lead_day, day_of = _day(Lead.created_at, dialect, zone, offset_hours, since, until)
    leads = _lead_counts(session, dialect, store_ids, since, until, at, {
        "store": (Lead.store_id,), "source": (Lead.source,), "agent": (Lead.owner_id,), "day": (lead_day,),
        "leak": (Lead.leak_reason,), "status": (Lead.status, Lead.source),
    })
    percentiles = _response_percentiles(session, dialect, store_ids, since, until, {
        "all": (), "store": (Lead.store_id,), "source": (Lead.source,), "agent": (Lead.owner_id,),
    })
    call_day, call_day_of = _day(Call.started_at, dialect, zone, offset_hours, since, until)
    calls = _call_counts(session, store_ids, since, until, (Call.store_id, Call.tracked_number_id, call_day))
    small = _small_counts(session, store_ids, since, until, at)

    by_outcome: dict[str, int] = {}
    for *_, outcome, count in calls:
        by_outcome[outcome] = by_outcome.get(outcome, 0) + count
    summary = _summary(since, until, leads["status"], percentiles["all"].get((), (None, None)), by_outcome, small)

    rows: dict[str, dict[Key, dict[str, Any]]] = {}
    for by in ("store", "source", "agent", "day"):
        found = leads[by] if by != "day" else {day_of(day): counts for day, counts in leads["day"].items()}
        rows[by] = {
            key: {"key": key, **_row_of(counts), "median_seconds": None, "p90_seconds": None, "calls": None,
                  "missed": None, "missed_rate": None}
            for key, counts in found.items()
        }
        for key, (median, p90) in percentiles.get(by, {}).items():
            if key in rows[by]:
                rows[by][key]["median_seconds"], rows[by][key]["p90_seconds"] = median, p90
    _add_calls(session, calls, call_day_of, rows)

    leaks: dict[str, int] = {}
    for reason, counts in leads["leak"].items():
        if counts["leaked"]:
            leaks[reason or "unknown"] = leaks.get(reason or "unknown", 0) + counts["leaked"]
    days = {
        day: {"leads": r["leads"], "sla_met": r["sla_met"], "sla_measured": r["sla_measured"],
              "calls": r.get("calls") or 0, "missed": r.get("missed") or 0}
        for day, r in rows["day"].items()
    }
    return summary, {
        "store": sorted(rows["store"].values(), key=lambda r: -int(r["leads"])),
        "source": sorted(rows["source"].values(), key=lambda r: -int(r["leads"])),
        "agent": sorted(rows["agent"].values(), key=lambda r: -int(r["leads"])),
        "days": dict(sorted(days.items())),
        "leaks": dict(sorted(leaks.items(), key=lambda item: -item[1])),
    }


def _add_calls(
    session: Session, calls: Sequence[Any], day_of: Callable[[Any], str], rows: dict[str, dict[Key, dict[str, Any]]]
) -> None:
    """Calls, settled and missed calls per store, source (the tracked number's) and day into the rows."""
    numbers = session.execute(select(TrackedNumber.id, TrackedNumber.source))
    sources = {number_id: source for number_id, source in numbers}
    days: dict[Any, str] = {}
    tally: dict[tuple[str, Any], list[int]] = {}  # (grouping, key) -> [calls, settled, missed]
    for store_id, number_id, day, outcome, count in calls:
        settled = count if outcome != CallOutcome.RINGING.value else 0
        missed = count if outcome in UNANSWERED else 0
        if day not in days:
            days[day] = day_of(day)
        for pair in (("store", store_id), ("source", sources.get(number_id)), ("day", days[day])):
            totals = tally.setdefault(pair, [0, 0, 0])
            totals[0] += count
            totals[1] += settled
            totals[2] += missed
    for (by, key), (total, settled, missed) in tally.items():
        row = rows[by].setdefault(
            key, {"key": key, **_row_of(dict.fromkeys(LEAD_COUNTS, 0)), "median_seconds": None, "p90_seconds": None}
        )
        row.update(calls=total if by != "day" else settled, missed=missed, missed_rate=_ratio(missed, settled))
