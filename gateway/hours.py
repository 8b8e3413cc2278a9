"""Business hours: open or closed at an instant, and the next opening, in the store's timezone."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

# {"mon": [["09:00", "20:00"]], ...}: one schedule (a department's hours or an agent's duty).
Schedule = dict[str, Any]


def _ranges(schedule: Schedule, day: date) -> list[tuple[time, time]]:
    spans = schedule.get(DAYS[day.weekday()]) or []
    return [(time.fromisoformat(start), time.fromisoformat(end)) for start, end in spans]


def is_open(schedule: Schedule | None, timezone: str, at: datetime) -> bool:
    """True when `at` falls inside one of the day's ranges, local time."""
    if not schedule:
        return False
    local = at.astimezone(ZoneInfo(timezone))
    now = local.time()
    return any(start <= now < end for start, end in _ranges(schedule, local.date()))


def next_opening(schedule: Schedule | None, timezone: str, at: datetime) -> datetime | None:
    """The next instant (aware, in UTC's terms) the schedule opens after `at`; None if it never does."""
    if not schedule:
        return None
    zone = ZoneInfo(timezone)
    local = at.astimezone(zone)
    for offset in range(0, 8):
        day = local.date() + timedelta(days=offset)
        for start, _end in sorted(_ranges(schedule, day)):
            opening = datetime.combine(day, start, tzinfo=zone)
            if opening > local:
                return opening.astimezone(at.tzinfo)
    return None
