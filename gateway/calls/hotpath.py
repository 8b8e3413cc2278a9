"""The incoming-call hot path: written against the database driver by one thread per process.

Every call the dealership gets is logged, and the provider waits on the answer to its webhook. Through
SQLAlchemy's execution layer each statement costs a few hundred microseconds of Python; through the
driver, a few dozen. What costs most is the commit, and the request threads waiting on it: on their
turn at SQLite's one write lock (shared with the other web processes) or on a round trip to PostgreSQL,
each holding a gunicorn thread that could be answering the next call. So each web process has one
writer thread with its own connection that commits everything queued at once in one transaction.

A request works out its call's answer itself (reading the owner of the caller's open lead on its
thread's own connection when the plan rings owners first; a round-robin turn comes from Redis), queues
the call and answers; the writer commits it a moment later, normally within a millisecond or two, or
within LINGER_SECONDS when calls come in together. A later webhook about the call waits for that
commit (gateway.calls.services.logged_call). A call waits for its own commit when the database must decide its
answer (a round-robin turn while Redis cannot give one) and while the writer is not known to be
healthy, so a database that is down sends callers to the failsafe instead of a ring plan nobody can
follow; while a commit hangs, calls go to the failsafe at once. On SQLite the writers of different
processes take turns on a file lock, which wakes the next the moment the first is done.
Everything else in the gateway goes through SQLAlchemy.
The writer, its statements and its health checks stay in one module, a little over 600 lines: they
share the one connection and lock, and reading them together is how one convinces oneself no call is lost.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import re
import select
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar, cast

from flask import Flask
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from gateway.calls import rows
from gateway.database import WriteLock, write_lock_path
from gateway.metrics import HOTPATH_COMMIT_SECONDS
from gateway.runtime import on_shutdown, process, runtime_of

log = logging.getLogger(__name__)

T = TypeVar("T")

EXTENSION = "gateway.hotpath"

_NAMED = re.compile(r":(\w+)")
# Calls ringing in the same moment share a transaction, up to this many.
MAX_BATCH = 256
# Longer than any healthy commit, well inside the provider's 15 s: past it the caller gets the failsafe.
WAIT_SECONDS = 8.0
# Under load, work queued without waiting for its commit waits this long for more to share its transaction.
LINGER_SECONDS = 0.005
# A commit running this long means the database is in trouble: calls go to the failsafe until it ends.
STALL_SECONDS = 2.0
# So many calls queued means the database is not keeping up: calls wait for their own commit.
MAX_QUEUED = 5000

# The column names are the code's own (gateway/calls/rows.py), never input.
RING_INSERT = " ".join((
    "INSERT INTO calls", "(" + ", ".join(rows.COLUMNS) + ")",
    "VALUES", "(" + ", ".join(":" + column for column in rows.COLUMNS) + ")",
    "ON CONFLICT (sid) DO NOTHING",
))
RETURNING_ID = " RETURNING id"
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


@dataclass(frozen=True)
class RingingCall:
    """A call as it rings: what its row starts with."""

    sid: str
    caller: str | None
    to: str
    status: str
    store_id: int
    tracked_number_id: int | None
    after_hours: bool
    steps: list[list[str]]
    now: datetime
    caller_id_unverified: bool = False

    @property
    def state(self) -> RingState:
        return RingState(self.sid, self.steps, 0, self.after_hours, self.after_hours or not self.steps)

    def row(self) -> dict[str, Any]:
        return rows.new_call(
            sid=self.sid,
            store_id=self.store_id,
            tracked_number_id=self.tracked_number_id,
            from_number=self.caller,
            to_number=self.to,
            status=self.status,
            now=self.now,
            after_hours=self.after_hours,
            ringing_agents=self.steps,
            voicemail_started=self.after_hours or not self.steps,
            caller_id_unverified=self.caller_id_unverified,
        )


class Statements:
    """The hot path's statements, run on one cursor inside the writer's transaction."""

    def __init__(self, cursor: Any, postgres: bool, sql: Callable[[str], str]) -> None:
        self._cursor = cursor
        self.postgres = postgres
        self._sql = sql
        self._later: list[dict[str, Any]] = []

    def fetch(self, sql: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
        self._cursor.execute(self._sql(sql), params)
        row = self._cursor.fetchone()
        return tuple(row) if row is not None else None

    def rows(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        self._cursor.execute(self._sql(sql), params)
        return [tuple(row) for row in self._cursor.fetchall()]

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

    def ring(self, call: RingingCall) -> RingState:
        """Log the ringing call once; a provider retry gets the call as first recorded."""
        if self.fetch(RING_INSERT + RETURNING_ID, self._ring_values(call)) is not None:
            return call.state
        row = self.fetch(RING_STATE, {"sid": call.sid})
        if row is None:
            raise DatabaseUnavailable(f"call {call.sid} neither inserted nor found")
        agents = json.loads(row[0]) if isinstance(row[0], str) else row[0]
        return RingState(call.sid, list(agents or []), int(row[1]), bool(row[2]), bool(row[3]))

    def ring_later(self, call: RingingCall) -> None:
        """Log the ringing call once, with the other calls of this transaction in one statement (`flush`)."""
        self._later.append(self._ring_values(call))

    def flush(self) -> None:
        """Run what `ring_later` collected: one statement for all of it (pipelined on PostgreSQL)."""
        if self._later:
            rows, self._later = self._later, []
            self._cursor.executemany(self._sql(RING_INSERT), rows)

    def _ring_values(self, call: RingingCall) -> dict[str, Any]:
        return {column: self._value(value) for column, value in call.row().items()}

    def _value(self, value: Any) -> Any:
        """A Python value as its column stores it through the driver."""
        if isinstance(value, bool):
            return self.flag(value)
        if isinstance(value, datetime):
            return self.time(value)
        if isinstance(value, list | dict):
            return self.json(value)
        return value


Work = Callable[[Statements], T]


@dataclass(eq=False)
class _Pending(Generic[T]):
    work: Work[T] | None  # None: a marker that only waits for what was queued before it
    done: threading.Event | None = None  # set for a caller that waits for the commit
    lost: Callable[[BaseException], None] | None = None  # for a caller that did not wait
    result: T | None = None
    error: BaseException | None = None


class HotPath:
    """One writer thread per process commits the hot path's work, everything queued at once together.

    `write` waits for the commit and returns the work's result; `log` queues work whose outcome the
    caller already knows and returns at once, so a request answers without waiting on the database or
    on the other processes' writers. `log` waits like `write` while the writer is not known to be
    healthy: before its first commit, after a failed one, and (PostgreSQL) from the moment the server
    closes a watched connection. While a commit has run for longer than STALL_SECONDS both raise
    DatabaseUnavailable at once. Work queued by `log` that the database then refuses goes to its
    `lost` callback."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"
        self._begin = "BEGIN" if self.postgres else "BEGIN IMMEDIATE"
        self._sql: dict[str, str] = {}
        self._connection: Any = None
        self._inherited: list[Any] = []
        self._interprocess: contextlib.AbstractContextManager[Any] = (
            contextlib.nullcontext() if self.postgres else WriteLock(write_lock_path(engine.url.database))
        )
        self._start()

    def _start(self) -> None:
        self._pid = os.getpid()
        self._queue: deque[_Pending[Any]] = deque()
        self._turn = threading.Condition()
        self._writer: threading.Thread | None = None
        self._exit_hooked = False
        self._waiting = False  # the writer is asleep: a new piece of work wakes it
        self._urgent = False  # a caller waits for its commit: no lingering
        self._closing = False
        self._healthy = False
        self._committing_since: float | None = None
        self._stall_noted: float | None = None
        self._watcher: _Watcher | None = None
        self._readers = threading.local()
        self._reader_connections: list[Any] = []

    def _statement(self, sql: str) -> str:
        text = self._sql.get(sql)
        if text is None:
            text = _NAMED.sub(r"%(\1)s", sql) if self.postgres else sql
            self._sql[sql] = text
        return text

    @property
    def healthy(self) -> bool:
        """Whether work may be queued without waiting for its commit."""
        return self._healthy and not self._stalled() and len(self._queue) < MAX_QUEUED

    def _stalled(self) -> bool:
        since = self._committing_since
        if since is None or time.monotonic() - since < STALL_SECONDS:
            return False
        if self._stall_noted != since:
            self._stall_noted = since
            log.warning("hot path: a commit has run for over %.1f s; calls go to the failsafe", STALL_SECONDS)
        return True

    def write(self, work: Work[T]) -> T:
        """Run `work` in a transaction and return its result once that has committed.

        DatabaseUnavailable when the database refused, the commit did not come in time, or a commit
        already hangs (this one would only wait behind it)."""
        if self._stalled():
            raise DatabaseUnavailable(f"a commit has run for over {STALL_SECONDS:.1f} s")
        pending: _Pending[T] = _Pending(work, done=threading.Event())
        self._enqueue(pending)
        if not pending.done or not pending.done.wait(WAIT_SECONDS):
            with self._turn:
                if pending in self._queue:
                    self._queue.remove(pending)
            raise DatabaseUnavailable(f"no commit within {WAIT_SECONDS:.0f} s")
        if pending.error is not None:
            raise pending.error
        return cast(T, pending.result)

    def log(self, work: Work[Any], lost: Callable[[BaseException], None]) -> bool:
        """Queue `work` to be committed in a moment: True. While the writer is not healthy, run it as
        `write` does: False once it has committed, or DatabaseUnavailable.

        `lost(error)` runs on the writer's thread if the database refuses the queued work."""
        if not self.healthy:
            self.write(work)
            return False
        self._enqueue(_Pending(work, lost=lost))
        return True

    def read(self, work: Work[T]) -> T:
        """Run read-only `work` on this thread's own connection, beside the writer; DatabaseUnavailable
        when the database cannot answer."""
        if self._pid != process.pid:
            self._forked()
        connection = getattr(self._readers, "connection", None)
        try:
            if connection is None:
                connection = self._open()
                self._readers.connection = connection
                with self._turn:
                    self._reader_connections.append(connection)
            cursor = connection.cursor()
            try:
                return work(Statements(cursor, self.postgres, self._statement))
            finally:
                with contextlib.suppress(Exception):
                    cursor.close()
        except Exception as error:
            if connection is not None:
                self._readers.connection = None
                with contextlib.suppress(Exception):
                    connection.invalidate()
            wrapped = self._unavailable(error)
            if wrapped is error:
                raise
            raise wrapped from error

    def flush(self, timeout: float = WAIT_SECONDS) -> bool:
        """Wait until everything queued so far is committed (or refused); False on timeout."""
        if self._pid != process.pid or (self._writer is None and not self._queue):
            return True
        marker: _Pending[None] = _Pending(None, done=threading.Event())
        self._enqueue(marker)
        return marker.done is not None and marker.done.wait(timeout)

    def _enqueue(self, pending: _Pending[Any]) -> None:
        if self._pid != process.pid:
            self._forked()
        with self._turn:
            if self._closing:
                raise DatabaseUnavailable("the writer is shutting down")
            self._queue.append(pending)
            if self._writer is None or not self._writer.is_alive():
                self._writer = threading.Thread(target=self._run, name="hot-path writer", daemon=True)
                self._writer.start()
                if not self._exit_hooked:
                    # What is queued when the process exits (a worker restarting, a deploy) is committed.
                    atexit.register(self.close)
                    self._exit_hooked = True
            elif pending.done is not None:
                self._urgent = True
                self._turn.notify()
            elif self._waiting:
                # A busy writer takes this with the rest of the queue when it is done; waking a thread
                # costs more than the insert itself.
                self._turn.notify()

    def _run(self) -> None:
        while True:
            with self._turn:
                while not self._queue and not self._closing:
                    self._waiting = True
                    self._turn.wait()
                    self._waiting = False
                if len(self._queue) > 1 and not self._urgent and not self._closing:
                    # Calls are coming in together: let those of the next moment join this transaction.
                    # One call alone is committed at once; a caller waiting for its commit (or close)
                    # cuts the wait short.
                    self._turn.wait(LINGER_SECONDS)
                if not self._queue:
                    return
                self._urgent = False
                batch = [self._queue.popleft() for _ in range(min(len(self._queue), MAX_BATCH))]
                self._committing_since = time.monotonic()
            try:
                work = [pending for pending in batch if pending.work is not None]
                if work:
                    self._commit(work)
            except BaseException as error:  # pragma: no cover - _commit keeps errors on the work
                for pending in batch:
                    pending.error = pending.error or error
            finally:
                self._committing_since = None
                for pending in batch:
                    self._finish(pending)

    @staticmethod
    def _finish(pending: _Pending[Any]) -> None:
        if pending.done is not None:
            pending.done.set()
        elif pending.error is not None and pending.lost is not None:
            try:
                pending.lost(pending.error)
            except Exception:
                log.exception("hot-path work refused by the database could not be kept")

    def _forked(self) -> None:
        # A gunicorn worker inherits the object from the process that created the app, not its
        # thread, its queue or its connection. The parent's connection shares its socket with the
        # parent: never used here, never closed here (closing would end the parent's session), kept
        # referenced so no finaliser closes it either.
        self._inherited.append(self._connection)
        self._inherited.extend(self._reader_connections)
        if self._watcher is not None:
            self._inherited.append(self._watcher.connection)
        self._connection = None
        self._start()

    def close(self) -> None:
        """Commit what is queued, stop the writer and close the connections (the app is shutting down)."""
        if self._pid != process.pid:
            return
        with self._turn:
            self._closing = True
            self._turn.notify_all()
            writer = self._writer
        if writer is not None:
            writer.join(WAIT_SECONDS)
        if self._watcher is not None:
            self._watcher.stop()
        self._drop()
        for connection in self._reader_connections:
            with contextlib.suppress(Exception):
                connection.invalidate()
        self._reader_connections = []

    def _commit(self, batch: list[_Pending[Any]]) -> None:
        try:
            self._transaction(batch)
        except Exception as error:
            self._drop()
            if len(batch) == 1:
                batch[0].error = self._unavailable(error)
                if isinstance(batch[0].error, DatabaseUnavailable):
                    if self._healthy:
                        log.warning("hot path: the database refused a commit (%s); calls wait for theirs", error)
                    self._healthy = False
            else:
                # One call's work may be what failed: give each its own transaction.
                for pending in batch:
                    self._commit([pending])
        else:
            if not self._healthy:
                self._healthy = True
                log.info("hot path: database healthy, calls are logged as they are answered")

    def _transaction(self, batch: list[_Pending[Any]]) -> None:
        started = time.perf_counter()
        with self._interprocess:
            self._transaction_locked(batch)
        HOTPATH_COMMIT_SECONDS.observe(time.perf_counter() - started)

    def _transaction_locked(self, batch: list[_Pending[Any]]) -> None:
        connection = self._connected()
        cursor = connection.cursor()
        try:
            cursor.execute(self._begin)
            statements = Statements(cursor, self.postgres, self._statement)
            results = [pending.work(statements) for pending in batch if pending.work is not None]
            statements.flush()
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
            self._connection = self._open()
            if self.postgres and self._watcher is None:
                self._watcher = _Watcher(self.engine, self._server_gone)
        return self._connection

    def _open(self) -> Any:
        """A connection in autocommit: the writer says BEGIN and COMMIT itself, readers need neither."""
        connection = self.engine.raw_connection()
        if self.postgres:
            driver: Any = connection.driver_connection
            driver.autocommit = True
        return connection

    def _server_gone(self) -> None:
        if self._healthy:
            log.warning("hot path: the database server closed the connection; calls wait for their commit")
        self._healthy = False

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            # Broken or finished: the point is only to stop using it.
            with contextlib.suppress(Exception):
                connection.invalidate()


