"""SQLite's write lock (`gateway.database.WriteLock`): bulk work gives way to the writers waiting for it,
for a bounded time, and a session begun as bulk work takes it that way."""

from __future__ import annotations

import fcntl
import os
import threading
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


def test_bulk_work_waits_while_a_writer_waits_though_the_lock_is_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database, "GIVE_WAY_SECONDS", 60.0)
    path = tmp_path / "db.sqlite3-write.lock"
    waiting = os.open(f"{path}-waiting", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(waiting, fcntl.LOCK_SH)  # a writer on its way to the lock
    bulk = WriteLock(str(path))
    taken = threading.Event()
    thread = threading.Thread(target=lambda: (bulk.acquire(give_way=True), taken.set()), daemon=True)
    thread.start()
    try:
        assert not taken.wait(0.5)  # the lock is free, and still it lets the writer go first
        fcntl.flock(waiting, fcntl.LOCK_UN)
        assert taken.wait(30)
    finally:
        os.close(waiting)
        thread.join(5)
        bulk.close()


def test_bulk_work_takes_the_lock_after_its_bound_whatever_waits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database, "GIVE_WAY_SECONDS", 0.2)
    path = tmp_path / "db.sqlite3-write.lock"
    stuck = os.open(f"{path}-waiting", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(stuck, fcntl.LOCK_SH)  # a writer that says it waits and never comes
    bulk = WriteLock(str(path))
    taken = threading.Event()

    def take() -> None:
        bulk.acquire(give_way=True)
        taken.set()

    thread = threading.Thread(target=take, daemon=True)
    thread.start()
    try:
        assert taken.wait(30)
    finally:
        os.close(stuck)
        thread.join(5)
        bulk.close()


@pytest.mark.skipif(DATABASE_KIND != "sqlite", reason="PostgreSQL has no write lock to give way on")
def test_a_session_begun_as_bulk_work_takes_the_write_lock_giving_way(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []
    original = database._after_the_waiting

    def noted(fd: int, waiting: int) -> None:
        seen.append(fd)
        original(fd, waiting)

    monkeypatch.setattr(database, "_after_the_waiting", noted)
    with db.session() as session:
        session.scalar(select(Store.id))
    assert seen == []
    with db.session() as session:
        begin_giving_way(session)
        session.scalar(select(Store.id))
    assert len(seen) == 1


@pytest.mark.skipif(DATABASE_KIND != "sqlite", reason="PostgreSQL has no write lock to give way on")
def test_crm_deliveries_are_claimed_and_recorded_giving_way(
    app: Flask, configured: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []
    original = database._after_the_waiting

    def noted(fd: int, waiting: int) -> None:
        seen.append(fd)
        original(fd, waiting)

    monkeypatch.setattr(database, "_after_the_waiting", noted)
    with app.app_context():
        current = runtime.current()
        assert delivery.claim(current) == []
        assert len(seen) == 1
        delivery.record(current, [])
    assert len(seen) == 2
