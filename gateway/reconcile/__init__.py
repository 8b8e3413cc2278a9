"""Reconciliation with the provider: calls and texts its log holds that no webhook told the gateway of,
and calls whose end never came, settled as if their webhooks had arrived (see services.py)."""

from __future__ import annotations

from flask import Flask

from gateway.reconcile import jobs


def init_app(app: Flask) -> None:
    jobs.init_app(app)
