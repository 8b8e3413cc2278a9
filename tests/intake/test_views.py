"""Web-form leads and ADF by HTTP, end to end: a real worker on the real Redis, Twilio's SDK against the
local fake, the CRM on loopback, e-mail to an aiosmtpd server."""

from __future__ import annotations

import json
from datetime import timedelta
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from sqlalchemy import func, select

from gateway.crm.formats import ADF_DTD_PATH
from gateway.metrics import scrape, status_report
from gateway.models import Contact, Lead, Task, TaskKind
from gateway.simulator import play_call
from intake import services
from intake.jobs import REQUEUE_AFTER
from intake.models import IntakeRecord
from intake.services import CLAIM_TIMEOUT, MAX_ATTEMPTS
from tests.intake.conftest import STORE_EMAIL
from tests.support.api import ApiClient, make_key
from tests.support.config import CUSTOMER, SIMULTANEOUS

SAMPLES = Path(__file__).with_name("samples")
DTD = etree.DTD(str(ADF_DTD_PATH))
CONSENT_TEXT = "I agree to receive texts from North Honda about my request. Msg & data rates may apply."

pytestmark = pytest.mark.usefixtures("intake_config")


def form(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "store": "north-honda",
        "source": "Website",
        "first_name": "Maria",
        "last_name": "Lopez",
        "phone": "(202) 555-0199",
        "email": "Maria.Lopez@example.com",
        "vehicle": {"year": 2024, "make": "Honda", "model": "Civic", "trim": "EX", "stock": "N1234"},
        "message": "Is the blue one still available?",
        "external_id": "form-1001",
        "sms_consent": {"granted": True, "text": CONSENT_TEXT, "at": "2026-11-24T09:59:30-05:00", "ip": "198.51.100.7"},
    }
    body.update(changes)
    return {key: value for key, value in body.items() if value is not None}


def customer_texts(fake_twilio: Any, number: str = CUSTOMER) -> list[dict[str, Any]]:
    return [m for m in fake_twilio.messages if m.get("To") == number]


def valid_adf(body: bytes) -> Any:
    root = etree.parse(BytesIO(body), etree.XMLParser(resolve_entities=False, no_network=True)).getroot()
    assert DTD.validate(root), DTD.error_log.filter_from_errors()
    return root


def leads(db: Any) -> list[Lead]:
    with db.session() as session:
        return list(session.scalars(select(Lead).order_by(Lead.id)))


# --- web forms ------------------------------------------------------------------------------------------


