"""The `gateway` command as an operator runs it: environment in, clear words out."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select
from werkzeug.serving import make_server

from gateway.cli import main
from gateway.models import ApiKey, Call, Lead, Task
from tests.fakes.twilio_api import FakeTwilio
from tests.support.config import BASIC_CONFIG, CUSTOMER, SIMULTANEOUS

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "dealer-group.yaml"


@pytest.fixture
def env(settings, fake_twilio: FakeTwilio) -> dict[str, str]:
    return {
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url or "",
        "PUBLIC_BASE_URL": settings.public_base_url,
        "SECRET_KEY": settings.secret_key,
        "TWILIO_ACCOUNT_SID": settings.twilio_account_sid or "",
        "TWILIO_AUTH_TOKEN": settings.twilio_auth_token or "",
        "TWILIO_API_BASE_URL": fake_twilio.base_url,
        "GATEWAY_INSTANCE_DIR": str(settings.instance_dir),
    }


@pytest.fixture
def account(fake_twilio: FakeTwilio) -> Iterator[Callable[[str], str]]:
    """Numbers on the fake's account for one test (the fake keeps numbers across tests otherwise)."""
    added: list[str] = []

    def add(number: str) -> str:
        added.append(fake_twilio.add_number(number))
        return added[-1]

    yield add
    for sid in added:
        fake_twilio.release_number(sid)


def run(env: dict[str, str], *args: str):
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def test_db_upgrade_is_idempotent(env):
    first = run(env, "db", "upgrade")
    assert first.exit_code == 0
    assert "up to date" in first.output
    assert run(env, "db", "upgrade").exit_code == 0


def test_config_apply_prints_changes_then_nothing(env, tmp_path):
    path = tmp_path / "dealers.yaml"
    path.write_text(BASIC_CONFIG)
    first = run(env, "config", "apply", str(path))
    assert first.exit_code == 0, first.output
    assert "added store north-honda" in first.output
    assert "added agent alice" in first.output
    assert "added number +12025550123" in first.output
    second = run(env, "config", "apply", str(path))
    assert second.exit_code == 0
    assert second.output.strip().endswith("no changes")
    path.write_text(BASIC_CONFIG.replace("Alice Ng", "Alice Ngata"))
    third = run(env, "config", "apply", str(path))
    assert "changed agent alice: name" in third.output


def test_the_worked_example_applies(env):
    result = run(env, "config", "apply", str(EXAMPLE))
    assert result.exit_code == 0, result.output
    assert "added store pacific-toyota" in result.output


def test_config_errors_name_file_line_and_field_and_apply_nothing(env, tmp_path, db):
    path = tmp_path / "broken.yaml"
    broken = BASIC_CONFIG.replace("ring: [alice, ben], strategy: simultaneous", "ring: [alice, zed], strategy: x")
    path.write_text(broken.replace("America/Chicago", "America/Chicag"))
    result = CliRunner().invoke(main, ["config", "apply", str(path)], env=env)
    assert result.exit_code == 1
    assert f"{path}:" in result.output
    assert "numbers[0].ring[1]: unknown agent 'zed'" in result.output
    assert "stores[1].timezone" in result.output
    assert "numbers[0].strategy" in result.output
    with db.session() as session:
        from gateway.models import Store

        assert session.scalar(select(func.count()).select_from(Store)) == 0


def test_config_apply_missing_file(env, tmp_path):
    result = CliRunner().invoke(main, ["config", "apply", str(tmp_path / "nope.yaml")], env=env)
    assert result.exit_code != 0
    assert "nope.yaml" in result.output


def test_bad_environment_is_named(env):
    result = CliRunner().invoke(main, ["db", "upgrade"], env={**env, "DATABASE_URL": "not a url"})
    assert result.exit_code != 0
    assert "DATABASE_URL" in result.output


def test_apikey_create_prints_the_key_alone_on_the_last_line(env, db, configured):
    result = run(env, "apikey", "create", "--name", "crm", "--store", "north-honda")
    assert result.exit_code == 0, result.output
    key = result.output.strip().splitlines()[-1]
    assert key.startswith("gw_")
    assert " " not in key
    with db.session() as session:
        row = session.scalars(select(ApiKey)).one()
        assert row.key_hash != key
        assert key not in (row.key_hash, row.prefix)
        assert row.stores == ["north-honda"]
    unknown = CliRunner().invoke(main, ["apikey", "create", "--name", "x", "--store", "nowhere"], env=env)
    assert unknown.exit_code != 0
    assert "nowhere" in unknown.output
    listed = run(env, "apikey", "list")
    assert "crm" in listed.output
    assert key not in listed.output
    revoked = run(env, "apikey", "revoke", row.prefix)
    assert revoked.exit_code == 0
    assert "revoked" in run(env, "apikey", "list").output


