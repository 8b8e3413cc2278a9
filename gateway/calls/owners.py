"""Who owns each open lead, in the memory of every web process, so a ringing call needs no query for it.

A sequential or round-robin call rings the owner of the caller's open lead first. Asking the database
costs a round trip on every such call; the answer changes far less often than calls come in. So each
web process keeps the owner of every open lead by (store, phone): loaded whole when it starts following,
then kept current by a message on Redis for every change (CHANNEL, published after the change commits,
from whichever process made it); the receiver re-reads that lead from the database, so messages carry
no state of their own and their order does not matter. The process that made the change updates its own
book before its commit returns, so a customer calling back right after a missed call rings the owner
whatever the timing. The whole book is reloaded every RELOAD_SECONDS as well, so a change made where no
Redis was at hand (a command-line tool) is picked up too.

While the book is not following (starting, Redis down, a query failed), `lookup` says it does not know
and the caller asks the database as before.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any, cast

from flask import Flask, current_app, has_app_context
from redis import ConnectionPool, Redis
from redis.exceptions import RedisError
from sqlalchemy import event, inspect
from sqlalchemy.orm import Session, UOWTransaction

from gateway import runtime
from gateway.calls.hotpath import DatabaseUnavailable, Statements
from gateway.models import Lead
from gateway.runtime import on_shutdown, process, runtime_of

log = logging.getLogger(__name__)

CHANNEL = "gateway:lead-owners"
RELOAD_SECONDS = 60.0
RETRY_SECONDS = 1.0
WAKE_SECONDS = 0.25  # how often the follower looks up from Redis (to reload, or to stop)
BOOK = "gateway.calls.owners"
CHANGED = "gateway.calls.owners.changed"  # session.info key: (store_id, contact_id) of leads changed

ALL_OWNERS = """
SELECT leads.store_id, contacts.phone, agents.key FROM leads
JOIN contacts ON contacts.id = leads.contact_id
JOIN agents ON agents.id = leads.owner_id
WHERE leads.open_key IS NOT NULL AND contacts.phone IS NOT NULL
"""
ONE_OWNER = """
SELECT contacts.phone, agents.key FROM contacts
LEFT JOIN leads ON leads.contact_id = contacts.id AND leads.store_id = :store_id AND leads.open_key IS NOT NULL
LEFT JOIN agents ON agents.id = leads.owner_id
WHERE contacts.id = :contact_id
"""

Key = tuple[int, int]  # (store_id, contact_id) of a lead that changed
Reader = Callable[[Callable[[Statements], Any]], Any]


class OwnerBook:
    """The owners of open leads by (store_id, phone), followed on Redis from a thread of this process."""

    def __init__(self, read: Reader, redis: Redis) -> None:
        self._read = read  # gateway.calls.hotpath.HotPath.read: the calling thread's own autocommit connection
        self._redis_settings: dict[str, Any] = dict(redis.connection_pool.connection_kwargs)
        self._redis_class = redis.connection_pool.connection_class
        self._generation = -1
        self._start()

    def _start(self) -> None:
        self._owners: dict[tuple[int, str], str] = {}
        self._following = False
        self._loading: set[Key] | None = None  # changes seen while a load runs, applied after it
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def lookup(self, store_id: int, phone: str) -> tuple[bool, str | None]:
        """(True, the owner's key or None) when the book is following; (False, None) when it cannot say."""
        if self._generation != process.generation:
            self._follow()
        if not self._following:
            return False, None
        return True, self._owners.get((store_id, phone))

    def _follow(self) -> None:
        with self._lock:
            if self._generation == process.generation:
                return
            if self._generation != -1:
                self._start()  # a forked child: the parent's thread and book are not this process's
            self._generation = process.generation
            self._thread = threading.Thread(target=self._run, name="lead owners", daemon=True)
            self._thread.start()

    def changed(self, keys: set[Key]) -> None:
        """Leads of this process changed and committed: re-read them now (the message follows for others)."""
        with self._lock:
            if self._loading is not None:
                self._loading |= keys  # a load running now may have read them before the change
        if self._generation == process.generation and self._following:
            with contextlib.suppress(DatabaseUnavailable):
                self._reread(keys)

    def _run(self) -> None:
        while not self._stop.is_set():
            redis = Redis(connection_pool=ConnectionPool(connection_class=self._redis_class, **self._redis_settings))
            # Any: redis-py types PubSub from 8.2 on, not before (a `type: ignore` would fail one or the other).
            subscription: Any = cast(Any, redis).pubsub(ignore_subscribe_messages=True)
            try:
                subscription.subscribe(CHANNEL)  # before loading: nothing changed in between is missed
                self._load()
                while not self._stop.is_set():
                    if time.monotonic() - self._loaded_at > RELOAD_SECONDS:
                        self._load()
                    message = subscription.get_message(timeout=WAKE_SECONDS)
                    if message is not None:
                        self._reread({_parse(message["data"])})
            except (RedisError, DatabaseUnavailable, OSError, ValueError) as error:
                if self._following:
                    log.warning("lead owners: not following (%s); calls ask the database", error)
                self._following = False
                self._stop.wait(RETRY_SECONDS)
            finally:
                with contextlib.suppress(Exception):
                    subscription.close()
                    redis.close()

    def _load(self) -> None:
        with self._lock:
            self._loading = set()
        try:
            rows = self._read(lambda db: db.rows(ALL_OWNERS, {}))
            owners = {(int(store), str(phone)): str(key) for store, phone, key in rows}
            with self._lock:
                self._owners = owners
                late, self._loading = self._loading or set(), None
            self._reread(late)
        finally:
            with self._lock:
                self._loading = None
        self._loaded_at = time.monotonic()
        if not self._following:
            log.info("lead owners: following (%d open leads with an owner)", len(self._owners))
        self._following = True

    def _reread(self, keys: set[Key]) -> None:
        if not keys:
            return
        rows = [(key, self._read(partial(_one_owner, key))) for key in keys]
        with self._lock:
            for (store_id, _contact), row in rows:
                if row is None or row[0] is None:
                    continue
                if row[1] is None:
                    self._owners.pop((store_id, str(row[0])), None)
                else:
                    self._owners[(store_id, str(row[0]))] = str(row[1])

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._generation == process.generation:
            self._thread.join(RETRY_SECONDS + WAKE_SECONDS)


def _one_owner(key: Key, db: Statements) -> tuple[Any, ...] | None:
    return db.fetch(ONE_OWNER, {"store_id": key[0], "contact_id": key[1]})


def _parse(data: Any) -> Key:
    store, contact = (data.decode() if isinstance(data, bytes) else str(data)).split(":")
    return int(store), int(contact)


def book(app: Flask) -> OwnerBook:
    owners: OwnerBook = app.extensions[BOOK]
    return owners


def init_app(app: Flask, read: Reader) -> None:
    owners = app.extensions[BOOK] = OwnerBook(read, runtime_of(app).redis)
    on_shutdown(app, owners.close)


# --- noting changes: every session, in every process ---


@event.listens_for(Session, "after_flush")
def _note_changes(session: Session, _flush: UOWTransaction) -> None:
    for lead in [*session.new, *session.deleted, *session.dirty]:
        if isinstance(lead, Lead) and (
            lead in session.new or lead in session.deleted or _owner_or_openness_changed(lead)
        ):
            note(session, lead.store_id, lead.contact_id)


def _owner_or_openness_changed(lead: Lead) -> bool:
    state = inspect(lead)
    return any(state.attrs[name].history.has_changes() for name in ("owner_id", "open_key", "contact_id"))


def note(session: Session, store_id: int | None, contact_id: int | None) -> None:
    """A lead's owner or openness changed in this session (for changes made without the ORM's objects)."""
    if store_id is not None and contact_id is not None:
        session.info.setdefault(CHANGED, set()).add((int(store_id), int(contact_id)))


@event.listens_for(Session, "after_commit")
def _announce(session: Session) -> None:
    keys: set[Key] = session.info.pop(CHANGED, set())
    if not keys or not has_app_context():
        return
    try:
        app_book = current_app.extensions.get(BOOK)
        if app_book is not None:
            app_book.changed(keys)
        with runtime.current().redis.pipeline(transaction=False) as pipe:
            for store_id, contact_id in keys:
                pipe.publish(CHANNEL, f"{store_id}:{contact_id}")
            pipe.execute()
    except RedisError as error:
        log.warning("lead owners: could not announce %d change(s) (%s); other processes reload", len(keys), error)
    except Exception:
        # The commit has happened; nothing here may turn it into an error for the caller.
        log.exception("lead owners: could not announce %d change(s)", len(keys))


@event.listens_for(Session, "after_rollback")
def _forget(session: Session) -> None:
    session.info.pop(CHANGED, None)
