"""GET /api/v1/metrics over 1M calls and 100k leads on PostgreSQL: target <= 200 ms.

Starts a throwaway PostgreSQL (tests/support/postgres.py), migrates it, loads the volume with COPY,
VACUUM ANALYZEs, then times the endpoint through the Flask app (auth, rate limit and JSON included)
for one store and for every store, over 30 days and over a year. Prints p50/p95/max per case.

    .venv/bin/python -m bench.metrics [--calls 1000000] [--leads 100000] [--runs 30] [--keep DIR]

`--keep DIR` keeps the loaded PostgreSQL in DIR (as bench/workspace.py does; the two can share one folder: the
workspace's volume is this one plus agents, owners and texts) and reuses it on later runs.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from redis import Redis

from gateway.api.keys import create_key
from gateway.app import create_app
from gateway.database import Database, upgrade
from gateway.embedded_redis import free_port
from gateway.models import Store
from gateway.runtime import FrozenClock
from gateway.settings import Settings
from tests.support.postgres import PostgresServer

NOW = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
SPAN = timedelta(days=365)
STORES = 8
OUTCOMES = ["answered"] * 70 + ["missed"] * 12 + ["abandoned"] * 6 + ["voicemail"] * 8 + ["after_hours"] * 4
STATUSES = ["new", "attempting_contact", "contacted", "appointment_set", "closed_won", "closed_lost"]
SOURCES = ["Cars.com", "AutoTrader", "Website", "Google Ads", "Radio", "CarGurus"]


def load(url: str, dsn: str, calls: int, leads: int) -> list[int]:
    database = Database(url)
    with database.session() as session:
        for n in range(STORES):
            session.add(
                Store(key=f"store-{n}", name=f"Store {n}", timezone="America/New_York",
                      main_line=f"+1202555{n:04d}", hours={}, response_sla_seconds=300, crm=[])
            )
    with database.session() as session:
        store_ids = [s.id for s in session.query(Store).order_by(Store.id)]
    database.dispose()
    rng = random.Random(6)
    started = time.perf_counter()
    with psycopg.connect(dsn) as connection, connection.cursor() as cursor:
        with cursor.copy("COPY contacts (id, phone, opted_out, textable, automation_paused, created_at, "
                         "updated_at) FROM STDIN") as copy:
            for n in range(1, leads + 1):
                copy.write_row((n, f"+1312{n:07d}", False, True, False, NOW, NOW))
        with cursor.copy("COPY leads (id, code, contact_id, store_id, department, source, status, priority, "
                         "priority_reasons, created_at, updated_at, first_response_at, leaked_at) FROM STDIN") as copy:
            for n in range(1, leads + 1):
                created = NOW - SPAN * rng.random()
                responded = created + timedelta(seconds=rng.expovariate(1 / 400)) if rng.random() < 0.85 else None
                leaked = created + timedelta(hours=1) if responded is None and rng.random() < 0.5 else None
                copy.write_row((n, f"L{n:09d}", n, rng.choice(store_ids), "sales", rng.choice(SOURCES),
                                rng.choice(STATUSES), 0, "[]", created, created, responded, leaked))
        with cursor.copy("COPY tasks (lead_id, kind, due_at, status, escalation_level, created_at) FROM STDIN") as copy:
            for n in range(1, leads + 1, 3):
                due = NOW - SPAN * rng.random()
                copy.write_row((n, "callback", due, "open" if rng.random() < 0.2 else "done", 0, due))
        with cursor.copy("COPY calls (sid, lead_id, store_id, from_number, to_number, direction, kind, status, "
                         "outcome, after_hours, dial_step, ringing_agents, voicemail_started, duration, started_at, "
                         "ended_at, processed_at, created_at) FROM STDIN") as copy:
            for n in range(calls):
                at = NOW - SPAN * rng.random()
                lead = rng.randint(1, leads)
                copy.write_row((f"CA{n:032x}", lead, rng.choice(store_ids), f"+1312{lead:07d}", "+12025550123",
                                "inbound", "customer", "completed", rng.choice(OUTCOMES), False, 0, "[]",
                                False, rng.randint(0, 600), at, at, at, at))
        for table in ("contacts", "leads", "tasks", "calls"):
            cursor.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")  # noqa: S608 - fixed names
        connection.commit()
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE")
    print(f"loaded {calls:,} calls, {leads:,} leads in {time.perf_counter() - started:.1f} s")
    return store_ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--keep", type=Path, help="keep the loaded PostgreSQL in this folder and reuse it")
    args = parser.parse_args()

    server = PostgresServer(None, keep=args.keep)
    server.start()
    try:
        url = server.url("bench")
        dsn = f"postgresql://postgres@127.0.0.1:{server.port}/bench"
        if server.reused:
            upgrade(url)
            with psycopg.connect(dsn, autocommit=True) as connection:
                connection.execute("ANALYZE")
            print(f"reusing the database loaded in {args.keep}")
        else:
            server.execute("CREATE DATABASE bench")
            upgrade(url)
            load(url, dsn, args.calls, args.leads)
        with tempfile.TemporaryDirectory() as instance:
            settings = Settings(
                database_url=url,
                # Nothing listens there: the rate limiter finds Redis down and lets requests through.
                redis_url=f"redis://127.0.0.1:{free_port()}/0",
                public_base_url="http://127.0.0.1:8000",
                secret_key="bench",
                instance_dir=Path(instance),
                testing=True,
                api_rate_limit=0,
            )
            app = create_app(settings, clock=FrozenClock(NOW), redis=Redis.from_url(settings.redis_url or ""))
            database: Database = app.extensions["gateway"].database
            with database.session() as session:
                _, key = create_key(session, "bench", None, NOW)
            client = app.test_client()
            headers = {"Authorization": f"Bearer {key}"}
            year_ago = (NOW - timedelta(days=364)).isoformat().replace("+", "%2B")
            cases = {
                "one store, 30 days": "/api/v1/metrics?store=store-3",
                "every store, 30 days": "/api/v1/metrics",
                "one store, a year": f"/api/v1/metrics?store=store-3&since={year_ago}",
                "every store, a year": f"/api/v1/metrics?since={year_ago}",
            }
            print(f"{'case':<24} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}  leads / calls counted")
            for name, path in cases.items():
                client.get(path, headers=headers)  # warm the connection pool and caches
                timings = []
                for _ in range(args.runs):
                    started = time.perf_counter()
                    response = client.get(path, headers=headers)
                    timings.append((time.perf_counter() - started) * 1000)
                    assert response.status_code == 200, response.get_data(as_text=True)
                body = response.get_json()
                timings.sort()
                p95 = timings[min(len(timings) - 1, int(len(timings) * 0.95))]
                print(f"{name:<24} {statistics.median(timings):>8.1f} {p95:>8.1f} {timings[-1]:>8.1f}  "
                      f"{body['leads']['total']:,} / {body['calls']['total']:,}")
            database.dispose()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
