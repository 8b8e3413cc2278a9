"""Round-robin turns in Redis: a retried webhook keeps its turn; a Redis that forgot or is gone."""

from __future__ import annotations

import logging

from redis import Redis

from gateway.simulator import new_sid
from tests.support.unreachable import dead_redis
from tracked_numbers.rotation import Rotation


def test_a_retried_call_keeps_its_turn(redis):
    turns = Rotation(redis)
    first, second = new_sid("CA"), new_sid("CA")
    assert [turns.turn(3, first), turns.turn(3, second), turns.turn(3, first)] == [0, 1, 0]
    turns.close()


def test_turns_survive_a_redis_that_forgot_the_script(redis):
    turns = Rotation(redis)
    assert [turns.turn(7, new_sid("CA")) for _ in range(2)] == [0, 1]
    redis.script_flush()  # a restarted Redis knows no scripts
    assert turns.turn(7, new_sid("CA")) == 2
    redis.flushdb()  # nor the rotation: it starts again at the first agent
    assert turns.turn(7, new_sid("CA")) == 0
    turns.close()


def test_turns_pause_when_redis_is_gone(caplog):
    gone = Rotation(Redis.from_url(dead_redis()))
    with caplog.at_level(logging.WARNING, logger="tracked_numbers.rotation"):
        assert gone.turn(7, new_sid("CA")) is None
        assert gone.turn(7, new_sid("CA")) is None  # paused: Redis is not asked a second time
    assert len([r for r in caplog.records if "did not answer" in r.getMessage()]) == 1
    gone.close()
