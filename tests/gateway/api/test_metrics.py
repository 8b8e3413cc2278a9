"""GET /metrics: counts, missed-call rate, first response percentiles, SLA, leaks and tasks."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from gateway.kpis import _percentile
from gateway.models import Lead
from gateway.simulator import play_call
from tests.support.api import ApiClient, make_key
from tests.support.config import SIMULTANEOUS, SOUTH


@pytest.fixture
def api(client, db, clock, configured):
    return ApiClient(client, make_key(db, clock.now()))


def test_metrics_of_a_morning(api, poster, db, clock):
    start = clock.now()
    list(play_call(poster, to=SIMULTANEOUS, caller="+12025550181", outcome="no-answer"))
    list(play_call(poster, to=SIMULTANEOUS, caller="+12025550182", outcome="answer"))
    list(play_call(poster, to=SIMULTANEOUS, caller="+12025550183", outcome="hangup"))
    list(play_call(poster, to=SOUTH, caller="+13125550184", outcome="no-answer"))
    with db.session() as session:
        leads = {lead.contact.phone: lead for lead in session.scalars(select(Lead))}
        # 4 minutes to reach the first caller (inside the 5 min SLA), 20 for the third (outside).
        leads["+12025550181"].first_response_at = start + timedelta(minutes=4)
        leads["+12025550183"].first_response_at = start + timedelta(minutes=20)
        leads["+12025550183"].leaked_at = start + timedelta(minutes=10)
    clock.advance(timedelta(hours=1))

    body = api.get("/api/v1/metrics?store=north-honda").get_json()
    assert body["store"] == "north-honda"
    assert body["leads"]["total"] == 3
    assert body["leads"]["by_source"] == {"Cars.com": 3}
    assert body["leads"]["by_status"]["contacted"] == 1
    assert body["calls"]["total"] == 3
    assert body["calls"]["by_outcome"] == {"missed": 1, "answered": 1, "abandoned": 1}
    assert body["calls"]["missed"] == 2
    assert body["calls"]["missed_rate"] == round(2 / 3, 4)
    assert body["first_response"]["responded"] == 3
    # Answered at once (0 s), 240 s and 1200 s.
    assert body["first_response"]["median_seconds"] == 240.0
    assert body["first_response"]["p90_seconds"] == 1008.0
    assert body["sla"] == {"met": 2, "measured": 3, "attainment": round(2 / 3, 4)}
    assert body["leaked_leads"] == 1
    assert body["tasks"]["open"] == 2  # the missed and the abandoned call; the answered one has none
    assert body["tasks"]["overdue"] == 2

    everything = api.get("/api/v1/metrics").get_json()
    assert everything["leads"]["total"] == 4
    assert everything["store"] is None
    later = api.get("/api/v1/metrics?since=" + (clock.now() - timedelta(minutes=1)).isoformat().replace("+", "%2B"))
    assert later.get_json()["leads"]["total"] == 0


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("since=yesterday", "invalid_since"),
        ("until=2026-11-24T10:00:00", "invalid_until"),
        ("since=%C2%B2", "invalid_since"),
    ],
)
def test_bad_periods_are_a_400(api, query, code):
    response = api.get(f"/api/v1/metrics?{query}")
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == code


@pytest.mark.parametrize(
    ("query", "since", "until"),
    [
        # Inverted: an empty period, measured as such.
        ("since=2026-11-25T00:00:00Z&until=2026-11-24T00:00:00Z", "2026-11-24T00:00:00+00:00",
         "2026-11-24T00:00:00+00:00"),
        # Longer than MAX_PERIOD (400 days): the 400 days before until.
        ("since=2020-01-01T00:00:00Z&until=2026-01-01T00:00:00Z", "2024-11-27T00:00:00+00:00",
         "2026-01-01T00:00:00+00:00"),
        ("since=2000-01-01T00:00:00Z", "2025-10-20T15:00:00+00:00", "2026-11-24T15:00:00+00:00"),
        # Periods at the ends of the calendar.
        ("until=0001-01-01T00:00:00Z", "0001-01-01T00:00:00+00:00", "0001-01-01T00:00:00+00:00"),
        ("since=9999-12-31T23:59:59Z&until=9999-12-31T23:59:59Z", "9999-12-31T23:59:59+00:00",
         "9999-12-31T23:59:59+00:00"),
    ],
)
def test_any_two_times_are_a_period_it_says_it_measured(api, query, since, until):
    response = api.get(f"/api/v1/metrics?{query}")
    assert response.status_code == 200
    body = response.get_json()
    assert (body["since"], body["until"]) == (since, until)


def test_unknown_store_is_404(api):
    assert api.get("/api/v1/metrics?store=nowhere").status_code == 404


def test_percentile_matches_percentile_cont():
    assert _percentile([], 0.5) is None
    assert _percentile([10.0], 0.9) == 10.0
    assert _percentile([0.0, 240.0, 1200.0], 0.9) == 1008.0
    assert _percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
