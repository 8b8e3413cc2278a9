"""Routes: which store, department and source a tracked number belongs to, cached for the hot path.

A route is plain data read from a tracked number, its store and its ring list, safe to cache and share
across threads; every part of the gateway that must know where a call or text landed reads one.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app
from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.leads import Origin
from gateway.models import Agent, Store, TrackedNumber

ROUTE_CACHE = "gateway.routes"


@dataclass(frozen=True)
class RingAgent:
    id: int
    key: str
    name: str
    phone: str
    schedule: dict[str, Any] | None


@dataclass(frozen=True)
class Route:
    """A tracked number with what routing needs of its store and agents; plain data, safe to cache."""

    number_id: int
    number: str
    store_id: int
    store_key: str
    store_name: str
    timezone: str
    main_line: str
    department: str
    hours: dict[str, Any] | None
    source: str
    source_weight: int
    strategy: str
    ring: tuple[RingAgent, ...]
    ring_timeout: int
    screen: bool
    record: bool
    cadence_key: str | None
    prompts: dict[str, Any]
    recording_disclosure: str | None = None  # the store's wording; None: the default

    @property
    def origin(self) -> Origin:
        return Origin(
            store_id=self.store_id,
            department=self.department,
            source=self.source,
            tracked_number_id=self.number_id,
            tracked_number=self.number,
            cadence_key=self.cadence_key,
            source_weight=self.source_weight,
        )

    def prompt(self, name: str, default: str) -> str:
        text = str(self.prompts.get(name) or default)
        return text.format_map(
            _Blank(store=self.store_name, source=self.source, department=self.department)
        )


class _Blank(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return ""


class RouteCache:
    """Routes by number for a few seconds: the incoming-call webhook is the hot path."""

    def __init__(self, ttl: float = 5.0) -> None:
        self._ttl = ttl
        self._lock = threading.Lock()
        self._items: dict[str, tuple[float, Route | None]] = {}

    def fresh(self, number: str) -> tuple[bool, Route | None]:
        """(True, route) when the cache knows the number and the entry is still fresh."""
        with self._lock:
            hit = self._items.get(number)
        if hit is not None and hit[0] > time.monotonic():
            return True, hit[1]
        return False, None

    def get(self, session: Session, number: str) -> Route | None:
        known, cached = self.fresh(number)
        if known:
            return cached
        now = time.monotonic()
        route = load_route(session, number)
        with self._lock:
            self._items[number] = (now + self._ttl, route)
        return route

    def peek(self, number: str) -> Route | None:
        """The last route seen for the number, however old: for when the database is down."""
        with self._lock:
            hit = self._items.get(number)
        return hit[1] if hit else None

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


def load_route(session: Session, number: str) -> Route | None:
    tracked = session.scalar(select(TrackedNumber).where(TrackedNumber.number == number))
    if tracked is None or not tracked.active:
        return None
    store: Store = tracked.store
    keys = [str(k) for k in tracked.ring or []]
    agents = {
        a.key: a
        for a in session.scalars(select(Agent).where(Agent.key.in_(keys), Agent.active.is_(True)))
    }
    ring = tuple(
        RingAgent(id=a.id, key=a.key, name=a.name, phone=a.phone, schedule=a.schedule)
        for a in (agents.get(k) for k in keys)
        if a is not None
    )
    return Route(
        number_id=tracked.id,
        number=tracked.number,
        store_id=store.id,
        store_key=store.key,
        store_name=store.name,
        timezone=store.timezone,
        main_line=store.main_line,
        department=tracked.department,
        hours=store.hours.get(tracked.department),
        source=tracked.source,
        source_weight=tracked.source_weight,
        strategy=tracked.strategy,
        ring=ring,
        ring_timeout=tracked.ring_timeout_seconds,
        screen=tracked.screen,
        record=tracked.record,
        cadence_key=tracked.cadence_key,
        prompts=dict(tracked.prompts or {}),
        recording_disclosure=store.recording_disclosure,
    )


def main_lines(session: Session) -> dict[str, str]:
    """Every tracked number with its store's main line: the failsafe map kept on disk."""
    rows = session.execute(select(TrackedNumber.number, Store.main_line).join(Store)).all()
    return {number: main_line for number, main_line in rows}


def route_cache(app: Flask | None = None) -> RouteCache:
    """The app's route cache (one per app, so two apps in one process never share routes)."""
    extensions = (app or current_app).extensions
    cache: RouteCache = extensions.setdefault(ROUTE_CACHE, RouteCache())
    return cache
