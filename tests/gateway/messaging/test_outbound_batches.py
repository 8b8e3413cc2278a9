"""Texts sent in batches (gateway.messaging.outbound.send_messages): one claim, the guard per text, the provider
a few at once, every answer recorded; a recipient's texts in order; never a text twice. A send job takes
along the texts of the jobs queued behind it (gateway.jobs.take_waiting)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from redis import Redis
from sqlalchemy import func, select

from gateway.crm.delivery import deliver_due_job
from gateway.jobs import MERGED_BATCH, Lane, PendingJob, enqueue, make_queue, merged, take_waiting
from gateway.leads import Origin, contact_for_phone, open_or_join_lead
from gateway.messaging import outbound
from gateway.messaging.outbound import (
    mark_stuck_sends,
    queue_text,
    queue_texts,
    send_messages,
    send_messages_job,
    text_values,
)
from gateway.models import Lead, Message, Store
from gateway.reconcile.doubt import Doubts, settle_texts_in_doubt
from gateway.simulator import play_call
from gateway.worker import GatewayWorker
from tests.support.concurrency import at_once
from tests.support.config import SIMULTANEOUS
from tests.support.processes import ROOT, wait_for, worker_env
from tests.support.unreachable import dead_redis

CUSTOMERS = [f"+1202555{n:04d}" for n in range(3100, 3112)]


AGENT_PHONE = "+12025550111"  # alice's


def write(db, clock, to, body, enqueue=False, **contact_changes) -> int:
    """A text to a customer; enqueue=True: with its own urgent job, queued as its transaction commits."""
    with db.session() as session:
        contact = contact_for_phone(session, to)
        for name, value in contact_changes.items():
            setattr(contact, name, value)
        return queue_text(session, to=to, from_=SIMULTANEOUS, body=body, kind="api", now=clock.now(),
                          contact=contact, enqueue=enqueue).id


def write_alert(db, clock, body, lead_id=None, enqueue=False) -> int:
    with db.session() as session:
        lead = session.get(Lead, lead_id) if lead_id else None
        return queue_text(session, to=AGENT_PHONE, from_=SIMULTANEOUS, body=body, kind="alert", now=clock.now(),
                          lead=lead, enqueue=enqueue).id


def lead_of(db, clock, customer) -> int:
    with db.session() as session:
        store = session.scalar(select(Store).where(Store.key == "north-honda"))
        contact = contact_for_phone(session, customer)
        lead, _ = open_or_join_lead(session, contact, Origin(store.id, "sales", "Test", None), clock.now())
        return lead.id


def statuses(db, ids) -> dict[int, str]:
    with db.session() as session:
        return {m.id: m.status for m in session.scalars(select(Message).where(Message.id.in_(ids)))}


@pytest.mark.usefixtures("configured")
def test_a_batch_sends_each_text_once_and_records_every_answer(app, db, clock, fake_twilio):
    ids = [write(db, clock, to, f"Hello {to}") for to in CUSTOMERS]
    with app.app_context():
        outcome = send_messages(ids)
    assert set(outcome.values()) == {"queued"}
    assert sorted(m["To"] for m in fake_twilio.messages) == sorted(CUSTOMERS)
    with db.session() as session:
        rows = list(session.scalars(select(Message).where(Message.id.in_(ids))))
        assert all(m.sid and m.sent_at == clock.now() and m.claimed_at is not None for m in rows)
    with app.app_context():
        assert set(send_messages(ids).values()) == {"skipped"}  # sent already: nothing claimed
    assert len(fake_twilio.messages) == len(CUSTOMERS)


@pytest.mark.usefixtures("configured")
def test_the_guard_refuses_defers_and_lets_through_text_by_text(app, db, clock, fake_twilio):
    fine = write(db, clock, CUSTOMERS[0], "See you at 5")
    opted_out = write(db, clock, CUSTOMERS[1], "Any news?", opted_out=True, opted_out_at=clock.now())
    landline = write(db, clock, CUSTOMERS[2], "Any news?", textable=False)
    with app.app_context():
        outcome = send_messages([fine, opted_out, landline])
    assert outcome == {fine: "queued", opted_out: "refused", landline: "refused"}
    assert [m["To"] for m in fake_twilio.messages] == [CUSTOMERS[0]]


@pytest.mark.usefixtures("configured")
def test_one_recipients_provider_error_leaves_the_others_sent(app, db, clock, fake_twilio):
    fake_twilio.set_error_for_recipient(CUSTOMERS[1], 21610)  # the carrier says this one opted out
    ids = [write(db, clock, to, "Your car is ready") for to in CUSTOMERS[:3]]
    with app.app_context():
        outcome = send_messages(ids)
    assert outcome == {ids[0]: "queued", ids[1]: "failed", ids[2]: "queued"}
    with db.session() as session:
        assert contact_for_phone(session, CUSTOMERS[1]).opted_out


@pytest.mark.usefixtures("configured")
def test_a_recipients_second_text_in_a_batch_goes_after_the_first(app, db, clock, fake_twilio):
    first = write(db, clock, CUSTOMERS[0], "first")
    other = write(db, clock, CUSTOMERS[1], "other")
    second = write(db, clock, CUSTOMERS[0], "second")
    with app.app_context():
        outcome = send_messages([first, other, second])
    assert outcome == {first: "queued", other: "queued", second: "queued"}
    to_first = [m["Body"] for m in fake_twilio.messages if m["To"] == CUSTOMERS[0]]
    assert to_first == ["first", "second"]
    with db.session() as session:
        assert session.get(Message, second).attempts == 1  # released and claimed again, counted once


@pytest.mark.usefixtures("configured")
def test_two_workers_sending_the_same_batch_send_each_text_once(app, db, clock, fake_twilio):
    ids = [write(db, clock, to, "Race") for to in CUSTOMERS]
    fake_twilio.set_latency(0.02)
    outcomes = at_once(app, lambda: send_messages(ids), lambda: send_messages(ids))
    assert sorted(m["To"] for m in fake_twilio.messages) == sorted(CUSTOMERS)
    for message_id in ids:
        assert sorted(o[message_id] for o in outcomes) == ["queued", "skipped"]


@pytest.mark.usefixtures("configured")
def test_queue_texts_writes_an_origin_once(app, db, clock):
    def row(origin: str, body: str):
        return text_values(to=CUSTOMERS[0], from_=SIMULTANEOUS, body=body, kind="cadence", now=clock.now(),
                           automated=True, origin=origin)

    with db.session() as session:
        first = queue_texts(session, [row("test:1", "one"), row("test:2", "two")], clock.now(), enqueue=False)
    with db.session() as session:
        again = queue_texts(session, [row("test:2", "changed"), row("test:3", "three")], clock.now(),
                            enqueue=False)
        assert again["test:2"].id == first["test:2"].id
        assert again["test:2"].body == "two"
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Message)) == 3


@pytest.mark.usefixtures("configured")
def test_a_deferred_text_in_a_batch_waits_with_its_time(app, db, clock, fake_twilio):
    clock.set(clock.now().replace(hour=3))  # 22:00 the evening before in New York: quiet hours
    late = write(db, clock, CUSTOMERS[0], "Tomorrow?")
    with app.app_context():
        assert send_messages([late]) == {late: "pending"}
    with db.session() as session:
        message = session.get(Message, late)
        assert message.refusal_code == "quiet_hours"
        assert message.send_after is not None
        assert message.send_after > clock.now()
        assert message.send_after - clock.now() < timedelta(hours=12)
    assert fake_twilio.messages == []


@pytest.mark.usefixtures("configured")
def test_a_cadence_jobs_texts_go_in_chunks_with_each_customers_texts_together_and_in_order(
    app, db, clock, fake_twilio, monkeypatch
):
    from cadences import jobs

    monkeypatch.setattr(jobs, "SEND_CHUNK", 2)
    a1, a2, a3 = (write(db, clock, CUSTOMERS[0], f"a{n}") for n in (1, 2, 3))
    b = write(db, clock, CUSTOMERS[1], "b")
    c = write(db, clock, CUSTOMERS[2], "c")
    with app.app_context():
        jobs.send_texts([[b], [a1, a2, a3], [c]])  # a group larger than a chunk still goes whole
    assert [m["Body"] for m in fake_twilio.messages if m["To"] == CUSTOMERS[0]] == ["a1", "a2", "a3"]
    assert sorted(m["Body"] for m in fake_twilio.messages) == ["a1", "a2", "a3", "b", "c"]
    assert set(statuses(db, [a1, a2, a3, b, c]).values()) == {"queued"}


@pytest.mark.usefixtures("configured")
def test_a_missed_calls_first_text_and_alert_go_in_one_urgent_job(app, poster, redis, fake_twilio):
    list(play_call(poster, to=SIMULTANEOUS, caller=CUSTOMERS[0], outcome="no-answer"))
    urgent = make_queue(redis, Lane.URGENT)
    jobs = urgent.get_jobs()
    assert [job.func_name for job in jobs] == ["gateway.messaging.outbound.send_messages_job"]
    assert len(jobs[0].args[0]) == 2  # the customer's text and the owner's alert
    with app.app_context():
        GatewayWorker([urgent], connection=redis).work(burst=True, max_jobs=1)
    sent = [m["To"] for m in fake_twilio.messages]
    assert CUSTOMERS[0] in sent
    assert any(to != CUSTOMERS[0] for to in sent)  # the owner's alert, in the same job


def _job(ids, lane=Lane.URGENT, func=send_messages_job, **rest):
    return PendingJob(func, (ids,), lane=lane, batch=True, **rest)


def test_merged_joins_a_transactions_batch_jobs_per_function_and_lane_in_order():
    other = PendingJob(deliver_due_job, lane=Lane.CRM)
    jobs = merged([_job([1]), other, _job([2, 1]), _job([3], lane=Lane.DEFAULT), _job([4])])
    assert [(job.func, job.lane, job.args) for job in jobs] == [
        (send_messages_job, Lane.URGENT, ([1, 2, 4],)),
        (deliver_due_job, Lane.CRM, ()),
        (send_messages_job, Lane.DEFAULT, ([3],)),
    ]
    named = _job([5], job_id="fixed")  # a job with its own id stays as it is
    assert merged([named, _job([6])]) == [named, _job([6])]
    many = merged([_job(list(range(n * 10, n * 10 + 10))) for n in range(12)])
    assert [len(job.args[0]) for job in many] == [MERGED_BATCH, MERGED_BATCH, 20]
    assert [i for job in many for i in job.args[0]] == list(range(120))


# --- a job takes along the texts of the jobs queued behind it -------------------------------------------


def test_take_waiting_gives_the_queued_jobs_ids_oldest_first_and_crosses_off_a_jobs_own(redis):
    def other_job(ids: list[int]) -> None: ...

    assert enqueue(redis, [_job([1, 2]), _job([3]), _job([4, 5]), _job([6]), _job([9], func=other_job)])
    assert take_waiting(redis, send_messages_job, [1, 2], 2) == [3, 4]
    # 3 was taken along: its job takes nothing more, and leaves the queue at once.
    assert take_waiting(redis, send_messages_job, [3], 10) == []
    assert take_waiting(redis, send_messages_job, [4, 5], 10) == [6]  # 5 was still listed: 4 crossed off too
    assert take_waiting(redis, send_messages_job, [6], 10) == []
    assert take_waiting(redis, other_job, [9], 10) == []  # only functions marked `takes_waiting` list ids
    assert len(make_queue(redis, Lane.URGENT).get_jobs()) == 5  # every job is still queued with its own ids


def test_take_waiting_without_redis_gives_none():
    assert take_waiting(Redis.from_url(dead_redis()), send_messages_job, [1], 5) == []


@pytest.mark.usefixtures("configured")
def test_a_send_job_takes_the_queued_jobs_texts_along_and_the_others_find_theirs_sent(app, db, clock, redis,
                                                                                      fake_twilio):
    ids = [write(db, clock, to, f"Hello {to}", enqueue=True) for to in CUSTOMERS[:5]]
    ids.append(write_alert(db, clock, "Missed call", enqueue=True))
    urgent = make_queue(redis, Lane.URGENT)
    assert len(urgent.get_jobs()) == 6  # one job a transaction
    with app.app_context():
        GatewayWorker([urgent], connection=redis).work(burst=True, max_jobs=1)
    assert sorted(m["To"] for m in fake_twilio.messages) == sorted([*CUSTOMERS[:5], AGENT_PHONE])
    assert set(statuses(db, ids).values()) == {"queued"}
    with app.app_context():
        GatewayWorker([urgent], connection=redis).work(burst=True)  # the other five jobs: nothing left
    assert len(fake_twilio.messages) == 6


@pytest.mark.usefixtures("configured")
def test_two_jobs_taking_each_others_texts_along_send_each_text_once(app, db, clock, fake_twilio):
    ids = [write(db, clock, to, "Race") for to in CUSTOMERS[:6]]
    fake_twilio.set_latency(0.02)
    outcomes = at_once(app, lambda: send_messages([ids[0]], along=ids[1:]),
                       lambda: send_messages([ids[1]], along=[ids[0], *ids[2:]]))
    assert sorted(m["To"] for m in fake_twilio.messages) == sorted(CUSTOMERS[:6])
    assert set(statuses(db, ids).values()) == {"queued"}
    sent = [message_id for outcome in outcomes for message_id, status in outcome.items() if status == "queued"]
    assert sorted(sent) == sorted(ids)  # each text claimed by one of the two


@pytest.mark.usefixtures("configured")
def test_a_worker_killed_while_its_job_and_the_texts_it_took_along_wait_on_the_provider_sends_none_twice(
    app, db, clock, redis, settings, fake_twilio, tmp_path
):
    """... and the provider's log settles them: each text it took is recorded with its SID."""
    # Alerts to one agent about four leads (alerts go at any hour): four jobs, the first takes the rest along.
    ids = [write_alert(db, clock, f"lead {n}", lead_of(db, clock, CUSTOMERS[n]), enqueue=True) for n in range(4)]
    fake_twilio.set_latency(3.0)
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log_file:
        worker = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "worker", "--lanes", "urgent"], cwd=ROOT,
            env=worker_env(settings, settings.redis_url or "", tmp_path / "worker"),
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, start_new_session=True,
        )
    try:
        # One job claimed all four and sent them: the provider holds the four requests.
        assert wait_for(lambda: fake_twilio.waiting == 4, 60), log_path.read_text()
        assert set(statuses(db, ids).values()) == {"sending"}
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    assert wait_for(lambda: fake_twilio.waiting == 0, 60)  # it took them; its answers reached no one
    fake_twilio.set_latency(0)
    timed_out = datetime.now(UTC) + timedelta(seconds=settings.send_claim_timeout + 1)
    with app.app_context():
        GatewayWorker([make_queue(redis, Lane.URGENT)], connection=redis).work(burst=True)  # the other jobs
        with db.session() as session:  # the sweep, once the claims are older than the timeout
            mark_stuck_sends(session, timed_out)
    assert statuses(db, ids) == {message_id: "unknown" for message_id in ids}  # in doubt: never sent again
    assert sorted(m["Body"] for m in fake_twilio.messages) == [f"lead {n}" for n in range(4)]  # each once

    with app.app_context():  # reconciliation: the provider's log has all four
        current = app.extensions["gateway"]
        doubts, _ = settle_texts_in_doubt(current.database.sessions, current.provider, timed_out,
                                          timedelta(seconds=settings.send_claim_timeout), [])
    assert doubts == Doubts(taken=4)
    assert set(statuses(db, ids).values()) == {"queued"}
    with db.session() as session:
        recorded = {m.body: m.sid for m in session.scalars(select(Message).where(Message.id.in_(ids)))}
    assert recorded == {m["Body"]: m["sid"] for m in fake_twilio.messages}
    assert len(fake_twilio.messages) == 4


