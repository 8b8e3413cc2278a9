"""The `gateway` command."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from gateway.crm import cli as crm_cli
from gateway.messaging import cli as messaging_cli
from gateway.settings import settings_for_command

if TYPE_CHECKING:
    from gateway.database import Database


@click.group()
def main() -> None:
    """Dealer gateway: every call and text to a tracked number ends as a lead with an owner."""


# --- db --------------------------------------------------------------------------------------------------


@main.group()
def db() -> None:
    """The database."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply every migration (SQLite file by default, DATABASE_URL otherwise)."""
    from gateway.database import upgrade

    settings = settings_for_command()
    upgrade(settings.database_url)
    click.echo("database is up to date")


# --- serve and worker ---------------------------------------------------------------------------------------


ROOT = Path(__file__).resolve().parent.parent
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class StopSignals:
    """SIGTERM, SIGINT (Ctrl-C) and SIGHUP noted, not raised: `serve` stops what it started, in order,
    whenever one arrives (even during start-up), and says so in one line instead of a traceback."""

    def __init__(self) -> None:
        self.received: int | None = None
        for number in STOP_SIGNALS:
            signal.signal(number, self._note)

    def _note(self, signum: int, _frame: object) -> None:
        if self.received is None:
            self.received = signum

    def wait(self, children: list[subprocess.Popen[bytes]]) -> None:
        """Until a stop signal, or until a child exits (then the whole gateway stops)."""
        while self.received is None:
            if any(child.poll() is not None for child in children):
                raise click.ClickException("a gateway process stopped; shutting down")
            time.sleep(0.2)


def _stop_children(children: list[subprocess.Popen[bytes]], timeout: float = 40.0) -> None:
    """SIGTERM to each, then SIGKILL to the process group of any still running `timeout` seconds later
    (longer than the worker pool's own grace): each child leads a session of its own, so its children
    (gunicorn's workers, the worker processes and their schedulers) go with it instead of living on."""
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child in children:
        try:
            child.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            click.echo(f"process {child.pid} did not stop within {timeout:.0f}s; killed with its children", err=True)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the web server binds to.")
@click.option("--port", default=8000, show_default=True, type=int, envvar="PORT")
@click.option("--web-workers", default=2, show_default=True, type=int, help="gunicorn worker processes.")
@click.option(
    "--workers", default=None, type=int,
    help="RQ worker processes (default GATEWAY_WORKERS, else 4 on SQLite, 3 on PostgreSQL).",
)
def serve(host: str, port: int, web_workers: int, workers: int | None) -> None:
    """Run everything: database migrations, an embedded Redis if REDIS_URL is unset, web, workers, intake.

    Every process it starts runs in a session of its own, so Ctrl-C at a terminal reaches this command
    only, and it stops the web server, the workers and the intake first, Redis last, leaving nothing
    running."""
    from gateway.database import upgrade
    from gateway.embedded_redis import EmbeddedRedis, free_port
    from gateway.simulator import SERVE_URL_FILE, write_serve_url

    settings = settings_for_command()
    stop = StopSignals()
    env = dict(os.environ)
    env.setdefault("GATEWAY_INSTANCE_DIR", str(settings.instance_dir))
    url = f"http://{host}:{port}"
    if not os.environ.get("PUBLIC_BASE_URL"):
        env["PUBLIC_BASE_URL"] = url
    redis_server = None
    children: list[subprocess.Popen[bytes]] = []
    serve_url = settings.instance_dir / SERVE_URL_FILE
    try:
        if settings.redis_url is None:
            redis_server = EmbeddedRedis(settings.embedded_redis_port, settings.instance_dir / "redis")
            try:
                redis_server.start()
            except RuntimeError:
                if os.environ.get("GATEWAY_REDIS_PORT"):
                    raise
                # The default port is taken (another gateway?): any free loopback port will do.
                redis_server = EmbeddedRedis(free_port(), settings.instance_dir / "redis")
                redis_server.start()
            env["REDIS_URL"] = redis_server.url
        upgrade(settings.database_url)
        env["GATEWAY_INTAKE_SMTP"] = _intake_address(
            settings.intake_smtp, explicit="GATEWAY_INTAKE_SMTP" in os.environ
        )
        # Web and worker processes count into one folder, which GET /metrics sums (gunicorn.conf.py).
        metrics_dir = settings.instance_dir.resolve() / "metrics"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True, exist_ok=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        count = workers if workers is not None else settings.workers
        if stop.received is None:
            worker_command = [sys.executable, "-m", "gateway.cli", "worker", "--concurrency", str(max(count, 1))]
            children.append(subprocess.Popen(worker_command, env=env, start_new_session=True))  # noqa: S603
            children.append(
                subprocess.Popen(
                    [sys.executable, "-m", "gateway.cli", "intake", "smtp"], env=env, start_new_session=True
                )
            )
            children.append(
                subprocess.Popen(  # noqa: S603
                    [
                        sys.executable, "-m", "gunicorn",
                        "--config", str(ROOT / "gunicorn.conf.py"),  # production settings, the masked access log
                        "--bind", f"{host}:{port}",
                        "--workers", str(web_workers),
                        "--access-logfile", "-",
                        "--log-level", "warning",
                        "wsgi:app",
                    ],
                    env=env,
                    cwd=str(ROOT),
                    start_new_session=True,
                )
            )
            write_serve_url(settings.instance_dir, url, env["PUBLIC_BASE_URL"])
            _banner(settings, env, url)
            stop.wait(children)
    finally:
        _stop_children(children)
        if redis_server is not None:
            redis_server.stop()
        serve_url.unlink(missing_ok=True)
    if stop.received is not None:
        name = signal.Signals(stop.received).name
        click.echo(f"{name}: stopped the web server, the workers, the e-mail intake and Redis.")


