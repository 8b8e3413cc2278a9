"""When passes run (gateway/reconcile/jobs.py): every GATEWAY_RECONCILE_INTERVAL, off at 0, nothing in
sandbox mode (said once)."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from redis import Redis
from sqlalchemy import func, select

from gateway.app import create_app
from gateway.models import Lead
from gateway.reconcile.jobs import PASS_KEY, run_pass
from gateway.runtime import shutdown
from gateway.settings import SettingsError, load_settings
from gateway.worker import run_worker, sweep_once
from tests.support.config import BASIC_CONFIG, CUSTOMER, SIMULTANEOUS


@pytest.fixture
def build(settings, clock, redis, configure):
    made = []

    def make(**changes):
        application = create_app(settings.with_changes(**changes), clock=clock,
                                 redis=Redis.from_url(settings.redis_url or ""))
        made.append(application)
        return application

    yield make
    for application in made:
        shutdown(application)


def leads(db) -> int:
    with db.session() as session:
        return session.scalar(select(func.count()).select_from(Lead)) or 0


def work(application) -> None:
    sweep_once(application)
    run_worker(application, burst=True, sweep=False)


def seed_missed_call(fake_twilio, clock) -> str:
    return fake_twilio.add_inbound_call(from_=CUSTOMER, to=SIMULTANEOUS, status="no-answer",
                                        start_time=clock.now() - timedelta(minutes=3))


def test_a_pass_starts_once_per_interval_across_sweeps(build, db, configure, clock, fake_twilio, redis):
    configure(BASIC_CONFIG)
    application = build(reconcile_interval=300)
    seed_missed_call(fake_twilio, clock)
    work(application)
    assert leads(db) == 1
    assert redis.pttl(PASS_KEY) > 0

    # Within the interval the sweep starts no second pass, whatever the provider has now.
    fake_twilio.add_inbound_call(from_="+12025550177", to=SIMULTANEOUS, status="busy",
                                 start_time=clock.now() - timedelta(minutes=2))
    work(application)
    assert leads(db) == 1
    redis.delete(PASS_KEY)  # the interval has passed
    work(application)
    assert leads(db) == 2


def test_reconciliation_is_off_at_zero(build, db, configure, clock, fake_twilio, redis, caplog):
    configure(BASIC_CONFIG)
    application = build(reconcile_interval=0)
    seed_missed_call(fake_twilio, clock)
    with caplog.at_level(logging.INFO, logger="gateway.reconcile.jobs"):
        work(application)
        work(application)
    assert leads(db) == 0
    assert not redis.exists(PASS_KEY)
    assert [r.getMessage() for r in caplog.records].count(
        "reconciliation with the provider is off (GATEWAY_RECONCILE_INTERVAL=0)") == 1


def test_sandbox_mode_does_nothing_and_says_so_once(build, db, configure, clock, redis, caplog):
    configure(BASIC_CONFIG)
    application = build(reconcile_interval=300, twilio_account_sid=None, twilio_auth_token=None)
    with caplog.at_level(logging.INFO, logger="gateway.reconcile.jobs"):
        work(application)
        work(application)
        with application.app_context():
            result = run_pass()
    assert (result.numbers, result.calls, result.texts) == (0, 0, 0)
    assert not redis.exists(PASS_KEY)
    said = [r.getMessage() for r in caplog.records if "sandbox" in r.getMessage()]
    assert said == ["sandbox mode: no provider log to reconcile with; reconciliation does nothing"]


def test_the_interval_setting(tmp_path):
    base = {"GATEWAY_INSTANCE_DIR": str(tmp_path), "SECRET_KEY": "k"}
    assert load_settings(base).reconcile_interval == 300
    assert load_settings({**base, "GATEWAY_RECONCILE_INTERVAL": "0"}).reconcile_interval == 0
    assert load_settings({**base, "GATEWAY_RECONCILE_INTERVAL": "60"}).reconcile_interval == 60
    for bad in ("-1", "soon"):
        with pytest.raises(SettingsError, match="GATEWAY_RECONCILE_INTERVAL"):
            load_settings({**base, "GATEWAY_RECONCILE_INTERVAL": bad})


def test_redis_down_starts_no_pass_and_breaks_no_sweep(build, db, configure, clock, fake_twilio):
    from gateway.embedded_redis import free_port

    configure(BASIC_CONFIG)
    application = build(reconcile_interval=300, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    application.extensions["gateway"].redis = Redis.from_url(
        application.extensions["gateway"].settings.redis_url, socket_connect_timeout=0.2
    )
    seed_missed_call(fake_twilio, clock)
    sweep_once(application)  # logs nothing alarming, raises nothing
    assert leads(db) == 0
    # The pass itself needs no Redis to find the call; its texts wait in the database for the sweep.
    with application.app_context():
        assert run_pass().calls == 1
    assert leads(db) == 1


def test_a_database_down_fails_the_pass_and_the_next_one_finds_the_call(
    build, db, configure, clock, fake_twilio, tmp_path
):
    from sqlalchemy.exc import OperationalError

    configure(BASIC_CONFIG)
    seed_missed_call(fake_twilio, clock)
    down = build(reconcile_interval=300, database_url=f"sqlite:///{tmp_path / 'missing' / 'gone.sqlite3'}")
    with down.app_context(), pytest.raises(OperationalError):
        run_pass()  # the job fails (RQ keeps it in its failed registry); nothing was written anywhere
    assert leads(db) == 0

    with build(reconcile_interval=300).app_context():
        assert run_pass().calls == 1
    assert leads(db) == 1