@pytest.mark.usefixtures("configured")
def test_a_text_taken_along_keeps_its_customers_order(app, db, clock, fake_twilio):
    mine = write(db, clock, CUSTOMERS[0], "mine")
    after_mine = write(db, clock, CUSTOMERS[0], "after mine")  # another job's, to the same customer
    first = write(db, clock, CUSTOMERS[1], "first")
    second = write(db, clock, CUSTOMERS[1], "second")
    busy = write(db, clock, CUSTOMERS[2], "on its way")
    waiting = write(db, clock, CUSTOMERS[2], "after it")
    with db.session() as session:
        session.get(Message, busy).status = "sending"  # another worker is sending it
    with app.app_context():
        outcome = send_messages([mine], along=[second, waiting, first, after_mine])
    # Left to their own jobs: the text to the job's own customer, and the one whose customer has a text in flight.
    assert outcome == {mine: "queued", first: "queued", second: "queued"}
    assert statuses(db, [after_mine, waiting]) == {after_mine: "pending", waiting: "pending"}
    assert [m["Body"] for m in fake_twilio.messages if m["To"] == CUSTOMERS[1]] == ["first", "second"]
    with app.app_context():
        assert send_messages([after_mine]) == {after_mine: "queued"}
    assert [m["Body"] for m in fake_twilio.messages if m["To"] == CUSTOMERS[0]] == ["mine", "after mine"]


