"""Delivery at volume: batches sent concurrently, order kept within a stream, a hanging CRM held apart,
a worker that dies mid-batch, and the lanes that keep a first text ahead of any CRM backlog."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from redis import Redis
from rq import Queue
from sqlalchemy import insert, select, update

from gateway import runtime
from gateway.crm import delivery
from gateway.crm.models import CrmDelivery
from gateway.crm.outbox import release_stuck_deliveries
from gateway.jobs import ALIVE_SECONDS, AliveThread, Lane, SingleJob, alive, make_queue
from gateway.models import Store
from gateway.simulator import play_call
from gateway.worker import GatewayWorker
from tests.support.config import CUSTOMER, SIMULTANEOUS
from tests.support.crm_server import FakeCrm
from tests.support.unreachable import dead_redis

SECRET = "whsec-test"
TIMEOUT = 0.3


@pytest.fixture
def settings(settings, request):
    # A short timeout where a destination hangs, so the test need not wait; elsewhere one a busy machine
    # never reaches, or a healthy CRM's slow answer would be a timeout and a retry.
    timeout = TIMEOUT if "hanging" in request.fixturenames else 5.0
    return settings.with_changes(extra={"crm_timeout": timeout})


@pytest.fixture
def healthy(clock):
    with FakeCrm(secret=SECRET, now=lambda: clock.now().timestamp()) as server:
        yield server


@pytest.fixture
def hanging(clock):
    server = FakeCrm(secret=SECRET, now=lambda: clock.now().timestamp())
    server.mode = "hang"
    with server:
        yield server


def set_crm(db, destinations):
    with db.session() as session:
        store = session.scalar(select(Store).where(Store.key == "north-honda"))
        store.crm = destinations
        session.commit()


def rows(db, **filters):
    with db.session() as session:
        query = select(CrmDelivery).order_by(CrmDelivery.id)
        for name, value in filters.items():
            query = query.where(getattr(CrmDelivery, name) == value)
        return list(session.scalars(query))


def missed_call(poster, caller=CUSTOMER):
    list(play_call(poster, to=SIMULTANEOUS, caller=caller, outcome="no-answer"))


def callers(count):
    return [f"+120255501{n:02d}" for n in range(10, 10 + count)]


@pytest.mark.usefixtures("configured")
def test_order_within_each_stream_survives_concurrent_delivery(db, poster, work, healthy, clock):
    set_crm(db, [{"type": "webhook", "url": healthy.url("/hooks"), "secret": SECRET}])
    healthy.latency = 0.05  # answers finish in any order
    for caller in callers(12):
        missed_call(poster, caller)
    for caller in callers(12)[:6]:
        missed_call(poster, caller)  # a second contact: more events on the same streams

    for _ in range(10):  # on a busy machine an answer may time out: its stream waits for the retry
        work()
        if {row.status for row in rows(db)} == {"delivered"}:
            break
        clock.advance(timedelta(minutes=2))

    written = rows(db, kind="webhook")
    assert {row.status for row in written} == {"delivered"}
    assert not healthy.duplicates
    arrived = [json.loads(request.body) for request in healthy.accepted]
    by_lead: dict[int, list[str]] = {}
    for event in arrived:
        by_lead.setdefault(event["data"]["lead"]["id"], []).append(event["id"])
    for lead_id, keys in by_lead.items():
        # Each lead's events reached the CRM in the order they were written.
        assert keys == [row.idempotency_key for row in written if row.lead_id == lead_id]
    assert len(by_lead) == 12


@pytest.mark.usefixtures("configured")
def test_a_hanging_destination_times_out_and_retries_without_holding_the_others(
    db, poster, work, healthy, hanging, clock
):
    set_crm(
        db,
        [
            {"type": "adf-http", "url": hanging.url("/adf")},
            {"type": "webhook", "url": healthy.url("/hooks"), "secret": SECRET},
        ],
    )
    for caller in callers(5):
        missed_call(poster, caller)

    work()

    assert {row.status for row in rows(db, kind="webhook")} == {"delivered"}
    stuck = rows(db, kind="adf-http")
    assert len(stuck) == 5
    assert {row.status for row in stuck} == {"pending"}
    tried = [row for row in stuck if row.attempts]
    # The first timeout paused the destination: the others waited instead of timing out one by one.
    assert 1 <= len(tried) <= delivery.PER_TARGET
    assert all("timed out" in (row.last_error or "") for row in tried)
    assert all(row.next_attempt_at >= clock.now() + timedelta(seconds=30) for row in stuck)

    # The CRM comes back: everything arrives once.
    hanging.mode = "ok"
    clock.advance(timedelta(minutes=2))
    work()
    assert {row.status for row in rows(db)} == {"delivered"}
    adf_keys = [request.key for request in hanging.accepted if request.path == "/adf"]
    assert sorted(adf_keys) == sorted(row.idempotency_key for row in stuck)
    assert not hanging.duplicates


@pytest.mark.usefixtures("configured")
def test_a_streams_due_events_go_from_one_claim_in_order(app, db, poster, healthy):
    set_crm(db, [{"type": "webhook", "url": healthy.url("/hooks"), "secret": SECRET}])
    missed_call(poster)
    written = rows(db, kind="webhook")
    assert len({row.stream for row in written}) == 1
    assert len(written) >= 3  # the lead, its owner, its task, the call...
    with app.app_context():
        current = runtime.current()
        claimed = delivery.claim(current)
        assert [a.id for a in claimed] == [row.id for row in written][: delivery.CHAIN]
        delivery.send_all(current, claimed)
    done = rows(db, kind="webhook")
    assert [row.status for row in done[: delivery.CHAIN]] == ["delivered"] * min(len(done), delivery.CHAIN)
    assert healthy.accepted_keys() == [row.idempotency_key for row in written][: delivery.CHAIN]


@pytest.mark.usefixtures("configured")
def test_a_failed_event_holds_back_the_rest_of_its_chain_unsent(app, db, poster, work, healthy, clock):
    set_crm(db, [{"type": "webhook", "url": healthy.url("/hooks"), "secret": SECRET}])
    missed_call(poster)
    healthy.mode = "error"
    with app.app_context():
        delivery.deliver_batch(runtime.current())
    [first, *rest] = rows(db, kind="webhook")
    assert len(healthy.requests) == 1  # the first failed; the others were not tried behind it
    assert (first.status, first.attempts) == ("pending", 1)
    assert first.next_attempt_at > clock.now()
    assert {(row.status, row.attempts, row.claimed_by) for row in rest} == {("pending", 0, None)}

    healthy.mode = "ok"
    clock.advance(timedelta(minutes=2))
    work()
    written = rows(db, kind="webhook")
    assert {row.status for row in written} == {"delivered"}
    assert healthy.accepted_keys() == [row.idempotency_key for row in written]  # still in stream order


@pytest.mark.usefixtures("configured")
def test_followers_go_back_when_another_worker_took_their_head_first(app, db, poster, clock):
    set_crm(db, [{"type": "webhook", "url": "http://127.0.0.1:9/hooks", "secret": SECRET}])
    missed_call(poster)
    [head, *followers] = rows(db, kind="webhook")
    now = clock.now()
    with app.app_context(), db.session() as session:
        after = delivery._followers(session, {head.stream: head.id}, now)
        asked = [head.id, *after]
        assert asked == [head.id, *[row.id for row in followers][: delivery.CHAIN - 1]]
        assert after[asked[1]] == head.id
        # Another worker claims the head between this worker's read and its claim.
        session.execute(update(CrmDelivery).where(CrmDelivery.id == head.id).values(status="delivering"))
        claimed = session.execute(
            update(CrmDelivery)
            .where(CrmDelivery.id.in_(asked), CrmDelivery.status == "pending")
            .values(status="delivering", claimed_by="this", attempts=CrmDelivery.attempts + 1)
            .returning(CrmDelivery.id)
        ).all()
        kept = delivery._released_behind_gaps(session, sorted(claimed, key=lambda row: row.id), after)
        session.commit()
    assert kept == []
    assert {(row.status, row.attempts, row.claimed_by) for row in rows(db, kind="webhook")[1:]} == {
        ("pending", 0, None)
    }


@pytest.mark.usefixtures("configured")
def test_a_worker_that_dies_mid_batch_loses_and_doubles_nothing(app, db, poster, work, healthy, clock):
    set_crm(db, [{"type": "webhook", "url": healthy.url("/hooks"), "secret": SECRET}])
    for caller in callers(4):
        missed_call(poster, caller)
    with app.app_context():
        current = runtime.current()
        claimed = delivery.claim(current)  # the batch is claimed...
        for attempt in claimed[:2]:
            delivery._send(current, attempt)  # ...two reach the CRM, then the process is killed
    assert {row.status for row in rows(db) if row.id in {a.id for a in claimed}} == {"delivering"}

    work()  # nothing more goes while the claims stand
    assert len(healthy.accepted) == 2

    clock.advance(timedelta(seconds=delivery.DEFAULT_CLAIM_TIMEOUT + 1))
    with db.session() as session:
        release_stuck_deliveries(session, clock.now())
        session.commit()
    work()

    assert {row.status for row in rows(db)} == {"delivered"}
    keys = [row.idempotency_key for row in rows(db)]
    assert sorted(healthy.accepted_keys()) == sorted(keys)  # everything, once
    assert len(healthy.duplicates) == 2  # the two sent before the kill came again; the CRM dropped them


@pytest.mark.usefixtures("configured")
def test_a_killed_workers_claims_go_again_once_its_alive_key_is_gone_not_after_the_claim_timeout(
    app, db, poster, work, healthy, clock, redis
):
    set_crm(db, [{"type": "webhook", "url": healthy.url("/hooks"), "secret": SECRET}])
    for caller in callers(3):
        missed_call(poster, caller)
    worker_process = AliveThread(redis, "host-a:4242:1")
    worker_process.start()
    try:
        with app.app_context():
            claimed = delivery.claim(runtime.current())  # claimed by the worker process, which is then killed
        assert claimed
        assert {row.claimed_by for row in rows(db, status="delivering")} == {"host-a:4242:1"}

        def sweep() -> None:
            with app.app_context(), db.session() as session:
                release_stuck_deliveries(session, clock.now())
                session.commit()

        clock.advance(timedelta(seconds=ALIVE_SECONDS + 1))
        sweep()  # still alive (a slow CRM, not a dead worker): the claims stand
        assert len(rows(db, status="delivering")) == len(claimed)
    finally:
        worker_process.stop()  # what its key's expiry does, ALIVE_SECONDS after a SIGKILL

    sweep()  # long before the claim timeout
    assert rows(db, status="delivering") == []
    assert all(row.claimed_by is None for row in rows(db))
    work()
    assert {row.status for row in rows(db)} == {"delivered"}
    assert sorted(healthy.accepted_keys()) == sorted(row.idempotency_key for row in rows(db))


class Killed(Exception):
    """Where a SIGKILL would have stopped the worker process."""


@pytest.mark.usefixtures("configured")
def test_a_worker_killed_running_the_delivery_job_holds_nothing_up_once_its_alive_key_is_gone(
    app, db, poster, work, healthy, redis
):
    set_crm(db, [{"type": "webhook", "url": healthy.url("/hooks"), "secret": SECRET}])
    for caller in callers(2):
        missed_call(poster, caller)
    crm_lane = make_queue(redis, Lane.CRM)
    assert crm_lane.count == 1
    crm_lane.empty()  # a worker process took the job from the lane...
    worker_process = AliveThread(redis, "host-a:4242:1")
    worker_process.start()
    try:

        def killed() -> bool:
            raise Killed

        with pytest.raises(Killed):
            delivery.DELIVERY.drain(redis, killed, lambda: True)  # ...and was killed running it
        assert redis.get(delivery.DELIVERY.flag) == b"host-a:4242:1"
        assert not delivery.DELIVERY.revive(redis)  # alive (a slow CRM, not a dead worker): it stands
    finally:
        worker_process.stop()  # what its key's expiry does, ALIVE_SECONDS after a SIGKILL

    missed_call(poster, callers(3)[-1])  # its deliveries' request sees the dead process's flag up...
    assert crm_lane.count == 0  # ...and queues nothing: before the sweep, nobody would deliver for a minute

    work()  # the sweep lowers the dead process's flag and queues the job, long before the flag expires

    assert {row.status for row in rows(db)} == {"delivered"}
    assert sorted(healthy.accepted_keys()) == sorted(row.idempotency_key for row in rows(db))
    assert redis.get(delivery.DELIVERY.flag) is None


def test_a_single_jobs_flag_comes_down_only_for_the_dead_process_that_holds_it(redis):
    job = delivery.DELIVERY
    job.request(redis)  # queued: no process holds it
    assert not job.revive(redis)
    assert redis.get(job.flag) == b"1"
    redis.set(job.flag, "host-b:1:1")  # running in a process that never kept an alive key, or died
    assert job.revive(redis)
    assert redis.get(job.flag) == b"1"  # queued again
    assert make_queue(redis, Lane.CRM).count == 2


def test_alive_says_nothing_when_redis_is_down():
    client = Redis.from_url(dead_redis())
    try:
        assert alive(client, {"host-a:1:1"}) is None
    finally:
        client.close()


@pytest.mark.usefixtures("configured")
def test_a_first_text_goes_while_5000_crm_deliveries_wait(app, db, poster, redis, fake_twilio, clock):
    set_crm(db, [{"type": "webhook", "url": "http://127.0.0.1:9/hooks", "secret": SECRET}])
    with db.session() as session:
        store_id = session.scalar(select(Store.id).where(Store.key == "north-honda"))
    now = clock.now()
    backlog = [
        {
            "store_id": store_id, "lead_id": None, "destination_index": 0, "kind": "webhook",
            "target": "http://127.0.0.1:9/hooks", "stream": f"s{n}", "event": "lead.updated",
            "content_type": "application/json", "payload": b"{}", "idempotency_key": f"backlog-{n}",
            "status": "pending", "attempts": 0, "next_attempt_at": now, "retry_until": now + timedelta(days=1),
            "created_at": now, "updated_at": now,
        }
        for n in range(5000)
    ]
    with db.session() as session:
        session.execute(insert(CrmDelivery), backlog)
        session.commit()
    crm_lane = make_queue(redis, Lane.CRM)
    crm_lane.enqueue_many([Queue.prepare_data(delivery.deliver_due_job) for _ in range(5000)])

    missed_call(poster)  # its first text and the owner's alert are urgent work, queued after the backlog

    with app.app_context():
        worker = GatewayWorker([make_queue(redis, lane) for lane in (Lane.URGENT, Lane.DEFAULT, Lane.CRM)],
                               connection=redis)
        worker.work(burst=True, max_jobs=1)  # one worker, most urgent lane first: one job
    sent = [m["To"] for m in fake_twilio.messages]
    assert CUSTOMER in sent
    assert len(sent) == 2  # and the owner's alert, in the same job
    assert crm_lane.count >= 5000  # the CRM lane has not been touched
    assert len(rows(db, status="pending")) >= 5000


@pytest.mark.usefixtures("configured")
def test_many_transactions_writing_deliveries_queue_one_delivery_job(db, poster, redis, work, healthy):
    set_crm(db, [{"type": "webhook", "url": healthy.url("/hooks"), "secret": SECRET}])
    for caller in callers(6):
        missed_call(poster, caller)  # each call's transactions write deliveries
    crm_lane = make_queue(redis, Lane.CRM)
    assert crm_lane.count == 1  # one job drains them all
    work(sweep=False)
    assert rows(db)
    assert {row.status for row in rows(db)} == {"delivered"}
    assert crm_lane.count == 0
    assert not redis.exists(delivery.DELIVERY.flag)  # down again once drained
    missed_call(poster, callers(7)[-1])
    assert crm_lane.count == 1  # the next delivery queues a job again


def test_a_single_job_is_queued_again_once_it_stops_or_its_flag_expires(redis):
    single = SingleJob("test:single-queued", _noop_job, Lane.CRM, seconds=1)
    lane = make_queue(redis, Lane.CRM)
    single.request(redis)
    single.request(redis)
    assert lane.count == 1  # queued once while it is queued or running
    single.lower(redis)  # the job found nothing and stopped
    single.request(redis)
    assert lane.count == 2
    redis.set(single.flag, b"1", ex=1)  # a job that was lost: its flag expires
    redis.pexpire(single.flag, 1)
    while redis.exists(single.flag):
        pass
    single.request(redis)
    assert lane.count == 3
    assert not single.take_over(redis)  # a request queued a job meanwhile: the old one stops
    single.lower(redis)
    assert single.take_over(redis)


def _noop_job() -> None:
    """A job function for the lane tests (never run)."""


def test_a_single_job_with_redis_gone_raises_nothing_and_leaves_the_work_to_the_sweep(caplog):
    gone = Redis.from_url(dead_redis(), socket_connect_timeout=1)
    single = SingleJob("test:single-queued", _noop_job, Lane.CRM)
    single.request(gone)  # logged, not raised: the committed work waits for the sweep
    assert "left for the sweep" in caplog.text
    single.keep(gone)
    single.lower(gone)
    assert single.take_over(gone)  # a running job goes on rather than leave its work unfinished
