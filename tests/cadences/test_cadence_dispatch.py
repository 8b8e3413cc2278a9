"""A missed call's cadence end to end: the first text at once, the follow-ups on time and in order,
once per lead, through flushed Redis, dead workers, replayed webhooks and racing workers."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from rq import Queue
from sqlalchemy import select, update

from cadences import jobs, services
from cadences.models import CadenceEnrolment, CadenceStep, EnrolmentStatus, StepStatus
from gateway.jobs import Lane
from gateway.models import CadenceDefinition, Lead, LeadEvent, Message, MessageStatus
from gateway.simulator import new_sid
from tests.cadences.helpers import FIRST_TEXT, cadence_messages, only_lead
from tests.support.config import CUSTOMER, SEQUENTIAL, SIMULTANEOUS

pytestmark = pytest.mark.usefixtures("cadence_config")


def test_missed_call_texts_the_caller_once_with_the_first_step_from_the_tracked_number(
    missed_call, work, texts, snapshot
):
    missed_call()
    work()
    sent = texts()
    assert len(sent) == 1
    assert sent[0]["From"] == SIMULTANEOUS
    assert sent[0]["Body"] == FIRST_TEXT
    state = snapshot()
    enrolment = state.enrolment()
    assert enrolment.status == EnrolmentStatus.ACTIVE.value
    assert enrolment.trigger == "missed_call"
    assert state.statuses() == ["sent", "scheduled", "scheduled"]
    assert any(e.kind == "cadence-started" for e in state.events)


def test_first_text_is_queued_by_the_call_settlement_itself_not_by_the_sweep(missed_call, work, texts, db, redis):
    missed_call()
    # Written and queued in the transaction that settled the call: a worker without a sweep sends it.
    [message] = cadence_messages(db)
    assert message.status == MessageStatus.PENDING.value
    assert message.origin is not None
    assert message.origin.startswith("cadence-step:")
    assert Queue(Lane.URGENT.value, connection=redis).count >= 1  # the first text is urgent work
    work(sweep=False)
    assert [m["Body"] for m in texts()] == [FIRST_TEXT]


def test_steps_go_at_their_offsets_in_order(missed_call, work, texts, clock, snapshot, db):
    missed_call()
    work()
    clock.advance(timedelta(hours=4) - timedelta(minutes=1))
    work()
    assert len(texts()) == 1, "nothing before the 4h step is due"
    clock.advance(timedelta(minutes=1))
    work()
    owner = only_lead(db).owner
    assert owner is not None
    bodies = [m["Body"] for m in texts()]
    assert bodies[1] == f"{owner.name.split()[0]} from North Honda here. Still looking? Reply with a good time to talk."
    clock.advance(timedelta(hours=20))
    work()
    bodies = [m["Body"] for m in texts()]
    assert len(bodies) == 3
    # No first name known: "Hi {first_name}, ..." reads "Hi, ...".
    assert bodies[2] == "Hi, North Honda again. Want us to hold a car for a test drive?"
    state = snapshot()
    assert state.statuses() == ["sent", "sent", "sent"]
    assert state.enrolment().status == EnrolmentStatus.COMPLETED.value
    assert any(e.kind == "cadence-completed" for e in state.events)
    clock.advance(timedelta(days=7))
    work()
    assert len(texts()) == 3


def test_late_worker_catches_up_in_due_order(missed_call, work, texts, clock):
    missed_call()
    work()
    clock.advance(timedelta(days=2))  # the worker was down through both follow-ups
    work()
    bodies = [m["Body"] for m in texts()]
    assert len(bodies) == 3
    assert bodies[1].endswith("Still looking? Reply with a good time to talk.")
    assert bodies[2].startswith("Hi, North Honda again.")


def test_a_second_missed_call_does_not_restart_the_cadence(missed_call, work, texts, clock, snapshot):
    missed_call()
    work()
    clock.advance(timedelta(hours=1))
    missed_call(to=SEQUENTIAL)
    work()
    assert len(texts()) == 1
    state = snapshot()
    assert len(state.enrolments) == 1
    clock.advance(timedelta(hours=3))
    work()
    assert len(texts()) == 2


def test_a_completed_cadence_is_not_restarted_by_a_later_missed_call(missed_call, work, texts, clock, snapshot):
    missed_call()
    work()
    clock.advance(timedelta(days=2))
    work()
    assert snapshot().enrolment().status == EnrolmentStatus.COMPLETED.value
    missed_call()
    work()
    assert len(texts()) == 3
    assert len(snapshot().enrolments) == 1


@pytest.mark.parametrize("withheld", ["anonymous", "+266696687", ""])
def test_withheld_callers_are_never_enrolled(missed_call, work, fake_twilio, snapshot, db, withheld):
    missed_call(caller=withheld)
    work()
    assert snapshot().enrolments == []
    assert cadence_messages(db) == []
    assert [m for m in fake_twilio.messages if m["Body"] == FIRST_TEXT] == []


def test_answered_call_starts_no_cadence(missed_call, work, texts, snapshot):
    missed_call(outcome="answer")
    work()
    assert texts() == []
    assert snapshot().enrolments == []


def test_replayed_webhooks_of_the_same_call_enrol_once_and_text_once(missed_call, twilio, work, texts, snapshot):
    sid = new_sid("CA")
    missed_call(sid=sid)
    ended = {"CallSid": sid, "From": CUSTOMER, "To": SIMULTANEOUS, "CallStatus": "completed", "CallDuration": "20"}
    for _ in range(3):
        assert twilio.post("/webhooks/voice/status", ended).status_code == 204
    missed_call(sid=sid)  # the whole call again, every webhook replayed
    work()
    assert len(texts()) == 1
    state = snapshot()
    assert len(state.enrolments) == 1
    assert len(state.steps) == 3


def test_flushed_redis_mid_cadence_loses_no_step_and_doubles_none(missed_call, work, texts, clock, redis):
    missed_call()
    work()
    redis.flushdb()
    clock.advance(timedelta(hours=4))
    work()
    assert len(texts()) == 2
    work()
    clock.advance(timedelta(minutes=5))
    work()
    assert len(texts()) == 2


def test_steps_queued_then_lost_with_redis_go_again_after_the_requeue_delay(
    missed_call, work, texts, clock, redis, app, snapshot
):
    missed_call()
    work()
    clock.advance(timedelta(hours=4))
    from gateway.worker import sweep_once

    sweep_once(app)  # the sweep queues the due step...
    assert snapshot().steps[1].enqueued_at is not None
    redis.flushdb()  # ...and Redis loses it
    work()
    assert len(texts()) == 1, "queued a moment ago: the sweep leaves it to the job for a while"
    clock.advance(jobs.REQUEUE_AFTER)
    work()
    assert len(texts()) == 2
    assert snapshot().statuses()[:2] == ["sent", "sent"]


def test_worker_killed_between_claim_and_provider_answer_leaves_it_unknown_never_resent(
    missed_call, work, texts, clock, app, db, settings, snapshot
):
    missed_call()
    work()
    clock.advance(timedelta(hours=4))
    step_id = snapshot().steps[1].id
    # The worker claims the step and writes its text, claims the text for sending, then dies before
    # the provider answers.
    with db.session() as session:
        services.dispatch_steps(session, [step_id], clock.now(), enqueue=False)
    with db.session() as session:
        message = session.scalars(select(Message).where(Message.origin == f"cadence-step:{step_id}")).one()
        session.execute(
            update(Message)
            .where(Message.id == message.id, Message.status == MessageStatus.PENDING.value)
            .values(status=MessageStatus.SENDING.value, claimed_at=clock.now(), attempts=Message.attempts + 1)
        )
    work()  # the sweep and any send job find it claimed and leave it
    clock.advance(timedelta(seconds=settings.send_claim_timeout + 1))
    work()
    assert len(texts()) == 1, "only the first text: the one in doubt was not resent"
    state = snapshot()
    assert state.steps[1].status == StepStatus.UNKNOWN.value
    with db.session() as session:
        assert session.get(Message, message.id).status == MessageStatus.UNKNOWN.value
    clock.advance(timedelta(hours=1))
    work()
    assert len(texts()) == 1
    # The cadence goes on with the next step.
    clock.advance(timedelta(days=1))
    work()
    assert len(texts()) == 2


def test_two_workers_racing_for_one_step_write_one_text(missed_call, work, texts, clock, app, db, snapshot):
    missed_call()
    work()
    clock.advance(timedelta(hours=4))
    step_id = snapshot().steps[1].id
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with app.app_context():
                barrier.wait(timeout=5)
                jobs.dispatch_steps_job([step_id])
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == []
    with db.session() as session:
        origin = f"cadence-step:{step_id}"
        assert len(list(session.scalars(select(Message).where(Message.origin == origin)))) == 1
    work()
    assert len(texts()) == 2


def test_dispatching_the_same_batch_twice_writes_each_text_once(missed_call, work, texts, clock, app, db, snapshot):
    missed_call()
    work()
    clock.advance(timedelta(days=2))
    ids = [s.id for s in snapshot().steps if s.status == StepStatus.SCHEDULED.value]
    with app.app_context():
        jobs.dispatch_steps_job(ids)
        jobs.dispatch_steps_job(ids)
    assert len(cadence_messages(db)) == 3
    work()
    assert len(texts()) == 3


def test_a_step_not_yet_due_is_not_claimed_even_when_asked(missed_call, work, app, snapshot, db):
    missed_call()
    work()
    step_id = snapshot().steps[1].id
    with app.app_context():
        jobs.dispatch_steps_job([step_id])
    with db.session() as session:
        assert session.get(CadenceStep, step_id).status == StepStatus.SCHEDULED.value


def test_a_batch_for_many_customers_sends_each_their_own_steps_once_and_in_order(missed_call, work, clock, fake_twilio):
    callers = [f"+1202555{3000 + n:04d}" for n in range(6)]
    for caller in callers:
        missed_call(caller=caller)
    work()
    clock.advance(timedelta(days=2))  # every follow-up of every caller is due: one batch
    work()
    for caller in callers:
        bodies = [m["Body"] for m in fake_twilio.messages if m["To"] == caller]
        assert len(bodies) == 3, caller
        assert bodies[0] == FIRST_TEXT
        assert bodies[1].endswith("Still looking? Reply with a good time to talk.")
        assert bodies[2].startswith("Hi, North Honda again.")


def test_a_cadence_whose_only_step_goes_at_once_is_complete_when_it_starts(missed_call, db, clock):
    missed_call()
    now = clock.now()
    with db.session() as session:
        lead = session.scalars(select(Lead)).one()
        one_text = CadenceDefinition(key="one-text", steps=[{"after": 0, "text": "Thanks for calling."}])
        two_texts = CadenceDefinition(
            key="two-texts", steps=[{"after": 0, "text": "Thanks."}, {"after": 3600, "text": "Still there?"}]
        )
        session.add_all([one_text, two_texts])
        session.flush()
        done = services.enrol(session, lead, one_text, trigger="missed_call", from_number=SIMULTANEOUS, now=now)
        going = services.enrol(session, lead, two_texts, trigger="missed_call", from_number=SIMULTANEOUS, now=now)
        assert done is not None
        assert going is not None
        done_id, going_id = done.id, going.id
    with db.session() as session:
        assert session.get(CadenceEnrolment, done_id).status == EnrolmentStatus.COMPLETED.value
        assert session.get(CadenceEnrolment, going_id).status == EnrolmentStatus.ACTIVE.value
        completed = [
            e.data["cadence"] for e in session.scalars(select(LeadEvent).where(LeadEvent.kind == "cadence-completed"))
        ]
        assert completed == ["one-text"]
