"""Lead priority: 0-100 with reasons, banded hot/high/medium/low, recomputed on each contact."""

from __future__ import annotations

from datetime import timedelta

import pytest

from gateway.agents import priority
from gateway.models import Lead
from tests.gateway.agents.helpers import api_key, missed_call, only_lead
from tests.support.config import BASIC_CONFIG


@pytest.mark.parametrize(
    ("score", "band"),
    [(0, "low"), (25, "low"), (26, "medium"), (50, "medium"), (51, "high"), (75, "high"), (76, "hot"), (100, "hot")],
)
def test_bands(score, band):
    assert priority.band(score) == band


def codes(result: priority.Priority) -> dict[str, int]:
    return {r.code: r.points for r in result.reasons}


def test_a_plain_missed_call_scores_its_source_and_the_contact():
    result = priority.score(source="Cars.com", source_weight=10, contacts_this_week=1, voicemail_seconds=None)
    assert result.score == 20
    assert result.band == "low"
    assert codes(result) == {"contact": 10, "source": 10}
    assert any("Cars.com" in r.text for r in result.reasons)


def test_every_reason_counts_and_says_why():
    result = priority.score(
        source="Website",
        source_weight=20,
        contacts_this_week=2,
        voicemail_seconds=30,
        intents=["test drive"],
        time_frames=["this weekend"],
    )
    assert codes(result) == {"contact": 10, "source": 20, "repeat": 15, "voicemail": 15, "intent": 10, "time_frame": 25}
    assert result.score == 95
    assert result.band == "hot"
    texts = " ".join(r.text for r in result.reasons)
    assert "30s voicemail" in texts
    assert "test drive" in texts
    assert "this weekend" in texts


def test_intent_points_are_capped_and_the_total_clamped_at_100():
    result = priority.score(
        source="Radio",
        source_weight=40,
        contacts_this_week=5,
        voicemail_seconds=60,
        intents=["price", "trade-in", "test drive", "financing", "appointment"],
        time_frames=["today"],
    )
    assert codes(result)["intent"] == priority.MAX_INTENT_POINTS
    assert codes(result)["repeat"] == priority.REPEAT_MORE_POINTS
    assert result.score == 100


def test_no_source_weight_no_source_reason():
    result = priority.score(source=None, source_weight=0, contacts_this_week=1, voicemail_seconds=0)
    assert codes(result) == {"contact": 10}
    assert result.band == "low"


def test_priority_is_stored_on_the_lead_and_rises_with_repeat_contacts(poster, db, configure, client, clock):
    configure(BASIC_CONFIG.replace("source: Cars.com,", "source: Cars.com, source_weight: 25,"))
    missed_call(poster)
    lead = only_lead(db)
    assert lead.priority == 35
    assert [r["code"] for r in lead.priority_reasons] == ["contact", "source"]
    missed_call(poster)
    lead = only_lead(db)
    assert lead.priority == 50
    assert "repeat" in [r["code"] for r in lead.priority_reasons]
    key = api_key(db, clock, None)
    body = client.get(f"/api/v1/leads/{lead.id}", headers={"Authorization": f"Bearer {key}"}).get_json()
    assert body["priority"] == 50
    assert {r["code"] for r in body["priority_reasons"]} == {"contact", "source", "repeat"}


@pytest.mark.usefixtures("configured")
def test_contacts_older_than_a_week_are_not_repeats(poster, db, clock):
    missed_call(poster)
    clock.advance(timedelta(days=8))
    missed_call(poster)
    lead = only_lead(db)
    assert "repeat" not in [r["code"] for r in lead.priority_reasons]


@pytest.mark.usefixtures("configured")
def test_transcript_reasons_survive_a_later_recompute(poster, db, clock):
    missed_call(poster, outcome="voicemail", transcript="Can I book a test drive this weekend?")
    lead = only_lead(db)
    before = {r["code"] for r in lead.priority_reasons}
    assert {"intent", "time_frame", "voicemail"} <= before
    missed_call(poster)  # a later contact, no transcript
    after = only_lead(db)
    assert {"intent", "time_frame", "voicemail", "repeat"} <= {r["code"] for r in after.priority_reasons}
    assert after.priority > lead.priority
    with db.session() as session:
        stored = priority.current(session.get(Lead, after.id))
    assert stored.score == after.priority
    assert stored.band == priority.band(after.priority)
