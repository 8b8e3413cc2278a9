"""What a request or a job needs at hand (settings, database, provider, clock, Redis), the clocks; which process
this is, kept current across fork without a system call per check (gunicorn forks its workers from the
process that built the app; threads, connections and queues made before the fork belong to the parent)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from flask import Flask, current_app
from redis import Redis

from gateway.database import Database
from gateway.settings import Settings

if TYPE_CHECKING:
    from gateway.provider import Provider

EXTENSION = "gateway"
_CLOSERS = "gateway.closers"


@dataclass
class Runtime:
    settings: Settings
    database: Database
    provider: Provider
    clock: Clock
    redis: Redis


def current() -> Runtime:
    """The runtime of the Flask app in context (web requests and worker jobs both run in one)."""
    runtime: Runtime = current_app.extensions[EXTENSION]
    return runtime


def runtime_of(app: Flask) -> Runtime:
    """The runtime of a given app (outside a request, or for another app than the one in context)."""
    runtime: Runtime = app.extensions[EXTENSION]
    return runtime


def on_shutdown(app: Flask, close: Callable[[], None]) -> None:
    """Something to close when the app shuts down (connections held outside the engine's pool)."""
    app.extensions.setdefault(_CLOSERS, []).append(close)


def shutdown(app: Flask) -> None:
    for close in app.extensions.pop(_CLOSERS, []):
        close()
    runtime_of(app).database.dispose()


class _Process:
    pid = os.getpid()
    generation = 0  # how many forks led to this process

    @classmethod
    def forked(cls) -> None:
        cls.pid = os.getpid()
        cls.generation += 1


process = _Process
os.register_at_fork(after_in_child=_Process.forked)


# --- clocks: passed in, so tests move time without patching ----------------------------------------------

class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FrozenClock:
    """A clock tests set and move by hand."""

    def __init__(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("FrozenClock needs an aware datetime")
        self._at = at
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._at

    def set(self, at: datetime) -> None:
        with self._lock:
            self._at = at

    def advance(self, delta: timedelta) -> datetime:
        with self._lock:
            self._at += delta
            return self._at
