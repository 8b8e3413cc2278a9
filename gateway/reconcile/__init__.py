"""Reconciliation with the provider: calls and texts its log holds that no webhook told the gateway of,
and calls whose end never came, settled as if their webhooks had arrived (see services.py); texts a
stopped worker left in doubt, settled against its log of sent texts (doubt.py, which also counts the
texts whose send is not confirmed for `gateway status` and /metrics)."""

from __future__ import annotations

from flask import Flask

from gateway.metrics import register_backlog
from gateway.reconcile import doubt, jobs


def init_app(app: Flask) -> None:
    jobs.init_app(app)
    register_backlog("unconfirmed_texts", "texts not confirmed", doubt.backlog)
