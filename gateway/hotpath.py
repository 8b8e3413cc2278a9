"""The incoming-call hot path, written against the database driver.

Every call the dealership gets runs these three statements, and the provider waits on the answer. Through
SQLAlchemy's execution layer each costs a few hundred microseconds of Python; through the driver with a
connection kept per thread and statements the driver prepares once, a few dozen. Each statement is atomic
on its own (a read, an UPDATE ... RETURNING, a conflict-tolerant INSERT), so they run in autocommit mode
and no lock is held between them. Everything else in the gateway goes through SQLAlchemy.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Engine

_NAMED = re.compile(r":(\w+)")

RING_INSERT = """
INSERT INTO calls (sid, store_id, tracked_number_id, from_number, to_number, direction, kind, status,
                   outcome, after_hours, dial_step, ringing_agents, answered_by_id, voicemail_started,
                   started_at, created_at)
VALUES (:sid, :store_id, :tracked_number_id, :from_number, :to_number, 'inbound', 'customer', :status,
        'ringing', :after_hours, 0, :ringing_agents, NULL, :voicemail_started, :now, :now)
ON CONFLICT (sid) DO NOTHING
RETURNING id
"""
RING_STATE = "SELECT ringing_agents, dial_step, after_hours, voicemail_started FROM calls WHERE sid = :sid"
OWNER_OF_OPEN_LEAD = """
SELECT agents.key FROM leads
JOIN contacts ON contacts.id = leads.contact_id
JOIN agents ON agents.id = leads.owner_id
WHERE contacts.phone = :phone AND leads.store_id = :store_id AND leads.open_key IS NOT NULL
LIMIT 1
"""
ADVANCE_ROTATION = """
UPDATE tracked_numbers SET round_robin_next = round_robin_next + 1 WHERE id = :number_id
RETURNING round_robin_next
"""


class DatabaseUnavailable(Exception):
    """The driver could not run a hot-path statement (the database is down or refused)."""


@dataclass(frozen=True)
class RingState:
    """What the TwiML of a ringing call depends on."""

    sid: str
    ringing_agents: list[list[str]]
    dial_step: int
    after_hours: bool
    voicemail_started: bool


class HotPath:
    """Driver connections, one per thread, in autocommit; dropped and reopened after an error."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"
        self._local = threading.local()
        self._sql: dict[str, str] = {}
        self._lock = threading.Lock()
        self._opened: list[Any] = []

    def _statement(self, sql: str) -> str:
        text = self._sql.get(sql)
        if text is None:
            text = _NAMED.sub(r"%(\1)s", sql) if self.postgres else sql
            self._sql[sql] = text
        return text

    def _connection(self) -> Any:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self.engine.raw_connection()
            if self.postgres:
                driver: Any = connection.driver_connection
                driver.autocommit = True
            self._local.connection = connection
            with self._lock:
                self._opened.append(connection)
        return connection

    def _drop(self) -> None:
        connection = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            # Already broken: the point is only to stop using it.
            with contextlib.suppress(Exception):
                connection.invalidate()

    def close(self) -> None:
        """Close every thread's connection (the app is shutting down)."""
        with self._lock:
            opened, self._opened = self._opened, []
        for connection in opened:
            with contextlib.suppress(Exception):
                connection.close()
        self._local = threading.local()

    def fetch(self, sql: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
        try:
            cursor = self._connection().cursor()
            try:
                cursor.execute(self._statement(sql), params)
                row = cursor.fetchone()
            finally:
                cursor.close()
        except Exception as error:
            self._drop()
            raise DatabaseUnavailable(str(error)) from error
        return tuple(row) if row is not None else None

    # --- values as the columns store them (matching what SQLAlchemy writes) ---

    def time(self, moment: datetime) -> Any:
        utc = moment.astimezone(UTC)
        return utc if self.postgres else utc.replace(tzinfo=None).isoformat(" ", "microseconds")

    def json(self, value: Any) -> Any:
        if self.postgres:
            from psycopg.types.json import Json

            return Json(value)
        return json.dumps(value)

    def flag(self, value: bool) -> Any:
        return value if self.postgres else int(value)

    def loads(self, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value

    # --- the statements ---

    def owner_of_open_lead(self, phone: str | None, store_id: int) -> str | None:
        if phone is None:
            return None
        row = self.fetch(OWNER_OF_OPEN_LEAD, {"phone": phone, "store_id": store_id})
        return str(row[0]) if row else None

    def advance_rotation(self, number_id: int) -> int:
        """Where this call starts in the number's round-robin rotation; atomic under concurrency."""
        row = self.fetch(ADVANCE_ROTATION, {"number_id": number_id})
        return int(row[0]) - 1 if row else 0

    def ring(
        self,
        *,
        sid: str,
        caller: str | None,
        to: str,
        status: str,
        store_id: int,
        tracked_number_id: int | None,
        after_hours: bool,
        steps: list[list[str]],
        now: datetime,
    ) -> RingState:
        """Log the ringing call once; a provider retry gets the call as first recorded."""
        voicemail = after_hours or not steps
        inserted = self.fetch(
            RING_INSERT,
            {
                "sid": sid,
                "store_id": store_id,
                "tracked_number_id": tracked_number_id,
                "from_number": caller,
                "to_number": to,
                "status": status,
                "after_hours": self.flag(after_hours),
                "ringing_agents": self.json(steps),
                "voicemail_started": self.flag(voicemail),
                "now": self.time(now),
            },
        )
        if inserted is not None:
            return RingState(sid, steps, 0, after_hours, voicemail)
        row = self.fetch(RING_STATE, {"sid": sid})
        if row is None:
            raise DatabaseUnavailable(f"call {sid} neither inserted nor found")
        return RingState(sid, list(self.loads(row[0]) or []), int(row[1]), bool(row[2]), bool(row[3]))
