"""An inquiry survives its trip through an intake record: `Inquiry.from_data(inquiry.as_data())` is the same
inquiry, so the worker builds an ADF lead from exactly what the request read."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from gateway.leads import ADF, WEB_FORM, Inquiry, SmsConsent, Vehicle


def test_a_full_inquiry_comes_back_from_its_json() -> None:
    inquiry = Inquiry(
        channel=WEB_FORM,
        source="Website",
        department="sales",
        first_name="Zoë",
        last_name="Brontë-Nuñez",
        phone="+12025550122",
        email="zoe@example.com",
        message="Blue, please.",
        vehicles=(Vehicle(year=2026, make="Honda", model="Accord", trim="Sport-L", status="new"),
                  Vehicle(vin="1HGCM82633A004352", interest="trade-in")),
        ids=(("LeadPoint Auto", "LP-1"), (None, "7")),
        provider="LeadPoint Auto",
        sms_consent=SmsConsent(granted=True, text="I agree.", at=datetime(2026, 11, 24, 14, 59, tzinfo=UTC),
                               ip="198.51.100.7"),
        received_at=datetime(2026, 11, 24, 15, 0, tzinfo=UTC),
        extra={"request_date": "2026-11-24T10:15:00-05:00", "status": "new"},
    )
    stored = json.loads(json.dumps(inquiry.as_data()))  # as the JSON column keeps it
    assert Inquiry.from_data(stored) == inquiry


def test_a_bare_inquiry_comes_back_too() -> None:
    inquiry = Inquiry(channel=ADF, source="ADF", department="service")
    assert Inquiry.from_data(json.loads(json.dumps(inquiry.as_data()))) == inquiry
