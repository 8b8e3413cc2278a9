"""The database: declarative base, engine with the SQLite pragmas, sessions, conflict-tolerant inserts,
and its migrations (`gateway db upgrade`: Alembic, from the first table on, every branch's head)."""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from alembic import command
from alembic.config import Config
from flask import current_app, has_app_context
from sqlalchemy import JSON, DateTime, Dialect, MetaData, create_engine, event, insert, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import NullPool
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on both databases (SQLite drops the offset; this puts it back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[Any]: JSON()}


T = TypeVar("T")


def required(value: T | None, what: str) -> T:
    """The row a statement must have found; a clear error (not an assert) if the invariant breaks."""
    if value is None:
        raise LookupError(f"{what} not found")
    return value


_HELD_KEY = "gateway.database.held"


def get_held(session: Session, model: type[T], ident: int) -> T | None:
    """`session.get`, keeping the row for the rest of the transaction.

    The session forgets a row nobody holds, so two parts of one request asking for the same row (a
    tracked number, say) would read it twice; a held row is read once per transaction."""
    held: dict[tuple[type[Any], int], Any] = session.info.setdefault(_HELD_KEY, {})
    row = held.get((model, ident))
    if row is None:
        row = held[(model, ident)] = session.get(model, ident)
    return row


@event.listens_for(Session, "after_transaction_end")
def _release_held(session: Session, transaction: Any) -> None:
    if transaction.parent is None:
        session.info.pop(_HELD_KEY, None)


def utcnow() -> datetime:
    """Now, from the clock of the app in context (the one every decision reads), else the system's.

    Column defaults use it, so a row's created_at and updated_at agree with the times the gateway
    compares them to, whichever clock the app runs on."""
    if has_app_context():
        current = current_app.extensions.get("gateway")
        if current is not None:
            moment: datetime = current.clock.now()
            return moment
    return datetime.now(UTC)


