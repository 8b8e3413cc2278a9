"""The incoming-call hot path: written against the database driver, many calls to a transaction.

Every call the dealership gets is logged before its TwiML is answered, and the provider waits on that
answer. Through SQLAlchemy's execution layer each statement costs a few hundred microseconds of Python;
through the driver, a few dozen. What costs most is the commit: request threads each writing in their own
transaction queue on SQLite's one write lock (its busy handler sleeps a millisecond at a time) and write
the table's and every index's pages again for one row. So the request threads of a process share one
connection and commit together (group commit): whoever arrives while no commit runs leads, taking every
call queued at that moment into one transaction; each request still answers only once its own call is
committed. On SQLite the leaders of different processes take turns on a file lock, which wakes the next
the moment the first is done. Everything else in the gateway goes through SQLAlchemy.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar, cast

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

log = logging.getLogger(__name__)

T = TypeVar("T")

_NAMED = re.compile(r":(\w+)")
# Calls ringing in the same moment share a transaction, up to this many.
MAX_BATCH = 64
# Longer than any healthy commit, well inside the provider's 15 s: past it the caller gets the failsafe.
WAIT_SECONDS = 8.0

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


class Statements:
    """The hot path's statements, run on one cursor inside the writer's transaction."""

    def __init__(self, cursor: Any, postgres: bool, sql: Callable[[str], str]) -> None:
        self._cursor = cursor
        self.postgres = postgres
        self._sql = sql

    def fetch(self, sql: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
        self._cursor.execute(self._sql(sql), params)
        row = self._cursor.fetchone()
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
        agents = json.loads(row[0]) if isinstance(row[0], str) else row[0]
        return RingState(sid, list(agents or []), int(row[1]), bool(row[2]), bool(row[3]))


Work = Callable[[Statements], T]


@dataclass
class _Pending(Generic[T]):
    work: Work[T]
    done: bool = False
    result: T | None = None
    error: BaseException | None = None


class HotPath:
    """Group commit among the request threads of a process, on one driver connection.

    A thread with work queues it; if no thread is committing, it leads: takes everything queued, runs it
    in one transaction, marks it done and wakes the others (one of them leads the next batch). With no
    contention a request runs its own transaction with no hand-over at all."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"
        self._begin = "BEGIN" if self.postgres else "BEGIN IMMEDIATE"
        self._sql: dict[str, str] = {}
        self._pid = os.getpid()
        self._queue: deque[_Pending[Any]] = deque()
        self._turn = threading.Condition()
        self._leading = False
        self._connection: Any = None
        self._inherited: Any = None
        self._interprocess: contextlib.AbstractContextManager[Any] = (
            contextlib.nullcontext() if self.postgres else _FileLock(_lock_path(engine))
        )

    def _statement(self, sql: str) -> str:
        text = self._sql.get(sql)
        if text is None:
            text = _NAMED.sub(r"%(\1)s", sql) if self.postgres else sql
            self._sql[sql] = text
        return text

    def write(self, work: Work[T]) -> T:
        """Run `work` in a transaction and return its result once that has committed.

        DatabaseUnavailable when the database refused or the commit did not come in time."""
        if self._pid != os.getpid():
            self._forked()
        pending: _Pending[T] = _Pending(work)
        deadline = time.monotonic() + WAIT_SECONDS
        with self._turn:
            self._queue.append(pending)
            while self._leading and not pending.done:
                if not self._turn.wait(deadline - time.monotonic()):
                    if pending in self._queue:
                        self._queue.remove(pending)
                    raise DatabaseUnavailable(f"no commit within {WAIT_SECONDS:.0f} s")
            if not pending.done:
                self._leading = True
                batch = [self._queue.popleft() for _ in range(min(len(self._queue), MAX_BATCH))]
        if not pending.done:
            try:
                self._commit(batch)
            finally:
                with self._turn:
                    for item in batch:
                        item.done = True
                    self._leading = False
                    self._turn.notify_all()
        if pending.error is not None:
            raise pending.error
        return cast(T, pending.result)

    def _forked(self) -> None:
        # A gunicorn worker inherits the object from the process that created the app, not its
        # connection or its lock state.
        self._pid = os.getpid()
        self._queue = deque()
        self._turn = threading.Condition()
        self._leading = False
        # The parent's connection shares its socket with the parent: never used here, never closed here
        # (closing would end the parent's session), kept referenced so no finaliser closes it either.
        self._inherited, self._connection = self._connection, None

    def close(self) -> None:
        """Close the connection (the app is shutting down)."""
        if self._pid == os.getpid():
            with self._turn:
                self._drop()

    def _commit(self, batch: list[_Pending[Any]]) -> None:
        try:
            self._transaction(batch)
        except Exception as error:
            self._drop()
            if len(batch) == 1:
                batch[0].error = self._unavailable(error)
            else:
                # One call's work may be what failed: give each its own transaction.
                for pending in batch:
                    self._commit([pending])

    def _transaction(self, batch: list[_Pending[Any]]) -> None:
        with self._interprocess:
            self._transaction_locked(batch)

    def _transaction_locked(self, batch: list[_Pending[Any]]) -> None:
        connection = self._connected()
        cursor = connection.cursor()
        try:
            cursor.execute(self._begin)
            statements = Statements(cursor, self.postgres, self._statement)
            results = [pending.work(statements) for pending in batch]
            cursor.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):
                cursor.execute("ROLLBACK")
            raise
        finally:
            with contextlib.suppress(Exception):
                cursor.close()
        for pending, result in zip(batch, results, strict=True):
            pending.result = result

    def _unavailable(self, error: Exception) -> Exception:
        """The driver's errors become DatabaseUnavailable; anything else is a bug and stays itself."""
        driver = self.engine.dialect.dbapi
        if not isinstance(error, DBAPIError) and (driver is None or not isinstance(error, driver.Error)):
            return error
        wrapped = DatabaseUnavailable(str(error))
        wrapped.__cause__ = error
        return wrapped

    def _connected(self) -> Any:
        if self._connection is None:
            connection = self.engine.raw_connection()
            if self.postgres:
                driver: Any = connection.driver_connection
                driver.autocommit = True  # the writer says BEGIN and COMMIT itself
            self._connection = connection
        return self._connection

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            # Broken or finished: the point is only to stop using it.
            with contextlib.suppress(Exception):
                connection.invalidate()


def _lock_path(engine: Engine) -> str | None:
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return database + "-hotpath.lock"


class _FileLock:
    """An exclusive flock shared by the writers of every process on one SQLite file.

    SQLite makes a second process's writer poll for the lock, sleeping a millisecond and more between
    tries; a writer blocked on flock is woken by the kernel the moment the first lets go."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._fd: int | None = None
        self._pid = 0

    def __enter__(self) -> None:
        if self.path is None:
            return
        if self._fd is None or self._pid != os.getpid():
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            self._pid = os.getpid()
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
