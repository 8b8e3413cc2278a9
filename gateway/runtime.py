"""What a request or a job needs at hand: settings, database, provider, clock, Redis."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import current_app
from redis import Redis

from gateway.clock import Clock
from gateway.database import Database
from gateway.settings import Settings

if TYPE_CHECKING:
    from gateway.provider import Provider

EXTENSION = "gateway"


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
