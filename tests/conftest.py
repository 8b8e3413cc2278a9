"""One app per test, built from test settings over real servers: Redis, PostgreSQL or SQLite, a fake
of Twilio's REST API on loopback. Each test gets a database of its own, copied from a migrated template.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from redis import Redis

from gateway.app import create_app
from gateway.database import Database, upgrade
from gateway.dealer_config.apply import apply_config
from gateway.dealer_config.parse import parse_config
from gateway.embedded_redis import EmbeddedRedis, free_port
from gateway.runtime import FrozenClock, shutdown
from gateway.settings import Settings
from gateway.worker import run_worker, sweep_once
from tests.fakes.twilio_api import FakeTwilio
from tests.support import postgres
from tests.support.config import BASIC_CONFIG
from tests.support.webhooks import AppPoster, SignedClient

PUBLIC_BASE_URL = "https://gateway.example.test"
# Tuesday 24 November 2026, 10:00 in New York: the sales department is open.
OPEN_HOURS = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
ACCOUNT_SID = "AC" + "1" * 32
AUTH_TOKEN = "test-auth-token-" + "0" * 16

DATABASE_KIND = os.environ.get("GATEWAY_TEST_DATABASE", "sqlite")


def pytest_report_header() -> str:
    return f"gateway database under test: {DATABASE_KIND}"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(free_port(), tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


class DatabaseFactory:
    """Fresh, migrated databases, fast: copies of a template migrated once per session."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.server: postgres.PostgresServer | None = None
        if DATABASE_KIND == "postgresql":
            if not postgres.available():
                pytest.exit("GATEWAY_TEST_DATABASE=postgresql but PostgreSQL's initdb is not installed", 3)
            self.server = postgres.PostgresServer(root / "pg")
            self.server.start()
            self.server.execute("CREATE DATABASE gw_template")
            upgrade(self.server.url("gw_template"))
        else:
            self.template = root / "template.sqlite3"
            upgrade(f"sqlite:///{self.template}")

    def new(self) -> str:
        if self.server is not None:
            name = "t_" + uuid.uuid4().hex[:12]
            self.server.execute(f"CREATE DATABASE {name} TEMPLATE gw_template")
            return self.server.url(name)
        path = self.root / f"{uuid.uuid4().hex[:12]}.sqlite3"
        shutil.copyfile(self.template, path)
        return f"sqlite:///{path}"

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


@pytest.fixture(scope="session")
def databases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DatabaseFactory]:
    factory = DatabaseFactory(tmp_path_factory.mktemp("databases"))
    yield factory
    factory.stop()


@pytest.fixture(scope="session")
def twilio_server() -> Iterator[FakeTwilio]:
    with FakeTwilio(ACCOUNT_SID, AUTH_TOKEN) as fake:
        yield fake


@pytest.fixture
def fake_twilio(twilio_server: FakeTwilio) -> FakeTwilio:
    twilio_server.reset()
    return twilio_server


@pytest.fixture
def database_url(databases: DatabaseFactory) -> str:
    return databases.new()


@pytest.fixture
def settings(
    database_url: str, redis_server: EmbeddedRedis, fake_twilio: FakeTwilio, tmp_path: Path
) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=redis_server.url,
        public_base_url=PUBLIC_BASE_URL,
        secret_key="test-secret-key",
        twilio_account_sid=ACCOUNT_SID,
        twilio_auth_token=AUTH_TOKEN,
        twilio_api_base_url=fake_twilio.base_url,
        instance_dir=tmp_path / "instance",
        testing=True,
        sweep_interval=0.2,
        # The daily number health check texts managers; its tests turn it on (tests/tracked_numbers).
        number_check_interval=0,
        # Off: a pass would list every number at the fake in every test's first sweep. The tests of
        # gateway/reconcile/ turn it on.
        reconcile_interval=0,
    )


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(OPEN_HOURS)


@pytest.fixture
def redis(redis_server: EmbeddedRedis) -> Redis:
    client = Redis.from_url(redis_server.url)
    client.flushdb()
    return client


@pytest.fixture
def app(settings: Settings, clock: FrozenClock, redis: Redis) -> Iterator[Flask]:
    application = create_app(settings, clock=clock, redis=Redis.from_url(settings.redis_url or ""))
    yield application
    shutdown(application)


@pytest.fixture
def make_app(settings: Settings, clock: FrozenClock, redis: Redis) -> Iterator[Callable[..., Flask]]:
    """Another app over the same servers with some settings changed (a dead database, a dead Redis)."""
    made: list[Flask] = []

    def build(**changes: Any) -> Flask:
        changed = settings.with_changes(**changes)
        client = redis if "redis_url" not in changes else Redis.from_url(changed.redis_url or "")
        application = create_app(changed, clock=clock, redis=client)
        made.append(application)
        return application

    yield build
    for application in made:
        shutdown(application)


@pytest.fixture
def db(app: Flask) -> Database:
    database: Database = app.extensions["gateway"].database
    return database


@pytest.fixture
def configure(db: Database) -> Callable[[str], list[str]]:
    def apply(text: str = BASIC_CONFIG) -> list[str]:
        with db.session() as session:
            return apply_config(session, parse_config(text, "test.yaml"))

    return apply


@pytest.fixture
def configured(configure: Callable[[str], list[str]]) -> None:
    configure(BASIC_CONFIG)


@pytest.fixture
def client(app: Flask) -> Any:
    return app.test_client()


@pytest.fixture
def twilio(client: Any, settings: Settings) -> SignedClient:
    return SignedClient(client, settings.public_base_url, settings.webhook_auth_token)


@pytest.fixture
def poster(twilio: SignedClient) -> AppPoster:
    return AppPoster(twilio)


@pytest.fixture
def work(app: Flask) -> Callable[[], None]:
    """Run a real RQ worker on the real Redis until the queue is empty (sweep first)."""

    def run(sweep: bool = True) -> None:
        if sweep:
            sweep_once(app)
        run_worker(app, burst=True, sweep=False)

    return run