def test_a_form_lead_with_consent_gets_a_text_an_email_a_task_an_alert_and_the_crm(
    api: ApiClient, work: Any, fake_twilio: Any, mails: Any, crm: Any, db: Any, clock: Any
) -> None:
    response = api.post("/api/v1/leads", json=form())
    assert response.status_code == 201, response.json
    lead = response.json
    assert lead["phone"] == CUSTOMER
    assert lead["email"] == "maria.lopez@example.com"
    assert lead["source"] == "Website"
    assert lead["owner"] in {"alice", "ben", "cara"}
    assert lead["joined"] is False
    work()

    # The store's web-lead cadence: the e-mail at 0 s; the text waits for its step (10 min).
    [ack] = mails.messages("maria.lopez@example.com")
    assert ack["Subject"] == "Your request to North Honda"
    assert STORE_EMAIL in ack["From"]
    assert ack["List-Unsubscribe"].startswith("<https://gateway.example.test/unsubscribe/")
    assert ack["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert ack.get_body(("plain",)).get_content().startswith("Hi Maria,")
    assert "Unsubscribe" in ack.get_body(("html",)).get_content()

    # The owner's alert, with the click-to-call link.
    with db.session() as session:
        row = session.get(Lead, lead["id"])
        owner_phone = row.owner.phone
        [task] = session.scalars(select(Task).where(Task.lead_id == row.id))
        assert task.kind == TaskKind.CALLBACK.value
        assert task.due_at == clock.now() + timedelta(minutes=5)
        consent = row.contact.sms_consent
        assert consent["text"] == CONSENT_TEXT
        assert consent["ip"] == "198.51.100.7"
    [alert] = [m for m in fake_twilio.messages if m.get("To") == owner_phone]
    assert "Web lead: Maria Lopez" in alert["Body"]
    assert "2024 Honda Civic EX" in alert["Body"]
    assert "/c/" in alert["Body"]

    # The CRM: ADF `new` with the form's id, vehicle and consent; JSON lead.created and lead.received.
    [adf] = [r for r in crm.accepted if r.path == "/adf"]
    root = valid_adf(adf.body)
    prospect = root.find("prospect")
    assert prospect.get("status") == "new"
    ids = {(i.get("source"), i.text) for i in prospect.findall("id")}
    assert ("Website", "form-1001") in ids
    assert prospect.findtext("vehicle/model") == "Civic"
    assert prospect.findtext("vehicle/stock") == "N1234"
    assert prospect.findtext("customer/contact/email") == "maria.lopez@example.com"
    comments = prospect.findtext("customer/comments")
    assert "Is the blue one still available?" in comments
    assert "SMS consent: given" in comments
    assert "198.51.100.7" in comments
    assert prospect.findtext("provider/service") == "web form"
    types = [json.loads(r.body)["type"] for r in crm.accepted if r.path == "/hooks"]
    assert "lead.created" in types
    assert "lead.received" in types

    # Ten minutes on, the text goes: the customer consented.
    clock.advance(timedelta(minutes=10))
    work()
    [text] = customer_texts(fake_twilio)
    assert text["Body"].startswith("Hi Maria, ")

    # The consent shows in the lead's timeline.
    timeline = api.get(f"/api/v1/leads/{lead['id']}").json["timeline"]
    assert any(item["type"] == "event" and item["event"]["kind"] == "sms-consent" for item in timeline)


def test_a_store_naming_no_cadence_still_sends_a_first_text_and_an_acknowledgement(
    client: Any, db: Any, clock: Any, work: Any, fake_twilio: Any, mails: Any
) -> None:
    from tests.support.api import make_key

    south = ApiClient(client, make_key(db, clock.now(), ["south-ford"]))
    response = south.post("/api/v1/leads", json=form(store="south-ford", phone="+13125550177"))
    assert response.status_code == 201, response.json
    work()
    [text] = customer_texts(fake_twilio, "+13125550177")
    assert "South Ford" in text["Body"]
    assert text["From"] == "+13125550123"  # the store's number, so a reply comes back to the gateway
    [ack] = mails.messages("maria.lopez@example.com")
    assert "South Ford" in ack["Subject"]
    body = ack.get_body(("plain",)).get_content()
    assert "Sam" in body
    assert "What happens next" in body


def test_without_consent_no_text_only_email_and_call_steps(
    api: ApiClient, work: Any, fake_twilio: Any, mails: Any, clock: Any, db: Any
) -> None:
    response = api.post("/api/v1/leads", json=form(sms_consent={"granted": False}))
    assert response.status_code == 201
    work()
    assert len(mails.messages("maria.lopez@example.com")) == 1
    clock.advance(timedelta(minutes=5))
    work()
    with db.session() as session:
        call_tasks = list(session.scalars(select(Task).where(Task.kind == TaskKind.CALL.value)))
    assert len(call_tasks) == 1
    clock.advance(timedelta(minutes=30))
    work()
    assert customer_texts(fake_twilio) == []
    assert len(mails.messages("maria.lopez@example.com")) == 2


def test_a_call_step_opens_a_call_task_announced_with_the_click_to_call_link(
    api: ApiClient, work: Any, fake_twilio: Any, clock: Any, db: Any
) -> None:
    lead = api.post("/api/v1/leads", json=form()).json
    work()
    clock.advance(timedelta(minutes=5))
    work()
    with db.session() as session:
        [task] = session.scalars(select(Task).where(Task.kind == TaskKind.CALL.value))
        assert task.due_at == clock.now()
        owner_phone = session.get(Lead, lead["id"]).owner.phone
    alerts = [m["Body"] for m in fake_twilio.messages if m.get("To") == owner_phone]
    assert any(body.startswith("Time to call:") and "/c/" in body for body in alerts)


def test_a_form_after_a_missed_call_joins_that_lead(
    api: ApiClient, poster: Any, work: Any, db: Any
) -> None:
    list(play_call(poster, to=SIMULTANEOUS, caller=CUSTOMER, outcome="no-answer"))
    work()
    [missed] = leads(db)
    response = api.post("/api/v1/leads", json=form())
    assert response.status_code == 200, response.json
    assert response.json["id"] == missed.id
    assert response.json["joined"] is True
    assert len(leads(db)) == 1


def test_a_form_joins_the_open_lead_of_its_email_address(api: ApiClient, db: Any) -> None:
    first = api.post("/api/v1/leads", json=form(phone=None, sms_consent=None, external_id="a"))
    assert first.status_code == 201
    second = api.post("/api/v1/leads", json=form(phone=None, sms_consent=None, external_id="b"))
    assert second.status_code == 200
    assert second.json["id"] == first.json["id"]


def test_a_form_joins_only_an_open_lead_of_its_store_with_that_email(
    api: ApiClient, client: Any, db: Any, clock: Any
) -> None:
    south = ApiClient(client, make_key(db, clock.now(), ["south-ford"]))
    elsewhere = south.post(
        "/api/v1/leads", json=form(store="south-ford", phone=None, sms_consent=None, external_id="s")
    )
    assert elsewhere.status_code == 201
    first = api.post("/api/v1/leads", json=form(phone=None, sms_consent=None, external_id="a"))
    assert first.status_code == 201  # the south lead of that address is another store's
    with db.session() as session:
        lead = session.get(Lead, first.json["id"])
        lead.open_key = None  # closed (sold or lost)
        session.commit()
    again = api.post("/api/v1/leads", json=form(phone=None, sms_consent=None, external_id="b"))
    assert again.status_code == 201
    assert again.json["id"] not in {first.json["id"], elsewhere.json["id"]}


def test_the_same_external_id_twice_changes_nothing(
    api: ApiClient, work: Any, fake_twilio: Any, mails: Any, db: Any, crm: Any
) -> None:
    first = api.post("/api/v1/leads", json=form())
    work()
    before = (len(fake_twilio.messages), len(mails.envelopes), len(crm.accepted))
    again = api.post("/api/v1/leads", json=form(message="a retry of the same form"))
    assert again.status_code == 200
    assert again.json["id"] == first.json["id"]
    assert again.json["duplicate"] is True
    work()
    assert (len(fake_twilio.messages), len(mails.envelopes), len(crm.accepted)) == before
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(IntakeRecord)) == 1
        assert session.scalar(select(func.count()).select_from(Task)) == 1


