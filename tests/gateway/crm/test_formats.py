"""ADF/XML rendering (validated against the packaged DTD) and JSON webhook events and signatures."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from enum import StrEnum

import pytest
from lxml import etree

from gateway.crm.formats import (
    ADF_DTD_PATH,
    IDEMPOTENCY_HEADER,
    PROVIDER_NAME,
    SIGNATURE_HEADER,
    UNKNOWN_NAME,
    ContactType,
    LeadRecord,
    format_phone,
    lead_event_data,
    render_adf,
    render_json_event,
    sign_webhook,
    verify_webhook,
)

EASTERN = timezone(timedelta(hours=-5))
HOSTILE = 'O\'Brien <script>&amp; "quoted" \U0001f697\x00\x07\x1b\ud800\ufffe end'


@pytest.fixture(scope="module")
def dtd() -> etree.DTD:
    return etree.DTD(str(ADF_DTD_PATH))


def make_record(**changes: object) -> LeadRecord:
    record = LeadRecord(
        lead_id=42,
        lead_code="K7Q2M",
        event="lead.created",
        contact_type=ContactType.MISSED_CALL,
        request_date=datetime(2025, 3, 14, 15, 9, 26, tzinfo=EASTERN),
        store_key="north-honda",
        store_name="North Honda",
        store_phone="+12025550100",
        department="sales",
        lead_url="https://gateway.example/leads/42?tab=timeline&x=1",
        phone="+12025550111",
        first_name="Ada",
        last_name="Lovelace",
        source="Cars.com",
        tracked_number="+12025550123",
        call_outcome="missed",
        call_duration=65,
        owner_name="Alice Ng",
    )
    return dataclasses.replace(record, **changes)  # type: ignore[arg-type]


def parse_valid(body: bytes, dtd: etree.DTD) -> etree._Element:
    root = etree.fromstring(body)
    assert dtd.validate(root), dtd.error_log.filter_from_errors()
    return root


def test_dtd_is_packaged_and_declares_the_adf_structure(dtd: etree.DTD) -> None:
    names = {element.name for element in dtd.iterelements()}
    assert {"adf", "prospect", "vehicle", "customer", "contact", "vendor", "provider"} <= names
    minimal = b"""<adf><prospect><requestdate>2025-01-01T00:00:00+00:00</requestdate>
      <vehicle><year/><make/><model/></vehicle>
      <customer><contact><name>A</name><phone>1</phone></contact></customer>
      <vendor><vendorname>V</vendorname><contact><name>V</name><email>v@x</email></contact></vendor>
    </prospect></adf>"""
    assert dtd.validate(etree.fromstring(minimal))


@pytest.mark.parametrize(
    "broken",
    [
        # a vehicle without a model
        b"<adf><prospect><requestdate>x</requestdate><vehicle><year/><make/></vehicle>"
        b"<customer><contact><name>A</name><phone>1</phone></contact></customer>"
        b"<vendor><vendorname>V</vendorname><contact><name>V</name><phone>1</phone></contact></vendor>"
        b"</prospect></adf>",
        # a contact with neither phone nor e-mail
        b"<adf><prospect><requestdate>x</requestdate><vehicle><year/><make/><model/></vehicle>"
        b"<customer><contact><name>A</name></contact></customer>"
        b"<vendor><vendorname>V</vendorname><contact><name>V</name><phone>1</phone></contact></vendor>"
        b"</prospect></adf>",
        # no vendor
        b"<adf><prospect><requestdate>x</requestdate><vehicle><year/><make/><model/></vehicle>"
        b"<customer><contact><name>A</name><phone>1</phone></contact></customer>"
        b"</prospect></adf>",
        # a status the spec does not know
        b'<adf><prospect status="pending"><requestdate>x</requestdate>'
        b"<vehicle><year/><make/><model/></vehicle>"
        b"<customer><contact><name>A</name><phone>1</phone></contact></customer>"
        b"<vendor><vendorname>V</vendorname><contact><name>V</name><phone>1</phone></contact></vendor>"
        b"</prospect></adf>",
    ],
)
def test_dtd_rejects_documents_that_break_the_spec(dtd: etree.DTD, broken: bytes) -> None:
    assert not dtd.validate(etree.fromstring(broken))


def test_render_adf_carries_the_lead(dtd: etree.DTD) -> None:
    body = render_adf(make_record())

    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<?adf version="1.0"?>\n<adf>')
    root = parse_valid(body, dtd)
    prospect = root.find("prospect")
    assert prospect is not None
    assert prospect.get("status") == "new"
    lead_id = prospect.find("id")
    assert lead_id is not None
    assert (lead_id.text, lead_id.get("sequence"), lead_id.get("source")) == ("K7Q2M", "1", PROVIDER_NAME)
    assert prospect.findtext("requestdate") == "2025-03-14T15:09:26-05:00"
    vehicle = prospect.find("vehicle")
    assert vehicle is not None
    assert (vehicle.get("interest"), vehicle.get("status")) == ("buy", "used")
    names = prospect.findall("customer/contact/name")
    assert [(n.get("part"), n.text) for n in names] == [("first", "Ada"), ("last", "Lovelace")]
    phone = prospect.find("customer/contact/phone")
    assert phone is not None
    assert (phone.get("type"), phone.text) == ("voice", "202-555-0111")
    assert prospect.findtext("vendor/vendorname") == "North Honda"
    assert prospect.findtext("vendor/contact/name") == "North Honda"
    assert prospect.findtext("vendor/contact/phone") == "202-555-0100"
    assert prospect.findtext("provider/name") == "Dealer Gateway"
    assert prospect.findtext("provider/service") == "missed call"
    comments = prospect.findtext("customer/comments")
    assert comments is not None
    for expected in (
        "Source: Cars.com",
        "Tracked number: 202-555-0123",
        "Call outcome: missed",
        "Call duration: 1:05 (65 s)",
        "Assigned to: Alice Ng",
        "Lead K7Q2M: https://gateway.example/leads/42?tab=timeline&x=1",
    ):
        assert expected in comments


@pytest.mark.parametrize("contact_type", list(ContactType))
def test_every_contact_type_with_hostile_text_is_valid(dtd: etree.DTD, contact_type: ContactType) -> None:
    record = make_record(
        contact_type=contact_type,
        first_name=HOSTILE,
        last_name="<Lovelace & Co>",
        store_name='Smith & Sons "Auto" <North>',
        source="Cars.com <promo> & more",
        transcript=HOSTILE if contact_type is ContactType.VOICEMAIL else None,
        message_body=HOSTILE if contact_type is ContactType.TEXT else None,
        call_duration=None if contact_type is ContactType.TEXT else 12,
    )

    root = parse_valid(render_adf(record), dtd)

    first = root.find("prospect/customer/contact/name[@part='first']")
    assert first is not None
    # Control characters, the lone surrogate and U+FFFE are gone; everything else survives as text.
    assert first.text == "O'Brien <script>&amp; \"quoted\" \U0001f697 end"
    assert root.findtext("prospect/customer/contact/name[@part='last']") == "<Lovelace & Co>"
    assert root.findtext("prospect/vendor/vendorname") == 'Smith & Sons "Auto" <North>'
    assert root.findtext("prospect/provider/service") == contact_type.value
    comments = root.findtext("prospect/customer/comments") or ""
    if contact_type is ContactType.VOICEMAIL:
        assert "Voicemail transcript: O'Brien <script>&amp;" in comments
    if contact_type is ContactType.TEXT:
        assert "Text message: O'Brien <script>&amp;" in comments
        assert "Call duration" not in comments


def test_withheld_caller_without_name_is_valid(dtd: etree.DTD) -> None:
    record = make_record(phone=None, first_name=None, last_name=None, email=None)

    root = parse_valid(render_adf(record), dtd)

    contact = root.find("prospect/customer/contact")
    assert contact is not None
    names = contact.findall("name")
    assert [(n.get("part"), n.text) for n in names] == [("full", UNKNOWN_NAME)]
    phones = contact.findall("phone")
    assert len(phones) == 1
    assert not phones[0].text  # no number invented
    assert "Caller ID: withheld" in (root.findtext("prospect/customer/comments") or "")


def test_withheld_caller_with_email_uses_the_email(dtd: etree.DTD) -> None:
    record = make_record(phone=None, email="ada@example.com")

    root = parse_valid(render_adf(record), dtd)

    assert root.findtext("prospect/customer/contact/email") == "ada@example.com"
    assert root.find("prospect/customer/contact/phone") is None


def test_only_a_last_name_or_only_control_characters(dtd: etree.DTD) -> None:
    root = parse_valid(render_adf(make_record(first_name=None, last_name="Lovelace")), dtd)
    names = root.findall("prospect/customer/contact/name")
    assert [(n.get("part"), n.text) for n in names] == [("last", "Lovelace")]

    root = parse_valid(render_adf(make_record(first_name="\x00\x01 ", last_name="\x1f")), dtd)
    assert root.findtext("prospect/customer/contact/name") == UNKNOWN_NAME


def test_updates_are_sent_as_resend(dtd: etree.DTD) -> None:
    root = parse_valid(render_adf(make_record(event="lead.updated")), dtd)
    prospect = root.find("prospect")
    assert prospect is not None
    assert prospect.get("status") == "resend"


def test_international_numbers_are_kept_whole(dtd: etree.DTD) -> None:
    root = parse_valid(render_adf(make_record(phone="+442079460000")), dtd)
    assert root.findtext("prospect/customer/contact/phone") == "+442079460000"
    assert format_phone("+12025550111") == "202-555-0111"
    assert format_phone("+1202555011") == "+1202555011"


def test_lead_record_refuses_naive_request_dates() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        make_record(request_date=datetime(2025, 3, 14, 15, 9))  # noqa: DTZ001


# ------------------------------------------------------------------------------------------- JSON


class Colour(StrEnum):
    RED = "red"


def test_json_event_is_compact_sorted_utf8_with_iso_times() -> None:
    created = datetime(2025, 3, 14, 20, 9, 26, tzinfo=UTC)
    body = render_json_event(
        "lead.created",
        {"zeta": 1, "alpha": {"when": datetime(2025, 3, 14, 15, 0, tzinfo=EASTERN), "name": "José 🚗"},
         "amount": Decimal("19999.99"), "colour": Colour.RED},
        event_id="evt_1",
        created_at=created,
    )

    text = body.decode("utf-8")
    assert text == (
        '{"created_at":"2025-03-14T20:09:26+00:00","data":{"alpha":{"name":"José 🚗",'
        '"when":"2025-03-14T15:00:00-05:00"},"amount":"19999.99","colour":"red","zeta":1},'
        '"id":"evt_1","type":"lead.created"}'
    )


def test_json_event_gets_a_fresh_id_and_time_by_default() -> None:
    first = json.loads(render_json_event("call.logged", {}))
    second = json.loads(render_json_event("call.logged", {}))
    assert first["id"] != second["id"]
    assert first["type"] == "call.logged"
    assert datetime.fromisoformat(first["created_at"]).tzinfo is not None


def test_json_event_refuses_naive_times_and_unknown_types() -> None:
    with pytest.raises(ValueError, match="naive"):
        render_json_event("x", {"at": datetime(2025, 1, 1)})  # noqa: DTZ001
    with pytest.raises(TypeError):
        render_json_event("x", {"blob": object()})
    with pytest.raises(ValueError, match="Out of range"):
        render_json_event("x", {"n": float("nan")})


def test_json_event_survives_a_lone_surrogate() -> None:
    body = render_json_event("x", {"body": "hi \ud83d there"}, event_id="e")
    assert json.loads(body)["data"]["body"] == "hi ? there"


def test_lead_event_data_renders_as_json() -> None:
    record = make_record(phone=None, transcript="call me <maybe>")
    data = json.loads(render_json_event("lead.created", lead_event_data(record)))["data"]
    assert data["lead"] == {
        "id": 42, "code": "K7Q2M", "status": "new", "priority": 0, "department": "sales",
        "source": "Cars.com", "owner": "Alice Ng", "url": "https://gateway.example/leads/42?tab=timeline&x=1",
    }
    assert data["customer"]["phone"] is None
    assert data["contact"]["at"] == "2025-03-14T15:09:26-05:00"
    assert data["contact"]["transcript"] == "call me <maybe>"


# ------------------------------------------------------------------------------------- Signatures


def test_header_names() -> None:
    assert SIGNATURE_HEADER == "X-Gateway-Signature"
    assert IDEMPOTENCY_HEADER == "Idempotency-Key"


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = b'{"id":"evt_1"}'
    expected = hmac.new(b"s3cret", b'1700000000.{"id":"evt_1"}', hashlib.sha256).hexdigest()
    assert sign_webhook("s3cret", body, 1700000000) == f"t=1700000000,v1={expected}"


def test_verify_accepts_a_fresh_signature() -> None:
    body = render_json_event("lead.created", {"n": 1})
    header = sign_webhook("s3cret", body, 1700000000)
    assert verify_webhook("s3cret", body, header, now=1700000000)
    assert verify_webhook("s3cret", body, header, now=1700000000 + 300)
    assert verify_webhook("s3cret", body, header.replace(",", ", "), now=1700000000)


def test_verify_rejects_tampering_wrong_secret_and_stale_timestamps() -> None:
    body = b'{"amount":100}'
    header = sign_webhook("s3cret", body, 1700000000)
    assert not verify_webhook("s3cret", b'{"amount":900}', header, now=1700000000)
    assert not verify_webhook("other", body, header, now=1700000000)
    assert not verify_webhook("s3cret", body, header, now=1700000000 + 301)
    assert not verify_webhook("s3cret", body, header, now=1700000000 - 301)
    assert not verify_webhook("s3cret", body, header, now=1700000000 + 20, tolerance=10)
    # the timestamp is signed too: moving it forward breaks the signature
    moved = header.replace("t=1700000000", "t=1700000100")
    assert not verify_webhook("s3cret", body, moved, now=1700000100)


@pytest.mark.parametrize(
    "header",
    [None, "", "garbage", "t=1700000000", "v1=abc", "t=abc,v1=abc", "t=-5,v1=abc",
     "t=1700000000,v1=ünïcode", "t=1700000000,t=1700000000,v1=abc"],
)
def test_verify_rejects_malformed_headers(header: str | None) -> None:
    assert not verify_webhook("s3cret", b"{}", header, now=1700000000)


def test_verify_accepts_any_of_several_signatures() -> None:
    body = b"{}"
    old = sign_webhook("old-secret", body, 1700000000).split(",")[1]
    header = sign_webhook("new-secret", body, 1700000000) + "," + old
    assert verify_webhook("old-secret", body, header, now=1700000000)
    assert verify_webhook("new-secret", body, header, now=1700000000)
    assert not verify_webhook("third", body, header, now=1700000000)
