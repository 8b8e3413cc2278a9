"""The intake's store-then-build path at the database: one INSERT for a document, claims that give each
record to one worker, a claim that is no longer ours building nothing."""

from __future__ import annotations

from typing import Any

import pytest
from redis import Redis
from sqlalchemy import select

from gateway.jobs import Lane, make_queue
from gateway.models import Lead, Store
from intake import services
from intake.adf import parse_adf
from intake.models import IntakeChannel, IntakeRecord
from tests.intake.test_views import adf, post_adf, prospect
from tests.support.api import ApiClient

pytestmark = pytest.mark.usefixtures("intake_config")


def store_documents(db: Any, clock: Any, count: int) -> list[int]:
    ids = []
    with db.session() as session:
        store = session.scalar(select(Store).where(Store.key == "north-honda"))
        for n in range(count):
            document = parse_adf(adf(prospect(f"S-{n}", f"+1301555{2000 + n:04d}")))
            ids.extend(item.intake_id for item in services.store_adf(
                session, store, document, IntakeChannel.ADF_HTTP, clock.now()
            ))
    return ids


def test_two_workers_claim_different_records(db: Any, clock: Any) -> None:
    ids = store_documents(db, clock, 6)
    first = db.sessions()
    second = db.sessions()
    try:
        mine = services.claim_pending(first, clock.now(), 4)
        if db.dialect == "postgresql":
            # Both claims at once, neither committed: the second skips the rows the first holds.
            theirs = services.claim_pending(second, clock.now(), 4)
            first.commit()
            second.commit()
        else:
            first.commit()  # SQLite: one writer at a time, the second claim comes after
            theirs = services.claim_pending(second, clock.now(), 4)
            second.commit()
    finally:
        first.close()
        second.close()
    assert len(mine) == 4
    assert len(theirs) == 2
    assert {record_id for record_id, _ in mine} | {record_id for record_id, _ in theirs} == set(ids)
    with db.session() as session:
        assert services.claim_pending(session, clock.now(), 10) == []


def test_a_claim_taken_again_builds_nothing_under_the_old_attempt(db: Any, clock: Any) -> None:
    [record_id] = store_documents(db, clock, 1)
    with db.session() as session:
        [(_, attempt)] = services.claim_pending(session, clock.now(), 1)
    with db.session() as session:
        session.get(IntakeRecord, record_id).attempts += 1  # another worker's claim since
    with db.session() as session:
        assert services.build_record(session, record_id, attempt, clock.now()) is None
    with db.session() as session:
        taken = services.build_record(session, record_id, attempt + 1, clock.now())
        assert taken is not None
    with db.session() as session:
        assert session.get(IntakeRecord, record_id).lead_id == taken.lead.id
        assert len(list(session.scalars(select(Lead)))) == 1


def test_many_documents_queue_one_build_job(api: ApiClient, db: Any, redis: Redis, work: Any) -> None:
    for n in range(5):
        assert post_adf(api, adf(prospect(f"Q-{n}", f"+1301555{3000 + n:04d}"))).status_code == 202
    assert make_queue(redis, Lane.URGENT).count == 1  # the first document's; it builds the others too
    work()
    with db.session() as session:
        assert all(record.lead_id is not None for record in session.scalars(select(IntakeRecord)))
        assert len(list(session.scalars(select(Lead)))) == 5
    assert post_adf(api, adf(prospect("Q-9", "+13015553009"))).status_code == 202
    assert make_queue(redis, Lane.URGENT).count == 1  # the flag went down with the last job