def test_bad_fields_are_each_named_in_a_422(api: ApiClient, db: Any) -> None:
    response = api.post(
        "/api/v1/leads",
        json={
            "store": "north-honda",
            "phone": "not a phone",
            "email": "nobody-at-example",
            "department": "parts",
            "vehicle": {"year": "next year"},
            "sms_consent": {"granted": "yes"},
        },
    )
    assert response.status_code == 422
    error = response.json["error"]
    assert error["code"] == "invalid_fields"
    assert set(error["fields"]) == {"phone", "email", "department", "vehicle.year", "sms_consent.granted"}
    assert leads(db) == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([1, 2], "body"),
        ({"phone": "+12025550199"}, "store"),
        ({"store": "north-honda"}, "phone"),
        ({"store": "north-honda", "phone": "+12025550199", "sms_consent": {"granted": True}}, "sms_consent.text"),
        ({"store": "north-honda", "email": "a@b.example", "sms_consent": {"granted": True, "text": "ok"}},
         "sms_consent.granted"),
        ({"store": "north-honda", "phone": "+12025550199", "first_name": "x" * 101}, "first_name"),
        ({"store": "north-honda", "phone": "+12025550199", "sms_consent": {"granted": False, "ip": "300.1.1.1"}},
         "sms_consent.ip"),
    ],
)
def test_each_kind_of_bad_form_is_a_422_naming_the_field(api: ApiClient, body: Any, field: str) -> None:
    response = api.post("/api/v1/leads", json=body)
    assert response.status_code == 422, response.json
    assert field in response.json["error"]["fields"]