def _intake_address(address: str, *, explicit: bool) -> str:
    """The intake's host:port; the default port taken (another gateway?), any free loopback port."""
    import socket

    from gateway.embedded_redis import free_port

    if explicit:
        return address
    host, _, port = address.rpartition(":")
    with socket.socket() as probe:
        try:
            probe.bind((host, int(port)))
        except OSError:
            return f"{host}:{free_port()}"
    return address


def _banner(settings: Any, env: dict[str, str], url: str) -> None:
    base = env["PUBLIC_BASE_URL"]
    command = str(Path(sys.executable).parent / "gateway")
    mode = "sandbox (texts and calls are recorded, not sent)" if settings.sandbox else "live Twilio"
    click.echo(
        f"\nDealer gateway is running ({mode}).\n"
        f"  Listening:   {url}\n"
        f"  Dashboard:   {base}/\n"
        f"  API:         {base}/api/v1/openapi.json\n"
        f"  Database:    {settings.database_url}\n"
        f"  Redis:       {env.get('REDIS_URL')}\n"
        f"  ADF e-mail:  smtp://{env['GATEWAY_INTAKE_SMTP']} (to <store-key>@any.domain)\n\n"
        f"In another terminal, load the example dealer group, play a missed call and look:\n"
        f"  {command} config apply examples/dealer-group.yaml\n"
        f"  {command} simulate call --from +12025550199 --to +12025550123 --outcome no-answer\n"
        f"  {command} apikey create --name me      # sign in to the dashboard with the key it prints\n"
        f"  curl -H 'Authorization: Bearer KEY' {url}/api/v1/leads\n"
        f"Stop with Ctrl-C (or SIGTERM): everything started here stops.\n",
    )


@main.command()
@click.option("--burst", is_flag=True, help="Work what is queued, then stop (one process, every lane).")
@click.option(
    "--concurrency", type=click.IntRange(1, 64), default=None,
    help="Worker processes (default: GATEWAY_WORKERS, else 4 on SQLite and 3 on PostgreSQL): one for urgent "
    "work only, one for urgent and default, the rest for every lane.",
)
@click.option("--lanes", default=None, hidden=True, help="One process for these lanes, e.g. urgent,default.")
@click.option("--sweep/--no-sweep", default=True, hidden=True)
def worker(burst: bool, concurrency: int | None, lanes: str | None, sweep: bool) -> None:
    """Run RQ workers on the urgent, default and crm lanes, with the scheduler and the sweep."""
    import gc

    from gateway.jobs import LANES, Lane
    from gateway.worker import run_pool, run_worker

    settings = settings_for_command()
    count = concurrency or settings.workers
    if not burst and lanes is None and count > 1:
        from gateway.logs import configure_logging

        configure_logging(json_logs=not settings.testing)
        raise SystemExit(run_pool(count))
    try:
        chosen = tuple(Lane(name.strip()) for name in lanes.split(",")) if lanes else LANES
    except ValueError:
        raise click.BadParameter(f"lanes are {', '.join(LANES)}", param_hint="--lanes") from None
    from gateway.app import create_app

    app = create_app(settings)
    # A job loads and drops thousands of rows' objects: everything alive at start-up (modules, the app)
    # leaves the collector's view, and young objects are collected less often.
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    run_worker(app, lanes=chosen, burst=burst, sweep=sweep)


@main.command()
def status() -> None:
    """The lanes, the CRM outbox, the failsafe spool and the readiness checks, on one screen."""
    from gateway.app import create_app
    from gateway.metrics import readiness, status_report
    from gateway.runtime import runtime_of, shutdown

    app = create_app(settings_for_command())
    current = runtime_of(app)
    try:
        for line in status_report(current):
            click.echo(line)
        ready = readiness(current).ready
    finally:
        shutdown(app)
    if not ready:
        raise SystemExit(1)


