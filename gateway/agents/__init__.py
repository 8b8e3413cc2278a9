"""The agent loop: alerts, priority, click-to-call, the reply relay, escalation and the leak ledger."""

from __future__ import annotations

from flask import Flask

from gateway import events
from gateway.agents import alerts, escalation, relay, views
from gateway.jobs import register_sweeper


def init_app(app: Flask) -> None:
    alerts.init_app(app)
    app.register_blueprint(views.blueprint)
    events.agent_texted.connect(relay.on_agent_texted, weak=False)
    register_sweeper("escalation", escalation.escalate)