@pytest.mark.usefixtures("configured")
def test_an_agents_alerts_about_different_leads_go_together_and_about_one_lead_in_order(app, db, clock, fake_twilio,
                                                                                   monkeypatch):
    rounds: list[list[str]] = []
    call_provider = outbound._call_provider

    def watched(outgoing):
        rounds.append(sorted(text.body for text in outgoing))
        return call_provider(outgoing)

    monkeypatch.setattr(outbound, "_call_provider", watched)
    leads = [lead_of(db, clock, customer) for customer in CUSTOMERS[:3]]
    own = write_alert(db, clock, "lead 0: missed call", leads[0])
    taken = write_alert(db, clock, "lead 1: missed call", leads[1])
    in_flight = write_alert(db, clock, "lead 2: earlier text", leads[2])
    with db.session() as session:
        session.get(Message, in_flight).status = "sending"  # another worker is sending it
    third = write_alert(db, clock, "lead 2: missed call", leads[2])
    again = write_alert(db, clock, "lead 0: text", leads[0])
    with app.app_context():
        outcome = send_messages([own, again], along=[third, taken])
    assert outcome == {own: "queued", again: "queued", taken: "queued"}
    # All to one agent: two leads' alerts in one round; the second about lead 0 after the first; lead 2's
    # waits for the one on its way, left to its own job.
    assert rounds == [["lead 0: missed call", "lead 1: missed call"], ["lead 0: text"]]
    assert statuses(db, [third]) == {third: "pending"}
