"""Round-robin turns kept in Redis, so a round-robin call is answered without waiting on the database.

Each call to a round-robin number takes the number's next turn in one atomic step; a retried webhook
for the same call gets the turn it was given the first time, whichever web process answers it. Redis
holds nothing else here and loses nothing that matters: after a flush the rotation starts again at the
first agent. When Redis does not answer within TIMEOUT_SECONDS, the rotation in the database is used
(`tracked_numbers.round_robin_next`, advanced in the call's own transaction) for the next
PAUSE_SECONDS before Redis is tried again.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from typing import Any

from flask import Flask
from redis import Redis
from redis.exceptions import NoScriptError, RedisError

from gateway.runtime import on_shutdown, process, runtime_of

log = logging.getLogger(__name__)

EXTENSION = "gateway.rotation"

TIMEOUT_SECONDS = 0.25
PAUSE_SECONDS = 5.0
# A retried webhook comes within the provider's timeout of the first; an hour is plenty.
REMEMBER_SECONDS = 3600

TAKE_TURN = """
local given = redis.call('GET', KEYS[2])
if given then return tonumber(given) end
local turn = redis.call('INCR', KEYS[1])
redis.call('SET', KEYS[2], turn, 'EX', ARGV[1])
return turn
"""
TAKE_TURN_SHA = hashlib.sha1(TAKE_TURN.encode()).hexdigest()  # noqa: S324 - Redis names scripts by SHA-1


class Rotation:
    """The turns of every round-robin number: one Redis round trip per call, on a connection of each
    request thread's own with a short timeout (the client's pool and retries cost more than the trip)."""

    def __init__(self, redis: Redis) -> None:
        pool = redis.connection_pool
        self._connection_class = pool.connection_class
        self._settings: dict[str, Any] = dict(pool.connection_kwargs)
        self._settings.update(socket_timeout=TIMEOUT_SECONDS, socket_connect_timeout=TIMEOUT_SECONDS)
        self._local = threading.local()
        self._opened: list[Any] = []  # redis.connection.Connection, whose methods are untyped
        self._lock = threading.Lock()
        self._paused_until = 0.0

    def turn(self, number_id: int, call_sid: str) -> int | None:
        """Where this call starts in the number's rotation (0, 1, 2, ...), or None when Redis cannot say."""
        if time.monotonic() < self._paused_until:
            return None
        arguments = (2, f"gateway:rotation:{number_id}", f"gateway:rotation:call:{call_sid}", REMEMBER_SECONDS)
        connection = None
        try:
            connection = self._connection()
            connection.send_command("EVALSHA", TAKE_TURN_SHA, *arguments)
            try:
                taken = connection.read_response()
            except NoScriptError:  # a restarted or flushed Redis: send the script itself
                connection.send_command("EVAL", TAKE_TURN, *arguments)
                taken = connection.read_response()
            return int(taken) - 1
        except (RedisError, OSError, ValueError) as error:
            if connection is not None:
                connection.disconnect()
            self._paused_until = time.monotonic() + PAUSE_SECONDS
            log.warning("round-robin turns from the database for %.0f s: Redis did not answer (%s)",
                        PAUSE_SECONDS, error)
            return None

    def _connection(self) -> Any:
        connection: Any = getattr(self._local, "connection", None)
        if connection is None or self._local.generation != process.generation:
            connection = self._connection_class(**self._settings)
            self._local.connection, self._local.generation = connection, process.generation
            with self._lock:
                self._opened.append(connection)
        return connection

    def close(self) -> None:
        with self._lock:
            opened, self._opened = self._opened, []
        for connection in opened:
            connection.disconnect()


def install(app: Flask) -> Rotation:
    """The app's round-robin turns; connects on first use, in the process that uses it."""
    turns = app.extensions[EXTENSION] = Rotation(runtime_of(app).redis)
    on_shutdown(app, turns.close)
    return turns


def rotation(app: Flask) -> Rotation:
    turns: Rotation = app.extensions[EXTENSION]
    return turns
