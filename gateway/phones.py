"""Phone numbers: parsed once at the edge into E.164, masked in logs."""

from __future__ import annotations

import functools

import phonenumbers

DEFAULT_REGION = "US"

# What providers put in From for a caller who withheld the number: words, and the keypad spellings
# of ANONYMOUS, RESTRICTED, BLOCKED and UNAVAILABLE that some carriers pass through as digits.
_WITHHELD = {
    "",
    "anonymous",
    "restricted",
    "private",
    "blocked",
    "unknown",
    "unavailable",
    "withheld",
    "client:anonymous",
    "+266696687",
    "266696687",
    "+7378742833",
    "+2562533",
    "+8656696",
}


class InvalidPhone(ValueError):
    """Not a phone number we can call or text back."""


def is_withheld(raw: str | None) -> bool:
    return raw is None or raw.strip().lower() in _WITHHELD


def to_e164(raw: str, region: str = DEFAULT_REGION) -> str:
    """E.164 for a dialable number; InvalidPhone otherwise."""
    return _to_e164(raw.strip(), region)


@functools.lru_cache(maxsize=8192)
def _to_e164(text: str, region: str) -> str:
    # Cached: every webhook parses its numbers, and the same tracked numbers and callers come back.
    if len(text) > 32:
        raise InvalidPhone("phone number too long")
    try:
        parsed = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException as error:
        raise InvalidPhone(f"not a phone number: {error}") from None
    if not phonenumbers.is_possible_number(parsed):
        raise InvalidPhone("not a possible phone number")
    return str(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))


def caller_number(raw: str | None) -> str | None:
    """The caller's E.164 number, or None when it is withheld or not a usable number."""
    if raw is None or is_withheld(raw):
        return None
    try:
        return to_e164(raw)
    except InvalidPhone:
        return None


def national(e164: str | None) -> str:
    """(202) 555-0111 for US numbers, international format elsewhere; "withheld number" for None."""
    if not e164:
        return "withheld number"
    try:
        parsed = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return e164
    fmt = (
        phonenumbers.PhoneNumberFormat.NATIONAL
        if parsed.country_code == 1
        else phonenumbers.PhoneNumberFormat.INTERNATIONAL
    )
    return str(phonenumbers.format_number(parsed, fmt))


def mask(phone: str | None) -> str:
    """For logs: keep the country code and the last two digits."""
    if not phone:
        return "-"
    if len(phone) <= 4:
        return "*" * len(phone)
    return phone[:2] + "*" * (len(phone) - 4) + phone[-2:]
