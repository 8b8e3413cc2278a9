"""The rules every text obeys: keywords, segments, local time, quiet hours, caps, the guard decision."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import phonenumbers
import pytest
from phonenumbers import geocoder

from gateway.messaging.guard import (
    MAX_BODY_CHARACTERS,
    REPLY_GRACE,
    GuardDecision,
    Keyword,
    OutboundCheck,
    Segments,
    check_outbound,
    classify_keyword,
    count_segments,
    help_text,
    is_plain_revocation,
    next_allowed_at,
    opt_in_confirmation,
    opt_out_confirmation,
    recipient_state,
    recipient_zone,
    window_for,
)

NEW_YORK = ZoneInfo("America/New_York")
LOS_ANGELES = ZoneInfo("America/Los_Angeles")
CHICAGO = ZoneInfo("America/Chicago")

EASTERN = "+12025550123"  # Washington, DC
PACIFIC = "+13105550123"  # Los Angeles area, CA
FLORIDA = "+13055550123"  # Miami, FL
OKLAHOMA = "+14055550123"  # Oklahoma City, OK
MARYLAND = "+14105550123"  # Baltimore, MD

FL_AREA_CODES = [
    "239", "305", "321", "324", "352", "386", "407", "448", "561", "645", "656", "689",
    "727", "728", "754", "772", "786", "813", "850", "863", "904", "941", "954",
]  # fmt: skip
OK_AREA_CODES = ["405", "539", "572", "580", "918"]
MD_AREA_CODES = ["227", "240", "301", "410", "443", "667"]


# --- keywords ---------------------------------------------------------------------------------------

KEYWORDS = {
    "STOP": Keyword.OPT_OUT,
    "STOPALL": Keyword.OPT_OUT,
    "UNSUBSCRIBE": Keyword.OPT_OUT,
    "CANCEL": Keyword.OPT_OUT,
    "END": Keyword.OPT_OUT,
    "QUIT": Keyword.OPT_OUT,
    "REVOKE": Keyword.OPT_OUT,
    "OPTOUT": Keyword.OPT_OUT,
    "START": Keyword.OPT_IN,
    "YES": Keyword.OPT_IN,
    "UNSTOP": Keyword.OPT_IN,
    "HELP": Keyword.HELP,
    "INFO": Keyword.HELP,
}


def _full_width(text: str) -> str:
    return "".join(chr(ord(ch) + 0xFEE0) for ch in text)


@pytest.mark.parametrize("word", sorted(KEYWORDS))
@pytest.mark.parametrize(
    "form",
    [
        str.upper,
        str.lower,
        str.title,
        lambda w: f"  {w}  ",
        lambda w: f"\n{w.lower()}\t",
        lambda w: f"{w}.",
        lambda w: f"{w.lower()}!",
        lambda w: f" {w.title()}!! ",
        lambda w: f"\u00bf{w}?",
        lambda w: f"{w}\u200b",  # a zero-width space some keyboards add
        lambda w: f"\u00a0{w}\u00a0",  # no-break spaces
        _full_width,
    ],
    ids=[
        "upper",
        "lower",
        "title",
        "padded",
        "tab-newline",
        "full-stop",
        "bang",
        "title-bangs",
        "question",
        "zero-width",
        "nbsp",
        "full-width",
    ],
)
def test_every_keyword_in_every_form(word: str, form: Callable[[str], str]) -> None:
    assert classify_keyword(form(word)) is KEYWORDS[word]


@pytest.mark.parametrize(
    "body",
    [
        "STOP PLEASE",
        "please stop",
        "stop it",
        "S T O P",
        "stopp",
        "stops",
        "Yes please",
        "help me find a truck",
        "info on the 2024 Civic?",
        "Cancel my appointment",
        "The end",
        "",
        "   ",
        "...",
        "STOP 🛑",
    ],
)
def test_not_a_keyword(body: str) -> None:
    assert classify_keyword(body) is None


def test_keyword_values_are_stable_strings() -> None:
    assert {k.value for k in Keyword} == {"opt_out", "opt_in", "help"}


REVOCATIONS = [
    "please stop texting me",
    "Please stop texting me.",
    "don't text me",
    "Don\u2019t text me",  # a phone keyboard's apostrophe
    "dont text me anymore",
    "do not contact me",
    "DO NOT CONTACT ME",
    "remove me from your list",
    "Please remove me from your list!",
    "take me off your list",
    "delete my number",
    "stop messaging me",
    "leave me alone",
    "unsubscribe me",
    "how do I unsubscribe",
    "no more texts",
    "no more messages please",
    "wrong number, stop",
    "Wrong number",
    "you have the wrong number",
    "Sorry, wrong person",
    "STOP PLEASE",
    "please stop",
    "Stop it.",
    "not interested. stop",
    "opt me out",
    "opt out",
    "I want to opt out of these texts",
    "stop sending me texts",
    "quit texting me",
    "stop calling me",
    "never contact me again",
    "I don't want any more texts",
    "lose my number",
    "please don't text",
    "ok stop now 🙏",
]

NOT_REVOCATIONS = [
    "can you stop by at 5?",
    "I'll stop in tomorrow",
    "don't forget my oil change",
    "Stop & Shop",
    "I stopped by yesterday",
    "What time does the service department stop taking cars?",
    "Im at the stop light, be there in 5",
    "The brakes won't stop squeaking",
    "please don't stop texting me updates on my car",
    "if you don't text me back I'll go somewhere else",
    "why don't you text me the price",
    "Text me when the car is ready",
    "Can I cancel my appointment?",
    "I want to opt out of the extended warranty",
    "drop me off at the shuttle stop",
    "Yes, Tuesday at 10 works",
    "I called the wrong number earlier, meant to reach service",
    "Is the end of month deal still on?",
    "",
]


@pytest.mark.parametrize("body", REVOCATIONS)
def test_plain_revocation(body: str) -> None:
    assert is_plain_revocation(body) is True


@pytest.mark.parametrize("body", NOT_REVOCATIONS)
def test_ordinary_message_is_not_a_revocation(body: str) -> None:
    assert is_plain_revocation(body) is False


# --- the gateway's own keyword answers ----------------------------------------------------------------

TYPICAL_STORES = [
    ("North Honda", "(202) 555-0100"),
    ("Sunshine Chevrolet of Fort Lauderdale", "(954) 555-0199"),
    ("Joe\u2019s Pre-Owned Auto Sales & Service", "(405) 555-0142"),
    ("Toyota of Ann Arundel County", "(410) 555-0177"),
]


@pytest.mark.parametrize(("store", "phone"), TYPICAL_STORES)
def test_help_text_names_store_phone_rates_and_stop(store: str, phone: str) -> None:
    text = help_text(store, phone)
    assert store.replace("\u2019", "'") in text
    assert phone in text
    assert "Msg & data rates may apply" in text
    assert "Reply STOP to opt out" in text
    segments = count_segments(text)
    assert segments.encoding == "GSM-7"
    assert segments.characters < 160
    assert segments.segments == 1


def test_help_text_drops_the_optional_sentence_for_a_long_name() -> None:
    store = "Fernandez Brothers Chrysler Dodge Jeep Ram of Greater Miami-Dade"
    text = help_text(store, "(305) 555-0100")
    assert store in text
    assert "Msg frequency varies" not in text
    assert "Reply STOP to opt out" in text
    assert count_segments(text).segments == 1


@pytest.mark.parametrize(("store", "_phone"), TYPICAL_STORES)
def test_keyword_confirmations(store: str, _phone: str) -> None:
    out = opt_out_confirmation(store)
    back = opt_in_confirmation(store)
    name = store.replace("\u2019", "'")
    assert name in out
    assert name in back
    assert "START" in out
    assert "unsubscribed" in out
    assert "STOP" in back
    for text in (out, back):
        assert count_segments(text) == Segments("GSM-7", len(text), 1)


# --- segments -------------------------------------------------------------------------------------


def test_empty_body_is_zero_segments() -> None:
    assert count_segments("") == Segments("GSM-7", 0, 0)


@pytest.mark.parametrize(
    ("length", "segments"),
    [(1, 1), (159, 1), (160, 1), (161, 2), (306, 2), (307, 3), (459, 3), (460, 4), (1600, 11)],
)
def test_plain_ascii(length: int, segments: int) -> None:
    assert count_segments("a" * length) == Segments("GSM-7", length, segments)


def test_gsm_basic_set_is_one_septet_each() -> None:
    body = "@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ¤¡ÄÖÑÜ§¿äöñüà\n\r"
    assert count_segments(body) == Segments("GSM-7", len(body), 1)


@pytest.mark.parametrize("ch", list("^{}\\[~]|€\f"))
def test_gsm_extension_characters_cost_two_septets(ch: str) -> None:
    assert count_segments(ch) == Segments("GSM-7", 2, 1)
    assert count_segments(ch * 80) == Segments("GSM-7", 160, 1)
    assert count_segments(ch * 80 + "a") == Segments("GSM-7", 161, 2)


def test_an_escape_pair_is_never_split_across_parts() -> None:
    # 306 septets would fit two parts of 153, but the euro sign cannot straddle the boundary.
    body = "a" * 152 + "€" + "a" * 152
    assert count_segments(body) == Segments("GSM-7", 306, 3)


@pytest.mark.parametrize(
    ("body", "units", "segments"),
    [
        ("😀", 2, 1),
        ("Hello 😀", 8, 1),
        ("😀" * 35, 70, 1),
        ("😀" * 36, 72, 2),
        ("中" * 70, 70, 1),
        ("中" * 71, 71, 2),
        ("中" * 134, 134, 2),
        ("中" * 135, 135, 3),
        ("Привет, ваша машина готова", 26, 1),
        ("Ж" * 71, 71, 2),
        ("Tab\there", 8, 1),  # a tab is not in the GSM alphabet
        ("It\u2019s ready", 10, 1),  # nor is a typographic apostrophe
    ],
)
def test_ucs2(body: str, units: int, segments: int) -> None:
    assert count_segments(body) == Segments("UCS-2", units, segments)


def test_a_surrogate_pair_is_never_split_across_parts() -> None:
    body = "中" * 66 + "😀" + "中" * 66  # 134 units: two parts of 67 only if the emoji were cut in half
    assert count_segments(body) == Segments("UCS-2", 134, 3)


def test_limit_constant() -> None:
    assert MAX_BODY_CHARACTERS == 1600
    assert count_segments("é" * 1600) == Segments("GSM-7", 1600, 11)
    # 33 emoji (66 units) to a part, since a pair is never cut: 25 parts, not 1600 / 67.
    assert count_segments("😀" * 800) == Segments("UCS-2", 1600, 25)


# --- where the recipient is -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "fallback", "zone"),
    [
        (EASTERN, "America/Chicago", "America/New_York"),
        (PACIFIC, "America/New_York", "America/Los_Angeles"),
        (FLORIDA, "America/Chicago", "America/New_York"),
        (OKLAHOMA, "America/New_York", "America/Chicago"),
        (MARYLAND, "America/Chicago", "America/New_York"),
        ("+18504567890", "America/New_York", "America/Chicago"),  # Pensacola, in the Central panhandle
        ("+18502025550", "America/Chicago", "America/New_York"),  # Tallahassee, Eastern
        (
            "+16895550123",
            "America/Chicago",
            "America/New_York",
        ),  # Orlando; the library says Central
        ("+12021234567", "America/Chicago", "America/New_York"),  # unassigned exchange, known area code
        ("+19075550123", "America/New_York", "America/Anchorage"),  # two zones: the area code's main one
        ("+19075550123", "America/Adak", "America/Adak"),  # two zones, and the store's is one of them
        ("+18005550123", "America/Denver", "America/Denver"),  # toll-free: anywhere, so the store's zone
        ("+447911123456", "America/Denver", "America/Denver"),  # several zones, none the store's
        ("+819012345678", "America/Denver", "Asia/Tokyo"),
        ("not a number", "America/Phoenix", "America/Phoenix"),
        ("", "America/Phoenix", "America/Phoenix"),
        ("+266696687", "America/Phoenix", "America/Phoenix"),  # a withheld caller
    ],
)
def test_recipient_zone(number: str, fallback: str, zone: str) -> None:
    assert recipient_zone(number, fallback) == ZoneInfo(zone)


@pytest.mark.parametrize(
    ("state", "area_code"),
    [("FL", code) for code in FL_AREA_CODES]
    + [("OK", code) for code in OK_AREA_CODES]
    + [("MD", code) for code in MD_AREA_CODES],
)
@pytest.mark.parametrize("subscriber", ["2345678", "5550123", "4567890"])
def test_recipient_state_for_every_strict_area_code(state: str, area_code: str, subscriber: str) -> None:
    number = f"+1{area_code}{subscriber}"
    assert recipient_state(number) == state
    assert window_for(number).daily_automated_cap == 3


@pytest.mark.parametrize(
    ("state", "area_code"),
    [("Florida", code) for code in FL_AREA_CODES]
    + [("Oklahoma", code) for code in OK_AREA_CODES]
    + [("Maryland", code) for code in MD_AREA_CODES],
)
def test_the_library_agrees_with_the_strict_table(state: str, area_code: str) -> None:
    # The table exists so the rule holds on any data version; this shows the installed one agrees.
    code = {"Florida": "FL", "Oklahoma": "OK", "Maryland": "MD"}[state]
    for subscriber in ("2345678", "5550123", "4567890"):
        parsed = phonenumbers.parse(f"+1{area_code}{subscriber}")
        description = geocoder.description_for_number(parsed, "en")
        assert description == state or description.endswith(", " + code)


@pytest.mark.parametrize(
    ("number", "state"),
    [
        (EASTERN, "DC"),
        (PACIFIC, "CA"),
        ("+12135550100", "CA"),  # the library says "Los Angeles, CA"
        ("+12065550100", "WA"),  # "Washington State"
        ("+15125550100", "TX"),
        ("+12125550100", "NY"),
        ("+12021234567", "DC"),  # unassigned exchange: the area code still says where
        ("+14165550123", None),  # Toronto
        ("+17875550100", None),  # Puerto Rico
        ("+18005550123", None),  # toll-free
        ("+447911123456", None),
        ("12025550123", None),  # not E.164
        ("", None),
    ],
)
def test_recipient_state(number: str, state: str | None) -> None:
    assert recipient_state(number) == state


@pytest.mark.parametrize("number", [FLORIDA, OKLAHOMA, MARYLAND])
def test_strict_window(number: str) -> None:
    window = window_for(number)
    assert (window.start.isoformat(), window.end.isoformat(), window.daily_automated_cap) == (
        "08:00:00",
        "20:00:00",
        3,
    )


@pytest.mark.parametrize("number", [EASTERN, PACIFIC, "+14165550123", "+447911123456", "garbage"])
def test_default_window(number: str) -> None:
    window = window_for(number)
    assert (window.start.isoformat(), window.end.isoformat(), window.daily_automated_cap) == (
        "08:00:00",
        "21:00:00",
        None,
    )


# --- quiet hours ------------------------------------------------------------------------------------

DAY = (2026, 6, 10)  # a Wednesday, far from any DST change


def _utc(zone: ZoneInfo, *parts: int) -> datetime:
    return datetime(*parts, tzinfo=zone).astimezone(UTC)


@pytest.mark.parametrize(
    ("number", "zone", "closes"),
    [(EASTERN, NEW_YORK, 21), (PACIFIC, LOS_ANGELES, 21), (FLORIDA, NEW_YORK, 20)],
)
@pytest.mark.parametrize(
    ("hour", "minute", "expect"),
    [
        (0, 0, "today"),
        (7, 59, "today"),
        (8, 0, None),
        (12, 0, None),
        (19, 59, None),
        (20, 0, "closes20"),
        (20, 59, "closes20"),
        (21, 0, "tomorrow"),
        (23, 59, "tomorrow"),
    ],
)
def test_quiet_hours_edges(
    number: str, zone: ZoneInfo, closes: int, hour: int, minute: int, expect: str | None
) -> None:
    now = _utc(zone, *DAY, hour, minute)
    result = next_allowed_at(number, now, "America/Denver")
    today_8 = _utc(zone, *DAY, 8, 0)
    tomorrow_8 = _utc(zone, 2026, 6, 11, 8, 0)
    if expect == "closes20":
        expect = "tomorrow" if closes == 20 else None
    if expect is None:
        assert result is None
    else:
        assert result == (today_8 if expect == "today" else tomorrow_8)
        assert result is not None
        assert result.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("number", "now", "opening"),
    [
        # Spring forward, 2026-03-08: 01:30 EST -> 08:00 EDT is 12:00 UTC (not 13:00).
        (EASTERN, datetime(2026, 3, 8, 6, 30, tzinfo=UTC), datetime(2026, 3, 8, 12, 0, tzinfo=UTC)),
        (EASTERN, datetime(2026, 3, 8, 2, 30, tzinfo=UTC), datetime(2026, 3, 8, 12, 0, tzinfo=UTC)),
        (FLORIDA, datetime(2026, 3, 8, 1, 0, tzinfo=UTC), datetime(2026, 3, 8, 12, 0, tzinfo=UTC)),
        (PACIFIC, datetime(2026, 3, 8, 9, 30, tzinfo=UTC), datetime(2026, 3, 8, 15, 0, tzinfo=UTC)),
        (EASTERN, datetime(2026, 3, 8, 11, 59, tzinfo=UTC), datetime(2026, 3, 8, 12, 0, tzinfo=UTC)),
        # Fall back, 2026-11-01: 21:30 EDT the night before -> 08:00 EST is 13:00 UTC (not 12:00).
        (EASTERN, datetime(2026, 11, 1, 1, 30, tzinfo=UTC), datetime(2026, 11, 1, 13, 0, tzinfo=UTC)),
        (PACIFIC, datetime(2026, 11, 1, 4, 30, tzinfo=UTC), datetime(2026, 11, 1, 16, 0, tzinfo=UTC)),
    ],
)
def test_quiet_hours_across_dst_changes(number: str, now: datetime, opening: datetime) -> None:
    assert next_allowed_at(number, now, "America/Denver") == opening


def test_dst_day_window_is_local() -> None:
    # 08:00 EDT on the spring-forward day is open; 07:59 is not.
    assert next_allowed_at(EASTERN, datetime(2026, 3, 8, 12, 0, tzinfo=UTC), "UTC") is None
    assert next_allowed_at(EASTERN, datetime(2026, 3, 8, 11, 59, tzinfo=UTC), "UTC") is not None


def test_quiet_hours_use_the_fallback_zone_when_the_number_says_nothing() -> None:
    now = datetime(2026, 6, 10, 4, 0, tzinfo=UTC)  # 00:00 EDT, 21:00 PDT the evening before
    assert next_allowed_at("+18005550123", now, "America/New_York") == _utc(NEW_YORK, *DAY, 8, 0)
    assert next_allowed_at("+18005550123", now, LOS_ANGELES) == _utc(LOS_ANGELES, *DAY, 8, 0)


def test_quiet_hours_need_an_aware_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next_allowed_at(EASTERN, datetime(2026, 6, 10, 12, 0), "America/New_York")  # noqa: DTZ001


# --- the decision -----------------------------------------------------------------------------------

NOON_EASTERN = _utc(NEW_YORK, *DAY, 12, 0)


def _check(**changes: object) -> OutboundCheck:
    base = OutboundCheck(
        to_number=EASTERN,
        body="Hi, this is North Honda. Sorry we missed your call! How can we help?",
        media_count=0,
        now=NOON_EASTERN,
        fallback_zone="America/New_York",
        opted_out=False,
        textable=True,
        automated=True,
    )
    return replace(base, **changes)


def _assert_refused(decision: GuardDecision, code: str) -> None:
    assert decision.allowed is False
    assert decision.code == code
    assert decision.send_after is None
    assert decision.deferred is False
    assert decision.reason
    assert decision.reason.endswith(".")
    assert decision.reason[0].isupper()


def _assert_deferred(decision: GuardDecision, code: str, until: datetime) -> None:
    assert decision.allowed is False
    assert decision.code == code
    assert decision.send_after == until
    assert decision.deferred is True
    assert decision.reason
    assert decision.reason.endswith(".")


def test_allowed() -> None:
    decision = check_outbound(_check())
    assert decision == GuardDecision(True, None, None, None, Segments("GSM-7", 68, 1))
    assert decision.deferred is False


def test_opted_out_is_refused_with_the_date() -> None:
    decision = check_outbound(_check(opted_out=True, opted_out_at=datetime(2026, 5, 20, 14, 0, tzinfo=UTC)))
    _assert_refused(decision, "opted_out")
    assert decision.reason is not None
    assert "2026-05-20" in decision.reason
    assert "blocked" in decision.reason


def test_opted_out_comes_before_every_other_rule() -> None:
    decision = check_outbound(_check(opted_out=True, textable=False, body="", to_number="Anonymous"))
    _assert_refused(decision, "opted_out")


def test_the_confirmation_of_a_stop_goes_even_to_an_opted_out_customer_at_night() -> None:
    late = _utc(NEW_YORK, *DAY, 23, 30)
    decision = check_outbound(
        _check(opted_out=True, now=late, body=opt_out_confirmation("North Honda"), is_keyword_reply=True)
    )
    assert decision.allowed is True
    assert decision.code is None


def test_a_keyword_reply_is_not_held_by_the_cap() -> None:
    decision = check_outbound(
        _check(to_number=FLORIDA, automated_sent_last_24h=3, is_keyword_reply=True, body="HELP answer")
    )
    assert decision.allowed is True


def test_not_textable() -> None:
    _assert_refused(check_outbound(_check(textable=False)), "not_textable")
    _assert_refused(check_outbound(_check(textable=False, is_keyword_reply=True)), "not_textable")


@pytest.mark.parametrize("body", ["", "   ", "\n\t"])
def test_empty_body(body: str) -> None:
    _assert_refused(check_outbound(_check(body=body)), "empty_body")


def test_a_picture_without_words_is_one_mms() -> None:
    decision = check_outbound(_check(body="", media_count=1))
    assert decision.allowed is True
    assert decision.segments == Segments("GSM-7", 0, 0)


@pytest.mark.parametrize(
    ("body", "allowed"),
    [
        ("a" * 1600, True),
        ("a" * 1601, False),
        ("😀" * 800, True),
        ("😀" * 801, False),
        ("€" * 800, True),
        ("€" * 800 + "a", False),
    ],
)
def test_body_length(body: str, allowed: bool) -> None:
    decision = check_outbound(_check(body=body))
    if allowed:
        assert decision.allowed is True
    else:
        _assert_refused(decision, "body_too_long")
        assert decision.reason is not None
        assert "1600" in decision.reason


@pytest.mark.parametrize(
    "number",
    [
        "",
        "Anonymous",
        "+266696687",
        "+8656696",
        "+1202555",
        "2025550123",
        "+1 202 555 0123",
        "+12025550123x",
        "+99912345678",
    ],
)
def test_invalid_number(number: str) -> None:
    _assert_refused(check_outbound(_check(to_number=number)), "invalid_number")


def test_quiet_hours_defer_to_the_next_opening() -> None:
    decision = check_outbound(_check(now=_utc(NEW_YORK, *DAY, 22, 15)))
    _assert_deferred(decision, "quiet_hours", _utc(NEW_YORK, 2026, 6, 11, 8, 0))
    assert decision.reason is not None
    assert "22:15" in decision.reason
    assert "08:00" in decision.reason
    assert "America/New_York" in decision.reason


def test_quiet_hours_apply_to_texts_a_person_writes_too() -> None:
    decision = check_outbound(_check(automated=False, now=_utc(LOS_ANGELES, *DAY, 7, 0), to_number=PACIFIC))
    _assert_deferred(decision, "quiet_hours", _utc(LOS_ANGELES, *DAY, 8, 0))


def test_quiet_hours_follow_the_recipient_not_the_store() -> None:
    # 21:30 for a Los Angeles store is 00:30 in Washington.
    now = _utc(LOS_ANGELES, *DAY, 21, 30)
    decision = check_outbound(_check(now=now, fallback_zone="America/Los_Angeles"))
    _assert_deferred(decision, "quiet_hours", _utc(NEW_YORK, 2026, 6, 11, 8, 0))
    # 19:30 for a Washington store is 16:30 in Los Angeles.
    assert check_outbound(_check(now=_utc(NEW_YORK, *DAY, 19, 30), to_number=PACIFIC)).allowed is True


def test_florida_closes_at_eight() -> None:
    at_eight = _utc(NEW_YORK, *DAY, 20, 0)
    _assert_deferred(
        check_outbound(_check(to_number=FLORIDA, now=at_eight, automated=False)),
        "quiet_hours",
        _utc(NEW_YORK, 2026, 6, 11, 8, 0),
    )
    assert check_outbound(_check(to_number=EASTERN, now=at_eight)).allowed is True


@pytest.mark.parametrize(
    ("contacted_ago", "allowed"),
    [
        (timedelta(0), True),
        (timedelta(minutes=4, seconds=59), True),
        (REPLY_GRACE, True),
        (REPLY_GRACE + timedelta(seconds=1), False),
        (timedelta(hours=4), False),
        (timedelta(seconds=-3), True),  # the webhook's clock a little ahead of ours
    ],
)
def test_reply_grace(contacted_ago: timedelta, allowed: bool) -> None:
    late = _utc(NEW_YORK, *DAY, 22, 0)
    decision = check_outbound(
        _check(now=late, customer_contacted_at=late - contacted_ago, answers_contact=True)
    )
    if allowed:
        assert decision.allowed is True
    else:
        _assert_deferred(decision, "quiet_hours", _utc(NEW_YORK, 2026, 6, 11, 8, 0))


def test_no_contact_means_no_grace() -> None:
    decision = check_outbound(_check(now=_utc(NEW_YORK, *DAY, 6, 0), customer_contacted_at=None))
    assert decision.code == "quiet_hours"


@pytest.mark.parametrize(("number", "zone"), [(FLORIDA, NEW_YORK), (OKLAHOMA, CHICAGO), (MARYLAND, NEW_YORK)])
def test_daily_cap_defers_until_the_oldest_text_ages_out(number: str, zone: ZoneInfo) -> None:
    now = _utc(zone, *DAY, 12, 0)
    sent = [now - timedelta(hours=23), now - timedelta(hours=10), now - timedelta(hours=1)]
    decision = check_outbound(_check(to_number=number, now=now, automated_sent_last_24h=sent))
    _assert_deferred(decision, "daily_cap", now + timedelta(hours=1))
    assert decision.reason is not None
    assert "3 automated texts" in decision.reason


@pytest.mark.parametrize("number", [FLORIDA, OKLAHOMA, MARYLAND])
def test_daily_cap_allows_the_third(number: str) -> None:
    now = _utc(CHICAGO, *DAY, 12, 0)
    sent = [now - timedelta(hours=5), now - timedelta(hours=1)]
    assert check_outbound(_check(to_number=number, now=now, automated_sent_last_24h=sent)).allowed is True
    assert check_outbound(_check(to_number=number, now=now, automated_sent_last_24h=2)).allowed is True


def test_daily_cap_ignores_texts_older_than_a_day() -> None:
    now = NOON_EASTERN
    sent = [now - timedelta(hours=25), now - timedelta(hours=24), now - timedelta(hours=2), now]
    assert check_outbound(_check(to_number=FLORIDA, automated_sent_last_24h=sent)).allowed is True


def test_daily_cap_with_only_a_count_waits_a_day() -> None:
    decision = check_outbound(_check(to_number=OKLAHOMA, automated_sent_last_24h=3))
    _assert_deferred(decision, "daily_cap", NOON_EASTERN + timedelta(hours=24))


def test_daily_cap_over_the_limit_waits_for_enough_to_age_out() -> None:
    sent = [NOON_EASTERN - timedelta(hours=h) for h in (20, 18, 10, 5)]
    decision = check_outbound(_check(to_number=MARYLAND, automated_sent_last_24h=sent))
    # Four in the window: two must age out, the one sent 20 h ago and the one sent 18 h ago.
    _assert_deferred(decision, "daily_cap", NOON_EASTERN + timedelta(hours=6))


def test_daily_cap_release_in_quiet_hours_waits_for_the_morning() -> None:
    now = _utc(NEW_YORK, *DAY, 19, 30)
    sent = [now - timedelta(hours=23, minutes=15), now - timedelta(hours=3), now - timedelta(hours=2)]
    decision = check_outbound(_check(to_number=FLORIDA, now=now, automated_sent_last_24h=sent))
    # The oldest ages out at 20:15, after Florida's 20:00 close: the next morning, then.
    _assert_deferred(decision, "daily_cap", _utc(NEW_YORK, 2026, 6, 11, 8, 0))


def test_quiet_hours_and_cap_together_wait_for_both() -> None:
    now = _utc(NEW_YORK, *DAY, 20, 30)
    sent = [now - timedelta(hours=10), now - timedelta(hours=2), now - timedelta(hours=1)]
    decision = check_outbound(_check(to_number=FLORIDA, now=now, automated_sent_last_24h=sent))
    # Closed now; the cap frees a slot at 10:30 tomorrow, later than the 08:00 opening.
    _assert_deferred(decision, "quiet_hours", _utc(NEW_YORK, 2026, 6, 11, 10, 30))


def test_daily_cap_counts_only_automated_texts() -> None:
    decision = check_outbound(_check(to_number=FLORIDA, automated=False, automated_sent_last_24h=5))
    assert decision.allowed is True


def test_no_cap_outside_the_strict_states() -> None:
    decision = check_outbound(_check(to_number=EASTERN, automated_sent_last_24h=12))
    assert decision.allowed is True


def test_reply_grace_does_not_lift_the_cap() -> None:
    now = _utc(NEW_YORK, *DAY, 21, 0)
    decision = check_outbound(
        _check(
            to_number=FLORIDA,
            now=now,
            customer_contacted_at=now - timedelta(minutes=1),
            answers_contact=True,
            automated_sent_last_24h=3,
        )
    )
    # The slot frees at 21:00 tomorrow, after Florida's close: the morning after, then.
    _assert_deferred(decision, "daily_cap", _utc(NEW_YORK, 2026, 6, 12, 8, 0))


def test_reply_grace_lifts_florida_quiet_hours() -> None:
    now = _utc(NEW_YORK, *DAY, 20, 30)
    decision = check_outbound(
        _check(
            to_number=FLORIDA, now=now, customer_contacted_at=now - timedelta(seconds=40), answers_contact=True
        )
    )
    assert decision.allowed is True


@pytest.mark.parametrize("automated", [True, False])
def test_reply_grace_is_only_for_the_answer_itself(automated: bool) -> None:
    # 06:10 in Chicago, the customer called 6 s ago: a cadence's later step is a follow-up, not the answer,
    # and waits for 08:00 however recent the call.
    now = _utc(CHICAGO, *DAY, 6, 10)
    decision = check_outbound(
        _check(
            to_number="+13125550123",
            now=now,
            automated=automated,
            customer_contacted_at=now - timedelta(seconds=6),
            answers_contact=False,
        )
    )
    _assert_deferred(decision, "quiet_hours", _utc(CHICAGO, *DAY, 8, 0))
    answer = check_outbound(
        _check(
            to_number="+13125550123",
            now=now,
            automated=automated,
            customer_contacted_at=now - timedelta(seconds=6),
            answers_contact=True,
        )
    )
    assert answer.allowed is True


def test_an_answer_with_no_recent_contact_waits() -> None:
    now = _utc(NEW_YORK, *DAY, 22, 0)
    decision = check_outbound(
        _check(now=now, customer_contacted_at=now - timedelta(minutes=6), answers_contact=True)
    )
    _assert_deferred(decision, "quiet_hours", _utc(NEW_YORK, 2026, 6, 11, 8, 0))


def test_the_guard_needs_an_aware_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        check_outbound(_check(now=datetime(2026, 6, 10, 12, 0)))  # noqa: DTZ001


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"opted_out": True}, "opted_out"),
        ({"textable": False}, "not_textable"),
        ({"body": ""}, "empty_body"),
        ({"body": "x" * 2000}, "body_too_long"),
        ({"to_number": "+266696687"}, "invalid_number"),
    ],
)
def test_every_refusal_code(changes: dict[str, object], code: str) -> None:
    _assert_refused(check_outbound(_check(**changes)), code)
