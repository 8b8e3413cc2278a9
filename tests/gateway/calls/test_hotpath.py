"""The incoming-call writer: one thread per process commits what the request threads queue, many calls to a
transaction; `write` waits for the commit, `log` does not while the database is known to be healthy."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from gateway.calls import hotpath
from gateway.calls.hotpath import DatabaseUnavailable, HotPath, RingingCall, RingState, Statements
from gateway.database import make_engine
from gateway.models import Call
from gateway.simulator import new_sid
from tests.support import postgres
from tests.support.concurrency import at_once
from tests.support.unreachable import dead_postgres

NOW = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[3]


def ringing(sid: str, store_id: int) -> RingingCall:
    return RingingCall(sid=sid, caller="+12025550147", to="+12025550123", status="ringing", store_id=store_id,
                       tracked_number_id=None, after_hours=True, steps=[], now=NOW)


def log_ringing(sid: str, store_id: int):
    return lambda db: db.ring(ringing(sid, store_id))


@pytest.fixture
def store_id(configured, db) -> int:
    from gateway.models import Store

    with db.session() as session:
        return session.scalars(select(Store.id)).first()


@pytest.fixture
def writer(db):
    hot = HotPath(db.engine)
    yield hot
    hot.close()


def sids_in(db) -> list[str]:
    with db.session() as session:
        return list(session.scalars(select(Call.sid)))


def test_many_threads_each_get_their_own_call_committed(writer, db, store_id):
    sids = [new_sid("CA") for _ in range(160)]

    def run(part: list[str]) -> list[RingState]:
        return [writer.write(log_ringing(sid, store_id)) for sid in part]

    parts = [sids[k::8] for k in range(8)]
    results = at_once(None, *(lambda part=part: run(part) for part in parts))
    assert sorted(sids_in(db)) == sorted(sids)
    assert [state.sid for states in results for state in states] == [sid for part in parts for sid in part]


def test_a_retried_call_is_logged_once_and_answered_as_first_recorded(writer, db, store_id):
    sid = new_sid("CA")
    first = writer.write(log_ringing(sid, store_id))
    again = writer.write(log_ringing(sid, store_id))
    assert first == again
    assert sids_in(db) == [sid]


def test_one_failing_piece_of_work_does_not_take_the_others_down(writer, db, store_id):
    sids = [new_sid("CA") for _ in range(24)]

    def run(index: int, sid: str) -> BaseException | None:
        def work(statements: Statements):
            if index == 5:
                raise ValueError("a bug in one call's work")
            return log_ringing(sid, store_id)(statements)

        try:
            writer.write(work)
        except ValueError as error:
            return error
        return None

    outcomes = at_once(None, *(lambda i=i, sid=sid: run(i, sid) for i, sid in enumerate(sids)))
    assert [str(e) for e in outcomes if e is not None] == ["a bug in one call's work"]  # not disguised as the database
    assert sorted(sids_in(db)) == sorted(s for i, s in enumerate(sids) if i != 5)


def test_a_database_that_is_not_there_raises_database_unavailable(store_id):
    writer = HotPath(make_engine(dead_postgres()))
    with pytest.raises(DatabaseUnavailable):
        writer.write(log_ringing(new_sid("CA"), store_id))
    with pytest.raises(DatabaseUnavailable):  # and again: nothing is left half-open
        writer.write(log_ringing(new_sid("CA"), store_id))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_worker_process_writes_on_its_own_connection(writer, db, store_id):
    parent_sid, child_sid, after_sid = new_sid("CA"), new_sid("CA"), new_sid("CA")
    writer.write(log_ringing(parent_sid, store_id))  # the parent's connection is open now
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            writer.write(log_ringing(child_sid, store_id))
            os._exit(0)
        except BaseException:
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    writer.write(log_ringing(after_sid, store_id))
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Call)) == 3


def test_log_waits_for_the_first_commit_then_queues_and_the_row_follows(writer, db, store_id):
    first, second = new_sid("CA"), new_sid("CA")
    lost: list[BaseException] = []
    assert not writer.healthy  # nothing committed yet: the first call proves the database
    assert writer.log(log_ringing(first, store_id), lost.append) is False  # it waited for its commit
    assert sids_in(db) == [first]
    assert writer.healthy
    assert writer.log(log_ringing(second, store_id), lost.append) is True  # answered before its commit
    assert writer.flush(timeout=120)  # a guard for a busy machine, not a measure
    assert sorted(sids_in(db)) == sorted([first, second])
    assert lost == []


def test_queued_work_the_database_refuses_goes_to_lost_and_the_next_call_waits(writer, db, store_id):
    writer.write(log_ringing(new_sid("CA"), store_id))
    lost: list[BaseException] = []
    refused = new_sid("CA")
    assert writer.log(log_ringing(refused, store_id + 1000), lost.append) is True  # no such store
    assert writer.flush(timeout=120)  # a guard for a busy machine, not a measure
    assert len(lost) == 1
    assert isinstance(lost[0], DatabaseUnavailable)
    assert refused not in sids_in(db)
    assert not writer.healthy  # so the next call waits for its commit, and learns whether it happened
    later = new_sid("CA")
    assert writer.log(log_ringing(later, store_id), lost.append) is False
    assert later in sids_in(db)
    assert writer.healthy
    assert len(lost) == 1


def test_a_commit_that_hangs_makes_the_writer_unhealthy(writer, store_id, monkeypatch):
    monkeypatch.setattr(hotpath, "STALL_SECONDS", 0.05)
    writer.write(log_ringing(new_sid("CA"), store_id))
    release, hanging, finished = threading.Event(), threading.Event(), threading.Event()

    def slow(db: Statements):
        hanging.set()
        release.wait(60)
        finished.set()
        return log_ringing(new_sid("CA"), store_id)(db)

    writer.log(slow, lambda error: None)
    assert hanging.wait(30)
    for _ in range(600):  # the stall is noticed once STALL_SECONDS have passed
        if not writer.healthy:
            break
        time.sleep(0.05)
    assert not writer.healthy
    with pytest.raises(DatabaseUnavailable):  # the caller goes to the failsafe now, not after the commit
        writer.log(log_ringing(new_sid("CA"), store_id), lambda error: None)
    assert not finished.is_set()  # refused while the commit still hung
    release.set()
    assert writer.flush(timeout=120)  # a guard for a busy machine, not a measure
    assert writer.healthy


def test_close_commits_what_is_queued(db, store_id):
    writer = HotPath(db.engine)
    writer.write(log_ringing(new_sid("CA"), store_id))
    queued = [new_sid("CA") for _ in range(20)]
    for sid in queued:
        writer.log(log_ringing(sid, store_id), lambda error: None)
    writer.close()
    assert set(queued) <= set(sids_in(db))
    with pytest.raises(DatabaseUnavailable):
        writer.write(log_ringing(new_sid("CA"), store_id))


def test_reads_run_beside_the_writer_and_a_dead_database_raises_database_unavailable(writer, store_id):
    assert writer.read(lambda db: db.owner_of_open_lead("+12025550147", store_id)) is None
    dead = HotPath(make_engine(dead_postgres()))
    with pytest.raises(DatabaseUnavailable):
        dead.read(lambda db: db.owner_of_open_lead("+12025550147", store_id))


@pytest.mark.skipif(not postgres.available(), reason="PostgreSQL binaries not installed")
def test_a_postgres_server_that_goes_away_is_noticed_before_the_next_call():
    server = postgres.PostgresServer()
    server.start()
    try:
        writer = HotPath(make_engine(server.admin_dsn.replace("postgresql://", "postgresql+psycopg://")))
        assert writer.write(lambda db: db.fetch("SELECT 1", {})) == (1,)
        assert writer.healthy
        server.stop()
        deadline = time.monotonic() + 5
        while writer.healthy and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not writer.healthy  # noticed with no call in flight: the next caller gets the failsafe
        with pytest.raises(DatabaseUnavailable):
            writer.log(lambda db: db.fetch("SELECT 1", {}), lambda error: None)
        writer.close()
    finally:
        server.stop()


def test_queued_rings_share_one_statement_and_a_bad_one_is_set_apart(writer, db, store_id, monkeypatch):
    monkeypatch.setattr(hotpath, "LINGER_SECONDS", 0.2)  # everything below lands in one transaction
    writer.write(log_ringing(new_sid("CA"), store_id))
    good = [new_sid("CA") for _ in range(30)]
    bad = new_sid("CA")
    lost: list[tuple[str, BaseException]] = []
    for sid in [*good[:15], bad, *good[15:], good[3]]:  # and a provider retry of one of them
        call = ringing(sid, store_id + 1000 if sid == bad else store_id)
        writer.log(lambda db, call=call: db.ring_later(call), lambda error, sid=sid: lost.append((sid, error)))
    assert writer.flush(timeout=120)  # a guard for a busy machine, not a measure
    assert set(good) <= set(sids_in(db))
    assert bad not in sids_in(db)
    assert [sid for sid, _ in lost] == [bad]


EXITING = """
import sys
from gateway.calls import hotpath
from gateway.database import make_engine
from gateway.calls.hotpath import HotPath
from tests.gateway.calls.test_hotpath import log_ringing, ringing