class _Watcher:
    """A second, idle PostgreSQL connection whose socket a thread waits on: a server that shuts down or
    dies closes it, and the hot path stops queueing calls at that moment instead of at its next commit.
    A server it cannot connect to counts the same. After a loss it reconnects every RECONNECT_SECONDS;
    the writer's next commit restores health."""

    RECONNECT_SECONDS = 1.0

    def __init__(self, engine: Engine, gone: Callable[[], None]) -> None:
        self.engine = engine
        self.gone = gone
        self.connection: Any = None
        self._stop = threading.Event()
        self._wake_read, self._wake_write = os.pipe()  # stop() wakes the wait at once
        self._thread = threading.Thread(target=self._run, name="hot-path watcher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._watch()
        finally:
            os.close(self._wake_read)

    def _watch(self) -> None:
        try:
            connection = self.engine.raw_connection()
        except Exception:
            self.gone()
            select.select([self._wake_read], [], [], self.RECONNECT_SECONDS)
            return
        self.connection = connection
        driver: Any = connection.driver_connection
        driver.autocommit = True
        try:
            while not self._stop.is_set():
                readable, _, _ = select.select([driver.fileno(), self._wake_read], [], [])
                if driver.fileno() in readable:
                    # A notice, or the end: a query tells which.
                    driver.execute("SELECT 1")
        except Exception:
            self.gone()
        finally:
            with contextlib.suppress(Exception):
                connection.invalidate()
            self.connection = None

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        os.write(self._wake_write, b"x")
        self._thread.join(self.RECONNECT_SECONDS * 2)
        os.close(self._wake_write)


def install(app: Flask) -> HotPath:
    """The app's writer: one per app, connected on first use in the process that uses it."""
    writer = app.extensions[EXTENSION] = HotPath(runtime_of(app).database.engine)
    on_shutdown(app, writer.close)
    return writer


def hot_path(app: Flask) -> HotPath:
    writer: HotPath = app.extensions[EXTENSION]
    return writer
