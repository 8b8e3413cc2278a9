"""The call path through signed webhooks: routing, ring strategies, screening, settlement, replays."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from xml.etree import ElementTree

import pytest
from sqlalchemy import func, select

from gateway.calls.services import accept_call, advance_dial
from gateway.models import Agent, Call, Contact, Lead, Task
from gateway.simulator import new_sid, play_call, sign
from tests.support.config import CUSTOMER, ROUND_ROBIN, SEQUENTIAL, SIMULTANEOUS, SOUTH, UNSCREENED
from tests.support.webhooks import SignedClient

BASE = "https://gateway.example.test"


def twiml(response) -> ElementTree.Element:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/xml"
    return ElementTree.fromstring(response.get_data(as_text=True))


def ring(twilio, to=SIMULTANEOUS, caller=CUSTOMER, sid=None, **extra):
    sid = sid or new_sid("CA")
    params = {"CallSid": sid, "From": caller, "To": to, "CallStatus": "ringing", "AccountSid": "AC" + "1" * 32}
    params.update(extra)
    return sid, twilio.post("/webhooks/voice/incoming", params)


def end(twilio, sid, to=SIMULTANEOUS, caller=CUSTOMER, status="completed", duration="30"):
    return twilio.post(
        "/webhooks/voice/status",
        {"CallSid": sid, "From": caller, "To": to, "CallStatus": status, "CallDuration": duration},
    )


def dial_numbers(root: ElementTree.Element) -> list[str]:
    return [(n.text or "").strip() for n in root.findall("./Dial/Number")]


def count(db, model) -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def only_call(db) -> Call:
    with db.session() as session:
        return session.scalars(select(Call)).one()


# --- signatures and bad input -----------------------------------------------------------------------------


@pytest.mark.usefixtures("configured")
def test_forged_signature_is_refused_and_nothing_is_stored(twilio, db):
    params = {"CallSid": new_sid("CA"), "From": CUSTOMER, "To": SIMULTANEOUS, "CallStatus": "ringing"}
    forged = twilio.post("/webhooks/voice/incoming", params, signature="bm90IGEgc2lnbmF0dXJl")
    missing = twilio.unsigned("/webhooks/voice/incoming", params)
    assert forged.status_code == 403
    assert forged.get_json()["error"]["code"] == "invalid_signature"
    assert missing.status_code == 403
    status = twilio.post("/webhooks/voice/status", {**params, "CallStatus": "completed"}, signature="forged")
    assert status.status_code == 403
    assert count(db, Call) == 0
    assert count(db, Lead) == 0
    assert count(db, Task) == 0


@pytest.mark.usefixtures("configured")
def test_signature_over_other_parameters_is_refused(twilio, db):
    params = {"CallSid": new_sid("CA"), "From": CUSTOMER, "To": SIMULTANEOUS}
    signature = sign(twilio.token, BASE + "/webhooks/voice/incoming", {**params, "From": "+12025550100"})
    assert twilio.post("/webhooks/voice/incoming", params, signature=signature).status_code == 403
    assert count(db, Call) == 0


@pytest.mark.usefixtures("configured")
def test_signature_with_another_token_is_refused(twilio, db):
    params = {"CallSid": new_sid("CA"), "From": CUSTOMER, "To": SIMULTANEOUS}
    signature = sign("some-other-token", BASE + "/webhooks/voice/incoming", params)
    assert twilio.post("/webhooks/voice/incoming", params, signature=signature).status_code == 403
    assert count(db, Call) == 0


@pytest.mark.usefixtures("configured")
def test_unknown_parameters_are_tolerated(twilio):
    _, response = ring(twilio, CallerCity="SPRINGFIELD", StirVerstat="TN-Validation-Passed-A", Extra="<x>")
    assert dial_numbers(twiml(response))


@pytest.mark.usefixtures("configured")
@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"From": CUSTOMER, "To": SIMULTANEOUS}, "CallSid is missing"),
        ({"CallSid": "nonsense", "From": CUSTOMER, "To": SIMULTANEOUS}, "CallSid is not a CA SID"),
        ({"CallSid": "CA" + "a" * 32, "From": CUSTOMER}, "To is missing"),
        ({"CallSid": "CA" + "a" * 32, "From": CUSTOMER, "To": "'; DROP TABLE calls;--"}, "To is not a phone"),
    ],
)
def test_malformed_parameters_get_a_clear_400(twilio, db, params, message):
    response = twilio.post("/webhooks/voice/incoming", params)
    assert response.status_code == 400
    assert message in response.get_json()["error"]["message"]
    assert count(db, Call) == 0


@pytest.mark.usefixtures("configured")
def test_garbage_caller_id_is_treated_as_withheld(twilio, db):
    _, response = ring(twilio, caller="<script>alert(1)</script>")
    assert dial_numbers(twiml(response))
    assert only_call(db).from_number is None


@pytest.mark.usefixtures("configured")
def test_unknown_tracked_number_gets_polite_twiml_and_nothing_is_stored(twilio, db):
    _, response = ring(twilio, to="+12025550177")
    root = twiml(response)
    assert "not taking calls" in (root.findtext("Say") or "")
    assert root.find("Hangup") is not None
    assert count(db, Call) == 0


def test_oversized_request_is_refused(twilio):
    response = twilio.post("/webhooks/voice/incoming", {"CallSid": "CA1", "Body": "x" * 2_000_000})
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "request_entity_too_large"


# --- ring strategies ---------------------------------------------------------------------------------------


@pytest.mark.usefixtures("configured")
def test_simultaneous_rings_everyone_screened_with_answer_on_bridge(twilio):
    sid, response = ring(twilio)
    root = twiml(response)
    dial = root.find("Dial")
    assert dial is not None
    assert dial.get("answerOnBridge") == "true"
    assert dial.get("timeout") == "18"
    assert dial_numbers(root) == ["+12025550111", "+12025550112"]
    urls = [n.get("url") or "" for n in root.findall("./Dial/Number")]
    assert all(u.startswith(f"{BASE}/webhooks/voice/screen?call={sid}") for u in urls)


@pytest.mark.usefixtures("configured")
def test_sequential_rings_one_agent_after_another_then_voicemail(twilio):
    sid, response = ring(twilio, to=SEQUENTIAL)
    order = [dial_numbers(twiml(response))]
    root = None
    for step in range(3):
        response = twilio.post(
            f"/webhooks/voice/dial-complete?call={sid}&step={step}",
            {"CallSid": sid, "CallStatus": "in-progress", "DialCallStatus": "no-answer"},
        )
        root = twiml(response)
        if root.find("Dial") is not None:
            order.append(dial_numbers(root))
    assert order == [["+12025550111"], ["+12025550112"], ["+12025550113"]]
    assert root is not None
    record = root.find("Record")
    assert record is not None
    assert record.get("transcribe") == "true"
    assert "/webhooks/voicemail/recording" in record.get("recordingStatusCallback", "")


@pytest.mark.usefixtures("configured")
def test_dial_action_retry_does_not_skip_an_agent(twilio):
    sid, _ = ring(twilio, to=SEQUENTIAL)
    params = {"CallSid": sid, "CallStatus": "in-progress", "DialCallStatus": "no-answer"}
    first = twiml(twilio.post(f"/webhooks/voice/dial-complete?call={sid}&step=0", params))
    again = twiml(twilio.post(f"/webhooks/voice/dial-complete?call={sid}&step=0", params))
    assert dial_numbers(first) == dial_numbers(again) == ["+12025550112"]


@pytest.mark.usefixtures("configured")
def test_a_ring_step_is_not_advanced_once_an_agent_took_the_call_after_it_was_read(twilio, db):
    sid, _ = ring(twilio, to=SEQUENTIAL)
    params = {"CallSid": sid, "CallStatus": "in-progress", "DialCallStatus": "no-answer"}
    assert dial_numbers(twiml(twilio.post(f"/webhooks/voice/dial-complete?call={sid}&step=0", params))) == [
        "+12025550112"
    ]
    now = datetime.now(UTC)
    with db.session() as session:
        call = session.scalars(select(Call).where(Call.sid == sid)).one()  # the Dial's end read it: not taken
        agent_id = session.scalars(select(Agent.id).order_by(Agent.id)).first()
        assert agent_id is not None
    assert call.accepted_at is None
    assert call.dial_step == 1
    with db.session() as other:  # meanwhile, an agent pressed 1
        assert accept_call(other, sid, agent_id, now)
    with db.session() as session:
        session.add(call)
        assert advance_dial(session, call, 1) == 1  # the conditional UPDATE found it taken
        assert call.accepted_at is not None
        assert call.answered_by_id == agent_id
    with db.session() as session:
        assert session.scalars(select(Call.dial_step).where(Call.sid == sid)).one() == 1
    # The provider's Dial action for that step, now: hang up (the agent has the caller), ring nobody.
    root = twiml(twilio.post(f"/webhooks/voice/dial-complete?call={sid}&step=1", params))
    assert root.find("Dial") is None
    assert root.find("Record") is None


@pytest.mark.usefixtures("configured")
def test_round_robin_rotates_and_an_open_lead_rings_its_owner_first(twilio, poster, db):
    firsts = []
    for caller in ("+12025550161", "+12025550162", "+12025550163", "+12025550164"):
        _, response = ring(twilio, to=ROUND_ROBIN, caller=caller)
        firsts.append(dial_numbers(twiml(response))[0])
    assert firsts == ["+12025550111", "+12025550112", "+12025550113", "+12025550111"]

    # A missed call gives the caller a lead and an owner; the next calls ring that owner first,
    # whoever the rotation would have picked.
    list(play_call(poster, to=ROUND_ROBIN, caller=CUSTOMER, outcome="no-answer"))
    with db.session() as session:
        owner = session.scalars(select(Lead).join(Contact).where(Contact.phone == CUSTOMER)).one().owner
        assert owner is not None
        owner_phone = owner.phone
    for _ in range(3):
        _, response = ring(twilio, to=ROUND_ROBIN, caller=CUSTOMER)
        assert dial_numbers(twiml(response))[0] == owner_phone


# --- screening and outcomes --------------------------------------------------------------------------------


@pytest.mark.usefixtures("configured")
def test_screened_agent_pressing_1_answers_the_call(poster, db):
    list(play_call(poster, to=SIMULTANEOUS, caller=CUSTOMER, outcome="answer"))
    with db.session() as session:
        call = session.scalars(select(Call)).one()
        lead = session.scalars(select(Lead)).one()
        tasks = session.scalars(select(Task)).all()
        assert call.outcome == "answered"
        assert call.answered_by is not None
        assert call.answered_by.key == "alice"
        assert lead.status == "contacted"
        assert lead.first_response_at is not None
        assert lead.owner is not None
        assert tasks == []


@pytest.mark.usefixtures("configured")
def test_screen_prompt_asks_for_a_key_press(twilio):
    sid, response = ring(twilio)
    url = twiml(response).findall("./Dial/Number")[0].get("url") or ""
    root = twiml(twilio.post(url, {"CallSid": new_sid("CA"), "ParentCallSid": sid}))
    gather = root.find("Gather")
    assert gather is not None
    assert gather.get("numDigits") == "1"
    assert "Press 1" in (gather.findtext("Say") or "")
    assert "Cars.com" in (gather.findtext("Say") or "")
    assert root.find("Hangup") is not None


@pytest.mark.usefixtures("configured")
def test_agent_cell_voicemail_is_not_an_answer(poster, db):
    list(play_call(poster, to=SIMULTANEOUS, caller=CUSTOMER, outcome="voicemail-pickup"))
    call = only_call(db)
    assert call.outcome == "missed"
    assert call.answered_by_id is None
    with db.session() as session:
        task = session.scalars(select(Task)).one()
        assert task.kind == "callback"
        assert task.status == "open"


@pytest.mark.usefixtures("configured")
def test_of_two_agents_pressing_1_the_first_has_the_caller_and_the_second_is_told(twilio, db):
    sid, response = ring(twilio)  # simultaneous: alice and bob, each screened
    actions = []
    for number in twiml(response).findall("./Dial/Number"):
        gather = twiml(twilio.post(number.get("url") or "", {"CallSid": new_sid("CA"), "ParentCallSid": sid}))
        found = gather.find("Gather")
        assert found is not None
        actions.append(found.get("action") or "")
    first, second = (twiml(twilio.post(action, {"CallSid": new_sid("CA"), "Digits": "1"})) for action in actions)
    assert list(first) == []  # an empty answer bridges the leg to the caller
    assert second.find("Hangup") is not None
    assert "Another agent has taken this call." in (second.findtext("Say") or "")
    # The provider retrying the first agent's key press: still theirs.
    assert list(twiml(twilio.post(actions[0], {"CallSid": new_sid("CA"), "Digits": "1"}))) == []
    with db.session() as session:
        call = session.scalars(select(Call).where(Call.sid == sid)).one()
        assert call.answered_by is not None
        assert call.answered_by.key == "alice"


@pytest.mark.usefixtures("configured")
def test_agent_hanging_up_or_pressing_another_key_does_not_connect(twilio, db):
    _, response = ring(twilio)
    url = twiml(response).findall("./Dial/Number")[0].get("url") or ""
    gather = twiml(twilio.post(url, {"CallSid": new_sid("CA")})).find("Gather")
    assert gather is not None
    action = gather.get("action") or ""
    assert twiml(twilio.post(action, {"CallSid": new_sid("CA")})).find("Hangup") is not None
    assert twiml(twilio.post(action, {"Digits": "9"})).find("Hangup") is not None
    assert only_call(db).accepted_at is None


@pytest.mark.usefixtures("configured")
def test_unscreened_leg_is_answered_on_pickup(poster, db):
    list(play_call(poster, to=UNSCREENED, caller=CUSTOMER, outcome="answer"))
    with db.session() as session:
        call = session.scalars(select(Call)).one()
        assert call.outcome == "answered"
        assert call.answered_by is not None
        assert call.answered_by.key == "alice"


@pytest.mark.usefixtures("configured")
def test_caller_hanging_up_while_ringing_is_an_abandoned_call_and_a_lead(poster, db):
    list(play_call(poster, to=SIMULTANEOUS, caller=CUSTOMER, outcome="hangup"))
    assert only_call(db).outcome == "abandoned"
    assert count(db, Lead) == 1
    assert count(db, Task) == 1


@pytest.mark.usefixtures("configured")
def test_busy_agents_go_to_voicemail(poster, db):
    lines = list(play_call(poster, to=SIMULTANEOUS, caller=CUSTOMER, outcome="busy"))
    assert any("voicemail prompt" in line for line in lines)
    assert only_call(db).outcome == "missed"


@pytest.mark.usefixtures("configured")
def test_voicemail_left_is_the_outcome(poster, db):
    list(play_call(poster, to=SIMULTANEOUS, caller=CUSTOMER, outcome="voicemail"))
    call = only_call(db)
    assert call.outcome == "voicemail"
    assert call.voicemail_seconds == 14


@pytest.mark.usefixtures("configured")
def test_missed_call_settles_into_lead_owner_and_task_due_by_sla(poster, db, clock):
    list(play_call(poster, to=SIMULTANEOUS, caller=CUSTOMER, outcome="no-answer"))
    with db.session() as session:
        lead = session.scalars(select(Lead)).one()
        task = session.scalars(select(Task)).one()
        assert lead.contact.phone == CUSTOMER
        assert lead.store.key == "north-honda"
        assert lead.department == "sales"
        assert lead.source == "Cars.com"
        assert lead.status == "new"
        assert lead.owner is not None
        assert lead.owner.key in {"alice", "ben", "cara"}
        assert task.owner_id == lead.owner_id
        assert task.due_at == clock.now() + timedelta(minutes=5)


@pytest.mark.usefixtures("configured")
def test_second_missed_call_joins_the_open_lead(poster, db):
    list(play_call(poster, to=SIMULTANEOUS, caller=CUSTOMER, outcome="no-answer"))
    list(play_call(poster, to=SEQUENTIAL, caller=CUSTOMER, outcome="hangup"))
    assert count(db, Lead) == 1
    assert count(db, Call) == 2
    assert count(db, Task) == 1
    with db.session() as session:
        lead_id = session.scalars(select(Lead)).one().id
        assert {c.lead_id for c in session.scalars(select(Call))} == {lead_id}


@pytest.mark.usefixtures("configured")
def test_a_call_to_another_store_opens_its_own_lead(poster, db):
    list(play_call(poster, to=SIMULTANEOUS, caller=CUSTOMER, outcome="no-answer"))
    list(play_call(poster, to=SOUTH, caller=CUSTOMER, outcome="no-answer"))
    with db.session() as session:
        stores = sorted(lead.store.key for lead in session.scalars(select(Lead)))
        assert stores == ["north-honda", "south-ford"]
        assert session.scalar(select(func.count()).select_from(Contact)) == 1


@pytest.mark.usefixtures("configured")
@pytest.mark.parametrize("withheld", ["anonymous", "Restricted", "+266696687", ""])
def test_withheld_caller_gets_a_lead_and_a_task_and_no_text(poster, db, fake_twilio, work, withheld):
    list(play_call(poster, to=SIMULTANEOUS, caller=withheld, outcome="no-answer"))
    work()
    with db.session() as session:
        lead = session.scalars(select(Lead)).one()
        assert lead.contact.phone is None
        assert session.scalars(select(Task)).one().status == "open"
        assert lead.owner_id is not None
    agents = {"+12025550111", "+12025550112", "+12025550113", "+12025550114"}
    assert [m for m in fake_twilio.messages if m["To"] not in agents] == []


@pytest.mark.usefixtures("configured")
def test_after_hours_goes_to_voicemail_and_the_task_is_due_after_opening(twilio, db, clock):
    clock.set(datetime(2026, 11, 25, 3, 0, tzinfo=UTC))  # 22:00 Tuesday in New York: closed
    sid, response = ring(twilio)
    root = twiml(response)
    assert root.find("Dial") is None
    assert "closed" in (root.findtext("Say") or "")
    assert root.find("Record") is not None
    end(twilio, sid)
    assert only_call(db).outcome == "after_hours"
    with db.session() as session:
        task = session.scalars(select(Task)).one()
        # Wednesday 09:00 New York = 14:00 UTC, plus the 30-minute grace.
        assert task.due_at == datetime(2026, 11, 25, 14, 30, tzinfo=UTC)
        assert task.owner_id is not None


# --- replays ----------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("configured")
def test_replayed_webhooks_double_nothing(twilio, db):
    sid, first = ring(twilio)
    _, again = ring(twilio, sid=sid)
    assert dial_numbers(twiml(first)) == dial_numbers(twiml(again))
    for _ in range(3):
        assert end(twilio, sid).status_code == 204
    assert count(db, Call) == 1
    assert count(db, Lead) == 1
    assert count(db, Task) == 1


@pytest.mark.usefixtures("configured")
def test_status_callback_before_the_incoming_webhook_still_settles_once(twilio, db):
    sid = new_sid("CA")
    assert end(twilio, sid).status_code == 204
    _, response = ring(twilio, sid=sid)
    assert response.status_code == 200
    assert end(twilio, sid).status_code == 204
    assert count(db, Call) == 1
    assert count(db, Lead) == 1
    assert count(db, Task) == 1


def _threads(target, n: int) -> None:
    threads = [threading.Thread(target=target) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


@pytest.mark.usefixtures("configured")
def test_concurrent_duplicate_status_callbacks_settle_once(app, settings, db):
    sid, _ = ring(SignedClient(app.test_client(), settings.public_base_url, settings.webhook_auth_token))
    barrier = threading.Barrier(8)
    codes: list[int] = []

    def post() -> None:
        client = SignedClient(app.test_client(), settings.public_base_url, settings.webhook_auth_token)
        barrier.wait()
        codes.append(end(client, sid).status_code)

    _threads(post, 8)
    assert codes == [204] * 8
    assert count(db, Lead) == 1
    assert count(db, Task) == 1


@pytest.mark.usefixtures("configured")
def test_concurrent_calls_from_one_phone_open_one_lead(app, settings, db):
    barrier = threading.Barrier(6)

    def call() -> None:
        client = SignedClient(app.test_client(), settings.public_base_url, settings.webhook_auth_token)
        sid, _ = ring(client)
        barrier.wait()
        end(client, sid)

    _threads(call, 6)
    assert count(db, Call) == 6
    assert count(db, Lead) == 1
    assert count(db, Task) == 1


@pytest.mark.usefixtures("configured")
def test_non_final_status_callbacks_change_nothing(twilio, db):
    sid, _ = ring(twilio)
    assert end(twilio, sid, status="in-progress").status_code == 204
    assert count(db, Lead) == 0
    assert only_call(db).processed_at is None
