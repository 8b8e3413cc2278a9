"""A lead that arrived as a written request (a website form, an ADF/XML prospect) rather than a call or
a text: what the customer told us, as the core's subscribers (cadences, alerts, the CRM) see it.

The intake package builds these from what it receives and announces `events.lead_received` with one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

WEB_FORM = "web form"
ADF = "ADF"


@dataclass(frozen=True, slots=True, kw_only=True)
class Vehicle:
    year: int | None = None
    make: str | None = None
    model: str | None = None
    trim: str | None = None
    vin: str | None = None
    stock: str | None = None
    interest: str = "buy"  # buy | lease | sell | trade-in | test-drive (ADF's words)
    status: str | None = None  # new | used

    def describe(self) -> str:
        """"2024 Honda Civic EX" (what is known of it); the VIN or stock number when nothing else is."""
        words = [str(self.year) if self.year else "", self.make or "", self.model or "", self.trim or ""]
        text = " ".join(word for word in words if word)
        if text:
            return text
        if self.vin:
            return f"VIN {self.vin}"
        return f"stock #{self.stock}" if self.stock else ""


@dataclass(frozen=True, slots=True, kw_only=True)
class SmsConsent:
    """The customer's agreement to be texted, as the form recorded it: the words shown, when, from where."""

    granted: bool
    text: str | None = None
    at: datetime | None = None
    ip: str | None = None

    def describe(self) -> str:
        if not self.granted:
            return "SMS consent: not given"
        parts = [f"given {self.at.isoformat(timespec='seconds')}" if self.at else "given"]
        if self.ip:
            parts.append(f"from {self.ip}")
        text = f"SMS consent: {', '.join(parts)}"
        return f'{text}; text shown: "{self.text}"' if self.text else text


@dataclass(frozen=True, slots=True, kw_only=True)
class Inquiry:
    """One customer's request. `phone` is E.164, `email` lower-case; `ids` are (source, id) pairs the
    sender gave it (a form's external_id, an ADF prospect's <id source=...>)."""

    channel: str  # WEB_FORM | ADF
    source: str
    department: str
    first_name: str | None = None
    last_name: str | None = None
    phone: str | None = None
    email: str | None = None
    message: str | None = None
    vehicles: tuple[Vehicle, ...] = ()
    ids: tuple[tuple[str | None, str], ...] = ()
    provider: str | None = None  # the site that produced an ADF lead (Cars.com, Autotrader...)
    sms_consent: SmsConsent | None = None
    received_at: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str | None:
        return " ".join(part for part in (self.first_name, self.last_name) if part) or None

    @property
    def sms_allowed(self) -> bool:
        return self.sms_consent is not None and self.sms_consent.granted

    def vehicle_text(self) -> str:
        return "; ".join(text for text in (v.describe() for v in self.vehicles) if text)

    def as_data(self) -> dict[str, Any]:
        """JSON-ready: for the intake's record, the lead's timeline and the CRM's webhook."""
        data = asdict(self)
        data["vehicles"] = [asdict(v) for v in self.vehicles]
        data["ids"] = [{"source": source, "id": value} for source, value in self.ids]
        if self.sms_consent is not None:
            consent = asdict(self.sms_consent)
            consent["at"] = self.sms_consent.at.isoformat() if self.sms_consent.at else None
            data["sms_consent"] = consent
        data["received_at"] = self.received_at.isoformat() if self.received_at else None
        return data

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Inquiry:
        """The inquiry `as_data` wrote (an intake record's, built into a lead later by the worker)."""
        consent = data.get("sms_consent")
        return cls(
            channel=data["channel"],
            source=data["source"],
            department=data["department"],
            first_name=data.get("first_name"),
            last_name=data.get("last_name"),
            phone=data.get("phone"),
            email=data.get("email"),
            message=data.get("message"),
            vehicles=tuple(Vehicle(**vehicle) for vehicle in data.get("vehicles") or ()),
            ids=tuple((item.get("source"), item["id"]) for item in data.get("ids") or ()),
            provider=data.get("provider"),
            sms_consent=None if consent is None else SmsConsent(
                granted=bool(consent["granted"]), text=consent.get("text"), at=_moment(consent.get("at")),
                ip=consent.get("ip"),
            ),
            received_at=_moment(data.get("received_at")),
            extra=dict(data.get("extra") or {}),
        )


def _moment(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None
