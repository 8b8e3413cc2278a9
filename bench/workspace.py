"""The workspace's pages over 1M calls and 100k leads on PostgreSQL: target <= 300 ms server time per page.

Loads the volume of bench/metrics.py (its generator), adds agents, owners and 200k texts, then times each
page through the Flask app (session lookup, queries and template rendering included) as a store's manager,
as one of its agents and as an administrator's key over every store. Prints p50/p95/max per page.

    .venv/bin/python -m bench.workspace [--calls 1000000] [--leads 100000] [--texts 200000] [--runs 20]
                                        [--keep DIR] [--only admin]

`--keep DIR` keeps the seeded PostgreSQL in DIR (a folder the postgres user can reach, e.g. under /tmp):
the first run seeds it, later runs migrate it (`upgrade heads`, so a new index is built) and time the
pages without seeding again. Remove the folder to start afresh. `--only` times one viewer.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import psycopg
from redis import Redis
from sqlalchemy import text as sql_text

from bench.metrics import NOW, SPAN, load
from gateway.api.keys import create_key
from gateway.app import create_app
from gateway.dashboard import auth
from gateway.database import Database, upgrade
from gateway.embedded_redis import free_port
from gateway.models import Agent, Store
from gateway.runtime import FrozenClock
from gateway.settings import Settings
from tests.support.postgres import PostgresServer

AGENTS_PER_STORE = 6  # one manager, five agents


def add_people_and_texts(url: str, dsn: str, store_ids: list[int], leads: int, texts: int) -> dict[int, list[int]]:
    database = Database(url)
    people: dict[int, list[int]] = {}
    with database.session() as session:
        for store_id in store_ids:
            for n in range(AGENTS_PER_STORE):
                session.add(Agent(key=f"s{store_id}-a{n}", name=f"Agent {store_id}-{n}",
                                  phone=f"+1202556{store_id:02d}{n:02d}", store_id=store_id, departments=["sales"],
                                  role="manager" if n == 0 else "agent"))
        session.flush()
        for agent in session.query(Agent).order_by(Agent.id):
            people.setdefault(agent.store_id, []).append(agent.id)
    database.dispose()
    rng = random.Random(15)
    with psycopg.connect(dsn) as connection, connection.cursor() as cursor:
        # Owners: one of the store's agents per lead.
        cursor.execute("CREATE TEMP TABLE owners (lead_id int, owner_id int)")
        stores_of = dict(cursor.execute("SELECT id, store_id FROM leads").fetchall())
        with cursor.copy("COPY owners (lead_id, owner_id) FROM STDIN") as copy:
            for lead_id, store_id in stores_of.items():
                copy.write_row((lead_id, rng.choice(people[store_id])))
        cursor.execute("UPDATE leads SET owner_id = owners.owner_id FROM owners WHERE owners.lead_id = leads.id")
        cursor.execute("UPDATE tasks SET owner_id = leads.owner_id FROM leads WHERE leads.id = tasks.lead_id")
        with cursor.copy("COPY messages (lead_id, contact_id, store_id, direction, kind, automated, from_number, "
                         "to_number, body, segments, media_urls, status, attempts, created_at, updated_at) "
                         "FROM STDIN") as copy:
            for _ in range(texts):
                lead_id = rng.randint(1, leads)
                at = NOW - SPAN * rng.random() if rng.random() < 0.8 else NOW - timedelta(days=30) * rng.random()
                inbound = rng.random() < 0.5
                copy.write_row((lead_id, lead_id, stores_of[lead_id], "inbound" if inbound else "outbound",
                                "customer" if inbound else rng.choice(["cadence", "relay", "workspace"]), not inbound,
                                f"+1312{lead_id:07d}" if inbound else "+12025550123",
                                "+12025550123" if inbound else f"+1312{lead_id:07d}",
                                "Is the blue one still there? Can I come by Saturday?", 1, "[]",
                                "received" if inbound else "delivered", 0, at, at))
        connection.commit()
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute("VACUUM ANALYZE")
    return people


def people_of(url: str) -> tuple[list[int], dict[int, list[int]]]:
    """The stores and their agents (manager first) of a database seeded by an earlier run."""
    database = Database(url)
    people: dict[int, list[int]] = {}
    with database.session() as session:
        store_ids = [s.id for s in session.query(Store).order_by(Store.id)]
        for agent in session.query(Agent).order_by(Agent.id):
            people.setdefault(agent.store_id, []).append(agent.id)
    database.dispose()
    return store_ids, people


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--texts", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--keep", type=Path, help="keep the seeded PostgreSQL in this folder and reuse it")
    parser.add_argument("--only", choices=["manager", "agent", "admin"], help="time one viewer only")
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
            store_ids, people = people_of(url)
            print(f"reusing the database seeded in {args.keep}")
        else:
            server.execute("CREATE DATABASE bench")
            upgrade(url)
            store_ids = load(url, dsn, args.calls, args.leads)
            people = add_people_and_texts(url, dsn, store_ids, args.leads, args.texts)
        with tempfile.TemporaryDirectory() as instance:
            settings = Settings(
                database_url=url,
                redis_url=f"redis://127.0.0.1:{free_port()}/0",
                public_base_url="http://127.0.0.1:8000",
                secret_key="bench",
                instance_dir=Path(instance),
                testing=True,
                api_rate_limit=0,
            )
            app = create_app(settings, clock=FrozenClock(NOW), redis=Redis.from_url(settings.redis_url or ""))
            database: Database = app.extensions["gateway"].database
            tokens: dict[str, str] = {}
            with app.app_context(), database.session() as session:
                store = session.get(Store, store_ids[3])
                assert store is not None
                manager = session.get(Agent, people[store.id][0])
                agent = session.get(Agent, people[store.id][1])
                _, key = create_key(session, "bench", None, NOW)
                admin = auth.find_admin_key(session, key)
                tokens["manager"] = auth.start_session(session, NOW, agent=manager)
                tokens["agent"] = auth.start_session(session, NOW, agent=agent)
                tokens["admin key"] = auth.start_session(session, NOW, api_key=admin)
                session.commit()
                lead_id = session.execute(
                    sql_text("SELECT id FROM leads WHERE store_id = :s ORDER BY id DESC LIMIT 1"), {"s": store.id}
                ).scalar_one()
            pages = {
                "/": "/",
                "/leads": "/leads",
                "/leads?q=phone": "/leads?q=%2B13120000042",
                "/leads?status": "/leads?status=new&source=Radio",
                "/leads/<id>": f"/leads/{lead_id}",
                "/inbox": "/inbox",
                "/tasks": "/tasks",
                "/calls": "/calls",
                "/calls?voicemail": "/calls?outcome=unanswered",
                "/kpis (30 days)": "/kpis",
                "/live": "/live",
            }
            print(f"{'who':<10} {'page':<18} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
            for who, token in tokens.items():
                if args.only and not who.startswith(args.only):
                    continue
                client = app.test_client()
                client.set_cookie(auth.SESSION_COOKIE, token)
                for name, path in pages.items():
                    warm = client.get(path)
                    assert warm.status_code == 200, (who, path, warm.status_code)
                    timings = []
                    for _ in range(args.runs):
                        started = time.perf_counter()
                        response = client.get(path)
                        timings.append((time.perf_counter() - started) * 1000)
                        assert response.status_code == 200
                    timings.sort()
                    p95 = timings[min(len(timings) - 1, int(len(timings) * 0.95))]
                    print(f"{who:<10} {name:<18} {statistics.median(timings):>8.1f} {p95:>8.1f} {timings[-1]:>8.1f}")
            database.dispose()
    finally:
        server.stop()



if __name__ == "__main__":
    main()
