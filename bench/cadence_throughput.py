"""Cadence dispatch throughput: 100k leads with a due step each, two workers, the provider fake.

    .venv/bin/python bench/cadence_throughput.py [--leads 100000] [--workers 2] [--sqlite] [--timeout 600]

Starts, on loopback: a throwaway PostgreSQL server (tests/support/postgres.py; SQLite with a printed
note when PostgreSQL is not installed, or with --sqlite), an embedded Redis, the Twilio fake as a
separate process, `gateway config apply`, then bulk-inserts the leads, their contacts, enrolments and one
due step each. Then it starts the workers (`gateway worker`, each with the sweep) and watches the
database until every step became a text the provider took. Prints steps/s (overall and between 10% and
90% done) and the workers' resident memory over the run and at peak (VmHWM from /proc/<pid>/status).
Target (DESIGN.md): >= 1,000 steps/s; memory flat. Everything it starts is stopped by PID when it ends.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from harness import ROOT, Stack, gateway_stack

sys.path.insert(0, str(ROOT))

from sqlalchemy import JSON, String, cast, func, insert, literal, select

from cadences.models import CadenceEnrolment, CadenceStep, StepStatus
from gateway.database import Database, UTCDateTime
from gateway.models import Contact, Lead, Message, Store, TrackedNumber
from tests.support.config import BASIC_CONFIG

TEMPLATE = "Hi {first_name}, {agent} from {store} here. Still looking? Reply with a good time to talk."
CHUNK = 5000
# Recipients in a zone where it is daytime now, so the quiet-hours rule lets every text go:
# (E.164 prefix, digits after it, zone).
RECIPIENT_ZONES = [
    ("+1202", 7, "America/New_York"),
    ("+1312", 7, "America/Chicago"),
    ("+1213", 7, "America/Los_Angeles"),
    ("+1808", 7, "Pacific/Honolulu"),
    ("+4479", 8, "Europe/London"),
    ("+614", 8, "Australia/Sydney"),
]


def recipient_prefix() -> tuple[str, int, str]:
    now = datetime.now(UTC)
    for prefix, digits, zone in RECIPIENT_ZONES:
        if 9 <= now.astimezone(ZoneInfo(zone)).hour < 19:
            return prefix, digits, zone
    raise SystemExit("no recipient zone in daytime right now; try again in an hour")


def seed(database: Database, leads: int) -> None:
    """Contacts, open leads, active enrolments and one step each, due a minute ago: each table filled by
    one INSERT ... SELECT from the one before (the contacts by executemany), so 100k take seconds."""
    prefix, digits, zone = recipient_prefix()
    now = datetime.now(UTC)
    due = now - timedelta(minutes=1)
    with database.session() as session:
        store = session.scalars(select(Store).where(Store.key == "north-honda")).one()
        number = session.scalars(select(TrackedNumber).where(TrackedNumber.store_id == store.id)).first()
        assert number is not None
        store_id, number_id, from_number = store.id, number.id, number.number
        # A country spread over several zones (Australia) falls back to the store's zone: make it the same.
        store.timezone = zone
        first = (session.scalar(select(func.max(Contact.id))) or 0) + 1
    for start in range(0, leads, CHUNK):
        count = min(CHUNK, leads - start)
        with database.session() as session:
            session.execute(
                insert(Contact),
                [
                    {
                        "phone": f"{prefix}{3_000_000 + start + n:0{digits}d}",
                        "first_name": None if n % 3 else "Sam",
                        "created_at": now,
                        "updated_at": now,
                    }
                    for n in range(count)
                ],
            )
    at = literal(now, UTCDateTime())
    with database.session() as session:
        contact_id = cast(Contact.id, String)
        session.execute(
            insert(Lead).from_select(
                ["code", "contact_id", "store_id", "open_key", "department", "source", "tracked_number_id",
                 "tracked_number", "status", "priority", "priority_reasons", "created_at", "updated_at"],
                select(
                    literal("B") + contact_id,
                    Contact.id,
                    literal(store_id),
                    contact_id + literal(f":{store_id}"),
                    literal("sales"),
                    literal("Cars.com"),
                    literal(number_id),
                    literal(from_number),
                    literal("new"),
                    literal(0),
                    literal([], JSON()),
                    at,
                    at,
                ).where(Contact.id >= first),
            )
        )
        session.execute(
            insert(CadenceEnrolment).from_select(
                ["lead_id", "contact_id", "cadence_key", "trigger", "status", "active_key", "from_number",
                 "started_at", "created_at"],
                select(
                    Lead.id,
                    Lead.contact_id,
                    literal("missed-call"),
                    literal("missed_call"),
                    literal("active"),
                    cast(Lead.id, String) + literal(":missed-call"),
                    literal(from_number),
                    literal(due, UTCDateTime()),
                    literal(due, UTCDateTime()),
                ).where(Lead.contact_id >= first),
            )
        )
        session.execute(
            insert(CadenceStep).from_select(
                ["enrolment_id", "step_index", "relative_to", "offset_seconds", "template", "due_at", "status",
                 "created_at"],
                select(
                    CadenceEnrolment.id,
                    literal(1),
                    literal("start"),
                    literal(4 * 3600),
                    literal(TEMPLATE),
                    literal(due, UTCDateTime()),
                    literal(StepStatus.SCHEDULED.value),
                    literal(due, UTCDateTime()),
                ).where(CadenceEnrolment.contact_id >= first),
            )
        )


def rss_kb(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def progress(database: Database) -> tuple[int, int]:
    with database.session() as session:
        dispatched = session.scalar(
            select(func.count()).select_from(CadenceStep).where(CadenceStep.status != StepStatus.SCHEDULED.value)
        ) or 0
        sent = session.scalar(
            select(func.count()).select_from(Message).where(Message.kind == "cadence", Message.sid.is_not(None))
        ) or 0
    return dispatched, sent


def fake_texts(base_url: str) -> tuple[int, int]:
    """Texts the fake recorded, and how many went to a number that had already got one (a double)."""
    with urllib.request.urlopen(f"{base_url}/_fake/messages?since=0", timeout=60) as response:  # noqa: S310
        items = json.loads(response.read())["items"]
    recipients = [item.get("To") for item in items]
    return len(recipients), len(recipients) - len(set(recipients))


def run(leads: int, workers: int, database_url: str | None, timeout: float, label: str) -> None:
    with gateway_stack(BASIC_CONFIG, database_url=database_url, fake_twilio=True) as stack:
        url = stack.env["DATABASE_URL"]
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
        database = Database(url, pool=False)
        began = time.monotonic()
        seed(database, leads)
        print(f"seeded {leads} leads with a due step each on {label} in {time.monotonic() - began:.1f}s", flush=True)
        run_workers(stack, database, leads, workers, timeout)
        total, doubles = fake_texts(stack.env["TWILIO_API_BASE_URL"])
        print(f"  the provider fake recorded {total} texts; {doubles} to a number that already had one")
        database.dispose()


def run_workers(stack: Stack, database: Database, leads: int, workers: int, timeout: float) -> None:
    stack.env["GATEWAY_SWEEP_INTERVAL"] = "1"
    started = time.monotonic()
    pids = [stack.spawn(sys.executable, "-m", "gateway.cli", "worker").pid for _ in range(workers)]
    deadline = started + timeout
    samples: list[tuple[float, int, int, list[int]]] = []
    while time.monotonic() < deadline:
        time.sleep(1.0)
        dispatched, sent = progress(database)
        elapsed = time.monotonic() - started
        rss = [rss_kb(pid, "VmRSS") for pid in pids]
        samples.append((elapsed, dispatched, sent, rss))
        print(f"  {elapsed:6.1f}s  steps dispatched {dispatched:7d}  texts at the provider {sent:7d}  "
              f"worker RSS {', '.join(f'{kb / 1024:.0f}' for kb in rss)} MB", flush=True)
        if sent >= leads:
            break
    peak = [rss_kb(pid, "VmHWM") for pid in pids]
    elapsed, _, sent, _ = samples[-1]
    print(f"cadence dispatch, {workers} workers, {leads} due steps:")
    if sent < leads:
        print(f"  time limit: {sent} of {leads} texts reached the provider in {elapsed:.0f}s")
    print(f"  overall: {sent / elapsed:8.0f} steps/s ({sent} texts in {elapsed:.1f}s, worker start-up included)")
    low = next((s for s in samples if s[2] >= 0.1 * leads), None)
    high = next((s for s in samples if s[2] >= 0.9 * leads), None)
    if low and high and high[0] > low[0]:
        print(f"  10%-90%: {(high[2] - low[2]) / (high[0] - low[0]):8.0f} steps/s")
    for fraction in (0.25, 0.5, 0.75, 1.0):
        sample = samples[min(len(samples) - 1, int(fraction * (len(samples) - 1)))]
        print(f"  worker RSS at {fraction:4.0%} of the run: {', '.join(f'{kb / 1024:.0f}' for kb in sample[3])} MB")
    print(f"  worker peak RSS (VmHWM): {', '.join(f'{kb / 1024:.0f}' for kb in peak)} MB")
    print("  target: >= 1000 steps/s, memory flat")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sqlite", action="store_true", help="run on SQLite instead of PostgreSQL")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds the workers get at most")
    args = parser.parse_args()
    from tests.support import postgres

    if args.sqlite or not postgres.available():
        if not args.sqlite:
            print("note: PostgreSQL (initdb) is not installed; running on SQLite", flush=True)
        run(args.leads, args.workers, None, args.timeout, "SQLite")
        return
    server = postgres.PostgresServer()
    server.start()
    try:
        server.execute("CREATE DATABASE gateway_bench")
        run(args.leads, args.workers, server.url("gateway_bench"), args.timeout, "PostgreSQL")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
