"""The workspace: the pages a dealership's people sign in to (views.py), with their templates, sign-in and
sessions (auth.py), the lead timeline (timeline.py) and the shared page parts (pages.py)."""

from __future__ import annotations

from flask import Flask

from gateway.dashboard.pages import is_page, page_for_error


def init_app(app: Flask) -> None:
    from gateway.dashboard import models, views

    del models  # the tables are part of the metadata
    views.init_app(app)


__all__ = ["init_app", "is_page", "page_for_error"]