# --- intake ------------------------------------------------------------------------------------------------


@main.group()
def intake() -> None:
    """Leads from other channels."""


@intake.command("smtp")
@click.option("--listen", default=None, help="host:port (default GATEWAY_INTAKE_SMTP or 127.0.0.1:2525).")
def intake_smtp(listen: str | None) -> None:
    """Run the SMTP server that takes ADF e-mail for <store-key>@any domain and the stores' intake_emails."""
    from gateway.app import create_app
    from intake.smtp import IntakeServer, parse_address

    settings = settings_for_command()
    try:
        host, port = parse_address(listen or settings.intake_smtp)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    app = create_app(settings)
    server = IntakeServer(app, host, port)
    try:
        server.start()
    except (OSError, RuntimeError) as error:
        raise click.ClickException(f"cannot listen on {host}:{port}: {error}") from None
    click.echo(f"intake SMTP server on {host}:{port}")
    stop = {"now": False}

    def _stop(_signum: int, _frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stop["now"]:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


# --- config and numbers ------------------------------------------------------------------------------------------


@main.group()
def config() -> None:
    """Configuration as code."""


DESTRUCTIVE = ("deactivated agent ", "removed number ")


@config.command("apply")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Print what would be added, changed and removed; apply nothing.")
def config_apply(file: Path, dry_run: bool) -> None:
    """Apply a YAML configuration: prints what it added, changed and removed. Idempotent.

    At a terminal, a plan that deactivates agents or retires numbers is shown and asks before it is
    applied (a file covering one store of two would retire the other's); scripts apply as before."""
    from gateway.calls.failsafe import write_main_lines
    from gateway.database import Database, upgrade
    from gateway.dealer_config.apply import apply_config
    from gateway.dealer_config.parse import load_config
    from gateway.dealer_config.schema import ConfigError

    settings = settings_for_command()
    if not file.exists():
        raise click.ClickException(f"{file}: no such file")
    try:
        parsed = load_config(file)
    except ConfigError as error:
        click.echo(str(error), err=True)
        raise SystemExit(1) from None
    upgrade(settings.database_url)
    database = Database(settings.database_url)
    if dry_run or sys.stdin.isatty():
        # The plan is the same apply, rolled back: what it prints is what applying would do.
        with database.sessions() as session:
            plan = apply_config(session, parsed)
            session.rollback()
        destructive = [line for line in plan if line.startswith(DESTRUCTIVE)]
        if dry_run or (destructive and not _confirmed(plan, destructive)):
            database.dispose()
            for line in plan if dry_run else []:
                click.echo(f"would: {line}")
            click.echo(
                (f"{len(plan)} change(s) planned, none applied (--dry-run)" if plan else "no changes")
                if dry_run else "nothing applied"
            )
            return
    with database.session() as session:
        changes = apply_config(session, parsed)
    try:
        with database.session() as session:
            write_main_lines(session, settings.instance_dir)
    except OSError as error:
        click.echo(f"warning: could not write the failsafe map: {error}", err=True)
    for line in changes:
        click.echo(line)
    click.echo(f"{len(changes)} change(s) applied" if changes else "no changes")
    _print_configuration_problems(database)
    database.dispose()


def _print_configuration_problems(database: Database) -> None:
    """What the configuration now in the database leaves broken (the provider's side is `numbers check`)."""
    from tracked_numbers.health import configuration_problems

    with database.session() as session:
        problems = configuration_problems(session)
    for problem in problems:
        click.echo(f"problem: {problem}")
    if problems:
        click.echo(f"{len(problems)} problem(s) left; `gateway numbers check` also checks the provider")


def _confirmed(plan: list[str], destructive: list[str]) -> bool:
    for line in plan:
        click.echo(f"would: {line}")
    agents = sum(line.startswith(DESTRUCTIVE[0]) for line in destructive)
    numbers = len(destructive) - agents
    return click.confirm(
        f"This deactivates {agents} agent(s) and retires {numbers} number(s). Apply?", default=False
    )


@main.group()
def numbers() -> None:
    """Tracked numbers on the provider."""


@numbers.command("sync")
def numbers_sync() -> None:
    """Point every tracked number's voice, SMS and status URLs at this gateway."""
    from gateway.database import Database
    from gateway.provider import ProviderError, make_provider
    from tracked_numbers.provisioning import sync_numbers

    settings = settings_for_command()
    database = Database(settings.database_url)
    try:
        with database.session() as session:
            report = sync_numbers(session, make_provider(settings), settings.public_base_url)
    except ProviderError as error:
        raise click.ClickException(str(error)) from None
    finally:
        database.dispose()
    for line in report.lines():
        click.echo(line)
    if report.missing:
        raise SystemExit(1)


@numbers.command("check")
def numbers_check() -> None:
    """One line per problem (drift from this gateway's URLs, numbers missing from the account, ring lists
    with no active agent, agents without a textable mobile, departments nobody can answer); exit 1 if any."""
    from gateway.database import Database
    from gateway.provider import ProviderError, make_provider
    from tracked_numbers.health import configuration_problems, provider_problems

    settings = settings_for_command()
    database = Database(settings.database_url)
    lines: list[str] = []
    try:
        with database.session() as session:
            if settings.sandbox:
                click.echo("sandbox mode: the provider's numbers are not checked")
            else:
                try:
                    lines += map(str, provider_problems(session, make_provider(settings), settings.public_base_url))
                except ProviderError as error:
                    lines.append(f"provider: could not list the account's numbers: {error}")
            lines += map(str, configuration_problems(session))
    finally:
        database.dispose()
    for line in lines:
        click.echo(line)
    if lines:
        raise SystemExit(1)
    click.echo("no problems found")


# --- api keys --------------------------------------------------------------------------------------------------


@main.group()
def apikey() -> None:
    """API keys."""


@apikey.command("create")
@click.option("--name", required=True, help="Who or what the key is for.")
@click.option("--store", "stores", multiple=True, help="Store key it may see (repeat); none: every store.")
def apikey_create(name: str, stores: tuple[str, ...]) -> None:
    """Create a key; prints it once, alone on the last line."""
    from gateway.api.keys import UnknownStore, create_key
    from gateway.database import Database, upgrade
    from gateway.runtime import SystemClock

    settings = settings_for_command()
    upgrade(settings.database_url)
    database = Database(settings.database_url)
    try:
        with database.session() as session:
            key, plaintext = create_key(session, name, list(stores) or None, SystemClock().now())
            scope = ", ".join(key.stores) if key.stores else "every store"
            prefix = key.prefix
    except UnknownStore as error:
        raise click.ClickException(str(error)) from None
    finally:
        database.dispose()
    click.echo(f"created key {prefix} '{name}' for {scope}; it is shown only now:")
    click.echo(plaintext)


@apikey.command("list")
def apikey_list() -> None:
    """List keys (never their secrets)."""
    from gateway.api.keys import list_keys
    from gateway.database import Database

    database = Database(settings_for_command().database_url)
    with database.session() as session:
        for key in list_keys(session):
            state = f"revoked {key.revoked_at:%Y-%m-%d}" if key.revoked_at else "active"
            scope = ",".join(key.stores) if key.stores else "*"
            click.echo(f"{key.id}\t{key.prefix}\t{key.name}\t{scope}\t{state}")
    database.dispose()


@apikey.command("revoke")
@click.argument("key")
def apikey_revoke(key: str) -> None:
    """Revoke a key by its id or prefix."""
    from gateway.api.keys import revoke_key
    from gateway.database import Database
    from gateway.runtime import SystemClock

    database = Database(settings_for_command().database_url)
    with database.session() as session:
        row = revoke_key(session, key, SystemClock().now())
    database.dispose()
    if row is None:
        raise click.ClickException(f"no key {key!r}")
    click.echo(f"revoked key {row.prefix} '{row.name}'")


# --- simulate --------------------------------------------------------------------------------------------------


@main.group()
def simulate() -> None:
    """Play provider webhooks against a running gateway (--url, the one `gateway serve` runs, or PUBLIC_BASE_URL)."""


@simulate.command("call")
@click.option("--to", "to", required=True, help="The tracked number called.")
@click.option("--from", "from_", required=True, help="The caller; 'anonymous' for a withheld number.")
@click.option(
    "--outcome",
    type=click.Choice(["no-answer", "answer", "voicemail", "voicemail-pickup", "busy", "hangup"]),
    default="no-answer",
    show_default=True,
)
@click.option("--url", default=None, help="The gateway's base URL (default: where `gateway serve` listens, "
              "else PUBLIC_BASE_URL).")
@click.option("--transcript", default="Hi, I'm calling about the CR-V I saw online. Please call me back today.")
def simulate_call(to: str, from_: str, outcome: str, url: str | None, transcript: str) -> None:
    """A call from start to end, following the TwiML the gateway answers, the way the provider does."""
    from gateway.simulator import SimulationError, play_call, poster_for

    poster = poster_for(settings_for_command(), url)
    try:
        for line in play_call(poster, to=to, caller=from_, outcome=outcome, transcript=transcript):
            click.echo(line)
    except SimulationError as error:
        raise click.ClickException(str(error)) from None


# Commands of the core's packages, each added by name.
crm_cli.register(main)
messaging_cli.register(main)

if __name__ == "__main__":
    main()