@pytest.mark.usefixtures("configured")
def test_numbers_sync_sets_the_urls_and_reports_missing_numbers(env, fake_twilio, settings, account):
    sid = account(SIMULTANEOUS)
    account("+12025550124")
    result = CliRunner().invoke(main, ["numbers", "sync"], env=env)
    assert f"updated {SIMULTANEOUS}" in result.output
    assert "missing +12025550125" in result.output
    assert result.exit_code == 1  # some tracked numbers are not on the account
    number = fake_twilio.numbers[sid]
    base = settings.public_base_url
    assert number["voice_url"] == f"{base}/webhooks/voice/incoming"
    assert number["voice_fallback_url"] == f"{base}/webhooks/voice/fallback"
    assert number["sms_url"] == f"{base}/webhooks/sms/incoming"
    assert number["status_callback"] == f"{base}/webhooks/voice/status"
    again = CliRunner().invoke(main, ["numbers", "sync"], env=env)
    assert f"unchanged {SIMULTANEOUS}" in again.output


def test_numbers_sync_with_bad_credentials_says_so(env, fake_twilio, configured):
    result = CliRunner().invoke(main, ["numbers", "sync"], env={**env, "TWILIO_AUTH_TOKEN": "wrong"})
    assert result.exit_code != 0
    assert "Authenticate" in result.output or "20003" in result.output


@pytest.fixture
def live_app(make_app) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, None, threaded=True)  # type: ignore[arg-type]
    port = server.server_port
    base = f"http://127.0.0.1:{port}"
    server.app = make_app(public_base_url=base)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield base
    server.shutdown()


@pytest.mark.usefixtures("configured")
def test_simulate_call_end_to_end(env, live_app, db):
    result = run({**env, "PUBLIC_BASE_URL": live_app}, "simulate", "call", "--to", SIMULTANEOUS,
                 "--from", CUSTOMER, "--outcome", "no-answer")
    assert result.exit_code == 0, result.output
    assert "gateway answered 200" in result.output
    assert "nobody picked up" in result.output
    with db.session() as session:
        assert session.scalars(select(Call)).one().outcome == "missed"
        assert session.scalar(select(func.count()).select_from(Lead)) == 1
        assert session.scalar(select(func.count()).select_from(Task)) == 1


def test_simulate_call_to_a_gateway_that_is_not_running(env):
    result = CliRunner().invoke(
        main, ["simulate", "call", "--to", SIMULTANEOUS, "--from", CUSTOMER, "--url", "http://127.0.0.1:9"], env=env
    )
    assert result.exit_code != 0
    assert "could not reach the gateway" in result.output


# --- numbers check -------------------------------------------------------------------------------------------

ALL_NUMBERS = (SIMULTANEOUS, "+12025550124", "+12025550125", "+12025550126", "+13125550123")


def drift(settings, fake_twilio: FakeTwilio, sid: str, **changes: str) -> None:
    """Another system repoints a number, through the real SDK against the fake."""
    from dataclasses import replace

    from gateway.provider import TwilioProvider
    from tracked_numbers.provisioning import urls_for

    provider = TwilioProvider(settings.twilio_account_sid, settings.twilio_auth_token, fake_twilio.base_url)
    provider.update_number(sid, replace(urls_for(settings.public_base_url), **changes))


@pytest.mark.usefixtures("configured")
def test_numbers_check_names_the_number_that_drifted_and_sync_fixes_it(env, fake_twilio, settings, account):
    sids = {number: account(number) for number in ALL_NUMBERS}
    assert run(env, "numbers", "sync").exit_code == 0
    healthy = run(env, "numbers", "check")
    assert healthy.exit_code == 0, healthy.output
    assert healthy.output.strip() == "no problems found"

    drift(settings, fake_twilio, sids["+12025550124"], voice_url="https://old-vendor.example/voice",
          sms_fallback_url="https://old-vendor.example/sms-fallback")
    result = run(env, "numbers", "check")
    assert result.exit_code == 1
    [line] = result.output.strip().splitlines()
    assert "+12025550124" in line
    assert "VoiceUrl, SmsFallbackUrl" in line
    assert "gateway numbers sync" in line

    assert "updated +12025550124" in run(env, "numbers", "sync").output
    assert run(env, "numbers", "check").exit_code == 0


def test_numbers_check_lists_missing_numbers_and_configuration_problems(env, account, configure, db):
    configure(
        BASIC_CONFIG.replace(
            'service: {mon: "07:30-18:00"', 'parts: {mon: closed}\n      service: {mon: "07:30-18:00"', 1
        )
        .replace('phone: "+12025550113"', 'phone: "+442079460123"')
        + '  - {number: "+12025550127", store: north-honda, department: parts, source: Parts, ring: [alice]}\n'
    )
    for number in ALL_NUMBERS:
        account(number)
    assert run(env, "numbers", "sync").exit_code == 1  # +12025550127 is not on the account
    with db.session() as session:
        from gateway.models import Agent

        session.scalars(select(Agent).where(Agent.key == "alice")).one().active = False
    result = run(env, "numbers", "check")
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert "north-honda: number +12025550127 is not on the provider account" in lines
    assert any(line.startswith("north-honda: number +12025550126 rings no active agent") for line in lines)
    assert any(line.startswith("north-honda: number +12025550127 rings no active agent") for line in lines)
    assert any("agent cara gets no alert texts" in line and "fixed line" in line for line in lines)
    assert any("department parts has no opening hours and no active agent" in line for line in lines)
    assert len(lines) == 5, lines


