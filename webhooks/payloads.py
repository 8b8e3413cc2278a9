"""Provider payloads parsed once into small frozen dataclasses. ValueError names what is wrong."""

from __future__ import annotations

import re
from collections.abc import Mapping

from gateway.calls.services import CallEnded, IncomingCall, caller_id_failed
from gateway.phones import InvalidPhone, caller_number, to_e164

_SID = re.compile(r"^[A-Z]{2}[0-9A-Za-z]{8,64}$")


def sid(form: Mapping[str, str], name: str, prefix: str) -> str:
    value = (form.get(name) or "").strip()
    if not value:
        raise ValueError(f"{name} is missing")
    if not _SID.match(value) or not value.startswith(prefix):
        raise ValueError(f"{name} is not a {prefix} SID")
    return value


def sid_or_none(form: Mapping[str, str], name: str, prefix: str) -> str | None:
    """The SID when it is present and well formed, else None (for callbacks answered with a hangup)."""
    try:
        return sid(form, name, prefix)
    except ValueError:
        return None


def tracked_number(form: Mapping[str, str], name: str = "To") -> str:
    raw = (form.get(name) or "").strip()
    if not raw:
        raise ValueError(f"{name} is missing")
    try:
        return to_e164(raw)
    except InvalidPhone as error:
        raise ValueError(f"{name} is not a phone number: {error}") from None


def incoming_call(form: Mapping[str, str]) -> IncomingCall:
    return IncomingCall(
        sid=sid(form, "CallSid", "CA"),
        caller=caller_number(form.get("From")),
        to=tracked_number(form),
        status=(form.get("CallStatus") or "ringing").strip()[:16],
        caller_id_unverified=caller_id_failed(form.get("StirVerstat")),
    )


def call_ended(form: Mapping[str, str]) -> CallEnded:
    raw_duration = (form.get("CallDuration") or "").strip()
    duration = int(raw_duration) if raw_duration.isdigit() else None
    status = (form.get("CallStatus") or "").strip()
    if not status:
        raise ValueError("CallStatus is missing")
    return CallEnded(
        sid=sid(form, "CallSid", "CA"),
        status=status[:16],
        duration=duration,
        caller=caller_number(form.get("From")),
        to=tracked_number(form),
        # Documented on the incoming call; read here too for a call whose end arrives first.
        caller_id_unverified=caller_id_failed(form.get("StirVerstat")),
    )


def step(value: str | None) -> int:
    if value is None or not value.isdigit() or len(value) > 3:
        raise ValueError("step must be a small whole number")
    return int(value)
