"""Tracked numbers: ring plans and the ring decision, round-robin turns, provider provisioning, and the
number health check (`gateway numbers check` and its daily run)."""

from __future__ import annotations

from flask import Flask

from gateway.jobs import register_sweeper
from tracked_numbers import jobs, rotation


def init_app(app: Flask) -> None:
    rotation.install(app)
    register_sweeper("number-health", jobs.enqueue_due_checks)