def test_a_form_for_a_store_the_key_may_not_see_is_a_404(api: ApiClient) -> None:
    response = api.post("/api/v1/leads", json={"store": "south-ford", "phone": "+12025550199"})  # a North key
    assert response.status_code == 404
    assert response.json["error"]["code"] == "unknown_store"


def test_a_form_without_a_key_is_refused(client: Any, db: Any) -> None:
    response = client.post("/api/v1/leads", json=form())
    assert response.status_code == 401
    assert leads(db) == []


def test_the_openapi_document_describes_both_intake_routes(api: ApiClient) -> None:
    paths = api.get("/api/v1/openapi.json").json["paths"]
    assert "post" in paths["/leads"]
    assert "get" in paths["/leads"]
    assert "422" in paths["/leads"]["post"]["responses"]
    assert "400" in paths["/intake/adf"]["post"]["responses"]


# --- ADF by HTTP ----------------------------------------------------------------------------------------


def _auth(api: ApiClient) -> dict[str, str]:
    return {"Authorization": f"Bearer {api.key}"}


def post_adf(api: ApiClient, document: bytes, path: str = "/api/v1/intake/adf", client: Any = None) -> Any:
    return (client or api.client).post(
        path, data=document, headers={"Content-Type": "application/x-adf+xml", **_auth(api)}
    )


def adf(*prospects: str) -> bytes:
    return ('<?xml version="1.0"?><?adf version="1.0"?><adf>' + "".join(prospects) + "</adf>").encode()


def prospect(ident: str | None, phone: str, first: str = "Nina", last: str = "Park", extra: str = "") -> str:
    own = f'<id sequence="1" source="CarSite">{ident}</id>' if ident else ""
    return (
        f'<prospect status="new">{own}<requestdate>2026-11-24T09:58:00-05:00</requestdate>'
        '<vehicle interest="buy" status="used"><year>2023</year><make>Honda</make><model>HR-V</model></vehicle>'
        f'<customer><contact><name part="first">{first}</name><name part="last">{last}</name>'
        f'<phone type="cellphone">{phone}</phone></contact>{extra}</customer>'
        '<vendor><vendorname>North Honda</vendorname></vendor>'
        '<provider><name part="full">CarSite</name></provider></prospect>'
    )


def records(db: Any) -> list[IntakeRecord]:
    with db.session() as session:
        return list(session.scalars(select(IntakeRecord).order_by(IntakeRecord.id)))


def owner_texts(fake_twilio: Any, db: Any, lead_id: int) -> list[dict[str, Any]]:
    with db.session() as session:
        owner_phone = session.get(Lead, lead_id).owner.phone
    return [m for m in fake_twilio.messages if m.get("To") == owner_phone]


