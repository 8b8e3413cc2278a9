"""The rules every text obeys: keywords, segments, the recipient's local time, quiet hours and caps.

Pure functions: no Flask, no database, no I/O. The send guard and the inbound-SMS webhook call them.

Decisions written down here so they are not rediscovered:

- Keywords are matched on the whole body after NFKC normalisation (full-width letters become plain
  ones), with invisible format characters removed and whitespace and punctuation stripped from both
  ends: "stop", " Stop! ", "STOP." and a full-width "STOP" are all STOP; "STOP PLEASE" is not a
  keyword (it is a revocation in the customer's own words: gateway/messaging/revocation.py).
- `count_segments` counts what the provider bills: GSM-7 septets (an extension character such as
  "€" costs two) or UTF-16 code units (an emoji costs two). That same count is the one held against
  the 1,600-character body limit, since the provider counts a multi-unit character more than once.
- An empty body is zero segments: a text with no body and a picture is one MMS, not one SMS.
- The recipient's time zone comes from the number; the store's zone is the fallback. The local
  window is rebuilt with zoneinfo for each day, so 08:00 is 08:00 on both sides of a DST change.
- Keyword confirmations (the reply to STOP itself) go at once: they pass the opt-out, quiet-hours
  and cap checks, never the textable or body checks. An answer within `REPLY_GRACE` of the
  customer's own call or text skips quiet hours but not the Florida/Oklahoma/Maryland cap on
  automated texts, and only for a text that is that answer (`answers_contact`: a cadence's first step,
  a text a person wrote); every later automated step waits for the recipient's window.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from enum import StrEnum
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import geocoder
from phonenumbers import timezone as phone_timezone

from gateway.messaging import revocation, state_windows

MAX_BODY_CHARACTERS = 1600
REPLY_GRACE = timedelta(minutes=5)
CAP_PERIOD = timedelta(hours=24)

# ---------------------------------------------------------------------------------------------------
# Keywords


class Keyword(StrEnum):
    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"
    HELP = "help"


_KEYWORDS: dict[str, Keyword] = {
    **dict.fromkeys(
        ("stop", "stopall", "unsubscribe", "cancel", "end", "quit", "revoke", "optout"), Keyword.OPT_OUT
    ),
    **dict.fromkeys(("start", "yes", "unstop"), Keyword.OPT_IN),
    **dict.fromkeys(("help", "info"), Keyword.HELP),
}

def _normalise(body: str) -> str:
    """NFKC, without invisible format characters (zero-width spaces, BOMs, direction marks)."""
    text = unicodedata.normalize("NFKC", body)
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cf")


def _is_edge_noise(ch: str) -> bool:
    return ch.isspace() or unicodedata.category(ch).startswith("P")


def classify_keyword(body: str) -> Keyword | None:
    """The keyword a whole text body is, or None. Case-insensitive; edge punctuation is ignored."""
    text = _normalise(body)
    start, end = 0, len(text)
    while start < end and _is_edge_noise(text[start]):
        start += 1
    while end > start and _is_edge_noise(text[end - 1]):
        end -= 1
    return _KEYWORDS.get(text[start:end].casefold())


def is_plain_revocation(body: str) -> bool:
    """True for a text that asks, in ordinary words, to stop being texted ("please stop texting me"),
    clearly or not: gateway/messaging/revocation.py holds the phrases and tells the two apart."""
    return revocation.classify(body) is not None


# ---------------------------------------------------------------------------------------------------
# The texts the gateway sends for keywords (when it, not the provider, answers them)

_PLAIN_PUNCTUATION = str.maketrans(
    {
        "\u2019": "'",
        "\u2018": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2013": "-",
        "\u2014": "-",
        "\u2026": "...",
    }
)


def _plain(name: str) -> str:
    """A store name without the typographic punctuation that would force a text into UCS-2."""
    return " ".join(name.translate(_PLAIN_PUNCTUATION).split())


def help_text(store_name: str, store_phone_national: str) -> str:
    """The answer to HELP: who we are, how to reach a person, rates, and how to stop."""
    name = _plain(store_name)
    full = (
        f"{name}: for help call {store_phone_national}. Msg frequency varies. "
        "Msg & data rates may apply. Reply STOP to opt out."
    )
    if count_segments(full).segments <= 1:
        return full
    return f"{name}: for help call {store_phone_national}. Msg & data rates may apply. Reply STOP to opt out."


def opt_out_confirmation(store_name: str, language: Literal["en", "es"] = "en") -> str:
    """The one text after STOP: confirms, and says how to undo it. No marketing. In Spanish for a
    customer who asked in Spanish ("alto", "no me envíes mensajes")."""
    if language == "es":
        return f"{_plain(store_name)}: Listo, ya no le enviaremos mensajes. Responda START para volver a recibirlos."
    return (
        f"{_plain(store_name)}: You are unsubscribed and will get no more texts from us. "
        "Reply START to resubscribe."
    )


def opt_in_confirmation(store_name: str) -> str:
    """The text after START: confirms, with rates and how to stop again."""
    return (
        f"{_plain(store_name)}: You are resubscribed to texts from us. Msg & data rates may apply. "
        "Reply HELP for help, STOP to opt out."
    )


# ---------------------------------------------------------------------------------------------------
# Segments

# GSM 03.38 default alphabet (the escape code 0x1B is left out: it is not text) and its extension
# table, whose characters are sent as escape + character and so cost two septets.
_GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

Encoding = Literal["GSM-7", "UCS-2"]


@dataclass(frozen=True, slots=True)
class Segments:
    """How a body is sent: its encoding, its length in that encoding's units, and the parts billed.

    `characters` is GSM-7 septets or UTF-16 code units, the count the provider holds against its
    limits. An empty body is 0 segments (with media it is one MMS).
    """

    encoding: Encoding
    characters: int
    segments: int


def _pack(costs: Sequence[int], single: int, part: int) -> int:
    """Parts needed when each character costs 1 or 2 units and a character is never split."""
    total = sum(costs)
    if total == 0:
        return 0
    if total <= single:
        return 1
    parts, used = 1, 0
    for cost in costs:
        if used + cost > part:
            parts += 1
            used = 0
        used += cost
    return parts


def count_segments(body: str) -> Segments:
    """GSM-7: 160 septets single, 153 per part; otherwise UCS-2: 70 units single, 67 per part."""
    if all(ch in _GSM7_BASIC or ch in _GSM7_EXTENSION for ch in body):
        costs = [2 if ch in _GSM7_EXTENSION else 1 for ch in body]
        return Segments("GSM-7", sum(costs), _pack(costs, 160, 153))
    costs = [2 if ord(ch) > 0xFFFF else 1 for ch in body]
    return Segments("UCS-2", sum(costs), _pack(costs, 70, 67))


# ---------------------------------------------------------------------------------------------------
# Where the recipient is

_UNKNOWN_ZONE = "Etc/Unknown"
# Where libphonenumber's zone data is wrong for a whole area code: 689 overlays 407 (Orlando, Eastern)
# but the library files it under Central time, which would let texts go an hour late.
_AREA_CODE_ZONE_OVERRIDES = {"689": "America/New_York"}
# Area codes the library spreads over several zones: the zone most of their subscribers live in.
_AREA_CODE_PRIMARY_ZONE = {
    "907": "America/Anchorage",  # Alaska; Adak (Aleutian time) is a few hundred people
    "986": "America/Boise",  # southern Idaho
    "775": "America/Los_Angeles",  # northern Nevada; only West Wendover keeps Mountain time
}
_US_STATES = {
    "Alabama": "AL", "Alaska": "AK", "Arizona": "AZ", "Arkansas": "AR", "California": "CA",
    "Colorado": "CO", "Connecticut": "CT", "Delaware": "DE", "Florida": "FL", "Georgia": "GA",
    "Hawaii": "HI", "Idaho": "ID", "Illinois": "IL", "Indiana": "IN", "Iowa": "IA", "Kansas": "KS",
    "Kentucky": "KY", "Louisiana": "LA", "Maine": "ME", "Maryland": "MD", "Massachusetts": "MA",
    "Michigan": "MI", "Minnesota": "MN", "Mississippi": "MS", "Missouri": "MO", "Montana": "MT",
    "Nebraska": "NE", "Nevada": "NV", "New Hampshire": "NH", "New Jersey": "NJ", "New Mexico": "NM",
    "New York": "NY", "North Carolina": "NC", "North Dakota": "ND", "Ohio": "OH", "Oklahoma": "OK",
    "Oregon": "OR", "Pennsylvania": "PA", "Rhode Island": "RI", "South Carolina": "SC",
    "South Dakota": "SD", "Tennessee": "TN", "Texas": "TX", "Utah": "UT", "Vermont": "VT",
    "Virginia": "VA", "Washington": "WA", "Washington State": "WA", "West Virginia": "WV",
    "Wisconsin": "WI", "Wyoming": "WY", "Washington D.C.": "DC", "District of Columbia": "DC",
}  # fmt: skip
_US_STATE_CODES = frozenset(_US_STATES.values())
# What carriers put in place of a withheld caller's number (keypad spellings of ANONYMOUS,
# RESTRICTED, BLOCKED, UNAVAILABLE); not all of them fail phonenumbers' possibility check.
_WITHHELD_NUMBERS = frozenset({"+266696687", "+7378742833", "+2562533", "+8656696"})


@functools.lru_cache(maxsize=4096)
def _parse(e164: str) -> phonenumbers.PhoneNumber | None:
    """The number when `e164` is a possible number in E.164 form, else None (withheld, garbage).

    Cached (the guard asks three questions of each number); callers only read the result."""
    text = e164.strip()
    if not text.startswith("+") or len(text) > 20 or text in _WITHHELD_NUMBERS:
        return None
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    if phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164) != text:
        return None
    return number


def _is_textable_number(e164: str) -> bool:
    return _parse(e164) is not None


def _area_code(number: phonenumbers.PhoneNumber) -> str | None:
    if number.country_code != 1:
        return None
    national = str(number.national_number)
    return national[:3] if len(national) == 10 else None


def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _zone_of(number: phonenumbers.PhoneNumber, fallback: str) -> ZoneInfo:
    area_code = _area_code(number)
    if area_code in _AREA_CODE_ZONE_OVERRIDES:
        return ZoneInfo(_AREA_CODE_ZONE_OVERRIDES[area_code])
    zones = [z for z in phone_timezone.time_zones_for_number(number) if z != _UNKNOWN_ZONE]
    if len(zones) == 1 and (zone := _zone(zones[0])):
        return zone
    if area_code is not None:
        # The number itself may not be valid (an unassigned exchange) while its area code is known.
        by_prefix = [
            z for z in phone_timezone.time_zones_for_geographical_number(number) if z != _UNKNOWN_ZONE
        ]
        if len(by_prefix) == 1 and (zone := _zone(by_prefix[0])):
            return zone
    if fallback in zones:
        return ZoneInfo(fallback)
    if area_code in _AREA_CODE_PRIMARY_ZONE:
        return ZoneInfo(_AREA_CODE_PRIMARY_ZONE[area_code])
    return ZoneInfo(fallback)


@functools.lru_cache(maxsize=4096)
def recipient_zone(e164: str, fallback: str) -> ZoneInfo:
    """The recipient's time zone from the number; `fallback` (the store's zone) when it cannot tell."""
    number = _parse(e164)
    return ZoneInfo(fallback) if number is None else _zone_of(number, fallback)


@functools.lru_cache(maxsize=4096)
def recipient_state(e164: str) -> str | None:
    """Two-letter US state (or DC) of a +1 number's area code; None outside the US or when unknown."""
    number = _parse(e164)
    if number is None or number.country_code != 1:
        return None
    area_code = _area_code(number)
    if area_code in state_windows.AREA_CODE_STATES:
        return state_windows.AREA_CODE_STATES[area_code]
    # Not `description_for_number`: that answers "" for a number the library thinks unassigned,
    # while its area code still says where it is.
    description = geocoder.description_for_valid_number(number, "en")
    if description in _US_STATES:
        return _US_STATES[description]
    _, _, suffix = description.rpartition(", ")
    return suffix if suffix in _US_STATE_CODES else None