url, store_id, *sids = sys.argv[1:]
writer = HotPath(make_engine(url))
writer.write(log_ringing(sids[0], int(store_id)))
hotpath.LINGER_SECONDS = 3600.0  # nothing below would be committed before the process exits on its own
for sid in sids[1:]:
    call = ringing(sid, int(store_id))
    writer.log(lambda db, call=call: db.ring_later(call), print)
sys.exit(0)
"""


def test_what_is_queued_when_the_process_exits_is_committed(db, store_id):
    sids = [new_sid("CA") for _ in range(6)]
    url = db.engine.url.render_as_string(hide_password=False)
    # The linger is an hour: the process ends within the timeout only if exiting commits what is queued.
    subprocess.run([sys.executable, "-c", EXITING, url, str(store_id), *sids], check=True, cwd=ROOT, timeout=300)
    assert set(sids) <= set(sids_in(db))


def test_a_writer_thread_that_died_is_replaced(writer, db, store_id):
    writer.write(log_ringing(new_sid("CA"), store_id))
    with writer._turn:  # the thread ends as a crash would end it
        writer._closing = True
        writer._turn.notify_all()
    assert writer._writer is not None
    writer._writer.join(5)
    writer._closing = False
    sid = new_sid("CA")
    writer.log(log_ringing(sid, store_id), lambda error: None)
    assert writer.flush(timeout=120)  # a guard for a busy machine, not a measure
    assert sid in sids_in(db)
