"""Provider-facing HTTP: signature check, payload parsing, voice and SMS endpoints. Thin."""

from __future__ import annotations

from flask import Flask

from webhooks import click_to_call, fastpath, sms, voice, voicemail


def init_app(app: Flask) -> None:
    app.register_blueprint(voice.blueprint)
    sms.init_app(app)
    app.register_blueprint(voicemail.blueprint)
    app.register_blueprint(click_to_call.blueprint)
    fastpath.init_app(app)