# ---------------------------------------------------------------------------------------------------
# Quiet hours and caps

STRICT_STATES = frozenset({"FL", "OK", "MD"})  # the states that also cap automated texts at 3 a day

# The hours texts may go, by state (gateway/messaging/state_windows.py has the table and the statutes).
SendWindow = state_windows.Window
DEFAULT_WINDOW = state_windows.FEDERAL
STRICT_WINDOW = state_windows.STATE_WINDOWS["FL"]


def window_for(e164: str, automated: bool = True) -> SendWindow:
    """The federal 08:00-21:00, or the recipient's state's window (automated texts; for texts a person
    writes only Florida's, Oklahoma's and Maryland's)."""
    return state_windows.window_for(recipient_state(e164), automated=automated)


def _as_zone(zone: str | tzinfo) -> str:
    return zone if isinstance(zone, str) else str(zone)


def _require_aware(moment: datetime, name: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")


def _next_opening(zone: ZoneInfo, window: SendWindow, now: datetime) -> datetime | None:
    local = now.astimezone(zone)
    for offset in range(8):
        day = local.date() + timedelta(days=offset)
        hours = window.hours_on(day)
        if hours is None:
            continue  # closed all day (a Sunday in some states)
        if offset == 0 and local.time() >= hours[0]:
            if local.time() < hours[1]:
                return None
            continue
        # Built from the local wall clock, not by adding hours, so DST changes land on the local opening.
        return datetime.combine(day, hours[0], tzinfo=zone).astimezone(ZoneInfo("UTC"))
    raise ValueError("a send window must open on at least one day of the week")


def next_allowed_at(
    e164: str, now_utc: datetime, fallback_zone: str | tzinfo, automated: bool = True
) -> datetime | None:
    """None when `now_utc` is inside the recipient's window; else the next opening, in UTC."""
    _require_aware(now_utc, "now_utc")
    zone = recipient_zone(e164, _as_zone(fallback_zone))
    return _next_opening(zone, window_for(e164, automated), now_utc)


# ---------------------------------------------------------------------------------------------------
# The decision


@dataclass(frozen=True)
class OutboundCheck:
    """Everything the guard needs to judge one outbound text; the caller reads it from the database.

    `automated_sent_last_24h` is either the count of automated texts sent to this number in the last
    24 hours or, better, their send times: with times the guard knows when the oldest ages out.
    """

    to_number: str
    body: str
    media_count: int
    now: datetime
    fallback_zone: str  # the store's timezone
    opted_out: bool
    textable: bool
    automated: bool
    automated_sent_last_24h: int | Sequence[datetime] = 0
    customer_contacted_at: datetime | None = None  # the customer's latest call or text
    # The text answers that contact (a cadence's first step, a person's reply): only such a text may go
    # in quiet hours, and only within REPLY_GRACE of the contact. A later cadence step never is one.
    answers_contact: bool = False
    is_keyword_reply: bool = False  # the confirmation of the customer's own STOP/START/HELP
    opted_out_at: datetime | None = None  # for the reason a person reads


@dataclass(frozen=True)
class GuardDecision:
    """allowed, or refused (code and reason, no send_after), or deferred (code, reason, send_after)."""

    allowed: bool
    code: str | None
    reason: str | None
    send_after: datetime | None
    segments: Segments

    @property
    def deferred(self) -> bool:
        return not self.allowed and self.send_after is not None


def _cap_release(request: OutboundCheck, cap: int) -> datetime | None:
    """When one more automated text fits under the cap; None when it fits now."""
    sent = request.automated_sent_last_24h
    if isinstance(sent, int):
        return request.now + CAP_PERIOD if sent >= cap else None
    recent = sorted(t for t in sent if request.now - CAP_PERIOD < t <= request.now)
    if len(recent) < cap:
        return None
    # Once this many have aged out, the count is below the cap again.
    return recent[len(recent) - cap] + CAP_PERIOD


def _local(moment: datetime, zone: ZoneInfo) -> str:
    return moment.astimezone(zone).strftime("%H:%M on %Y-%m-%d")


def check_outbound(request: OutboundCheck) -> GuardDecision:
    """The one send guard's rules, in order; the first that fails decides."""
    _require_aware(request.now, "now")
    segments = count_segments(request.body)

    def refuse(code: str, reason: str) -> GuardDecision:
        return GuardDecision(False, code, reason, None, segments)

    if request.opted_out and not request.is_keyword_reply:
        when = f" on {request.opted_out_at.date().isoformat()}" if request.opted_out_at else ""
        return refuse("opted_out", f"The customer opted out of texts{when}; texts to them are blocked.")
    if not request.textable:
        return refuse(
            "not_textable",
            "The customer's number cannot receive texts (the carrier reported a landline or unreachable "
            "phone).",
        )
    if not request.body.strip() and request.media_count <= 0:
        return refuse("empty_body", "The text has no words and no picture, so there is nothing to send.")
    if segments.characters > MAX_BODY_CHARACTERS:
        return refuse(
            "body_too_long",
            f"The text is {segments.characters} characters long; the most one text can carry is "
            f"{MAX_BODY_CHARACTERS}.",
        )
    if not _is_textable_number(request.to_number):
        return refuse(
            "invalid_number",
            "The customer's number is withheld or not a valid phone number, so it cannot be texted.",
        )
    if request.is_keyword_reply:
        return GuardDecision(True, None, None, None, segments)

    zone = recipient_zone(request.to_number, request.fallback_zone)
    window = window_for(request.to_number, request.automated)
    cap = window.daily_automated_cap
    release = _cap_release(request, cap) if request.automated and cap is not None else None
    answering = (
        request.answers_contact
        and request.customer_contacted_at is not None
        and request.now - request.customer_contacted_at <= REPLY_GRACE
    )
    opening = None if answering else _next_opening(zone, window, request.now)

    if opening is not None:
        send_after = opening if release is None or release <= opening else _earliest(zone, window, release)
        return GuardDecision(
            False,
            "quiet_hours",
            f"It is {_local(request.now, zone)} for the customer ({zone.key}); "
            f"{window.describe(request.now.astimezone(zone).date())}, so this one waits until "
            f"{_local(send_after, zone)}.",
            send_after,
            segments,
        )
    if release is not None:
        send_after = _earliest(zone, window, release)
        return GuardDecision(
            False,
            "daily_cap",
            f"The customer already got {cap} automated texts in the last 24 hours, the most their state "
            f"allows; this one waits until {_local(send_after, zone)} their time ({zone.key}).",
            send_after,
            segments,
        )
    return GuardDecision(True, None, None, None, segments)


def _earliest(zone: ZoneInfo, window: SendWindow, moment: datetime) -> datetime:
    """`moment`, or the window's next opening when `moment` falls in quiet hours."""
    return _next_opening(zone, window, moment) or moment
