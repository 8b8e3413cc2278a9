"""SQLite's statistics: without them its planner found one lead's open task by walking every open task
of the store; ANALYZE (sampled) sends it to the lead's own index. The sweep refreshes them now and then."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine

from gateway import worker
from gateway.database import refresh_statistics

# The query of `gateway.leads.ensure_task`, which every missed call and every form runs.
LEADS_OPEN_TASK = "SELECT tasks.id FROM tasks WHERE tasks.lead_id = ? AND tasks.kind = ? AND tasks.status = ?"


def _plan(path: str) -> str:
    with sqlite3.connect(path) as connection:
        rows = connection.execute(f"EXPLAIN QUERY PLAN {LEADS_OPEN_TASK}", (1, "callback", "open")).fetchall()
    return " ".join(str(row[-1]) for row in rows)


def _fill_tasks(path: str, count: int) -> None:
    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA foreign_keys=OFF")  # tasks alone; their leads do not matter to the plan
        connection.executemany(
            "INSERT INTO tasks (lead_id, kind, due_at, status, escalation_level, created_at) "
            "VALUES (?, 'callback', '2026-12-03 10:00:00', ?, 0, '2026-12-03 09:00:00')",
            [(n, "open" if n % 3 else "done") for n in range(1, count + 1)],
        )
        connection.commit()
    finally:
        connection.close()


@pytest.fixture
def sqlite_path(db: Any, database_url: str) -> str:
    if not database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL gathers its own statistics")
    return database_url.removeprefix("sqlite:///")


def test_statistics_send_the_planner_to_the_leads_own_task(sqlite_path: str, database_url: str) -> None:
    _fill_tasks(sqlite_path, 600)
    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            refresh_statistics(connection)
    finally:
        engine.dispose()
    assert "ix_tasks_lead_id" in _plan(sqlite_path)


def test_the_sweep_samples_them_again_every_ten_minutes(sqlite_path: str, db: Any, clock: Any) -> None:
    _fill_tasks(sqlite_path, 600)

    def sweep() -> None:
        with db.session() as session:
            worker._refresh_statistics(session, clock.now())
            session.commit()

    sweep()
    assert "ix_tasks_lead_id" in _plan(sqlite_path)
    with sqlite3.connect(sqlite_path) as connection:
        connection.execute("DELETE FROM sqlite_stat1")
    clock.advance(timedelta(minutes=5))
    sweep()  # too soon: left as it is
    assert _stat_rows(sqlite_path) == 0
    clock.advance(worker.STATISTICS_EVERY)
    sweep()
    assert _stat_rows(sqlite_path) > 0
    assert "ix_tasks_lead_id" in _plan(sqlite_path)


def _stat_rows(path: str) -> int:
    with sqlite3.connect(path) as connection:
        return int(connection.execute("SELECT count(*) FROM sqlite_stat1").fetchone()[0])
