"""What the gateway sends to CRMs: ADF/XML 1.0 leads and signed JSON webhook events.

Pure functions, no I/O: the outbox renders a body once, stores it, and hands it to `crm_transport`
as often as the CRM needs. Dealership CRMs (VinSolutions, Elead, DealerSocket) take ADF/XML 1.0;
anything else (HubSpot, Salesforce, a dealer's own endpoint) takes JSON events signed with a shared
secret, verified the way `verify_webhook` shows.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET  # builds documents only; nothing here parses input

SIGNATURE_HEADER = "X-Gateway-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
ADF_CONTENT_TYPE = "application/xml; charset=utf-8"
JSON_CONTENT_TYPE = "application/json"
# The DTD the ADF output is checked against (packaged beside this module).
ADF_DTD_PATH = Path(__file__).with_name("adf-1.0.dtd")

PROVIDER_NAME = "Dealer Gateway"
# ADF requires a name on every contact; this stands in when the customer has given none.
UNKNOWN_NAME = "Unknown customer"
LEAD_CREATED = "lead.created"
DEFAULT_TOLERANCE = 300

_XML_PROLOG = '<?xml version="1.0" encoding="UTF-8"?>\n<?adf version="1.0"?>\n'
# Characters XML 1.0 cannot carry at all (not even as references): C0 controls other than tab, line
# feed and carriage return, lone surrogates, U+FFFE and U+FFFF.
_XML_FORBIDDEN = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_NANP = re.compile(r"\+1(\d{3})(\d{3})(\d{4})")


class ContactType(StrEnum):
    """How the customer reached the store; the `service` a CRM sees in ADF."""

    MISSED_CALL = "missed call"
    ABANDONED_CALL = "abandoned call"
    AFTER_HOURS_CALL = "after-hours call"
    VOICEMAIL = "voicemail"
    ANSWERED_CALL = "answered call"
    TEXT = "text"


@dataclass(frozen=True, kw_only=True, slots=True)
class LeadRecord:
    """Everything a CRM is told about one lead event, flattened from the database rows.

    `phone` is E.164 or None when the caller withheld it; `request_date` must be timezone-aware;
    `call_duration` is in seconds.
    """

    lead_id: int
    lead_code: str
    event: str  # "lead.created", "lead.updated", "call.logged", "message.received", ...
    contact_type: str  # a ContactType value, or another short label
    request_date: datetime
    store_key: str
    store_name: str
    store_phone: str
    department: str
    lead_url: str
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    source: str | None = None
    tracked_number: str | None = None
    call_outcome: str | None = None
    call_duration: int | None = None
    transcript: str | None = None
    message_body: str | None = None
    owner_name: str | None = None
    status: str = "new"
    priority: int = 0
    # The call or text was found in the provider's log: its webhooks never reached the gateway.
    reconciled: bool = False

    def __post_init__(self) -> None:
        if self.request_date.tzinfo is None or self.request_date.utcoffset() is None:
            raise ValueError("LeadRecord.request_date must be timezone-aware")


# ---------------------------------------------------------------------------------------------- ADF


def render_adf(record: LeadRecord) -> bytes:
    """One lead as an ADF 1.0 document (UTF-8), valid against `adf-1.0.dtd` whatever the text holds."""
    adf = ET.Element("adf")
    prospect = ET.SubElement(
        adf, "prospect", status="new" if record.event == LEAD_CREATED else "resend"
    )
    _text(prospect, "id", record.lead_code, sequence="1", source=PROVIDER_NAME)
    _text(prospect, "requestdate", record.request_date.isoformat(timespec="seconds"))

    # ADF requires a vehicle with year, make and model, and a call or text rarely names one. Empty
    # elements are valid (#PCDATA) and CRMs read them as "not given"; "Unknown" would instead create
    # a vehicle of interest literally called Unknown, and a non-numeric year breaks CRMs that parse
    # it as a number. interest="buy" and status="used" are the least specific claims the DTD allows.
    vehicle = ET.SubElement(prospect, "vehicle", interest="buy", status="used")
    for tag in ("year", "make", "model"):
        ET.SubElement(vehicle, tag)

    customer = ET.SubElement(prospect, "customer")
    contact = ET.SubElement(customer, "contact")
    _add_names(contact, record.first_name, record.last_name)
    email = _clean(record.email).strip()
    if email:
        _text(contact, "email", email)
    if record.phone:
        _text(contact, "phone", format_phone(record.phone), type="voice")
    elif not email:
        # A withheld caller: ADF needs an e-mail or a phone, and an empty phone says "none" without
        # inventing a number (an empty e-mail fails address checks some CRMs run).
        ET.SubElement(contact, "phone", type="voice")
    _text(customer, "comments", _comments(record))

    vendor = ET.SubElement(prospect, "vendor")
    _text(vendor, "id", record.store_key, source=PROVIDER_NAME)
    _text(vendor, "vendorname", record.store_name)
    vendor_contact = ET.SubElement(vendor, "contact")
    _text(vendor_contact, "name", record.store_name, part="full", type="business")
    _text(vendor_contact, "phone", format_phone(record.store_phone), type="voice")

    provider = ET.SubElement(prospect, "provider")
    _text(provider, "name", PROVIDER_NAME, part="full", type="business")
    _text(provider, "service", record.contact_type)

    ET.indent(adf)
    # <year></year> rather than <year />: the same to a parser, and the spelling ADF samples use.
    document = ET.tostring(adf, encoding="unicode", short_empty_elements=False)
    return (_XML_PROLOG + document + "\n").encode("utf-8")


def format_phone(number: str) -> str:
    """A North American E.164 number the way dealership CRMs expect it (202-555-0111); others as given."""
    number = _clean(number).strip()
    match = _NANP.fullmatch(number)
    return "-".join(match.groups()) if match else number


def _add_names(contact: ET.Element, first: str | None, last: str | None) -> None:
    first, last = _clean(first).strip(), _clean(last).strip()
    if first:
        _text(contact, "name", first, part="first", type="individual")
    if last:
        _text(contact, "name", last, part="last", type="individual")
    if not (first or last):
        _text(contact, "name", UNKNOWN_NAME, part="full", type="individual")


def _comments(record: LeadRecord) -> str:
    store = f"{record.store_name} ({record.department})" if record.department else record.store_name
    lines = [f"Contact: {record.contact_type}", f"Store: {store}"]
    if record.source:
        lines.append(f"Source: {record.source}")
    if record.tracked_number:
        lines.append(f"Tracked number: {format_phone(record.tracked_number)}")
    if not record.phone:
        lines.append("Caller ID: withheld")
    if record.call_outcome:
        lines.append(f"Call outcome: {record.call_outcome}")
    if record.call_duration is not None:
        lines.append(f"Call duration: {_duration(record.call_duration)}")
    if record.transcript:
        lines.append(f"Voicemail transcript: {record.transcript}")
    if record.message_body:
        lines.append(f"Text message: {record.message_body}")
    if record.reconciled:
        lines.append(RECONCILED_COMMENT)
    if record.owner_name:
        lines.append(f"Assigned to: {record.owner_name}")
    lines.append(f"Lead {record.lead_code}: {record.lead_url}")
    return "\n".join(lines)


RECONCILED_COMMENT = "Found in the provider's log: the gateway never received this contact's webhooks"


def _duration(seconds: int) -> str:
    minutes, rest = divmod(max(seconds, 0), 60)
    return f"{minutes}:{rest:02d} ({seconds} s)"


def _clean(value: str | None) -> str:
    """Drop the characters XML 1.0 forbids: a control byte in a name must not lose the lead."""
    return _XML_FORBIDDEN.sub("", value) if value else ""


def _text(parent: ET.Element, tag: str, value: str, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, {key: _clean(v) for key, v in attrs.items()})
    element.text = _clean(value)
    return element


# ------------------------------------------------------------------------------------------- JSON


def render_json_event(
    event: str,
    data: Mapping[str, Any],
    *,
    event_id: str | None = None,
    created_at: datetime | None = None,
) -> bytes:
    """A webhook body: {"id", "type", "created_at", "data"} as compact UTF-8 JSON with sorted keys.

    Times are ISO 8601 with offset (naive datetimes are refused). Pass `event_id` and `created_at`
    when re-rendering a stored event so a retry carries the same identity.
    """
    envelope = {
        "id": event_id or f"evt_{uuid.uuid4().hex}",
        "type": event,
        "created_at": _iso(created_at or datetime.now(UTC)),
        "data": data,
    }
    text = json.dumps(
        envelope,
        default=_json_default,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )
    # A lone surrogate (possible from a JSON "\ud83d" escape upstream) cannot be UTF-8: replace it
    # rather than fail the delivery forever.
    return text.encode("utf-8", errors="replace")


def lead_event_data(record: LeadRecord) -> dict[str, Any]:
    """The `data` of a JSON lead event, carrying the same facts as the ADF document."""
    return {
        "lead": {
            "id": record.lead_id,
            "code": record.lead_code,
            "status": record.status,
            "priority": record.priority,
            "department": record.department,
            "source": record.source,
            "owner": record.owner_name,
            "url": record.lead_url,
        },
        "customer": {
            "first_name": record.first_name,
            "last_name": record.last_name,
            "phone": record.phone,
            "email": record.email,
        },
        "store": {"key": record.store_key, "name": record.store_name, "phone": record.store_phone},
        "contact": {
            "type": record.contact_type,
            "at": record.request_date,
            "tracked_number": record.tracked_number,
            "call_outcome": record.call_outcome,
            "call_duration": record.call_duration,
            "transcript": record.transcript,
            "message_body": record.message_body,
            "reconciled": record.reconciled,
        },
    }


def _iso(value: datetime) -> str:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("naive datetime in a webhook event; times must carry an offset")
    return value.isoformat()


def _json_default(value: object) -> Any:
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"cannot put a {type(value).__name__} in a webhook event")


# --------------------------------------------------------------------------------------- Signatures


def sign_webhook(secret: str, body: bytes, timestamp: int) -> str:
    """The SIGNATURE_HEADER value: t=<unix time>,v1=<hex HMAC-SHA256 of "<t>." + body>."""
    return f"t={timestamp},v1={_digest(secret, body, timestamp)}"


def verify_webhook(
    secret: str, body: bytes, header: str | None, now: int, tolerance: int = DEFAULT_TOLERANCE
) -> bool:
    """True when `header` signs `body` with `secret` at a time within `tolerance` seconds of `now`.

    Several v1 values are allowed (a sender rotating secrets signs with both).
    """
    if not header:
        return False
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            if timestamp is not None or not value.isascii() or not value.isdigit():
                return False
            timestamp = int(value)
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates or abs(now - timestamp) > tolerance:
        return False
    expected = _digest(secret, body, timestamp).encode("ascii")
    # Compare every candidate, so timing does not reveal which one (if any) matched.
    matches = [hmac.compare_digest(expected, value.encode("utf-8", "replace")) for value in candidates]
    return any(matches)


def _digest(secret: str, body: bytes, timestamp: int) -> str:
    signed = f"{timestamp}.".encode("ascii") + body
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()
