"""The incoming-call writer: group commit among request threads, each call committed before its answer."""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from gateway.database import make_engine
from gateway.hotpath import DatabaseUnavailable, HotPath, RingState, Statements
from gateway.models import Call
from gateway.simulator import new_sid

from ..webhooks.test_failsafe import dead_postgres

NOW = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)


def log_ringing(sid: str, store_id: int):
    def work(db: Statements):
        return db.ring(sid=sid, caller="+12025550147", to="+12025550123", status="ringing", store_id=store_id,
                       tracked_number_id=None, after_hours=True, steps=[], now=NOW)

    return work


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
    results: dict[str, RingState] = {}

    def run(part: list[str]) -> None:
        for sid in part:
            results[sid] = writer.write(log_ringing(sid, store_id))

    threads = [threading.Thread(target=run, args=(sids[k::8],)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(sids_in(db)) == sorted(sids)
    assert all(results[sid].sid == sid for sid in sids)


def test_a_retried_call_is_logged_once_and_answered_as_first_recorded(writer, db, store_id):
    sid = new_sid("CA")
    first = writer.write(log_ringing(sid, store_id))
    again = writer.write(log_ringing(sid, store_id))
    assert first == again
    assert sids_in(db) == [sid]


def test_one_failing_piece_of_work_does_not_take_the_others_down(writer, db, store_id):
    sids = [new_sid("CA") for _ in range(24)]
    errors: list[BaseException] = []
    start = threading.Barrier(len(sids))

    def run(index: int, sid: str) -> None:
        def work(statements: Statements):
            if index == 5:
                raise ValueError("a bug in one call's work")
            return log_ringing(sid, store_id)(statements)

        start.wait()
        try:
            writer.write(work)
        except ValueError as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i, sid)) for i, sid in enumerate(sids)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [str(e) for e in errors] == ["a bug in one call's work"]  # not disguised as the database
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