def write_lock_path(database: str | None) -> str | None:
    """The file every writer of one SQLite database locks (None for in-memory databases)."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return database + "-write.lock"


# How long bulk work lets the writers waiting for SQLite's write lock go first (`begin_giving_way`), and
# how often it looks again meanwhile.
GIVE_WAY_SECONDS = 0.1
GIVE_WAY_PAUSE = 0.001


class WriteLock:
    """An exclusive flock beside an SQLite file, taken by every writer of every process before it asks
    SQLite for the write lock, and given back when its transaction ends.

    SQLite makes a writer that finds the database locked poll for it, sleeping 1, 2, 5 ... and at last
    100 ms between tries: under load a writer sleeps on long after the lock is free, and requests queue
    behind the sleepers. A writer blocked on flock is woken by the kernel the moment the holder lets go.
    Each holder uses its own open file (flock excludes between them, even in one process). A thread that
    already holds the lock through another connection (a session opened inside another) does not take it
    again: it waits on SQLite's own lock and busy timeout, as without this lock, not on itself."""

    _holding: Any = threading.local()  # .count: the locks this thread holds

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._fd: int | None = None
        self._waiting_fd: int | None = None
        self._pid = 0
        self._held = False

    def acquire(self, *, give_way: bool = False) -> None:
        """Take the lock. `give_way`: bulk work (`begin_giving_way`) lets the writers already waiting go
        first, for up to GIVE_WAY_SECONDS."""
        holding: int = getattr(self._holding, "count", 0)
        if self.path is None or self._held or holding:
            return
        if self._fd is None or self._pid != os.getpid():
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            self._waiting_fd = os.open(self.path + "-waiting", os.O_RDWR | os.O_CREAT, 0o600)
            self._pid = os.getpid()
        if self._waiting_fd is None:
            raise RuntimeError("the write lock's files are not open")
        if give_way:
            _after_the_waiting(self._fd, self._waiting_fd)
        else:
            _take(self._fd, self._waiting_fd)
        self._held = True
        self._holding.count = getattr(self._holding, "count", 0) + 1

    def release(self) -> None:
        if not self._held or self._fd is None:
            return
        self._held = False
        self._holding.count = max(getattr(self._holding, "count", 1) - 1, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self.release()
        if self._pid == os.getpid():
            for fd in (self._fd, self._waiting_fd):
                if fd is not None:
                    os.close(fd)
        self._fd = self._waiting_fd = None

    def __enter__(self) -> None:
        self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _take(fd: int, waiting: int) -> None:
    """Take the write lock; while it has to wait, it says so (a shared lock on the `-waiting` file)."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    fcntl.flock(waiting, fcntl.LOCK_SH)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    finally:
        fcntl.flock(waiting, fcntl.LOCK_UN)


def _after_the_waiting(fd: int, waiting: int) -> None:
    """Take the write lock once no other writer waits for it, or after GIVE_WAY_SECONDS whatever waits."""
    deadline = time.monotonic() + GIVE_WAY_SECONDS

    def others_go_first() -> bool:
        return time.monotonic() < deadline and _others_waiting(waiting)

    while True:
        if not others_go_first():
            fcntl.flock(fd, fcntl.LOCK_EX)
            if not others_go_first():  # nobody came while this one waited for the lock with them
                return
            fcntl.flock(fd, fcntl.LOCK_UN)
        time.sleep(GIVE_WAY_PAUSE)


def _others_waiting(waiting: int) -> bool:
    try:
        fcntl.flock(waiting, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    fcntl.flock(waiting, fcntl.LOCK_UN)
    return False


class _LockingConnection(sqlite3.Connection):
    """pysqlite's connection, giving the database's WriteLock back when a transaction ends (and making a
    reader's connection writable again, see `begin_reading`)."""

    def __init__(self, database: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(database, *args, **kwargs)
        self.write_lock = WriteLock(write_lock_path(str(database)))
        self.reading = False

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self._ended()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._ended()

    def _ended(self) -> None:
        self.write_lock.release()
        if self.reading:
            self.reading = False
            self.execute("PRAGMA query_only=OFF")

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.write_lock.close()


READING = "gateway_reading"
GIVING_WAY = "gateway_giving_way"


def begin_reading(session: Session) -> None:
    """Begin the session's transaction as a reader, before its first statement, for work that only reads
    (an API GET). On SQLite it takes neither the WriteLock nor SQLite's write lock, so it never waits for
    the writers (in WAL mode a reader sees the last commit and blocks nobody); a write in it fails
    ("attempt to write a readonly database"). PostgreSQL's readers never wait anyway: nothing changes."""
    session.connection(execution_options={READING: True})


def begin_giving_way(session: Session) -> None:
    """Begin the session's transaction as bulk work, before its first statement: on SQLite it takes the
    write lock only when no other writer is waiting for it (or after GIVE_WAY_SECONDS), so a burst of it
    (leads built from a thousand ADF documents) does not hold the requests that store the next ones.
    PostgreSQL's writers do not queue for one lock: nothing changes there."""
    session.connection(execution_options={GIVING_WAY: True})


def make_engine(url: str, *, pool: bool = True) -> Engine:
    """An engine; SQLite gets WAL, a busy timeout, foreign keys and the WriteLock, since web and worker
    write at once."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"timeout": 30, "check_same_thread": False, "factory": _LockingConnection},
            poolclass=None if pool else NullPool,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # Let SQLAlchemy, not pysqlite, decide when a transaction begins (BEGIN IMMEDIATE below).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(connection: Any) -> None:
            dbapi_connection = connection.connection.dbapi_connection
            if connection.get_execution_options().get(READING) and isinstance(dbapi_connection, _LockingConnection):
                # A reader (`begin_reading`): a deferred BEGIN, no lock; its connection refuses writes.
                dbapi_connection.execute("PRAGMA query_only=ON")
                dbapi_connection.reading = True
                connection.exec_driver_sql("BEGIN")
                return
            # A write lock up front: no deadlock when two processes upgrade read locks at once. The
            # WriteLock first, so the wait for it is a kernel wake-up, not SQLite's sleeping retries.
            lock: WriteLock | None = getattr(dbapi_connection, "write_lock", None)
            if lock is not None:
                lock.acquire(give_way=bool(connection.get_execution_options().get(GIVING_WAY)))
            try:
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            except BaseException:
                if lock is not None:
                    lock.release()
                raise

        return engine
    if not pool:
        return create_engine(url, poolclass=NullPool)
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


class Database:
    """One engine and its session factory; built by `create_app` and by the worker."""

    def __init__(self, url: str, *, pool: bool = True) -> None:
        self.url = url
        self.engine = make_engine(url, pool=pool)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits when the block ends without error and rolls back otherwise."""
        session = self.sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()


def _dialect_insert(session: Session) -> Any:
    """The bound database's INSERT, the one that has ON CONFLICT (PostgreSQL's or SQLite's)."""
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def insert_ignoring_conflict(
    session: Session,
    model: type[Base],
    values: Mapping[str, Any],
    conflict_columns: Sequence[str],
) -> bool:
    """INSERT that does nothing when the unique key exists; True when a row was inserted.

    This is the guard against doubles (provider SIDs, cadence steps, webhook events): the database
    decides, so concurrent duplicates cannot both win the way check-then-act lets them.
    """
    dialect = session.get_bind().dialect.name
    table: Any = model.__table__
    if dialect == "postgresql":
        # An explicit RETURNING: psycopg reports rowcount -1 for the implicit one SQLAlchemy adds, which
        # would make every conflict look like an insert. A row back means this statement inserted it.
        stmt: Any = (
            postgresql.insert(table)
            .values(**values)
            .on_conflict_do_nothing(index_elements=list(conflict_columns))
            .returning(*table.primary_key.columns)
        )
        return session.execute(stmt).first() is not None
    if dialect == "sqlite":
        stmt = sqlite.insert(table).values(**values).on_conflict_do_nothing(
            index_elements=list(conflict_columns)
        )
    else:  # pragma: no cover - only the two supported databases
        stmt = insert(table).values(**values)
    result = session.execute(stmt)
    return bool(getattr(result, "rowcount", 0))


def insert_returning_or_none(
    session: Session, model: type[T], values: Mapping[str, Any], conflict_columns: Sequence[str]
) -> T | None:
    """`insert_ignoring_conflict` that returns the row it inserted (loaded from the INSERT's RETURNING,
    no second query), or None when the unique key existed."""
    stmt = (
        _dialect_insert(session)(model)
        .values(**values)
        .on_conflict_do_nothing(index_elements=list(conflict_columns))
        .returning(model)
    )
    row: T | None = session.scalars(stmt).first()
    return row


def insert_many_ignoring_conflict(
    session: Session,
    model: type[T],
    rows: Sequence[Mapping[str, Any]],
    conflict_column: str,
) -> list[T]:
    """Many rows in one INSERT that skips those whose unique key exists; the rows it inserted, loaded from
    the INSERT's RETURNING (no second query for them).

    The same guard against doubles as `insert_ignoring_conflict`, for a batch (a job's cadence texts)."""
    if not rows:
        return []
    table: Any = getattr(model, "__table__")  # noqa: B009 - a mapped class, typed as any T here
    # Executed with the rows as parameters: SQLAlchemy sends them as one multi-row INSERT per few hundred
    # ("insertmanyvalues"), from one cached compiled statement.
    stmt = (
        _dialect_insert(session)(model)
        .on_conflict_do_nothing(index_elements=[table.c[conflict_column]])
        .returning(model)
    )
    return list(session.scalars(stmt, [dict(row) for row in rows]))


# --- migrations ---

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str) -> None:
    if database_url.startswith("sqlite:///"):
        Path(database_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(database_url), "heads")
    if database_url.startswith("sqlite"):
        # Through the gateway's engine: a gateway already running keeps writing meanwhile (the write lock).
        engine = make_engine(database_url, pool=False)
        try:
            with engine.begin() as connection:
                refresh_statistics(connection)
        except OperationalError as error:  # statistics only speed queries up: never fail the upgrade
            logging.getLogger(__name__).warning("statistics not refreshed: %s", error)
        finally:
            engine.dispose()


# --- SQLite's statistics ---

# Rows ANALYZE reads from each index: a sample, so it takes milliseconds whatever the database's size.
ANALYSIS_LIMIT = 400


def refresh_statistics(connection: Connection) -> None:
    """SQLite's planner without statistics weighs every index alike, and picks ones that walk a whole
    store: all open tasks by their status to find one lead's task, where the lead's own index reads one
    row. ANALYZE, sampled, tells it which columns tell rows apart. PostgreSQL gathers its own (autovacuum);
    a table still empty gets no statistics, so the sweep runs this again as the tables fill
    (`gateway.worker`)."""
    if connection.dialect.name != "sqlite":
        return
    connection.execute(text(f"PRAGMA analysis_limit={ANALYSIS_LIMIT}"))
    connection.execute(text("ANALYZE"))


def revision(database_url: str, message: str, head: str = "heads", branch_label: str | None = None) -> None:
    """For developers: autogenerate a revision against an up-to-date database."""
    command.revision(
        alembic_config(database_url),
        message=message,
        autogenerate=True,
        head=head,
        branch_label=branch_label,
    )
