"""Round-robin turns kept in Redis, so a round-robin call is answered without waiting on the database.

Each call to a round-robin number takes the number's next turn in one atomic step; a retried webhook
for the same call gets the turn it was given the first time, whichever web process answers it. Redis
holds nothing else here and loses nothing that matters: after a flush the rotation starts again at the
first agent. When Redis does not answer within TIMEOUT_SECONDS, the rotation in the database is used
(`tracked_numbers.round_robin_next`, advanced in the call's own transaction) for the next
PAUSE_SECONDS before Redis is tried again.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from redis import ConnectionPool, Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

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


class Rotation:
    """The turns of every round-robin number, on a Redis client with a short timeout of its own."""

    def __init__(self, redis: Redis) -> None:
        settings: dict[str, Any] = dict(redis.connection_pool.connection_kwargs)
        settings.update(socket_timeout=TIMEOUT_SECONDS, socket_connect_timeout=TIMEOUT_SECONDS)
        self._redis = Redis(connection_pool=ConnectionPool(connection_class=redis.connection_pool.connection_class,
                                                           **settings))
        self._take = self._redis.register_script(TAKE_TURN)
        self._paused_until = 0.0

    def turn(self, number_id: int, call_sid: str) -> int | None:
        """Where this call starts in the number's rotation (0, 1, 2, ...), or None when Redis cannot say."""
        if time.monotonic() < self._paused_until:
            return None
        try:
            taken = self._take(
                keys=[f"gateway:rotation:{number_id}", f"gateway:rotation:call:{call_sid}"],
                args=[REMEMBER_SECONDS],
            )
        except RedisError as error:
            self._paused_until = time.monotonic() + PAUSE_SECONDS
            log.warning("round-robin turns from the database for %.0f s: Redis did not answer (%s)",
                        PAUSE_SECONDS, error)
            return None
        return int(taken) - 1

    def close(self) -> None:
        self._redis.close()
