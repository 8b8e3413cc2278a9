"""Lead priority: a 0-100 score with the reasons that make it, banded hot, high, medium and low.

The score is recomputed on every contact from what the database knows (the tracked number's source
weight, how often the customer reached the store this week, whether a voicemail was left) plus what a
voicemail transcript said (intent and time-frame words). Transcript reasons are kept on the lead, so a
later recompute without a transcript does not forget them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from gateway import events
from gateway.database import get_held
from gateway.models import Call, Direction, Lead, Message, TrackedNumber

REPEAT_WINDOW = timedelta(days=7)
BASE_POINTS = 10  # a customer reached out at all
VOICEMAIL_POINTS = 15
INTENT_POINTS = 10  # each intent word the customer used...
MAX_INTENT_POINTS = 30  # ...up to this many points
TIME_FRAME_POINTS = 25
REPEAT_POINTS = 15  # a second contact within the window
REPEAT_MORE_POINTS = 25  # three or more
# Reason codes that come from a transcript, not from rows: carried over by later recomputes.
TRANSCRIPT_CODES = frozenset({"intent", "time_frame"})


class Band(StrEnum):
    HOT = "hot"
    HIGH = "high"
    MEDIUM = "medium"
    LOW = "low"


def band(score: int) -> Band:
    """hot 76-100, high 51-75, medium 26-50, low 0-25."""
    if score >= 76:
        return Band.HOT
    if score >= 51:
        return Band.HIGH
    if score >= 26:
        return Band.MEDIUM
    return Band.LOW


@dataclass(frozen=True)
class Reason:
    code: str
    points: int
    text: str

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "points": self.points, "text": self.text}


@dataclass(frozen=True)
class Priority:
    score: int
    reasons: tuple[Reason, ...]

    @property
    def band(self) -> Band:
        return band(self.score)


def score(
    *,
    source: str | None,
    source_weight: int,
    contacts_this_week: int,
    voicemail_seconds: int | None,
    intents: Sequence[str] = (),
    time_frames: Sequence[str] = (),
) -> Priority:
    """The score of the facts given, clamped to 0-100, with one reason per fact that counted."""
    reasons = [Reason("contact", BASE_POINTS, f"Reached out to the store (+{BASE_POINTS})")]
    if source_weight:
        label = source or "unknown source"
        reasons.append(Reason("source", source_weight, f"Source {label} (+{source_weight})"))
    if contacts_this_week >= 3:
        reasons.append(
            Reason("repeat", REPEAT_MORE_POINTS, f"{contacts_this_week} contacts in 7 days (+{REPEAT_MORE_POINTS})")
        )
    elif contacts_this_week == 2:
        reasons.append(Reason("repeat", REPEAT_POINTS, f"2 contacts in 7 days (+{REPEAT_POINTS})"))
    if voicemail_seconds:
        reasons.append(
            Reason("voicemail", VOICEMAIL_POINTS, f"Left a {voicemail_seconds}s voicemail (+{VOICEMAIL_POINTS})")
        )
    words = list(dict.fromkeys(intents))
    if words:
        points = min(MAX_INTENT_POINTS, INTENT_POINTS * len(words))
        reasons.append(Reason("intent", points, f"Asked about {', '.join(words)} (+{points})"))
    frames = list(dict.fromkeys(time_frames))
    if frames:
        reasons.append(
            Reason("time_frame", TIME_FRAME_POINTS, f"Wants it {', '.join(frames)} (+{TIME_FRAME_POINTS})")
        )
    total = max(0, min(100, sum(r.points for r in reasons)))
    return Priority(total, tuple(reasons))


def history(session: Session, lead: Lead, now: datetime) -> tuple[int, int | None]:
    """The customer's calls and texts to this store in the last 7 days (the current one included) and the
    longest voicemail on the lead, in one round trip."""
    since = now - REPEAT_WINDOW
    phone = lead.contact.phone
    called = (
        select(func.count())
        .select_from(Call)
        .where(
            Call.from_number == phone,
            Call.store_id == lead.store_id,
            Call.direction == Direction.INBOUND.value,
            Call.started_at >= since,
        )
        .scalar_subquery()
    )
    texted = (
        select(func.count())
        .select_from(Message)
        .where(
            Message.contact_id == lead.contact_id,
            Message.store_id == lead.store_id,
            Message.direction == Direction.INBOUND.value,
            Message.created_at >= since,
        )
        .scalar_subquery()
    )
    voicemail = (
        select(func.max(Call.voicemail_seconds))
        .where(Call.lead_id == lead.id, Call.voicemail_seconds > 0)
        .scalar_subquery()
    )
    row = session.execute(select(called, texted, voicemail)).one()
    contacts = 1 if phone is None else max(1, int(row[0] or 0) + int(row[1] or 0))
    return contacts, (int(row[2]) if row[2] else None)


def _carried(lead: Lead, code: str) -> list[str]:
    """Words an earlier transcript contributed, read back from the stored reasons."""
    for reason in lead.priority_reasons or []:
        if isinstance(reason, dict) and reason.get("code") == code:
            return [str(w) for w in reason.get("words", [])]
    return []


def recompute(
    session: Session,
    lead: Lead,
    now: datetime,
    *,
    intents: Sequence[str] = (),
    time_frames: Sequence[str] = (),
) -> Priority:
    """Score the lead again and store the score and reasons on it (announced as a lead change)."""
    weight = 0
    if lead.tracked_number_id is not None:
        number = get_held(session, TrackedNumber, lead.tracked_number_id)
        weight = number.source_weight if number is not None else 0
    all_intents = list(dict.fromkeys([*_carried(lead, "intent"), *intents]))
    all_frames = list(dict.fromkeys([*_carried(lead, "time_frame"), *time_frames]))
    contacts, voicemail_seconds = history(session, lead, now)
    result = score(
        source=lead.source,
        source_weight=weight,
        contacts_this_week=contacts,
        voicemail_seconds=voicemail_seconds,
        intents=all_intents,
        time_frames=all_frames,
    )
    stored: list[dict[str, Any]] = []
    for reason in result.reasons:
        item = reason.as_dict()
        if reason.code == "intent":
            item["words"] = all_intents
        elif reason.code == "time_frame":
            item["words"] = all_frames
        stored.append(item)
    old = lead.priority
    if old != result.score or (lead.priority_reasons or []) != stored:
        lead.priority = result.score
        lead.priority_reasons = stored
        lead.updated_at = now
        if old != result.score:
            events.lead_updated.send(session, lead=lead, changes={"priority": (old, result.score)}, now=now)
    return result


def current(lead: Lead) -> Priority:
    """The stored score as a Priority, without touching the database."""
    reasons = tuple(
        Reason(str(r.get("code")), int(r.get("points", 0)), str(r.get("text", "")))
        for r in (lead.priority_reasons or [])
        if isinstance(r, dict)
    )
    return Priority(lead.priority, reasons)
