"""Click-to-call: signed, expiring, single-use links; a GET never dials; the agent presses 1 first."""

from __future__ import annotations

import re
import shutil
import threading
from datetime import timedelta
from xml.etree import ElementTree

import pytest
from sqlalchemy import select
from werkzeug.serving import make_server

from gateway.agents.click_to_call import click_to_call_url
from gateway.models import Agent, Call, Lead, Task
from tests.gateway.agents.helpers import (
    ALICE,
    BASE,
    BEN,
    agent,
    alert_rows,
    api_key,
    missed_call,
    only_lead,
)
from tests.support.config import CUSTOMER, SIMULTANEOUS

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def lead(poster, db, configured) -> Lead:
    missed_call(poster)
    return only_lead(db)


def link_for(app, db, lead: Lead, agent_key: str = "alice") -> str:
    person = agent(db, agent_key)
    with app.app_context(), db.session():
        settings = app.extensions["gateway"].settings
        now = app.extensions["gateway"].clock.now()
        return click_to_call_url(settings, lead, person, now)


def path_of(link: str) -> str:
    assert link.startswith(BASE + "/c/")
    return link.removeprefix(BASE)


def click_calls(db) -> list[Call]:
    with db.session() as session:
        return list(session.scalars(select(Call).where(Call.kind == "click_to_call")))


def xml(response) -> ElementTree.Element:
    assert response.status_code == 200, response.get_data(as_text=True)
    return ElementTree.fromstring(response.get_data(as_text=True))


def open_tasks(db, lead_id: int) -> list[Task]:
    with db.session() as session:
        return list(session.scalars(select(Task).where(Task.lead_id == lead_id, Task.status == "open")))


def reload(db, lead_id: int) -> Lead:
    with db.session() as session:
        return session.get(Lead, lead_id)


# --- the link ---------------------------------------------------------------------------------------------


def test_alert_link_opens_a_page_with_the_lead_and_a_call_button_and_a_get_never_dials(
    client, db, lead, fake_twilio
):
    alert = next(m for m in alert_rows(db) if m.to_number == lead.owner.phone)
    link = re.search(r"https://\S+/c/\S+", alert.body).group(0)
    for _ in range(3):  # phones and chat apps fetch a link to preview it, sometimes more than once
        page = client.get(path_of(link))
        assert page.status_code == 200
        html = page.get_data(as_text=True)
        assert lead.code in html
        assert "(202) 555-0199" in html
        assert "Cars.com" in html
        assert '<form method="post"' in html
        assert 'id="call"' in html
    assert client.head(path_of(link)).status_code == 200
    assert fake_twilio.calls == []
    assert click_calls(db) == []


def test_call_button_rings_the_agent_from_the_tracked_number(app, client, db, lead, fake_twilio):
    link = link_for(app, db, lead, "alice")
    page = client.post(path_of(link))
    assert page.status_code == 200
    assert "Calling your phone" in page.get_data(as_text=True)
    [placed] = fake_twilio.calls
    assert placed["To"] == ALICE
    assert placed["From"] == SIMULTANEOUS
    assert placed["Url"].startswith(BASE + "/webhooks/click-to-call/agent?")
    assert placed["StatusCallback"] == BASE + "/webhooks/click-to-call/status"
    [call] = click_calls(db)
    assert call.sid == placed["sid"]
    assert call.direction == "outbound"
    assert call.lead_id == lead.id
    assert call.to_number == CUSTOMER
    assert call.from_number == SIMULTANEOUS


def test_a_used_link_cannot_call_again(app, client, db, lead, fake_twilio):
    link = link_for(app, db, lead)
    assert client.post(path_of(link)).status_code == 200
    again = client.post(path_of(link))
    assert again.status_code == 410
    assert "already used" in again.get_data(as_text=True)
    assert client.get(path_of(link)).status_code == 410
    assert len(fake_twilio.calls) == 1
    assert len(click_calls(db)) == 1


def test_an_expired_link_shows_why_and_places_no_call(app, client, db, lead, fake_twilio, clock, settings):
    link = link_for(app, db, lead)
    clock.advance(timedelta(seconds=settings.click_to_call_ttl + 1))
    for response in (client.get(path_of(link)), client.post(path_of(link))):
        assert response.status_code == 410
        assert "expired" in response.get_data(as_text=True)
        assert response.mimetype == "text/html"
    assert fake_twilio.calls == []


def test_a_link_still_inside_its_lifetime_works(app, client, db, lead, fake_twilio, clock, settings):
    link = link_for(app, db, lead)
    clock.advance(timedelta(seconds=settings.click_to_call_ttl - 5))
    assert client.post(path_of(link)).status_code == 200
    assert len(fake_twilio.calls) == 1


