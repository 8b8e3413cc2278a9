"""Cadence texts: the {variables} of a step filled in for one lead, with missing values left out cleanly.

The rule for a variable with no value (a caller whose name we do not know, a lead with no owner yet):
the variable is dropped together with what would dangle around it, so the text still reads as written
by a person.

- Before punctuation, it goes with the space before it: "Hi {first_name}, ..." -> "Hi, ...";
  "Thanks {first_name}!" -> "Thanks!". A comma that only introduced it goes too:
  "Hello, {first_name}!" -> "Hello!".
- At the end of a line it goes with the space before it: "Hi {first_name}" -> "Hi".
- At the start of a line or sentence it goes with a comma after it, and the next word gets a capital:
  "{agent} from {store} here." -> "From North Honda here."
- Between words it leaves one space: "Hi {first_name} it's {store}" -> "Hi it's North Honda".

Values are used as they are (no further {braces} expansion), stripped of surrounding whitespace.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_GAP = "\x00"
_CAPITAL = "\x01"

# A gap before punctuation or the end of a line, with the spaces (and an introducing comma) before it.
_GAP_BEFORE_PUNCTUATION = re.compile(r"[ \t]*(?:[,;:][ \t]*)?\x00[ \t]*(?=[,.!?;:)]|$)", re.MULTILINE)
# A gap opening a line or a sentence, with the comma that would follow it.
_GAP_OPENING = re.compile(r"(^|[.!?][ \t]+)[ \t]*\x00[ \t]*(?:[,;:][ \t]*)?", re.MULTILINE)
_GAP_BETWEEN_WORDS = re.compile(r"[ \t]*\x00[ \t]*")
_CAPITALISE = re.compile(r"\x01([^\w\n]*)(\w)?")
_SPACES = re.compile(r"[ \t]{2,}")


def render(template: str, values: Mapping[str, str | None]) -> str:
    """The template with its {variables} filled in; see the module docstring for missing values."""
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError:
        return template  # the configuration check refuses unpaired braces; never fail a send on one
    pieces: list[str] = []
    gaps = False
    for literal, name, _spec, _conversion in parts:
        pieces.append(literal.replace(_GAP, "").replace(_CAPITAL, ""))
        if name is None:
            continue
        value = (values.get(name) or "").replace(_GAP, "").replace(_CAPITAL, "").strip()
        if value:
            pieces.append(value)
        else:
            pieces.append(_GAP)
            gaps = True
    text = "".join(pieces)
    if not gaps:
        return text
    # Openings first ("{first_name}, welcome"), then gaps before punctuation, then the rest; repeated
    # because a dropped gap can open a sentence for the next one ("{first_name} {agent} here").
    while _GAP in text:
        before = text
        text = _GAP_OPENING.sub(lambda m: m.group(1) + _CAPITAL, text)
        text = _GAP_BEFORE_PUNCTUATION.sub("", text)
        if text == before:
            text = _GAP_BETWEEN_WORDS.sub(" ", text, count=1)
    text = _CAPITALISE.sub(lambda m: m.group(1) + (m.group(2) or "").upper(), text)
    text = _SPACES.sub(" ", text)
    return "\n".join(line.strip() for line in text.split("\n")).strip()


def appointment_time(moment: datetime | None, zone: str) -> str | None:
    """"Tue Nov 24 at 3:30 PM" in the store's time zone; None without an appointment."""
    if moment is None:
        return None
    try:
        local = moment.astimezone(ZoneInfo(zone))
    except (ZoneInfoNotFoundError, ValueError):
        local = moment
    hour = local.hour % 12 or 12
    half = "AM" if local.hour < 12 else "PM"
    return f"{local:%a %b} {local.day} at {hour}:{local:%M} {half}"


def first_name(full_name: str | None) -> str | None:
    words = (full_name or "").split()
    return words[0] if words else None
