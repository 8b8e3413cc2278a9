"""gateway/kpis.py: the KPI page's figures are the API's, every store's figures are the merge of each store's,
each breakdown agrees with the rows it counts, and calendar days are the zone's (across clock changes too)."""

from __future__ import annotations

import os
import random
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from gateway.kpis import compute_metrics, day_starts, page_figures
from gateway.models import Agent, Call, Contact, Lead, Message, Store, Task, TrackedNumber
from gateway.simulator import play_call
from tests.gateway.agents.helpers import api_key
from tests.gateway.dashboard.helpers import sign_in_by_key
from tests.support.config import SIMULTANEOUS, SOUTH

pytestmark = pytest.mark.usefixtures("configured")

ON_POSTGRESQL = os.environ.get("GATEWAY_TEST_DATABASE") == "postgresql"
OUTCOMES = ["answered"] * 6 + ["missed", "abandoned", "voicemail", "after_hours", "busy", "failed", "forwarded",
                                "ringing"]
STATUSES = ["new", "attempting_contact", "contacted", "appointment_set", "appointment_confirmed", "no_show",
            "closed_won", "closed_lost"]
LEAKS = ["nobody_on_duty", "owner_did_not_act", None, "unknown"]


def seed(db: Any, now: datetime, leads: int = 160, calls: int = 400, days: int = 12, seed: int = 7) -> None:
    """Leads, calls, tasks and texts of both stores over `days` days, with every kind of value the figures
    tell apart: sources and owners (and none), answered in and out of the SLA, waiting inside and past it,
    leaked with and without a reason, appointments past and to come, calls of every outcome with and without
    a tracked number, outbound calls and click-to-call (not counted), reconciled calls and texts."""
    rng = random.Random(seed)
    with db.session() as session:
        stores = list(session.scalars(select(Store).order_by(Store.id)))
        agents = {s.id: [a.id for a in session.scalars(select(Agent).where(Agent.store_id == s.id))] for s in stores}
        numbers = {s.id: [n.id for n in session.scalars(select(TrackedNumber).where(TrackedNumber.store_id == s.id))]
                   for s in stores}
        sources = ["Cars.com", "Website", "Radio", None]
        for n in range(leads):
            store = rng.choice(stores)
            created = now - timedelta(days=days) * rng.random()
            contact = Contact(phone=f"+1312555{n:04d}")
            session.add(contact)
            session.flush()
            # Not exactly at an SLA (5 or 10 minutes): SQLite measures through julianday(), a float some
            # microseconds off.
            waited = timedelta(seconds=rng.choice([0, 60, 299, 301, 599, 601, 3600]))
            responded = created + waited if rng.random() < 0.7 else None
            appointment = created + timedelta(days=rng.uniform(0, 8)) if rng.random() < 0.4 else None
            leaked = responded is None and rng.random() < 0.5
            lead = Lead(
                code=f"T{n:06d}", contact_id=contact.id, store_id=store.id, department="sales",
                source=rng.choice(sources), status=rng.choice(STATUSES),
                owner_id=rng.choice([*agents[store.id], None]),
                first_response_at=responded, appointment_at=appointment,
                leaked_at=created + timedelta(hours=1) if leaked else None,
                leak_reason=rng.choice(LEAKS) if leaked else None,
                created_at=created, updated_at=created,
            )
            session.add(lead)
            session.flush()
            if rng.random() < 0.5:
                session.add(Task(lead_id=lead.id, kind="callback", due_at=now + timedelta(hours=rng.uniform(-30, 30)),
                                 status=rng.choice(["open", "open", "done"]), created_at=created))
        for n in range(calls):
            store = rng.choice(stores)
            started = now - timedelta(days=days) * rng.random()
            session.add(Call(
                sid=f"CA{n:032x}", store_id=store.id, tracked_number_id=rng.choice([*numbers[store.id], None]),
                from_number=f"+1312555{rng.randint(0, leads):04d}", to_number="+12025550123",
                direction="inbound" if rng.random() < 0.9 else "outbound",
                kind="customer" if rng.random() < 0.9 else "click_to_call",
                status="completed", outcome=rng.choice(OUTCOMES), reconciled=rng.random() < 0.05,
                started_at=started, created_at=started,
            ))
        for n in range(30):
            store = rng.choice(stores)
            at = now - timedelta(days=days) * rng.random()
            session.add(Message(
                store_id=store.id, direction="inbound", kind="customer", from_number="+13125550000",
                to_number="+12025550123", body="hi", status="received", reconciled=n % 3 == 0,
                created_at=at, updated_at=at,
            ))


