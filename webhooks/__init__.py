"""Provider-facing HTTP: signature check, payload parsing, voice and SMS endpoints. Thin."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    from webhooks import failsafe, fastpath, sms, voice

    app.register_blueprint(voice.blueprint)
    voice.init_hot_path(app)
    sms.init_app(app)
    failsafe.init_app(app)
    fastpath.init_app(app)
