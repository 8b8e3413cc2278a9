"""`gateway crm deadletters` and `gateway crm replay`: the CRM deliveries that gave up, and a second try."""

from __future__ import annotations

import click

from gateway.database import Database
from gateway.settings import settings_for_command


def register(main: click.Group) -> None:
    main.add_command(crm)


@click.group()
def crm() -> None:
    """CRM deliveries (the outbox)."""


@crm.command("deadletters")
@click.option("--limit", default=200, show_default=True, type=click.IntRange(1, 10000))
def deadletters(limit: int) -> None:
    """List dead letters: deliveries refused by the CRM or still failing after 24 h."""
    from sqlalchemy import select

    from gateway.crm.outbox import dead_letters
    from gateway.models import Store

    database = _database()
    try:
        with database.session() as session:
            rows = dead_letters(session, limit=limit)
            stores = {store_id: key for store_id, key in session.execute(select(Store.id, Store.key))}
            lines = [
                f"{row.id}\t{stores.get(row.store_id, row.store_id)}\t{row.kind}\t{row.target}\t{row.event}\t"
                f"lead {row.lead_id}\t{row.attempts} attempt(s)\t{row.created_at:%Y-%m-%d %H:%M}Z\t"
                f"{_one_line(row.last_error)}"
                for row in rows
            ]
    finally:
        database.dispose()
    if not lines:
        click.echo("no dead letters")
        return
    click.echo("id\tstore\ttype\tdestination\tevent\tlead\tattempts\tcreated\tlast error")
    for line in lines:
        click.echo(line)
    click.echo(f"{len(lines)} dead letter(s); replay with: gateway crm replay ID... | --all")


@crm.command("replay")
@click.argument("ids", nargs=-1, type=int)
@click.option("--all", "replay_all", is_flag=True, help="Replay every dead letter.")
def replay(ids: tuple[int, ...], replay_all: bool) -> None:
    """Send dead letters again (same body, same idempotency key) with a fresh 24 h retry window."""
    from gateway.crm.outbox import NotDead
    from gateway.crm.outbox import replay as replay_deliveries
    from gateway.runtime import SystemClock

    if not ids and not replay_all:
        raise click.UsageError("name the deliveries to replay (IDs) or pass --all")
    if ids and replay_all:
        raise click.UsageError("pass IDs or --all, not both")
    settings = settings_for_command()
    # The worker sends them: through Redis at once, or through the sweep if Redis is not reachable.
    from redis import Redis

    from gateway.jobs import SESSION_REDIS_KEY

    database = Database(settings.database_url)
    redis = Redis.from_url(settings.redis_address, socket_connect_timeout=0.5, socket_timeout=5)
    database.sessions.configure(info={SESSION_REDIS_KEY: redis})
    try:
        with database.session() as session:
            rows = replay_deliveries(session, None if replay_all else list(ids), SystemClock().now())
            replayed = [row.id for row in rows]
    except (NotDead, LookupError) as error:
        raise click.ClickException(str(error.args[0] if error.args else error)) from None
    finally:
        database.dispose()
        redis.close()
    if not replayed:
        click.echo("no dead letters to replay")
        return
    click.echo(f"replaying {len(replayed)} delivery(ies): {' '.join(str(i) for i in replayed)}")




def _database() -> Database:
    return Database(settings_for_command().database_url)


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())[:300]
