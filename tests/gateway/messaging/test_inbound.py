"""Keywords and plain-language opt-outs, end to end: signed webhooks in, the worker, the Twilio fake out."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select
from werkzeug.serving import make_server

from gateway.api.keys import create_key
from gateway.cli import main
from gateway.models import Contact, Lead, LeadEvent, Message, Task
from gateway.simulator import new_sid
from tests.support.config import CUSTOMER, SIMULTANEOUS, SOUTH
from tests.support.webhooks import SignedClient

OPT_OUT = ["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"]
OPT_IN = ["START", "YES", "UNSTOP"]
HELP = ["HELP", "INFO"]
FORMS = {"upper": str.upper, "lower": str.lower, "padded": lambda word: f"  {word.capitalize()} \n"}


def text(twilio, body, sender=CUSTOMER, to=SIMULTANEOUS):
    sid = new_sid("SM")
    response = twilio.post(
        "/webhooks/sms/incoming",
        {"MessageSid": sid, "From": sender, "To": to, "Body": body, "NumMedia": "0"},
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    return sid


def contact(db, phone=CUSTOMER) -> Contact:
    with db.session() as session:
        return session.scalars(select(Contact).where(Contact.phone == phone)).one()


def count(db, model, *where) -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(model).where(*where)) or 0


def to_customer(fake_twilio, phone=CUSTOMER) -> list[dict]:
    return [m for m in fake_twilio.messages if m["To"] == phone]


@pytest.fixture
def api_key(db, configured, clock) -> str:
    with db.session() as session:
        _, key = create_key(session, "crm", None, clock.now())
    return key


def api_send(client, key, lead_id, body="Hi, Alice from North Honda here. Still looking?"):
    return client.post(
        f"/api/v1/leads/{lead_id}/messages", json={"body": body}, headers={"Authorization": f"Bearer {key}"}
    )


def lead_id(db, phone=CUSTOMER, store="north-honda") -> int:
    with db.session() as session:
        lead = session.scalars(
            select(Lead).join(Contact).where(Contact.phone == phone, Lead.store.has(key=store))
        ).one()
        return lead.id


@pytest.fixture
def gateway_twilio(make_app, settings) -> SignedClient:
    """Webhooks to an app where the gateway, not the provider, answers keywords."""
    app = make_app(keyword_replies="gateway")
    return SignedClient(app.test_client(), settings.public_base_url, settings.webhook_auth_token)


# --- opting out ---------------------------------------------------------------------------------------


@pytest.mark.usefixtures("configured")
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("word", OPT_OUT)
def test_every_opt_out_keyword_in_every_form_opts_out(twilio, db, clock, work, fake_twilio, word, form):
    body = FORMS[form](word)
    text(twilio, body)
    customer = contact(db)
    assert customer.opted_out
    assert customer.opted_out_at == clock.now()
    assert customer.opt_out_number == SIMULTANEOUS
    assert customer.opt_out_source == f"keyword:{word}"
    # A setting, not a question: no lead, no reply task, no alert, no confirmation from us.
    assert count(db, Lead) == 0
    assert count(db, Task) == 0
    work()
    assert fake_twilio.messages == []


@pytest.mark.usefixtures("configured")
# Clear requests ("please stop texting me", "STOP PLEASE") opt out: tests/gateway/messaging/test_own_words.py.
@pytest.mark.parametrize(
    "body", ["not interested, stop", "stop texting me so late", "Don't text me before 9", "wrong number"]
)
def test_an_unclear_request_is_not_a_keyword_but_pauses_automation(twilio, db, work, fake_twilio, body):
    text(twilio, body)
    customer = contact(db)
    assert not customer.opted_out
    assert customer.automation_paused
    with db.session() as session:
        tasks = list(session.scalars(select(Task)))
        assert [t.kind for t in tasks] == ["review"]
        assert tasks[0].owner_id is not None
        assert session.scalar(select(func.count()).select_from(LeadEvent).where(LeadEvent.kind == "automation-paused"))
    work()
    # The owner hears about it; the customer gets nothing.
    assert to_customer(fake_twilio) == []
    assert fake_twilio.messages


@pytest.mark.usefixtures("configured")
def test_a_revocation_ends_the_cadence_but_a_person_may_answer(
    poster, twilio, db, clock, work, fake_twilio, api_key, client
):
    from gateway.simulator import play_call

    list(play_call(poster, to=SIMULTANEOUS, caller=CUSTOMER, outcome="no-answer"))
    work()
    assert len(to_customer(fake_twilio)) == 1  # the cadence's first text
    clock.advance(timedelta(minutes=1))
    text(twilio, "please don't text me after 8pm")
    clock.advance(timedelta(days=2))
    work()
    assert len(to_customer(fake_twilio)) == 1
    response = api_send(client, api_key, lead_id(db), "Understood, sorry to bother you. Alice")
    assert response.status_code == 201, response.get_json()
    clock.advance(timedelta(seconds=5))
    work()
    assert len(to_customer(fake_twilio)) == 2


@pytest.mark.usefixtures("configured")
def test_a_stop_at_one_store_blocks_texts_from_every_store(twilio, db, clock, work, fake_twilio, api_key, client):
    text(twilio, "Do you have a 2024 F-150?", to=SOUTH)
    south_lead = lead_id(db, store="south-ford")
    clock.advance(timedelta(minutes=1))
    text(twilio, "STOP", to=SIMULTANEOUS)
    response = api_send(client, api_key, south_lead, "We have three in stock!")
    assert response.status_code == 409
    error = response.get_json()["error"]
    assert error["code"] == "opted_out"
    assert "opted out" in error["message"]
    clock.advance(timedelta(seconds=5))
    work()
    assert to_customer(fake_twilio) == []
    with db.session() as session:
        refused = session.scalars(select(Message).where(Message.status == "refused")).one()
        assert refused.refusal_code == "opted_out"


@pytest.mark.usefixtures("configured")
def test_a_stop_while_a_text_waits_in_the_queue_stops_that_text(twilio, db, clock, work, fake_twilio, api_key, client):
    text(twilio, "Hello")
    response = api_send(client, api_key, lead_id(db))
    assert response.status_code == 201
    text(twilio, "stop")  # before the worker ran
    work()
    assert to_customer(fake_twilio) == []
    with db.session() as session:
        message = session.get(Message, response.get_json()["id"])
        assert (message.status, message.refusal_code) == ("refused", "opted_out")


# --- opting back in -------------------------------------------------------------------------------------


@pytest.mark.usefixtures("configured")
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("word", OPT_IN)
def test_start_after_stop_opts_back_in(twilio, db, clock, work, fake_twilio, api_key, client, word, form):
    text(twilio, "Is the Civic available?")
    clock.advance(timedelta(minutes=1))
    text(twilio, "STOP")
    assert contact(db).opted_out
    clock.advance(timedelta(minutes=1))
    text(twilio, FORMS[form](word))
    customer = contact(db)
    assert not customer.opted_out
    assert customer.opted_out_at is None
    assert count(db, LeadEvent, LeadEvent.kind == "keyword") == 2
    response = api_send(client, api_key, lead_id(db), "Welcome back! The Civic is here.")
    assert response.status_code == 201, response.get_json()
    work()
    assert [m["Body"] for m in to_customer(fake_twilio)] == ["Welcome back! The Civic is here."]


@pytest.mark.usefixtures("configured")
def test_yes_from_a_customer_who_never_opted_out_is_an_answer(twilio, db):
    text(twilio, "YES")
    assert count(db, Lead) == 1
    assert count(db, Task, Task.kind == "reply") == 1


# --- HELP and who answers -----------------------------------------------------------------------------------


@pytest.mark.usefixtures("configured")
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("word", HELP)
def test_help_is_answered_by_the_provider_by_default(twilio, db, work, fake_twilio, word, form):
    sid = text(twilio, FORMS[form](word))
    work()
    assert fake_twilio.messages == []  # Twilio's Advanced Opt-Out already answered it
    assert count(db, Task) == 0
    with db.session() as session:
        assert session.scalars(select(Message).where(Message.sid == sid)).one().status == "received"


@pytest.mark.usefixtures("configured")
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("word", HELP)
def test_help_answered_by_the_gateway_names_the_store_rates_and_opt_out(
    gateway_twilio, db, work, fake_twilio, word, form
):
    text(gateway_twilio, FORMS[form](word))
    work()
    [reply] = to_customer(fake_twilio)
    assert reply["From"] == SIMULTANEOUS
    assert "North Honda" in reply["Body"]
    assert "(202) 555-0100" in reply["Body"]
    assert "Msg & data rates may apply" in reply["Body"]
    assert "STOP" in reply["Body"]
    assert count(db, Task) == 0


@pytest.mark.usefixtures("configured")
def test_help_is_answered_at_night_and_after_a_stop(gateway_twilio, db, clock, work, fake_twilio):
    clock.set(clock.now().replace(hour=4))  # 23:00 in New York
    text(gateway_twilio, "STOP")
    text(gateway_twilio, "HELP")
    work()
    bodies = [m["Body"] for m in to_customer(fake_twilio)]
    assert len(bodies) == 2
    assert "unsubscribed" in bodies[0]
    assert "for help call" in bodies[1]


@pytest.mark.usefixtures("configured")
def test_the_gateway_confirms_stop_and_start_once_each(gateway_twilio, db, clock, work, fake_twilio):
    sid = text(gateway_twilio, "STOP")
    gateway_twilio.post(  # a provider retry of the same STOP
        "/webhooks/sms/incoming", {"MessageSid": sid, "From": CUSTOMER, "To": SIMULTANEOUS, "Body": "STOP"}
    )
    text(gateway_twilio, "STOP")  # and the customer sending it again
    work()
    clock.advance(timedelta(minutes=1))
    text(gateway_twilio, "START")
    work()
    bodies = [m["Body"] for m in to_customer(fake_twilio)]
    assert len(bodies) == 3
    assert "unsubscribed" in bodies[0]
    assert "unsubscribed" in bodies[1]
    assert "resubscribed" in bodies[2]
    assert not contact(db).opted_out


@pytest.mark.usefixtures("configured")
def test_a_keyword_joins_the_open_lead_timeline_without_a_task(twilio, db, clock):
    text(twilio, "Do you have the Pilot in blue?")
    clock.advance(timedelta(minutes=3))
    sid = text(twilio, "stop")
    with db.session() as session:
        lead = session.scalars(select(Lead)).one()
        message = session.scalars(select(Message).where(Message.sid == sid)).one()
        assert message.lead_id == lead.id
        assert lead.last_contact_at == clock.now()
        events = list(session.scalars(select(LeadEvent).where(LeadEvent.kind == "keyword")))
        assert len(events) == 1
        assert "every store" in events[0].text
        assert [t.kind for t in session.scalars(select(Task))] == ["reply"]


# --- gateway simulate sms -----------------------------------------------------------------------------------


@pytest.fixture
def live_app(make_app) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, None, threaded=True)  # type: ignore[arg-type]
    base = f"http://127.0.0.1:{server.server_port}"
    server.app = make_app(public_base_url=base)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield base
    server.shutdown()
    thread.join()


@pytest.mark.usefixtures("configured")
def test_simulate_sms_against_a_live_gateway(settings, live_app, db):
    env = {
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url or "",
        "PUBLIC_BASE_URL": live_app,
        "SECRET_KEY": settings.secret_key,
        "TWILIO_ACCOUNT_SID": settings.twilio_account_sid or "",
        "TWILIO_AUTH_TOKEN": settings.twilio_auth_token or "",
        "GATEWAY_INSTANCE_DIR": str(settings.instance_dir),
    }
    result = CliRunner().invoke(
        main,
        ["simulate", "sms", "--from", CUSTOMER, "--to", SIMULTANEOUS, "--body", "Price on the Accord?",
         "--media", "https://example.com/car.jpg"],
        env=env,
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert "gateway answered 200" in result.output
    with db.session() as session:
        message = session.scalars(select(Message).where(Message.direction == "inbound")).one()
        assert message.body == "Price on the Accord?"
        assert message.media_urls == ["https://example.com/car.jpg"]
        assert session.scalar(select(func.count()).select_from(Lead)) == 1


def test_simulate_sms_needs_a_body_or_a_picture_and_a_running_gateway(settings):
    runner = CliRunner()
    env = {"SECRET_KEY": "x", "GATEWAY_INSTANCE_DIR": str(settings.instance_dir)}
    empty = runner.invoke(main, ["simulate", "sms", "--from", CUSTOMER, "--to", SIMULTANEOUS], env=env)
    assert empty.exit_code != 0
    assert "--body" in empty.output
    down = runner.invoke(
        main,
        ["simulate", "sms", "--from", CUSTOMER, "--to", SIMULTANEOUS, "--body", "hi", "--url", "http://127.0.0.1:9"],
        env=env,
    )
    assert down.exit_code != 0
    assert "could not reach the gateway" in down.output