@pytest.mark.parametrize(
    "tamper",
    [
        lambda token: token[:-2] + ("AA" if not token.endswith("AA") else "BB"),  # signature changed
        lambda token: "X" + token[1:],  # payload changed
        lambda token: token[: len(token) // 2],  # cut short
        lambda token: "not-a-token",
    ],
    ids=["signature", "payload", "truncated", "garbage"],
)
def test_a_tampered_link_is_refused(app, client, db, lead, fake_twilio, tamper):
    token = link_for(app, db, lead).rsplit("/", 1)[1]
    bad = "/c/" + tamper(token)
    for response in (client.get(bad), client.post(bad)):
        assert response.status_code == 400
        assert "not valid" in response.get_data(as_text=True)
    assert fake_twilio.calls == []


def test_a_link_signed_with_another_key_is_refused(app, client, db, lead, fake_twilio, settings):
    other = settings.with_changes(secret_key="someone-elses-key")
    person = agent(db, "alice")
    with app.app_context():
        link = click_to_call_url(other, lead, person, app.extensions["gateway"].clock.now())
    assert client.post(path_of(link)).status_code == 400
    assert fake_twilio.calls == []


def test_a_link_of_an_agent_no_longer_active_is_forbidden(app, client, db, lead, fake_twilio, configure):
    link = link_for(app, db, lead, "ben")
    with db.session() as session:
        session.scalars(select(Agent).where(Agent.key == "ben")).one().active = False
    assert client.post(path_of(link)).status_code == 403
    assert fake_twilio.calls == []


def test_provider_refusal_leaves_the_link_usable(app, client, db, lead, fake_twilio):
    link = link_for(app, db, lead)
    fake_twilio.fail_next("calls", status=500, code=20500, message="Internal Server Error")
    failed = client.post(path_of(link))
    assert failed.status_code == 502
    assert click_calls(db) == []
    assert client.post(path_of(link)).status_code == 200
    assert len(fake_twilio.calls) == 1


# --- the agent's leg ------------------------------------------------------------------------------------------


def placed_call(app, client, db, lead, fake_twilio, agent_key="alice") -> tuple[str, str]:
    assert client.post(path_of(link_for(app, db, lead, agent_key))).status_code == 200
    placed = fake_twilio.calls[-1]
    return placed["sid"], placed["Url"]


def test_agent_presses_1_and_the_customer_is_dialled_with_the_tracked_number(
    app, client, db, lead, fake_twilio, twilio, clock, work
):
    sid, url = placed_call(app, client, db, lead, fake_twilio)
    leg = {"CallSid": sid, "From": SIMULTANEOUS, "To": ALICE, "CallStatus": "in-progress"}
    root = xml(twilio.post(url, leg))
    gather = root.find("Gather")
    assert gather is not None
    assert gather.get("numDigits") == "1"
    assert " ".join(lead.code) in "".join(gather.itertext())
    assert root.find("Dial") is None
    dialled = xml(twilio.post(gather.get("action"), {**leg, "Digits": "1"}))
    dial = dialled.find("Dial")
    assert dial.get("callerId") == SIMULTANEOUS
    assert [n.text for n in dial.findall("Number")] == [CUSTOMER]
    done = twilio.post(dial.get("action"), {**leg, "DialCallStatus": "completed", "DialCallDuration": "95"})
    assert done.status_code == 200
    twilio.post("/webhooks/click-to-call/status", {**leg, "CallStatus": "completed", "CallDuration": "110"})
    [call] = click_calls(db)
    assert call.outcome == "answered"
    assert call.answered_by.key == "alice"
    assert call.duration == 110
    after = reload(db, lead.id)
    assert after.status == "contacted"
    assert after.first_response_at is not None
    assert open_tasks(db, lead.id) == []
    # The connected call stopped the missed-call cadence: its 4-hour follow-up never goes.
    clock.advance(timedelta(hours=5))
    work()
    assert not [m for m in fake_twilio.messages if m["To"] == CUSTOMER and "Still looking?" in m["Body"]]


def test_agent_voicemail_picks_up_and_nothing_is_dialled(app, client, db, lead, fake_twilio, twilio):
    sid, url = placed_call(app, client, db, lead, fake_twilio)
    leg = {"CallSid": sid, "From": SIMULTANEOUS, "To": ALICE, "CallStatus": "in-progress"}
    root = xml(twilio.post(url, leg))
    # The agent's voicemail hears the prompt and presses nothing: the Gather times out into Hangup.
    assert root.find("Hangup") is not None
    assert root.find("Dial") is None
    twilio.post("/webhooks/click-to-call/status", {**leg, "CallStatus": "completed", "CallDuration": "21"})
    [call] = click_calls(db)
    assert call.outcome == "agent_missed"
    assert call.accepted_at is None
    after = reload(db, lead.id)
    assert after.status == "new"
    assert after.first_response_at is None
    assert len(open_tasks(db, lead.id)) == 1
    assert len(fake_twilio.calls) == 1  # only the agent's leg was ever placed


def test_another_key_hangs_up_without_dialling(app, client, db, lead, fake_twilio, twilio):
    sid, url = placed_call(app, client, db, lead, fake_twilio)
    leg = {"CallSid": sid, "From": SIMULTANEOUS, "To": ALICE, "CallStatus": "in-progress"}
    gather = xml(twilio.post(url, leg)).find("Gather")
    root = xml(twilio.post(gather.get("action"), {**leg, "Digits": "9"}))
    assert root.find("Dial") is None
    assert root.find("Hangup") is not None


def test_customer_not_answering_is_logged_and_the_task_stays_open(app, client, db, lead, fake_twilio, twilio):
    sid, url = placed_call(app, client, db, lead, fake_twilio)
    leg = {"CallSid": sid, "From": SIMULTANEOUS, "To": ALICE, "CallStatus": "in-progress"}
    gather = xml(twilio.post(url, leg)).find("Gather")
    dial = xml(twilio.post(gather.get("action"), {**leg, "Digits": "1"})).find("Dial")
    params = {**leg, "DialCallStatus": "no-answer", "DialCallDuration": "0"}
    twilio.post(dial.get("action"), params)
    twilio.post(dial.get("action"), params)  # a provider retry changes nothing
    [call] = click_calls(db)
    assert call.outcome == "no_answer"
    after = reload(db, lead.id)
    assert after.status == "attempting_contact"
    assert after.first_response_at is None
    assert len(open_tasks(db, lead.id)) == 1


def test_forged_agent_leg_webhooks_are_refused(app, client, db, lead, fake_twilio, twilio):
    sid, url = placed_call(app, client, db, lead, fake_twilio)
    leg = {"CallSid": sid, "From": SIMULTANEOUS, "To": ALICE, "CallStatus": "in-progress"}
    assert twilio.post(url, leg, signature="Zm9yZ2Vk").status_code == 403
    forged = twilio.unsigned(
        f"/webhooks/click-to-call/dial-complete?call={sid}", {**leg, "DialCallStatus": "completed"}
    )
    assert forged.status_code == 403
    assert reload(db, lead.id).status == "new"


# --- the API --------------------------------------------------------------------------------------------------


def test_api_calls_the_owner_by_default_and_a_named_agent_on_request(client, db, clock, lead, fake_twilio):
    key = api_key(db, clock, ["north-honda"])
    headers = {"Authorization": f"Bearer {key}"}
    first = client.post(f"/api/v1/leads/{lead.id}/call", headers=headers)
    assert first.status_code == 201, first.get_json()
    assert first.get_json()["agent"] == lead.owner.key
    assert fake_twilio.calls[-1]["To"] == lead.owner.phone
    named = client.post(f"/api/v1/leads/{lead.id}/call", json={"agent": "ben"}, headers=headers)
    assert named.status_code == 201
    assert fake_twilio.calls[-1]["To"] == BEN
    assert named.get_json()["direction"] == "outbound"
    assert named.get_json()["kind"] == "click_to_call"


def test_api_call_is_scoped_and_checked(client, db, clock, lead, fake_twilio):
    assert client.post(f"/api/v1/leads/{lead.id}/call").status_code == 401
    other = {"Authorization": f"Bearer {api_key(db, clock, ['south-ford'])}"}
    assert client.post(f"/api/v1/leads/{lead.id}/call", headers=other).status_code == 404
    mine = {"Authorization": f"Bearer {api_key(db, clock, ['north-honda'])}"}
    unknown = client.post(f"/api/v1/leads/{lead.id}/call", json={"agent": "nobody"}, headers=mine)
    assert unknown.status_code == 404
    elsewhere = client.post(f"/api/v1/leads/{lead.id}/call", json={"agent": "sam"}, headers=mine)
    assert elsewhere.status_code == 404
    bad = client.post(f"/api/v1/leads/{lead.id}/call", json={"agent": 7}, headers=mine)
    assert bad.status_code == 400
    assert fake_twilio.calls == []


# --- in a real browser ------------------------------------------------------------------------------------------


@pytest.mark.browser
def test_agent_opens_the_link_in_a_browser_and_clicks_call(app, db, lead, fake_twilio, settings):
    if shutil.which("chromium") is None and not shutil.which(CHROMIUM):
        pytest.skip(f"headless Chromium is not installed at {CHROMIUM} (dev.py installs it in CI)")
    playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        link = link_for(app, db, lead, "alice")
        local = f"http://127.0.0.1:{server.server_port}" + path_of(link)
        with playwright_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM,
                headless=True,
                args=[
                    "--no-sandbox",
                    "--headless",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                ],
            )
            try:
                page = browser.new_page()
                page.goto(local)
                assert lead.code in page.title()
                assert page.locator("#customer").inner_text() == "(202) 555-0199"
                assert fake_twilio.calls == []  # opening the page placed no call
                page.click("#call")
                page.wait_for_selector("#calling")
                assert "Calling your phone" in page.locator("#calling").inner_text()
            finally:
                browser.close()
    finally:
        server.shutdown()
        thread.join(timeout=5)
    [placed] = fake_twilio.wait_for_calls(1)
    assert placed["To"] == ALICE
    assert placed["From"] == SIMULTANEOUS