def store_ids(db: Any) -> list[int]:
    with db.session() as session:
        return list(session.scalars(select(Store.id).order_by(Store.id)))


def figures(db: Any, ids: set[int] | None, since: datetime, until: datetime, at: datetime,
            zone: str = "America/New_York") -> tuple[dict[str, Any], dict[str, Any]]:
    offset = int((at.astimezone(ZoneInfo(zone)).utcoffset() or timedelta()).total_seconds() // 3600)
    with db.session() as session:
        return page_figures(session, ids, since, until, at, zone, offset)


def test_the_page_summary_is_the_api_figures(db, clock):
    now = clock.now()
    seed(db, now)
    for ids in (None, *({i} for i in store_ids(db)), set(store_ids(db))):
        for since, until in ((now - timedelta(days=30), now), (now - timedelta(days=5, hours=7), now - timedelta(1))):
            summary, _ = figures(db, ids, since, until, now)
            with db.session() as session:
                assert summary == compute_metrics(session, ids, since, until, now)


def _add(into: dict[str, Any], row: dict[str, Any], names: tuple[str, ...]) -> None:
    for name in names:
        into[name] = into.get(name, 0) + (row.get(name) or 0)


ROW_COUNTS = ("leads", "responded", "sla_met", "sla_measured", "leaked", "appointments", "appointments_due",
              "calls", "missed")


def test_every_store_is_the_merge_of_each_store(db, clock):
    now = clock.now()
    seed(db, now)
    since = now - timedelta(days=30)
    every_summary, every = figures(db, None, since, now, now)
    each = {i: figures(db, {i}, since, now, now) for i in store_ids(db)}
    assert every_summary["leads"]["total"] > 100
    assert every_summary["calls"]["total"] > 300

    # The summary: counts add up; rates are the rates of the sums.
    def total(path: tuple[str, ...]) -> Any:
        values = []
        for summary, _ in each.values():
            value: Any = summary
            for step in path:
                value = value[step]
            values.append(value)
        if isinstance(values[0], dict):
            merged: Counter[str] = Counter()
            for v in values:
                merged.update(v)
            return dict(merged)
        return sum(values)

    for path in (("leads", "total"), ("leads", "by_status"), ("leads", "by_source"), ("leads", "leaked"),
                 ("calls", "total"), ("calls", "by_outcome"), ("calls", "missed"), ("first_response", "responded"),
                 ("sla", "met"), ("sla", "measured"), ("leaked_leads",), ("reconciled_calls",),
                 ("reconciled_messages",), ("tasks", "open"), ("tasks", "overdue")):
        value: Any = every_summary
        for step in path:
            value = value[step]
        assert value == total(path), path
    settled = every_summary["calls"]["total"] - every_summary["calls"]["by_outcome"].get("ringing", 0)
    assert every_summary["calls"]["missed_rate"] == round(every_summary["calls"]["missed"] / settled, 4)
    assert every_summary["sla"]["attainment"] == round(
        every_summary["sla"]["met"] / every_summary["sla"]["measured"], 4
    )

    # By store: each store's row is that store's own page, to the percentile.
    by_store = {row["key"]: row for row in every["store"]}
    for store_id, (summary, mine) in each.items():
        [row] = [r for r in mine["store"] if r["key"] == store_id]
        assert by_store[store_id] == row
        assert (row["median_seconds"], row["p90_seconds"]) == (
            summary["first_response"]["median_seconds"], summary["first_response"]["p90_seconds"]
        )
        assert row["leads"] == summary["leads"]["total"]
        assert row["calls"] == summary["calls"]["total"]

    # By source, agent and day, and leaks: the counts are the sums of each store's.
    for by in ("source", "agent"):
        merged: dict[Any, dict[str, Any]] = {}
        for _, mine in each.values():
            for row in mine[by]:
                _add(merged.setdefault(row["key"], {}), row, ROW_COUNTS)
        assert {row["key"]: {n: row.get(n) or 0 for n in ROW_COUNTS} for row in every[by]} == merged, by
    days: dict[str, dict[str, Any]] = {}
    for _, mine in each.values():
        for day, row in mine["days"].items():
            _add(days.setdefault(day, {}), row, ("leads", "sla_met", "sla_measured", "calls", "missed"))
    assert every["days"] == days
    leaks: Counter[str] = Counter()
    for _, mine in each.values():
        leaks.update(mine["leaks"])
    assert every["leaks"] == dict(leaks)


def test_breakdowns_count_the_rows(db, clock):
    """Against the rows themselves, counted here: leads per store, source, agent and day; calls per store and
    source; the SLA by each store's own limit; leaks by reason ('unknown' with the reason-less ones)."""
    now = clock.now()
    seed(db, now, days=6)
    since, until = now - timedelta(days=5), now - timedelta(hours=5)
    _, every = figures(db, None, since, until, now)
    zone = ZoneInfo("America/New_York")
    with db.session() as session:
        slas = dict(session.execute(select(Store.id, Store.response_sla_seconds)).all())
        sources = dict(session.execute(select(TrackedNumber.id, TrackedNumber.source)).all())
        leads = [lead for lead in session.scalars(select(Lead)) if since <= lead.created_at < until]
        calls = [c for c in session.scalars(select(Call))
                 if since <= c.started_at < until and c.direction == "inbound" and c.kind == "customer"]
    expected: dict[str, dict[Any, Counter[str]]] = {"store": {}, "source": {}, "agent": {}, "day": {}}
    leaks: Counter[str] = Counter()
    for lead in leads:
        waited = ((lead.first_response_at or now) - lead.created_at).total_seconds()
        counts = Counter(
            leads=1,
            responded=lead.first_response_at is not None,
            sla_met=lead.first_response_at is not None and waited <= slas[lead.store_id],
            sla_measured=lead.first_response_at is not None or waited > slas[lead.store_id],
            leaked=lead.leaked_at is not None,
            appointments=lead.appointment_at is not None,
            appointments_due=lead.appointment_at is not None and lead.appointment_at < now,
        )
        day = lead.created_at.astimezone(zone).date().isoformat()
        for by, key in (("store", lead.store_id), ("source", lead.source), ("agent", lead.owner_id), ("day", day)):
            expected[by].setdefault(key, Counter()).update(counts)
        if lead.leaked_at is not None:
            leaks[lead.leak_reason or "unknown"] += 1
    for call in calls:
        missed = call.outcome not in ("answered", "ringing", "forwarded")
        for by, key in (("store", call.store_id), ("source", sources.get(call.tracked_number_id or 0))):
            expected[by].setdefault(key, Counter()).update(Counter(calls=1, missed=missed))
        day = call.started_at.astimezone(zone).date().isoformat()
        expected["day"].setdefault(day, Counter()).update(
            Counter(calls=call.outcome != "ringing", missed=missed)
        )
    names = ("leads", "responded", "sla_met", "sla_measured", "leaked", "appointments", "appointments_due", "calls",
             "missed")
    for by in ("store", "source", "agent"):
        got = {row["key"]: {n: row.get(n) or 0 for n in names} for row in every[by]}
        assert got == {key: {n: c[n] for n in names} for key, c in expected[by].items()}, by
    day_names = ("leads", "sla_met", "sla_measured", "calls", "missed")
    assert every["days"] == {day: {n: c[n] for n in day_names} for day, c in sorted(expected["day"].items())}
    assert every["leaks"] == dict(leaks)


def test_a_just_created_lead_counts_at_once(client, poster, db, clock):
    """No cache between the rows and the figures: the page over every store counts a call the moment it is a
    lead, and equals the sum of the two stores' pages."""
    sign_in_by_key(client, api_key(db, clock, None))

    def leads_shown(query: str = "") -> int:
        page = client.get(f"/kpis{query}").get_data(as_text=True)
        return int(page.split('id="kpi-leads">', 1)[1].split("<", 1)[0])

    assert leads_shown() == 0
    list(play_call(poster, to=SIMULTANEOUS, caller="+12025550181", outcome="no-answer"))
    clock.advance(timedelta(seconds=1))  # the page counts up to now: [since, now)
    assert leads_shown() == 1
    list(play_call(poster, to=SOUTH, caller="+13125550182", outcome="no-answer"))
    clock.advance(timedelta(seconds=1))
    assert leads_shown() == 2
    assert leads_shown("?store=north-honda") + leads_shown("?store=south-ford") == 2


def test_day_starts_are_the_zones_midnights_across_a_clock_change():
    starts = day_starts("America/New_York", date(2026, 10, 31), date(2026, 11, 2))
    assert starts == [
        datetime(2026, 10, 31, 4, tzinfo=UTC),
        datetime(2026, 11, 1, 4, tzinfo=UTC),  # a day of 25 hours: clocks go back at 2 am
        datetime(2026, 11, 2, 5, tzinfo=UTC),
        datetime(2026, 11, 3, 5, tzinfo=UTC),
    ]
    # Zones whose clocks change at midnight (a midnight repeated, or skipped) have no plain edges: None.
    assert day_starts("America/Havana", date(2026, 10, 31), date(2026, 11, 2)) is None
    assert day_starts("America/Santiago", date(2026, 9, 4), date(2026, 9, 7)) is None
    assert day_starts("America/Havana", date(2026, 11, 10), date(2026, 11, 12)) is not None
    assert day_starts("Nowhere/Special", date(2026, 11, 10), date(2026, 11, 12)) is None
    assert day_starts("America/New_York", date(9999, 12, 30), date(9999, 12, 31)) is None


@pytest.mark.skipif(not ON_POSTGRESQL, reason="SQLite has no zones: it counts days at the zone's offset of now")
@pytest.mark.parametrize("zone", ["America/New_York", "America/Havana", "Asia/Kolkata", "America/St_Johns"])
def test_days_are_the_zones_calendar_days_across_a_clock_change(db, clock, zone):
    """New York's 25-hour 1 November is sorted by its midnights; Havana's (midnight repeated) by converting
    each time to the zone: both give each lead and call the day a person there would say."""
    now = datetime(2026, 11, 4, 15, tzinfo=UTC)
    seed(db, now, leads=120, calls=300, days=6)
    since = now - timedelta(days=6)
    _, every = figures(db, None, since, now, now, zone)
    tz = ZoneInfo(zone)
    with db.session() as session:
        leads = Counter(
            lead.created_at.astimezone(tz).date().isoformat()
            for lead in session.scalars(select(Lead)) if since <= lead.created_at < now
        )
        calls = Counter(
            c.started_at.astimezone(tz).date().isoformat() for c in session.scalars(select(Call))
            if since <= c.started_at < now and c.direction == "inbound" and c.kind == "customer"
            and c.outcome != "ringing"
        )
    assert {day: row["leads"] for day, row in every["days"].items() if row["leads"]} == dict(leads)
    assert {day: row["calls"] for day, row in every["days"].items() if row["calls"]} == dict(calls)
    assert len(every["days"]) == 7
