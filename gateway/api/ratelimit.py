"""Requests per minute for each API key, counted in Redis in fixed one-minute windows.

A fixed window lets a client burst up to twice the limit across a window boundary; for protecting the
database from a runaway integration that is enough, and it costs one INCR per request. When Redis is
unreachable every request is allowed: a CRM sync must not fail because the counter is down.
"""

from __future__ import annotations

import logging

from redis.exceptions import RedisError

from gateway import runtime
from gateway.api import set_rate_limiter
from gateway.web import ApiError

log = logging.getLogger(__name__)

WINDOW = 60


def limit_request(key_prefix: str) -> None:
    """Count one request for the key; ApiError 429 with `retry_after` once the minute's budget is spent."""
    current = runtime.current()
    limit = current.settings.api_rate_limit
    if limit <= 0:
        return
    moment = int(current.clock.now().timestamp())
    window = moment // WINDOW
    counter = f"gateway:ratelimit:{key_prefix}:{window}"
    try:
        pipe = current.redis.pipeline(transaction=False)  # one round trip; the EXPIRE needs no MULTI
        pipe.incr(counter)
        pipe.expire(counter, WINDOW * 2)
        count = int(pipe.execute()[0])
    except RedisError as error:
        log.warning("rate limit not enforced, redis unavailable: %s", error)
        return
    if count > limit:
        retry_after = max((window + 1) * WINDOW - moment, 1)
        raise ApiError(
            429,
            "rate_limited",
            f"More than {limit} requests in a minute with this key; retry in {retry_after} s.",
            retry_after=retry_after,
        )


set_rate_limiter(limit_request)
