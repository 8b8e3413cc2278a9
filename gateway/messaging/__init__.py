"""Texts: outbound sends through one send guard, inbound texts and keywords, status callbacks."""

from __future__ import annotations

from flask import Flask

from gateway.messaging import inbound, outbound


def init_app(app: Flask) -> None:
    outbound.init_app(app)
    inbound.init_app(app)
