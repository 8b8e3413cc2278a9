"""Durations as people write them in the configuration file: 30s, 5m, 4h, 1d, 1h30m, -24h, or 90."""

from __future__ import annotations

import re

UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}

_BARE_SECONDS = re.compile(r"[+-]?\d+")
_PART = re.compile(r"(\d+)([dhms])")
_HINT = "use 30s, 5m, 4h, 1d, 1h30m, -24h or plain seconds"


def parse_duration(text: str) -> int:
    """Seconds in `text`. A bare number is seconds; units go largest first, each at most once.

    Negative durations ("-24h") are steps that come before an appointment. Raises ValueError.
    """
    raw = text.strip().lower()
    if not raw:
        raise ValueError(f"empty duration ({_HINT})")
    if _BARE_SECONDS.fullmatch(raw):
        return int(raw)
    sign, body = (raw[0], raw[1:]) if raw[0] in "+-" else ("", raw)
    total = 0
    position = 0
    last_unit_size = None
    for part in _PART.finditer(body):
        if part.start() != position:
            break
        amount, unit = int(part.group(1)), part.group(2)
        size = UNITS[unit]
        if last_unit_size is not None and size >= last_unit_size:
            raise ValueError(f"invalid duration {text!r} (units go largest first, each once: 1h30m)")
        last_unit_size = size
        total += amount * size
        position = part.end()
    if position == 0 or position != len(body):
        raise ValueError(f"invalid duration {text!r} ({_HINT})")
    return -total if sign == "-" else total


def format_duration(seconds: int) -> str:
    """The shortest text that `parse_duration` reads back as `seconds`: 5400 -> "1h30m", 0 -> "0s"."""
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    rest = abs(seconds)
    parts = []
    for unit, size in UNITS.items():
        amount, rest = divmod(rest, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return sign + "".join(parts)
