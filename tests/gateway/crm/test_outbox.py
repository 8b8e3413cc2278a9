"""The CRM outbox: rows written with the change, delivered in order, retried, dead-lettered, replayed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from io import BytesIO

import pytest
from click.testing import CliRunner
from lxml import etree
from sqlalchemy import select

from gateway import events
from gateway.cli import main
from gateway.crm.delivery import DEFAULT_CLAIM_TIMEOUT, backoff
from gateway.crm.formats import ADF_DTD_PATH, IDEMPOTENCY_HEADER
from gateway.crm.models import CrmDelivery, DeliveryStatus
from gateway.crm.outbox import REQUEUE_AFTER, write_pending
from gateway.leads import Origin, contact_for_phone, open_or_join_lead, set_status
from gateway.models import Call, CallOutcome, Contact, Direction, Lead, LeadStatus, Message, Store
from gateway.simulator import new_sid, play_call
from tests.support.config import CUSTOMER, SIMULTANEOUS, SOUTH
from tests.support.crm_server import FakeCrm

SECRET = "whsec-test"
DTD = etree.DTD(str(ADF_DTD_PATH))


@pytest.fixture
def crm_server(clock):
    with FakeCrm(secret=SECRET, now=lambda: clock.now().timestamp()) as server:
        yield server


def set_crm(db, store_key, destinations):
    with db.session() as session:
        store = session.scalar(select(Store).where(Store.key == store_key))
        store.crm = destinations


@pytest.fixture
def destinations(configured, db, crm_server):
    set_crm(
        db,
        "north-honda",
        [
            {"type": "adf-http", "url": crm_server.url("/adf")},
            {"type": "webhook", "url": crm_server.url("/hooks"), "secret": SECRET},
        ],
    )
    return crm_server


def deliveries(db, **filters):
    with db.session() as session:
        query = select(CrmDelivery).order_by(CrmDelivery.id)
        for name, value in filters.items():
            query = query.where(getattr(CrmDelivery, name) == value)
        return list(session.scalars(query))


def missed_call(poster, caller=CUSTOMER, to=SIMULTANEOUS, outcome="no-answer"):
    list(play_call(poster, to=to, caller=caller, outcome=outcome))


def valid_adf(body: bytes) -> etree._Element:
    root = etree.parse(BytesIO(body), etree.XMLParser(resolve_entities=False, no_network=True)).getroot()
    assert DTD.validate(root), DTD.error_log.filter_from_errors()
    return root


def json_events(server):
    return [json.loads(r.body) for r in server.accepted if r.path == "/hooks"]


# --------------------------------------------------------------------------------------- the outbox


def test_missed_call_writes_deliveries_and_the_worker_delivers_them(destinations, poster, work, db):
    missed_call(poster)
    rows = deliveries(db)
    json_rows = [r.event for r in rows if r.kind == "webhook"]
    assert json_rows[0] == "lead.created"
    assert {"lead.created", "task.created", "call.completed"} <= set(json_rows)
    adf_rows = [r for r in rows if r.kind == "adf-http"]
    assert len(adf_rows) == 1  # one prospect for one missed call
    assert adf_rows[0].event == "call.completed"  # the call that opened the lead: prospect "new"
    assert all(r.status == "pending" for r in rows)

    work()

    rows = deliveries(db)
    assert {r.status for r in rows} == {"delivered"}
    assert destinations.bad_signatures == 0
    assert not destinations.duplicates
    adf = [r for r in destinations.accepted if r.path == "/adf"]
    assert len(adf) == 1
    root = valid_adf(adf[0].body)
    assert root.find("prospect").get("status") == "new"
    assert root.findtext("prospect/provider/service") == "missed call"
    assert root.findtext("prospect/customer/contact/phone") == "202-555-0199"
    assert adf[0].headers[IDEMPOTENCY_HEADER] == adf_rows[0].idempotency_key
    types = [e["type"] for e in json_events(destinations)]
    assert types == [r.event for r in rows if r.kind == "webhook"]  # in the order they happened
    assert types[: len(json_rows)] == json_rows
    completed = next(e for e in json_events(destinations) if e["type"] == "call.completed")
    assert completed["data"]["call"]["outcome"] == "missed"
    assert completed["data"]["lead"]["url"].endswith("/leads/" + completed["data"]["lead"]["code"])
    webhook_call = next(r for r in rows if r.event == "call.completed" and r.kind == "webhook")
    assert completed["id"] == webhook_call.idempotency_key


def test_second_call_is_a_resend_prospect(destinations, poster, work, db):
    missed_call(poster)
    missed_call(poster, outcome="hangup")
    work()
    adf = [valid_adf(r.body) for r in destinations.accepted if r.path == "/adf"]
    assert [a.find("prospect").get("status") for a in adf] == ["new", "resend"]
    assert adf[1].findtext("prospect/provider/service") == "abandoned call"


def test_store_without_crm_writes_nothing_and_other_stores_are_not_affected(destinations, poster, db):
    missed_call(poster, to=SOUTH)
    assert deliveries(db) == []


def test_deliveries_roll_back_with_the_change(destinations, db, clock):
    class Boom(Exception):
        pass

    def open_lead_then_fail():
        with db.session() as session:
            store = session.scalar(select(Store).where(Store.key == "north-honda"))
            contact = contact_for_phone(session, CUSTOMER)
            open_or_join_lead(session, contact, Origin(store.id, "sales", "Test", None), clock.now())
            assert write_pending(session) > 0  # written in the transaction, as its commit would
            assert session.scalars(select(CrmDelivery)).all()
            raise Boom

    with pytest.raises(Boom):
        open_lead_then_fail()
    assert deliveries(db) == []


def test_lead_update_carries_the_changes(destinations, poster, work, db, clock):
    missed_call(poster)
    with db.session() as session:
        lead = session.scalar(select(Lead))
        set_status(session, lead, LeadStatus.CLOSED_WON, clock.now())
    work()
    updates = [e for e in json_events(destinations) if e["type"] == "lead.updated"]
    assert updates[-1]["data"]["changes"]["status"] == {"from": "new", "to": "closed_won"}
    assert updates[-1]["data"]["lead"]["status"] == "closed_won"


# ------------------------------------------------------------------------------ ADF for every event


NASTY_FIRST = 'Zoë <"O\'Brien"> & Sons 🚗'
NASTY_LAST = "]]> <![CDATA[ \x07"
NASTY_TEXT = "Call me back <b>now</b> & bring the \"red\" one 😀 ]]> '\x01"


@pytest.mark.parametrize(
    ("outcome", "service"),
    [
        (CallOutcome.MISSED, "missed call"),
        (CallOutcome.ABANDONED, "abandoned call"),
        (CallOutcome.AFTER_HOURS, "after-hours call"),
        (CallOutcome.VOICEMAIL, "voicemail"),
        (CallOutcome.ANSWERED, "answered call"),
        (CallOutcome.FORWARDED, "forwarded call"),
    ],
)
def test_adf_is_valid_for_every_call_outcome_with_hostile_names(destinations, db, clock, work, outcome, service):
    lead_id = _lead_with_nasty_contact(db, clock)
    with db.session() as session:
        lead = session.get(Lead, lead_id)
        call = Call(
            sid=new_sid("CA"), lead_id=lead.id, store_id=lead.store_id, from_number=CUSTOMER,
            to_number=SIMULTANEOUS, outcome=outcome.value, duration=42, status="completed",
        )
        session.add(call)
        session.flush()
        events.call_completed.send(session, lead=lead, call=call, now=clock.now())
    work()
    adf = [r for r in destinations.accepted if r.path == "/adf"]
    root = valid_adf(adf[-1].body)
    assert root.findtext("prospect/provider/service") == service
    names = root.findall("prospect/customer/contact/name")
    assert names[0].text == NASTY_FIRST
    assert "\x07" not in names[1].text
    assert "Call duration: 0:42 (42 s)" in root.findtext("prospect/customer/comments")


def test_adf_is_valid_for_texts_and_transcripts(destinations, db, clock, work):
    lead_id = _lead_with_nasty_contact(db, clock)
    with db.session() as session:
        lead = session.get(Lead, lead_id)
        message = Message(
            lead_id=lead.id, contact_id=lead.contact_id, store_id=lead.store_id,
            direction=Direction.INBOUND.value, from_number=CUSTOMER, to_number=SIMULTANEOUS,
            body=NASTY_TEXT, status="received", sid=new_sid("SM"),
        )
        call = Call(
            sid=new_sid("CA"), lead_id=lead.id, store_id=lead.store_id, from_number=CUSTOMER,
            to_number=SIMULTANEOUS, outcome="voicemail", duration=61, status="completed",
        )
        session.add_all([message, call])
        session.flush()
        events.message_received.send(session, lead=lead, message=message, now=clock.now())
        events.voicemail_transcribed.send(session, lead=lead, call=call, transcript=NASTY_TEXT, now=clock.now())
    work()
    bodies = [valid_adf(r.body) for r in destinations.accepted if r.path == "/adf"]
    services = [b.findtext("prospect/provider/service") for b in bodies]
    assert services[-2:] == ["text", "voicemail"]
    comments = bodies[-1].findtext("prospect/customer/comments")
    assert "Voicemail transcript: Call me back <b>now</b> & bring the \"red\" one 😀 ]]> '" in comments
    json_types = [e["type"] for e in json_events(destinations)]
    assert json_types[-2:] == ["message.received", "voicemail.transcribed"]
    assert json_events(destinations)[-1]["data"]["transcript"] == NASTY_TEXT


def _lead_with_nasty_contact(db, clock) -> int:
    with db.session() as session:
        store = session.scalar(select(Store).where(Store.key == "north-honda"))
        contact = contact_for_phone(session, CUSTOMER)
        contact.first_name = NASTY_FIRST
        contact.last_name = NASTY_LAST
        lead, _ = open_or_join_lead(
            session, contact, Origin(store.id, "sales", "Cars.com & <Friends>", None, SIMULTANEOUS), clock.now()
        )
        return lead.id


# --------------------------------------------------------------------------------- retry and dead


def test_retry_schedule_follows_the_moved_clock(destinations, poster, work, db, clock):
    destinations.mode = "error"
    missed_call(poster)
    start = clock.now()
    work()
    head = deliveries(db, kind="adf-http")[0]
    assert head.status == "pending"
    assert head.attempts == 1
    assert head.next_attempt_at == start + timedelta(seconds=30)
    assert "HTTP 500" in head.last_error

    seen = len([r for r in destinations.requests if r.path == "/adf"])
    clock.advance(timedelta(seconds=29))
    work()
    assert len([r for r in destinations.requests if r.path == "/adf"]) == seen  # not due yet

    expected = [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]
    at = start + timedelta(seconds=30)
    for attempt, wait in enumerate(expected[1:], start=2):
        clock.set(at)
        work()
        head = deliveries(db, kind="adf-http")[0]
        assert head.attempts == attempt
        assert head.next_attempt_at == at + timedelta(seconds=wait)
        at = head.next_attempt_at

    destinations.mode = "ok"
    clock.set(at)
    work()
    assert {r.status for r in deliveries(db)} == {"delivered"}


def test_backoff_is_capped_at_an_hour():
    assert [backoff(n).total_seconds() for n in (1, 2, 3, 8, 9, 50)] == [30, 60, 120, 3600, 3600, 3600]


def test_after_24_hours_of_failures_the_delivery_is_dead(destinations, poster, work, db, clock):
    destinations.mode = "error"
    missed_call(poster)
    start = clock.now()
    for _ in range(30):
        clock.advance(timedelta(hours=1))
        work()
    rows = deliveries(db, created_at=start)  # later ones (the cadence's texts) have later windows
    assert {r.status for r in rows} == {"dead"}
    head = rows[0]
    assert head.retry_until == start + timedelta(hours=24)
    assert "HTTP 500" in head.last_error
    assert not destinations.accepted


def test_refusal_is_dead_at_once_and_the_stream_goes_on(destinations, poster, work, db):
    destinations.mode = "reject"
    missed_call(poster)
    work()
    rows = deliveries(db)
    assert {r.status for r in rows} == {"dead"}
    assert all(r.attempts == 1 for r in rows)
    assert "HTTP 400" in rows[0].last_error


def test_missing_smtp_url_is_a_dead_letter_not_a_crash(configured, db, poster, work):
    set_crm(db, "north-honda", [{"type": "adf-email", "to": "leads@example"}])
    missed_call(poster)
    work()
    (row,) = deliveries(db)
    assert row.status == "dead"
    assert "SMTP_URL is not set" in row.last_error


def test_removed_webhook_secret_is_a_dead_letter(destinations, poster, work, db, clock):
    destinations.mode = "error"
    missed_call(poster)
    work()
    set_crm(db, "north-honda", [])
    clock.advance(timedelta(seconds=30))
    work()
    webhook = deliveries(db, kind="webhook")
    assert webhook[0].status == "dead"
    assert "no longer configured" in webhook[0].last_error


# --------------------------------------------------------------------------------------- ordering


def test_a_delivery_waits_for_the_older_one_of_its_lead(destinations, poster, work, db, clock):
    destinations.mode = "error"
    missed_call(poster)
    work()
    destinations.mode = "ok"
    # The older deliveries are backing off; a second call's deliveries must wait behind them.
    missed_call(poster, outcome="hangup")
    work()
    assert not destinations.accepted
    waiting = deliveries(db, kind="adf-http")
    assert [r.status for r in waiting] == ["pending", "pending"]
    assert waiting[1].attempts == 0

    clock.advance(timedelta(seconds=30))
    work()
    rows = deliveries(db)
    assert {r.status for r in rows} == {"delivered"}
    by_key = {r.idempotency_key: r.id for r in rows}
    for path in ("/adf", "/hooks"):
        ids = [by_key[r.key] for r in destinations.accepted if r.path == path]
        assert ids == sorted(ids)


def test_another_lead_is_not_held_up(destinations, poster, work, db, clock):
    missed_call(poster)
    destinations.mode = "error"
    work()
    destinations.mode = "ok"
    missed_call(poster, caller="+12025550177")
    work()
    delivered = {r.lead_id for r in deliveries(db, status="delivered")}
    pending = {r.lead_id for r in deliveries(db, status="pending")}
    assert len(delivered) == 1
    assert len(pending) == 1
    assert delivered != pending


def test_a_stuck_delivery_is_sent_again_with_the_same_key(destinations, poster, work, db, clock, app):
    missed_call(poster)
    with db.session() as session:
        row = session.scalar(select(CrmDelivery).order_by(CrmDelivery.id))
        row.status = DeliveryStatus.DELIVERING.value
        row.claimed_at = clock.now()
        stuck_key = row.idempotency_key
    work()
    assert stuck_key not in destinations.accepted_keys()
    clock.advance(timedelta(seconds=DEFAULT_CLAIM_TIMEOUT + 1))
    work()
    assert stuck_key in destinations.accepted_keys()
    assert {r.status for r in deliveries(db)} == {"delivered"}


def test_flushed_redis_loses_no_delivery(destinations, poster, work, db, redis, clock):
    missed_call(poster)
    redis.flushdb()
    work()
    assert {r.status for r in deliveries(db)} == {"pending"}  # the sweep waits before re-sending
    clock.advance(REQUEUE_AFTER)
    work()
    assert {r.status for r in deliveries(db)} == {"delivered"}


# ------------------------------------------------------------------------------ dead letters: CLI


def test_deadletters_listed_and_replayed_by_the_cli(destinations, poster, work, db, clock, database_url, monkeypatch):
    destinations.mode = "reject"
    missed_call(poster)
    work()
    dead = deliveries(db, status="dead")
    assert dead

    runner = CliRunner()
    env = {"DATABASE_URL": database_url}
    listed = runner.invoke(main, ["crm", "deadletters"], env=env)
    assert listed.exit_code == 0, listed.output
    for row in dead:
        assert str(row.id) in listed.output
    assert "HTTP 400" in listed.output

    first = dead[0].id
    replayed = runner.invoke(main, ["crm", "replay", str(first)], env=env)
    assert replayed.exit_code == 0, replayed.output
    assert deliveries(db, id=first)[0].status == "pending"

    again = runner.invoke(main, ["crm", "replay", str(first)], env=env)
    assert again.exit_code != 0
    assert "not dead" in again.output

    destinations.mode = "ok"
    everything = runner.invoke(main, ["crm", "replay", "--all"], env=env)
    assert everything.exit_code == 0, everything.output
    # The command ran on the system clock (and a Redis of its own): the worker's clock must reach that time
    # and the sweep's requeue delay.
    clock.set(datetime.now(UTC) + REQUEUE_AFTER + timedelta(seconds=1))
    work()
    rows = deliveries(db)
    assert {r.status for r in rows} == {"delivered"}
    assert sorted(destinations.accepted_keys()) == sorted(r.idempotency_key for r in rows)
    assert "no dead letters" in runner.invoke(main, ["crm", "deadletters"], env=env).output


def test_replay_needs_ids_or_all(database_url):
    result = CliRunner().invoke(main, ["crm", "replay"], env={"DATABASE_URL": database_url})
    assert result.exit_code != 0
    assert "--all" in result.output


def test_contact_names_reach_json_events(destinations, poster, work, db):
    with db.session() as session:
        session.add(Contact(phone=CUSTOMER, first_name="Ana", last_name="Lima"))
    missed_call(poster)
    work()
    created = json_events(destinations)[0]
    assert created["data"]["customer"] == {"first_name": "Ana", "last_name": "Lima", "phone": CUSTOMER, "email": None}
