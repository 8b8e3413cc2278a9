"""`gateway db upgrade`: Alembic migrations from the first table on, every branch's head."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str) -> None:
    if database_url.startswith("sqlite:///"):
        Path(database_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(database_url), "heads")


def revision(database_url: str, message: str, head: str = "heads", branch_label: str | None = None) -> None:
    """For developers: autogenerate a revision against an up-to-date database."""
    command.revision(
        alembic_config(database_url),
        message=message,
        autogenerate=True,
        head=head,
        branch_label=branch_label,
    )
