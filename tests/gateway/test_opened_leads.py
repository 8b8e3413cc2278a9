"""A lead opened in the current transaction: its open task and its cadences are known from what the
transaction wrote, without asking the tables, and the answers are the ones the tables would give."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from cadences.models import CadenceEnrolment
from cadences.services import enrol
from gateway.database import Database
from gateway.leads import Origin, contact_for_phone, ensure_task, open_or_join_lead, opened_here
from gateway.models import CadenceDefinition, Lead, Store, Task, TaskKind, TaskStatus
from gateway.runtime import FrozenClock


@contextmanager
def statements(db: Database) -> Iterator[list[str]]:
    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", note)


def _origin(session: Session) -> Origin:
    store = session.scalars(select(Store).order_by(Store.id)).first()
    assert store is not None
    return Origin(store.id, "sales", "Website", None)


def _selects(seen: list[str], table: str = "") -> list[str]:
    """The SELECTs among the statements seen (those reading `table`, when given)."""
    return [s for s in seen if s.lstrip().upper().startswith("SELECT") and f"FROM {table}" in s]


def _open(session: Session, phone: str, clock: FrozenClock) -> Lead:
    contact = contact_for_phone(session, phone)
    lead, created = open_or_join_lead(session, contact, _origin(session), clock.now())
    assert created
    return lead


def test_a_new_leads_open_task_is_found_without_a_query_and_a_done_one_is_not_reused(
    db: Database, configured: None, clock: FrozenClock
) -> None:
    now = clock.now()
    due = now + timedelta(minutes=5)
    with db.session() as session:
        lead = _open(session, "+12025550177", clock)
        assert opened_here(session, lead)
        first = ensure_task(session, lead, TaskKind.CALLBACK, None, due, now)
        with statements(db) as seen:
            again = ensure_task(session, lead, TaskKind.CALLBACK, None, due, now)
        assert again is first
        assert not _selects(seen)
        review = ensure_task(session, lead, TaskKind.REVIEW, None, due, now)
        assert review is not first
        first.status = TaskStatus.DONE.value
        second = ensure_task(session, lead, TaskKind.CALLBACK, None, due, now)
        assert second is not first
        session.commit()
        assert not opened_here(session, lead)
        # After the commit the lead is an old one: the query finds the same open task.
        assert ensure_task(session, lead, TaskKind.CALLBACK, None, due, now).id == second.id
        session.commit()
        counts = dict(
            session.execute(
                select(Task.status, func.count()).where(Task.lead_id == lead.id).group_by(Task.status)
            ).all()
        )
    assert counts == {TaskStatus.OPEN.value: 2, TaskStatus.DONE.value: 1}


def test_a_lead_opened_in_a_savepoint_that_rolled_back_is_not_taken_for_new(
    db: Database, configured: None, clock: FrozenClock
) -> None:
    with db.session() as session:
        savepoint = session.begin_nested()
        lead = _open(session, "+12025550178", clock)
        assert opened_here(session, lead)
        lead_id = lead.id
        savepoint.rollback()
        # Its id may be given to the next lead opened: that one is new, this one is gone.
        assert not opened_here(session, Lead(id=lead_id))
        session.rollback()
        # A flush runs in an inner transaction of its own; its end does not forget the opened lead.
        other = _open(session, "+12025550179", clock)
        session.flush()
        assert opened_here(session, other)
        other_id = other.id
        session.rollback()
        assert not opened_here(session, Lead(id=other_id))


def test_a_new_lead_runs_a_cadence_once_in_its_transaction(
    db: Database, configured: None, clock: FrozenClock
) -> None:
    now = clock.now()
    with db.session() as session:
        definition = session.scalar(select(CadenceDefinition).where(CadenceDefinition.key == "missed-call"))
        assert definition is not None
        lead = _open(session, "+12025550180", clock)
        started = enrol(session, lead, definition, trigger="missed_call", from_number="+12025550123", now=now)
        assert started is not None
        # The cadence's last step is still to come, so a second start finds it active and adds nothing.
        assert enrol(session, lead, definition, trigger="missed_call", from_number="+12025550123", now=now) is None
        session.commit()
        assert session.scalar(
            select(func.count()).select_from(CadenceEnrolment).where(CadenceEnrolment.lead_id == lead.id)
        ) == 1


def test_a_contact_created_in_the_transaction_opens_its_lead_without_looking_for_one(
    db: Database, configured: None, clock: FrozenClock
) -> None:
    now = clock.now()
    with db.session() as session:
        origin = _origin(session)
        contact = contact_for_phone(session, "+12025550181")
        with statements(db) as seen:
            lead, created = open_or_join_lead(session, contact, origin, now)
        assert created
        assert not _selects(seen, "leads")
        # Asked again in the same transaction, the lead it opened is joined, not doubled.
        again, created_again = open_or_join_lead(session, contact, origin, now)
        assert again.id == lead.id
        assert not created_again
        session.commit()
        # In the next transaction the contact is an old one: its open lead is looked for and found.
        old = contact_for_phone(session, "+12025550181")
        with statements(db) as seen:
            joined, created_later = open_or_join_lead(session, old, origin, now)
        assert joined.id == lead.id
        assert not created_later
        assert _selects(seen, "leads")
        session.commit()
        assert session.scalar(select(func.count()).select_from(Lead).where(Lead.contact_id == contact.id)) == 1


def test_a_contact_created_in_a_savepoint_that_rolled_back_is_not_taken_for_new(
    db: Database, configured: None, clock: FrozenClock
) -> None:
    now = clock.now()
    with db.session() as session:
        origin = _origin(session)
        first = contact_for_phone(session, "+12025550182")
        lead, _ = open_or_join_lead(session, first, origin, now)
        savepoint = session.begin_nested()
        contact_for_phone(session, "+12025550183")
        savepoint.rollback()
        # The outer transaction's contact is still known, but no longer taken for one created here.
        with statements(db) as seen:
            joined, created = open_or_join_lead(session, first, origin, now)
        assert joined.id == lead.id
        assert not created
        assert _selects(seen, "leads")