def test_adf_is_stored_and_answered_202_and_the_worker_builds_the_lead(
    api: ApiClient, db: Any, work: Any, fake_twilio: Any, crm: Any, clock: Any
) -> None:
    response = post_adf(api, adf(prospect("CS-1", "(301) 555-0142", extra="<comments>Still there?</comments>")))
    assert response.status_code == 202, response.json
    [record] = records(db)
    assert response.json == {
        "store": "north-honda",
        "items": [{"intake_id": record.id, "external_id": "CS-1", "duplicate": False, "lead": None}],
    }
    # Stored, not built: the prospect's data and its key, no lead yet.
    assert record.lead_id is None
    assert record.channel == "adf-http"
    assert record.dedupe_key == "adf:carsite/CS-1"
    assert record.data["phone"] == "+13015550142"
    assert leads(db) == []

    work()  # the job the request queued after its commit

    [lead] = leads(db)
    [record] = records(db)
    assert record.lead_id == lead.id
    assert record.error is None
    with db.session() as session:
        row = session.get(Lead, lead.id)
        assert row.contact.phone == "+13015550142"
        assert (row.contact.first_name, row.contact.last_name) == ("Nina", "Park")
        assert row.source == "CarSite"
        assert row.owner is not None
        [task] = session.scalars(select(Task).where(Task.lead_id == lead.id))
        assert task.kind == TaskKind.CALLBACK.value
        assert task.due_at == clock.now() + timedelta(minutes=5)
    [alert] = owner_texts(fake_twilio, db, lead.id)
    assert "Nina Park" in alert["Body"]
    [sent] = [r for r in crm.accepted if r.path == "/adf"]
    comments = valid_adf(sent.body).findtext("prospect/customer/comments")
    assert "Customer comments: Still there?" in comments
    assert "Original id: CS-1 (CarSite)" in comments
    types = [json.loads(r.body)["type"] for r in crm.accepted if r.path == "/hooks"]
    assert "lead.received" in types


def test_a_resent_prospect_changes_nothing_and_is_answered_with_its_lead(
    api: ApiClient, db: Any, work: Any, fake_twilio: Any, mails: Any, crm: Any
) -> None:
    document = adf(prospect("CS-7", "+13015550177"))
    first = post_adf(api, document)
    # Sent again before the worker got to it: recognised, nothing more to build.
    early = post_adf(api, document)
    assert early.status_code == 202
    [item] = early.json["items"]
    assert item == {"intake_id": first.json["items"][0]["intake_id"], "external_id": "CS-7", "duplicate": True,
                    "lead": None}
    work()
    [lead] = leads(db)
    before = (len(fake_twilio.messages), len(mails.envelopes), len(crm.accepted))

    again = post_adf(api, document)
    assert again.status_code == 202
    [item] = again.json["items"]
    assert item["duplicate"] is True
    assert item["intake_id"] == first.json["items"][0]["intake_id"]
    assert item["lead"]["id"] == lead.id
    assert item["lead"]["phone"] == "+13015550177"
    assert item["lead"]["duplicate"] is True
    work()
    assert (len(fake_twilio.messages), len(mails.envelopes), len(crm.accepted)) == before
    assert len(owner_texts(fake_twilio, db, lead.id)) == 1
    assert len(records(db)) == 1
    assert len(leads(db)) == 1
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Task)) == 1


def test_several_prospects_in_one_document(api: ApiClient, db: Any, work: Any, crm: Any) -> None:
    document = (SAMPLES / "aggregator_two_prospects.xml").read_bytes()
    response = post_adf(api, document)
    assert response.status_code == 202, response.json
    items = response.json["items"]
    assert [item["external_id"] for item in items] == ["LP-771203", "LP-770988"]
    assert [item["duplicate"] for item in items] == [False, False]
    assert [r.id for r in records(db)] == [item["intake_id"] for item in items]
    work()
    with db.session() as session:
        names = {(c.first_name, c.last_name): c.phone for c in session.scalars(select(Contact))}
    assert names[("Zoë", "Brontë-Nuñez")] == "+12025550122"  # the cellphone before the work phone
    assert names[("Łukasz", "Wiśniewski")] == "+12405550195"
    assert len(leads(db)) == 2
    sources = {json.loads(r.body)["data"]["lead"]["source"] for r in crm.accepted if r.path == "/hooks"}
    assert "LeadPoint Auto" in sources
    again = post_adf(api, document, "/api/v1/intake/adf?store=north-honda")
    assert again.status_code == 202
    assert [item["duplicate"] for item in again.json["items"]] == [True, True]
    assert {item["lead"]["id"] for item in again.json["items"]} == {lead.id for lead in leads(db)}
    assert len(leads(db)) == 2


