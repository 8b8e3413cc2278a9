"""The dashboard pages people sign in to."""

from __future__ import annotations

from flask import Flask

from gateway.dashboard import views


def init_app(app: Flask) -> None:
    views.init_app(app)
