"""SQLite's write lock (`gateway.database.WriteLock`): bulk work gives way to the writers waiting for it,
for a bounded time, and a session begun as bulk work takes it that way."""

from __future__ import annotations

import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select

from gateway import database, runtime
from gateway.crm import delivery
from gateway.database import Database, WriteLock, begin_giving_way
from gateway.models import Store
from tests.conftest import DATABASE_KIND


def _waiting_shown(path: Path) -> bool:
    """Whether a writer says it waits (holds the `-waiting` file shared)."""
    fd = os.open(f"{path}-waiting", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _until(condition: Any, seconds: float = 30.0) -> bool:
    done = threading.Event()
    for _ in range(int(seconds / 0.01)):
        if condition():
            return True
        done.wait(0.01)
    return False


def test_bulk_work_lets_a_waiting_writer_go_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(database, "GIVE_WAY_SECONDS", 60.0)  # the order, not the bound, is under test
    path = tmp_path / "db.sqlite3-write.lock"
    holder, writer, bulk = WriteLock(str(path)), WriteLock(str(path)), WriteLock(str(path))
    order: list[str] = []

    def take(lock: WriteLock, name: str, give_way: bool) -> None:
        lock.acquire(give_way=give_way)
        order.append(name)
        lock.release()

    holder.acquire()
    first = threading.Thread(target=take, args=(writer, "request", False))
    first.start()
    assert _until(lambda: _waiting_shown(path))
    second = threading.Thread(target=take, args=(bulk, "bulk", True))
    second.start()
    holder.release()
    first.join(30)
    second.join(30)
    assert order == ["request", "bulk"]
    assert not _waiting_shown(path)
    for lock in (holder, writer, bulk):
        lock.close()


@contextmanager
def _a_writer_waiting(path: Path) -> Iterator[int]:
    """A writer that says it waits for the lock (the `-waiting` file held shared) until released."""
    waiting = os.open(f"{path}-waiting", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(waiting, fcntl.LOCK_SH)
    try:
        yield waiting
    finally:
        os.close(waiting)


@contextmanager
def _bulk_taking(path: Path) -> Iterator[threading.Event]:
    """Bulk work taking the lock in a thread; the event is set once it has it."""
    bulk = WriteLock(str(path))
    taken = threading.Event()
    thread = threading.Thread(target=lambda: (bulk.acquire(give_way=True), taken.set()), daemon=True)
    thread.start()
    try:
        yield taken
    finally:
        thread.join(5)
        bulk.close()


def test_bulk_work_waits_while_a_writer_waits_though_the_lock_is_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database, "GIVE_WAY_SECONDS", 60.0)
    path = tmp_path / "db.sqlite3-write.lock"
    with _a_writer_waiting(path) as waiting, _bulk_taking(path) as taken:
        assert not taken.wait(0.5)  # the lock is free, and still it lets the writer go first
        fcntl.flock(waiting, fcntl.LOCK_UN)
        assert taken.wait(30)


def test_bulk_work_takes_the_lock_after_its_bound_whatever_waits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database, "GIVE_WAY_SECONDS", 0.2)
    path = tmp_path / "db.sqlite3-write.lock"
    with _a_writer_waiting(path), _bulk_taking(path) as taken:  # a writer that says it waits and never comes
        assert taken.wait(30)


@pytest.fixture
def giving_way(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The write lock's acquisitions that gave way, noted as they happen (SQLite only)."""
    if DATABASE_KIND != "sqlite":
        pytest.skip("PostgreSQL has no write lock to give way on")
    seen: list[int] = []
    original = database._after_the_waiting

    def noted(fd: int, waiting: int) -> None:
        seen.append(fd)
        original(fd, waiting)

    monkeypatch.setattr(database, "_after_the_waiting", noted)
    return seen


def test_a_session_begun_as_bulk_work_takes_the_write_lock_giving_way(db: Database, giving_way: list[int]) -> None:
    with db.session() as session:
        session.scalar(select(Store.id))
    assert giving_way == []
    with db.session() as session:
        begin_giving_way(session)
        session.scalar(select(Store.id))
    assert len(giving_way) == 1


def test_crm_deliveries_are_claimed_and_recorded_giving_way(
    app: Flask, configured: None, giving_way: list[int]
) -> None:
    with app.app_context():
        current = runtime.current()
        assert delivery.claim(current) == []
        assert len(giving_way) == 1
        delivery.record(current, [])
    assert len(giving_way) == 2