def test_prospects_without_an_id_and_one_given_twice_in_a_document(api: ApiClient, db: Any, work: Any) -> None:
    document = adf(
        prospect(None, "+13015550101", first="Ann"),
        prospect("CS-9", "+13015550102", first="Bo"),
        prospect(None, "+13015550103", first="Cy"),
        prospect("CS-9", "+13015550102", first="Bo"),
    )
    response = post_adf(api, document)
    assert response.status_code == 202, response.json
    items = response.json["items"]
    assert [(item["external_id"], item["duplicate"]) for item in items] == [
        (None, False), ("CS-9", False), (None, False), ("CS-9", True)
    ]
    assert items[3]["intake_id"] == items[1]["intake_id"]
    by_id = {record.id: record for record in records(db)}
    assert len(by_id) == 3
    assert [by_id[items[n]["intake_id"]].data["first_name"] for n in range(3)] == ["Ann", "Bo", "Cy"]
    work()
    assert len(leads(db)) == 3
    assert all(record.lead_id is not None for record in records(db))


@pytest.mark.parametrize("name", ["autotrader_no_prolog.xml", "cars_com_used.xml", "spec_style.xml"])
def test_forgiving_adf_documents_become_leads(api: ApiClient, db: Any, work: Any, name: str) -> None:
    response = api.client.post(
        "/api/v1/intake/adf", data=(SAMPLES / name).read_bytes(),
        headers={"Content-Type": "application/xml", **_auth(api)},
    )
    assert response.status_code == 202, response.json
    work()
    assert len(leads(db)) == 1


def test_malformed_adf_is_a_400_naming_line_and_column(api: ApiClient, db: Any) -> None:
    body = b"<adf>\n  <prospect>\n    <customer><contact></customer>\n  </prospect>\n</adf>\n"
    response = api.client.post(
        "/api/v1/intake/adf", data=body, headers={"Content-Type": "application/xml", **_auth(api)}
    )
    assert response.status_code == 400
    error = response.json["error"]
    assert error["code"] == "invalid_adf"
    assert error["line"] == 3
    assert isinstance(error["column"], int)
    assert "line 3" in error["message"]
    assert records(db) == []
    assert leads(db) == []


@pytest.mark.parametrize("name", ["billion_laughs.xml", "external_entity.xml"])
def test_entity_expansion_and_external_entities_are_refused_with_nothing_stored(
    api: ApiClient, db: Any, work: Any, name: str
) -> None:
    response = api.client.post(
        "/api/v1/intake/adf", data=(SAMPLES / name).read_bytes(),
        headers={"Content-Type": "application/xml", **_auth(api)},
    )
    assert response.status_code == 400
    assert response.json["error"]["code"] == "adf_refused"
    work()
    assert records(db) == []
    assert leads(db) == []


def test_adf_needs_an_xml_content_type_and_a_store_the_key_may_see(api: ApiClient, db: Any) -> None:
    document = (SAMPLES / "spec_style.xml").read_bytes()
    wrong_type = api.client.post(
        "/api/v1/intake/adf", data=document, headers={"Content-Type": "text/plain", **_auth(api)}
    )
    assert wrong_type.status_code == 415
    other_store = api.client.post(
        "/api/v1/intake/adf?store=south-ford", data=document, headers={"Content-Type": "application/xml", **_auth(api)}
    )
    assert other_store.status_code == 404
    no_key = api.client.post("/api/v1/intake/adf", data=document, headers={"Content-Type": "application/xml"})
    assert no_key.status_code == 401
    assert records(db) == []


# --- ADF: the build when Redis, a worker or a record fails ----------------------------------------------