def test_numbers_check_in_sandbox_mode_checks_the_configuration_only(env, configured):
    result = run({**env, "TWILIO_ACCOUNT_SID": "", "TWILIO_AUTH_TOKEN": ""}, "numbers", "check")
    assert result.exit_code == 0, result.output
    assert "sandbox mode" in result.output
    assert result.output.strip().endswith("no problems found")


def test_numbers_check_when_the_provider_refuses_says_so(env, configured):
    result = run({**env, "TWILIO_AUTH_TOKEN": "wrong"}, "numbers", "check")
    assert result.exit_code == 1
    assert "provider: could not list the account's numbers" in result.output


def test_config_apply_prints_the_problems_it_leaves(env, tmp_path):
    path = tmp_path / "dealers.yaml"
    path.write_text(BASIC_CONFIG.replace('phone: "+12025550113"', 'phone: "+442079460123"'))
    result = run(env, "config", "apply", str(path))
    assert result.exit_code == 0, result.output
    assert "problem: north-honda: agent cara gets no alert texts: +44 20 7946 0123 is a fixed line, not a mobile" \
        in result.output.splitlines()
    assert "1 problem(s) left" in result.output
def _without_south_ford_people_and_numbers() -> str:
    """The file of one store's people and numbers: applying it would retire the other store's."""
    text = BASIC_CONFIG.replace(
        '  - {key: sam, name: Sam Ford, phone: "+13125550111", email: sam@example.com,\n'
        "     store: south-ford, departments: [sales], role: agent}\n",
        "",
    )
    return text[: text.index('  - {number: "+13125550123"')]


def _active(db) -> tuple[list[str], list[str]]:
    from gateway.models import Agent, TrackedNumber

    with db.session() as session:
        agents = sorted(session.scalars(select(Agent.key).where(Agent.active.is_(True))))
        numbers = sorted(session.scalars(select(TrackedNumber.number).where(TrackedNumber.active.is_(True))))
    return agents, numbers


def test_config_apply_dry_run_prints_the_plan_and_applies_nothing(env, tmp_path, db, configured):
    before = _active(db)
    path = tmp_path / "north-only.yaml"
    path.write_text(_without_south_ford_people_and_numbers().replace("Alice Ng", "Alice Ngata"))
    result = run(env, "config", "apply", "--dry-run", str(path))
    assert result.exit_code == 0, result.output
    assert "would: deactivated agent sam" in result.output
    assert "would: removed number +13125550123" in result.output
    assert "would: changed agent alice: name" in result.output
    assert "3 change(s) planned, none applied (--dry-run)" in result.output
    assert _active(db) == before
    with db.session() as session:
        from gateway.models import Agent

        assert session.scalar(select(Agent.name).where(Agent.key == "alice")) == "Alice Ng"


def test_config_apply_without_a_terminal_applies_as_before(env, tmp_path, db, configured):
    path = tmp_path / "north-only.yaml"
    path.write_text(_without_south_ford_people_and_numbers())
    result = CliRunner().invoke(main, ["config", "apply", str(path)], env=env, input="")
    assert result.exit_code == 0, result.output
    assert "deactivated agent sam" in result.output
    assert "sam" not in _active(db)[0]


def _apply_at_a_terminal(env, path, answer: str) -> str:
    """`gateway config apply` with its stdin on a pseudo-terminal, answering the question with `answer`."""
    import os
    import subprocess
    import sys

    controller, terminal = os.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "config", "apply", str(path)],
            cwd=Path(__file__).resolve().parents[2], env={**os.environ, **env},
            stdin=terminal, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        os.write(controller, answer.encode() + b"\n")
        output, _ = process.communicate(timeout=120)
    finally:
        os.close(controller)
        os.close(terminal)
    assert process.returncode == 0, output
    return output.decode()


def test_config_apply_at_a_terminal_asks_before_retiring_and_refusing_applies_nothing(env, tmp_path, db, configured):
    before = _active(db)
    path = tmp_path / "north-only.yaml"
    path.write_text(_without_south_ford_people_and_numbers())
    refused = _apply_at_a_terminal(env, path, "n")
    assert "would: deactivated agent sam" in refused
    assert "This deactivates 1 agent(s) and retires 1 number(s). Apply?" in refused
    assert "nothing applied" in refused
    assert _active(db) == before
    accepted = _apply_at_a_terminal(env, path, "y")
    assert "2 change(s) applied" in accepted
    assert _active(db) == (sorted(set(before[0]) - {"sam"}), sorted(set(before[1]) - {"+13125550123"}))


def test_config_apply_at_a_terminal_does_not_ask_when_nothing_is_retired(env, tmp_path, db, configured):
    path = tmp_path / "same.yaml"
    path.write_text(BASIC_CONFIG.replace("Alice Ng", "Alice Ngata"))
    output = _apply_at_a_terminal(env, path, "")
    assert "Apply?" not in output
    assert "changed agent alice: name" in output
