"""Tracked numbers: ring plans and the ring decision, round-robin turns, provider provisioning."""

from __future__ import annotations

from flask import Flask

from tracked_numbers import rotation


def init_app(app: Flask) -> None:
    rotation.install(app)