def test_adf_while_redis_is_down_is_stored_and_the_sweep_builds_its_lead(
    api: ApiClient, make_app: Any, db: Any, work: Any, clock: Any, fake_twilio: Any
) -> None:
    no_redis = make_app(redis_url="redis://127.0.0.1:1/0").test_client()
    response = post_adf(api, adf(prospect("CS-20", "+13015550120")), client=no_redis)
    assert response.status_code == 202, response.json
    work()  # no job reached the queue, and the record is not overdue yet: nothing is built
    assert leads(db) == []
    clock.advance(REQUEUE_AFTER + timedelta(seconds=1))
    work()  # the sweep finds the record no job carried
    [lead] = leads(db)
    assert records(db)[0].lead_id == lead.id
    assert len(owner_texts(fake_twilio, db, lead.id)) == 1


def _claim_and_die(db: Any, clock: Any) -> list[tuple[int, int]]:
    """What a worker killed between its claim and the build leaves: claimed records, no lead."""
    with db.session() as session:
        return services.claim_pending(session, clock.now(), 10)


def test_a_record_claimed_by_a_worker_that_died_is_built_once_when_the_claim_is_old(
    api: ApiClient, make_app: Any, db: Any, work: Any, clock: Any, fake_twilio: Any, crm: Any
) -> None:
    no_redis = make_app(redis_url="redis://127.0.0.1:1/0").test_client()
    assert post_adf(api, adf(prospect("CS-30", "+13015550130")), client=no_redis).status_code == 202
    [(record_id, attempt)] = _claim_and_die(db, clock)
    assert attempt == 1

    clock.advance(REQUEUE_AFTER + timedelta(seconds=1))
    work()  # claimed a moment ago: another worker leaves it alone
    assert leads(db) == []

    clock.advance(CLAIM_TIMEOUT)
    work()  # claimed long ago: the dead worker's claim is taken again and the lead built
    [lead] = leads(db)
    [record] = records(db)
    assert (record.id, record.lead_id, record.attempts) == (record_id, lead.id, 2)

    # The first worker, were it only slow, finds its claim gone: it builds nothing.
    with db.session() as session:
        assert services.build_record(session, record_id, attempt, clock.now()) is None
    clock.advance(CLAIM_TIMEOUT * 2)
    work()
    assert len(leads(db)) == 1
    assert len(owner_texts(fake_twilio, db, lead.id)) == 1
    assert len([r for r in crm.accepted if r.path == "/adf"]) == 1


def test_a_record_that_cannot_be_built_becomes_a_review_task_and_the_others_are_built(
    api: ApiClient, make_app: Any, db: Any, work: Any, clock: Any, caplog: Any
) -> None:
    no_redis = make_app(redis_url="redis://127.0.0.1:1/0").test_client()
    bad = post_adf(api, adf(prospect("CS-40", "+13015550140", first="Bad")), client=no_redis).json
    good = post_adf(api, adf(prospect("CS-41", "+13015550141", first="Good")), client=no_redis).json
    # The bad one was written by a newer version, with a vehicle field this one does not know.
    with db.session() as session:
        record = session.get(IntakeRecord, bad["items"][0]["intake_id"])
        data = dict(record.data)
        data["vehicles"] = [{**data["vehicles"][0], "colour": "blue"}]
        record.data = data

    clock.advance(REQUEUE_AFTER + timedelta(seconds=1))
    work()

    by_id = {record.id: record for record in records(db)}
    failed, built = by_id[bad["items"][0]["intake_id"]], by_id[good["items"][0]["intake_id"]]
    assert built.lead_id is not None
    assert built.error is None
    assert failed.lead_id is None
    assert "TypeError" in failed.error
    assert "colour" in failed.error
    assert "could not be built" in caplog.text
    with db.session() as session:
        [review] = session.scalars(select(Task).where(Task.kind == TaskKind.REVIEW.value))
        assert f"intake record #{failed.id}" in review.note
        assert review.owner_id is not None
        lead = session.get(Lead, review.lead_id)
        assert lead.contact.phone == "+13015550140"
        assert lead.id != built.lead_id
    # Failed is no longer pending: later sweeps leave it to the person.
    clock.advance(CLAIM_TIMEOUT * 2)
    work()
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Task).where(Task.kind == TaskKind.REVIEW.value)) == 1


