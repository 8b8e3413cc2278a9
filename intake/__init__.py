"""Leads from other channels: web forms (`POST /api/v1/leads`), ADF/XML by HTTP (`POST /api/v1/intake/adf`)
and by e-mail (`gateway intake smtp`). The ADF parser (`adf.py`) and the mail reader (`mail.py`) are pure;
`services.py` turns what they read into leads and announces `events.lead_received` (a form's in the
request; ADF prospects are stored by the request and built by the worker, `jobs.py`).

`init_app` registers the HTTP face on the API, adds it to the OpenAPI document, registers the sweeper
that queues the build again for ADF records left pending, and counts those records for `gateway status`
and /metrics.
"""

from __future__ import annotations

from flask import Flask

from gateway.jobs import register_sweeper
from gateway.metrics import register_backlog


def init_app(app: Flask) -> None:
    from intake import jobs, services, views

    app.register_blueprint(views.blueprint)
    views.describe_api()
    register_sweeper("intake-builds", jobs.enqueue_pending_builds)
    register_backlog("intake_records", "intake records", services.backlog)
