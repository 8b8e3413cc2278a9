"""Time per reconciliation pass: N tracked numbers with M calls each at the provider.

The real `twilio` SDK lists from the local fake of the REST API on loopback (pages of 50, as the fake's
default, so the SDK follows next_page_uri); the gateway runs on a throwaway SQLite file (or
`--database-url`) with an embedded Redis. Two passes are timed: the first finds every call (M per number,
none logged: each becomes a lead, a task, a queued text and an alert), the second finds nothing new
(the steady state: every listed SID is known).

    .venv/bin/python -m bench.reconcile [--numbers 20] [--calls 25] [--database-url URL]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from redis import Redis

from gateway.app import create_app
from gateway.database import upgrade
from gateway.dealer_config.apply import apply_config
from gateway.dealer_config.parse import parse_config
from gateway.embedded_redis import EmbeddedRedis, free_port
from gateway.provider import TwilioProvider
from gateway.reconcile.jobs import run_pass
from gateway.runtime import FrozenClock, runtime_of, shutdown
from gateway.settings import Settings
from tests.fakes.twilio_api import FakeTwilio

NOW = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)  # a Tuesday, 10:00 in New York: open
ACCOUNT_SID = "AC" + "2" * 32
AUTH_TOKEN = "bench-token-" + "0" * 20


def config(numbers: int) -> str:
    lines = [
        "stores:",
        "  - key: bench-store",
        "    name: Bench Motors",
        "    timezone: America/New_York",
        '    main_line: "+12025550100"',
        "    hours:",
        '      sales: {mon: "00:00-23:59", tue: "00:00-23:59", wed: "00:00-23:59", thu: "00:00-23:59",',
        '              fri: "00:00-23:59", sat: "00:00-23:59", sun: "00:00-23:59"}',
        "    response_sla: 5m",
        "    after_hours_grace: 30m",
        "agents:",
        '  - {key: ann, name: Ann Lee, phone: "+12025550111", store: bench-store, departments: [sales]}',
        '  - {key: bob, name: Bob Kim, phone: "+12025550112", store: bench-store, departments: [sales]}',
        "cadences:",
        "  - key: missed-call",
        "    steps:",
        '      - {after: 0s, text: "Hi, this is {store}. Sorry we missed your call!"}',
        "numbers:",
    ]
    for n in range(numbers):
        lines.append(
            f'  - {{number: "+1202556{n:04d}", store: bench-store, department: sales, source: Bench, '
            f"ring: [ann, bob], strategy: simultaneous, ring_timeout: 18s, screen: true, record: false, "
            f"cadence: missed-call}}"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--numbers", type=int, default=20)
    parser.add_argument("--calls", type=int, default=25, help="calls per number, none logged by the gateway")
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder, FakeTwilio(ACCOUNT_SID, AUTH_TOKEN) as fake:
        root = Path(folder)
        redis_server = EmbeddedRedis(free_port(), root / "redis")
        redis_server.start()
        url = args.database_url or f"sqlite:///{root / 'bench.sqlite3'}"
        upgrade(url)
        settings = Settings(
            database_url=url, redis_url=redis_server.url, public_base_url="https://gateway.example.test",
            secret_key="bench", twilio_account_sid=ACCOUNT_SID, twilio_auth_token=AUTH_TOKEN,
            twilio_api_base_url=fake.base_url, instance_dir=root / "instance", testing=True,
        )
        clock = FrozenClock(NOW)
        app = create_app(settings, clock=clock, redis=Redis.from_url(redis_server.url),
                         provider=TwilioProvider(ACCOUNT_SID, AUTH_TOKEN, fake.base_url, list_page_size=50))
        try:
            with runtime_of(app).database.session() as session:
                apply_config(session, parse_config(config(args.numbers), "bench.yaml"))
            for n in range(args.numbers):
                for m in range(args.calls):
                    fake.add_inbound_call(
                        from_=f"+1312{n:03d}{m:04d}", to=f"+1202556{n:04d}", status="no-answer",
                        start_time=NOW - timedelta(minutes=9, seconds=-m),
                    )
            with app.app_context():
                started = time.perf_counter()
                first = run_pass()
                first_seconds = time.perf_counter() - started
                clock.advance(timedelta(minutes=1))
                started = time.perf_counter()
                second = run_pass()
                second_seconds = time.perf_counter() - started
        finally:
            shutdown(app)
            redis_server.stop()

    total = args.numbers * args.calls
    print(f"{args.numbers} numbers x {args.calls} calls ({url.split(':')[0]}):")
    print(f"  first pass, {first.calls} of {total} calls found and settled: {first_seconds:.2f} s "
          f"({first_seconds / max(first.calls, 1) * 1000:.1f} ms a call)")
    print(f"  second pass, nothing new ({second.calls} found): {second_seconds:.2f} s "
          f"({second_seconds / args.numbers * 1000:.1f} ms a number)")


if __name__ == "__main__":
    main()