def test_a_record_whose_builds_keep_dying_is_put_in_front_of_a_person(
    api: ApiClient, make_app: Any, db: Any, work: Any, clock: Any
) -> None:
    no_redis = make_app(redis_url="redis://127.0.0.1:1/0").test_client()
    assert post_adf(api, adf(prospect("CS-50", "+13015550150")), client=no_redis).status_code == 202
    for _ in range(MAX_ATTEMPTS):
        assert _claim_and_die(db, clock)
        clock.advance(CLAIM_TIMEOUT + timedelta(seconds=1))
    work()
    [record] = records(db)
    assert record.lead_id is None
    assert f"not built after {MAX_ATTEMPTS} attempts" in record.error
    with db.session() as session:
        [review] = session.scalars(select(Task).where(Task.kind == TaskKind.REVIEW.value))
        assert session.get(Lead, review.lead_id).contact.phone == "+13015550150"


# --- the database or Redis down ---------------------------------------------------------------------------


def test_a_form_while_the_database_is_down_is_a_503_not_a_500(api: ApiClient, make_app: Any, db: Any) -> None:
    down = make_app(database_url="postgresql+psycopg://nobody@127.0.0.1:9/none")
    response = down.test_client().post("/api/v1/leads", json=form(), headers={"Authorization": f"Bearer {api.key}"})
    assert response.status_code == 503
    assert response.json["error"]["code"] == "database_unavailable"


def test_a_form_while_redis_is_down_is_taken_and_its_text_and_email_go_once_redis_is_back(
    api: ApiClient, make_app: Any, work: Any, clock: Any, fake_twilio: Any, mails: Any, client: Any, db: Any
) -> None:
    from tests.support.api import make_key

    south_key = make_key(db, clock.now(), ["south-ford"])
    no_redis = make_app(redis_url="redis://127.0.0.1:1/0")
    response = no_redis.test_client().post(
        "/api/v1/leads", json=form(store="south-ford", phone="+13125550177"),
        headers={"Authorization": f"Bearer {south_key}"},
    )
    assert response.status_code == 201, response.json
    clock.advance(timedelta(seconds=61))  # the sweep finds what no job carried
    work()
    assert len(customer_texts(fake_twilio, "+13125550177")) == 1
    assert len(mails.messages("maria.lopez@example.com")) == 1


def test_a_form_at_night_with_consent_is_answered_at_once(
    client: Any, db: Any, clock: Any, work: Any, fake_twilio: Any
) -> None:
    from tests.support.api import make_key

    clock.advance(timedelta(hours=13))  # 23:00 in New York and Chicago: quiet hours
    south = ApiClient(client, make_key(db, clock.now(), ["south-ford"]))
    assert south.post("/api/v1/leads", json=form(store="south-ford", phone="+13125550177")).status_code == 201
    work()
    assert len(customer_texts(fake_twilio, "+13125550177")) == 1, "the customer just reached out: answered"


def test_gateway_status_and_metrics_count_adf_prospects_waiting_to_be_built(
    api: ApiClient, app: Any, work: Any, clock: Any
) -> None:
    current = app.extensions["gateway"]
    assert "intake records: 0 waiting, 0 building" in status_report(current)
    assert post_adf(api, adf(prospect("w-1", "+12025550181"), prospect("w-2", "+12025550182"))).status_code == 202
    clock.advance(timedelta(seconds=30))
    report = status_report(current)
    assert "intake records: 2 waiting, 0 building (the oldest 30.0 s old)" in report
    scraped = scrape(current).decode()
    assert 'gateway_intake_records{state="waiting"} 2.0' in scraped
    assert "gateway_intake_records_oldest_seconds 30.0" in scraped
    work()
    assert "intake records: 0 waiting, 0 building" in status_report(current)
    assert 'gateway_intake_records{state="waiting"} 0.0' in scrape(current).decode()
