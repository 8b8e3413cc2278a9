"""Leads from other channels: web forms (`POST /api/v1/leads`), ADF/XML by HTTP (`POST /api/v1/intake/adf`)
and by e-mail (`gateway intake smtp`). The ADF parser (`adf.py`) and the mail reader (`mail.py`) are pure;
`services.py` turns what they read into leads and announces `events.lead_received`.

`init_app` registers the HTTP face on the API and adds it to the OpenAPI document.
"""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    from intake import views

    app.register_blueprint(views.blueprint)
    views.describe_api()
