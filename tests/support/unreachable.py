"""Addresses of servers that are not there: a free loopback port nobody listens on."""

from __future__ import annotations

from gateway.embedded_redis import free_port


def dead_postgres() -> str:
    return f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/gone?connect_timeout=1"


def dead_redis() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"
