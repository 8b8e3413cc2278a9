"""How the workspace writes things for people: times in the store's zone without seconds, phones in
national format, words instead of codes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from functools import cache, lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.dashboard.timeline import STATUS_WORDS, duration_words, task_words, words
from gateway.phones import national

DEFAULT_ZONE = "America/New_York"

OUTCOME_WORDS = {
    "answered": "answered",
    "missed": "missed",
    "abandoned": "hung up while ringing",
    "voicemail": "voicemail",
    "after_hours": "after hours",
    "busy": "busy",
    "failed": "failed",
    "forwarded": "forwarded to the main line",
    "ringing": "ringing",
}

LEAK_WORDS = {
    "nobody_on_duty": "nobody on duty",
    "owner_did_not_act": "owner did not act",
    "customer_unreachable": "customer unreachable",
}


@cache
def zone_info(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(DEFAULT_ZONE)


def local_time(moment: datetime | None, zone: str | None, now: datetime | None = None) -> str:
    """'3:05 pm' today, 'Mon 23 Nov, 3:05 pm' otherwise; no seconds, in the store's zone."""
    if moment is None:
        return ""
    tz = zone_info(zone or DEFAULT_ZONE)
    local = moment.astimezone(tz)
    clock = f"{local.strftime('%I').lstrip('0')}:{local.strftime('%M')} {local.strftime('%p').lower()}"
    if now is not None and now.astimezone(tz).date() == local.date():
        return f"today {clock}"
    if now is not None and (now.astimezone(tz).date() - timedelta(days=1)) == local.date():
        return f"yesterday {clock}"
    return f"{local.strftime('%a')} {local.day} {local.strftime('%b')}, {clock}"


def iso_local(moment: datetime | None, zone: str | None) -> str:
    """For a datetime-local field: 2026-11-24T15:30 in the store's zone."""
    if moment is None:
        return ""
    return moment.astimezone(zone_info(zone or DEFAULT_ZONE)).strftime("%Y-%m-%dT%H:%M")


def parse_local(text: str, zone: str | None) -> datetime | None:
    """A datetime-local field's value, read in the store's zone; None when it is not one."""
    try:
        naive = datetime.strptime(text.strip(), "%Y-%m-%dT%H:%M")  # noqa: DTZ007 - the zone is set next
    except ValueError:
        return None
    return naive.replace(tzinfo=zone_info(zone or DEFAULT_ZONE))


def waited(since: datetime | None, now: datetime) -> str:
    """How long ago, in words: '4 min', '2 h 5 min', '3 days'."""
    if since is None:
        return ""
    seconds = max(0, int((now - since).total_seconds()))
    if seconds < 60:
        return "under a minute"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{hours // 24} days"


def seconds_words(value: float | None) -> str:
    if value is None:
        return "-"
    seconds = round(value)
    if seconds < 60:
        return f"{seconds} s"
    minutes, rest = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


# Parsing a number costs ~0.1 ms (phonenumbers): a page of 50 threads or calls parses the same few hundred.
_national = lru_cache(maxsize=4096)(national)

FILTERS: dict[str, Callable[..., str]] = {
    "phone": _national,
    "words": words,
    "status_words": lambda code: STATUS_WORDS.get(code or "", words(code)),
    "outcome_words": lambda code: OUTCOME_WORDS.get(code or "", words(code)),
    "leak_words": lambda code: LEAK_WORDS.get(code or "", words(code)),
    "task_words": task_words,
    "duration": duration_words,
    "seconds_words": seconds_words,
    "percent": percent,
}
