"""The daily number health check: each store at most once a day, its managers texted once per new problem."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import select

from gateway.models import Agent, Message
from gateway.provider import TwilioProvider
from gateway.worker import run_worker, sweep_once
from tests.support.config import SIMULTANEOUS
from tracked_numbers.models import HealthRun, KnownProblem
from tracked_numbers.provisioning import sync_numbers, urls_for

NUMBERS = (SIMULTANEOUS, "+12025550124", "+12025550125", "+12025550126", "+13125550123")
DMITRI = "+12025550114"  # the north-honda manager; south-ford has none
DAY = timedelta(days=1)


@pytest.fixture
def daily(make_app):
    return make_app(number_check_interval=86400)


@pytest.fixture
def provider(settings, fake_twilio):
    return TwilioProvider(settings.twilio_account_sid, settings.twilio_auth_token, fake_twilio.base_url)


@pytest.fixture
def sids(configured, fake_twilio, provider, settings, db):
    numbers = {number: fake_twilio.add_number(number) for number in NUMBERS}
    with db.session() as session:
        assert not sync_numbers(session, provider, settings.public_base_url).missing
    yield numbers
    for sid in numbers.values():
        fake_twilio.release_number(sid)  # the fake keeps numbers across tests otherwise


def run_daily(app) -> None:
    sweep_once(app)
    run_worker(app, burst=True, sweep=False)


def manager_texts(fake_twilio) -> list[str]:
    return [m["Body"] for m in fake_twilio.messages if m.get("To") == DMITRI]


def drift(provider, settings, sid: str) -> None:
    provider.update_number(sid, replace(urls_for(settings.public_base_url), voice_url="https://old.example/voice"))


def test_managers_are_texted_once_per_new_problem(daily, sids, provider, settings, fake_twilio, clock, db):
    run_daily(daily)
    assert manager_texts(fake_twilio) == []  # nothing wrong: nothing said
    with db.session() as session:
        assert {run.checked_at for run in session.scalars(select(HealthRun))} == {clock.now()}

    drift(provider, settings, sids["+12025550124"])
    run_daily(daily)
    assert manager_texts(fake_twilio) == []  # checked today already

    clock.advance(DAY)
    run_daily(daily)
    [text] = manager_texts(fake_twilio)
    assert text == (
        "Gateway check: north-honda: number +12025550124: not pointing at this gateway: VoiceUrl "
        "(gateway numbers sync fixes it)"
    )
    with db.session() as session:
        alert = session.scalars(select(Message).where(Message.to_number == DMITRI)).one()
        assert (alert.kind, alert.from_number) == ("alert", SIMULTANEOUS)

    clock.advance(DAY)
    run_daily(daily)
    assert len(manager_texts(fake_twilio)) == 1  # the same problem again: not news

    with db.session() as session:
        session.scalars(select(Agent).where(Agent.key == "alice")).one().active = False
    clock.advance(DAY)
    run_daily(daily)
    texts = manager_texts(fake_twilio)
    assert len(texts) == 2
    assert "number +12025550126 rings no active agent" in texts[1]


def test_a_problem_fixed_and_back_is_news_again(daily, sids, provider, settings, fake_twilio, clock, db):
    drift(provider, settings, sids[SIMULTANEOUS])
    run_daily(daily)
    assert len(manager_texts(fake_twilio)) == 1
    with db.session() as session:
        sync_numbers(session, provider, settings.public_base_url)
    clock.advance(DAY)
    run_daily(daily)
    with db.session() as session:
        assert session.scalars(select(KnownProblem)).all() == []
    drift(provider, settings, sids[SIMULTANEOUS])
    clock.advance(DAY)
    run_daily(daily)
    assert len(manager_texts(fake_twilio)) == 2


def test_an_unreachable_provider_forgets_nothing_and_announces_nothing(
    daily, sids, provider, settings, fake_twilio, clock, db
):
    drift(provider, settings, sids[SIMULTANEOUS])
    run_daily(daily)
    assert len(manager_texts(fake_twilio)) == 1
    fake_twilio.fail_next("numbers", 500, 20500, "Internal Server Error", count=2)  # one list per store
    clock.advance(DAY)
    run_daily(daily)
    with db.session() as session:
        assert [p.kind for p in session.scalars(select(KnownProblem))] == ["drift"]
    clock.advance(DAY)
    run_daily(daily)
    assert len(manager_texts(fake_twilio)) == 1


def test_a_check_queued_twice_runs_once(daily, sids, provider, settings, fake_twilio, clock, db):
    from tracked_numbers.jobs import check_store_job

    drift(provider, settings, sids[SIMULTANEOUS])
    sweep_once(daily)  # queues a check per store
    with daily.app_context():
        with db.session() as session:
            store_ids = [run.store_id for run in session.scalars(select(HealthRun))]
        for store_id in store_ids:
            check_store_job(store_id)
            check_store_job(store_id)
    run_worker(daily, burst=True, sweep=False)
    assert len(manager_texts(fake_twilio)) == 1


def test_the_check_is_off_with_a_zero_interval(app, sids, provider, settings, fake_twilio, db):
    drift(provider, settings, sids[SIMULTANEOUS])
    run_daily(app)
    assert manager_texts(fake_twilio) == []
    with db.session() as session:
        assert session.scalars(select(HealthRun)).all() == []
