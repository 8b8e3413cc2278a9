"""Alembic environment: the URL comes from the gateway's settings (or the caller's config)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import pool

from gateway.database import Base, make_engine

config = context.config


def _metadata():  # type: ignore[no-untyped-def]
    # Every package's models, for autogenerate; upgrades run the hand-checked revision files.
    import contextlib
    import importlib

    for name in ("gateway.models", "cadences.models", "voicemail.models",
                 "gateway.crm.models", "gateway.agents.models", "gateway.messaging.models",
                 "gateway.reconcile.models", "intake.models", "tracked_numbers.models",
                 "gateway.dashboard.models"):
        with contextlib.suppress(ModuleNotFoundError):
            importlib.import_module(name)
    return Base.metadata


def run() -> None:
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("sqlalchemy.url is not set")
    connectable = config.attributes.get("connection")
    if connectable is None:
        engine = make_engine(url, pool=False)
        with engine.connect() as connection:
            _migrate(connection)
        engine.dispose()
    else:
        _migrate(connectable)


def _migrate(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=_metadata(),
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


del pool
run()
