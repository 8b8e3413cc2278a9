"""A web form's JSON checked into an `Inquiry`: every bad field named at once, never a half-read form."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.leads import WEB_FORM, Inquiry, SmsConsent, Vehicle
from gateway.mail import is_address
from gateway.models import Store
from gateway.phones import InvalidPhone, to_e164

FIELDS = (
    "store", "department", "source", "first_name", "last_name", "phone", "email", "vehicle", "message",
    "external_id", "sms_consent",
)
VEHICLE_FIELDS = ("year", "make", "model", "trim", "vin", "stock")
CONSENT_FIELDS = ("granted", "text", "at", "ip")
MAX_NAME = 100
MAX_MESSAGE = 5000
MAX_CONSENT_TEXT = 2000
MAX_EXTERNAL_ID = 200
CLOCK_SKEW = timedelta(minutes=5)  # a form's clock may run a little ahead of ours


class InvalidForm(ValueError):
    """`problems`: field (dotted for nested ones) -> what is wrong with it."""

    def __init__(self, problems: dict[str, str]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{name}: {problem}" for name, problem in problems.items()))


@dataclass(frozen=True)
class WebLead:
    store_key: str
    inquiry: Inquiry
    external_id: str | None


class _Reader:
    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.problems: dict[str, str] = {}

    def bad(self, name: str, problem: str) -> None:
        self.problems.setdefault(name, problem)

    def text(self, source: dict[str, Any], name: str, limit: int, path: str | None = None) -> str | None:
        path = path or name
        value = source.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, str | int):
            self.bad(path, "must be text")
            return None
        text = " ".join(str(value).split()) if name != "message" else str(value).strip()
        if "\x00" in text:
            self.bad(path, "must not hold NUL characters")
            return None
        if len(text) > limit:
            self.bad(path, f"at most {limit} characters")
            return None
        return text or None


def read_form(body: Any) -> tuple[str, dict[str, Any]]:
    """The store key and the raw body, once it is a JSON object naming a store; InvalidForm otherwise."""
    if not isinstance(body, dict):
        raise InvalidForm({"body": "send a JSON object with Content-Type: application/json"})
    store = body.get("store")
    if not isinstance(store, str) or not store.strip():
        raise InvalidForm({"store": "required: the key of the store the lead is for"})
    return store.strip(), body


def web_lead(body: dict[str, Any], store: Store, now: datetime) -> WebLead:
    """The form as an Inquiry for `store`; InvalidForm naming every bad field."""
    reader = _Reader(body)
    department = reader.text(body, "department", 32)
    if department is not None and department not in store.hours:
        reader.bad("department", f"{store.key} has no department {department!r}; it has {', '.join(store.hours)}")
    source = reader.text(body, "source", MAX_NAME) or "Website"
    first_name = reader.text(body, "first_name", MAX_NAME)
    last_name = reader.text(body, "last_name", MAX_NAME)
    message = reader.text(body, "message", MAX_MESSAGE)
    external_id = reader.text(body, "external_id", MAX_EXTERNAL_ID)

    phone: str | None = None
    raw_phone = reader.text(body, "phone", 40)
    if raw_phone is not None:
        try:
            phone = to_e164(raw_phone)
        except InvalidPhone:
            reader.bad("phone", "not a phone number we can call or text back")
    email: str | None = None
    raw_email = reader.text(body, "email", 254)
    if raw_email is not None:
        if is_address(raw_email):
            email = raw_email.lower()
        else:
            reader.bad("email", "not an e-mail address")
    if raw_phone is None and raw_email is None:
        reader.bad("phone", "a phone or an e-mail address is required")
        reader.bad("email", "a phone or an e-mail address is required")

    vehicles: tuple[Vehicle, ...] = ()
    vehicle = body.get("vehicle")
    if vehicle is not None:
        if not isinstance(vehicle, dict):
            reader.bad("vehicle", "must be an object with year, make, model, trim, vin, stock")
        else:
            vehicles = _vehicle(reader, vehicle)

    consent: SmsConsent | None = None
    raw_consent = body.get("sms_consent")
    if raw_consent is not None:
        if not isinstance(raw_consent, dict):
            reader.bad("sms_consent", "must be an object with granted, text, at, ip")
        else:
            consent = _consent(reader, raw_consent, now)
            if consent is not None and consent.granted and raw_phone is None:
                reader.bad("sms_consent.granted", "consent to texts needs a phone")
    if reader.problems:
        raise InvalidForm(reader.problems)
    inquiry = Inquiry(
        channel=WEB_FORM,
        source=source,
        department=department or _default_department(store),
        first_name=first_name,
        last_name=last_name,
        phone=phone,
        email=email,
        message=message,
        vehicles=vehicles,
        ids=((source, external_id),) if external_id else (),
        sms_consent=consent,
        received_at=now,
    )
    return WebLead(store_key=store.key, inquiry=inquiry, external_id=external_id)


def _default_department(store: Store) -> str:
    if "sales" in store.hours or not store.hours:
        return "sales"
    return next(iter(store.hours))


def _vehicle(reader: _Reader, vehicle: dict[str, Any]) -> tuple[Vehicle, ...]:
    year: int | None = None
    raw_year = vehicle.get("year")
    if raw_year is not None:
        text = str(raw_year).strip()
        if isinstance(raw_year, bool) or not text.isdigit() or not 1900 <= int(text) <= 2100:
            reader.bad("vehicle.year", "a year from 1900 to 2100")
        else:
            year = int(text)
    def part(name: str) -> str | None:
        return reader.text(vehicle, name, MAX_NAME, f"vehicle.{name}")

    found = Vehicle(
        year=year, make=part("make"), model=part("model"), trim=part("trim"), vin=part("vin"), stock=part("stock")
    )
    return (found,) if found.describe() else ()


def _consent(reader: _Reader, raw: dict[str, Any], now: datetime) -> SmsConsent | None:
    granted = raw.get("granted")
    if not isinstance(granted, bool):
        reader.bad("sms_consent.granted", "must be true or false")
        return None
    text = reader.text(raw, "text", MAX_CONSENT_TEXT, "sms_consent.text")
    if granted and not text:
        reader.bad("sms_consent.text", "the consent text the customer was shown is required when granted")
    at: datetime | None = None
    raw_at = raw.get("at")
    if raw_at is not None:
        at = _moment(raw_at)
        if at is None:
            reader.bad("sms_consent.at", "ISO 8601 with an offset, e.g. 2026-11-24T10:00:00-05:00")
        elif at > now + CLOCK_SKEW:
            reader.bad("sms_consent.at", "in the future")
    ip: str | None = None
    raw_ip = raw.get("ip")
    if raw_ip is not None:
        try:
            ip = str(ipaddress.ip_address(str(raw_ip).strip()))
        except ValueError:
            reader.bad("sms_consent.ip", "not an IP address")
    return SmsConsent(granted=granted, text=text, at=at or (now if granted else None), ip=ip)


def _moment(value: Any) -> datetime | None:
    if not isinstance(value, str) or len(value) > 64:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None or moment.utcoffset() is None:
        return None
    try:
        return moment.astimezone(UTC)
    except (OverflowError, ValueError):
        return None
