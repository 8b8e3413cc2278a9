"""CRM delivery: the outbox written with each lead event, ADF/XML and JSON formats, HTTP and e-mail
transport, dead letters and their replay."""

from __future__ import annotations

from flask import Flask

from gateway.crm import outbox


def init_app(app: Flask) -> None:
    outbox.init_app(app)
