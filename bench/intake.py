"""Leads from forms and ADF: the first text and the acknowledgement a web lead gets, and ADF intake rate.

    .venv/bin/python bench/intake.py [--leads 300] [--rate 20] [--calls-per-second 5] [--adf 1000] [--clients 4]
                                     [--postgres] [--intake-only]

Starts, on loopback: the Twilio fake (a process), an embedded Redis, a migrated SQLite database
(PostgreSQL with --postgres), the configuration (North Honda names no lead cadence, so each form gets the
built-in first text and e-mail acknowledgement), gunicorn (`wsgi:app`, 2x2 threads, as gunicorn.conf.py),
`gateway worker --concurrency 3` and an aiosmtpd server standing in for the mail relay (SMTP_URL).

1. Form leads: --leads web forms with SMS consent, offered at --rate per second (each from a customer
   of its own), while missed calls are played at --calls-per-second (a peak day's other traffic).
   Measured from the moment each POST /api/v1/leads is sent to the `created_at` the Twilio fake records
   for the customer's first text, and to the moment the SMTP server has the acknowledgement.
   Targets: text p99 <= 1 s; acknowledgement p99 <= 60 s.
2. ADF intake: --adf documents (one prospect each, distinct ids) POSTed to /api/v1/intake/adf by
   --clients clients (4); documents per second parsed and stored (the 202s; target >= 200 documents/s),
   then the rate at which their leads exist: from the first POST until the worker has built every
   stored prospect's lead (polled in the database), and each prospect's time from stored to lead.
   Then ten documents one at a time (every 0.5 s): POST -> lead in the database, the latency outside a
   burst. Also the web processes' CPU time per document while the documents came in (from /proc), the steadier
   figure on a shared machine: two cores divided by it is the rate the web tier could take alone.
   --intake-only: the ADF part alone with no worker running, the intake tier's own rate (leads stay unbuilt).
Everything it starts is stopped by PID when it ends.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from harness import ACCOUNT_SID, AUTH_TOKEN, ROOT, Stack, gateway_stack, percentile, wait_http

sys.path.insert(0, str(ROOT))

from sqlalchemy import text

from gateway.database import Database
from gateway.embedded_redis import free_port
from gateway.simulator import HttpPoster, SimulationError, play_call
from tests.support.config import BASIC_CONFIG, SIMULTANEOUS

CONSENT = "I agree to receive texts from North Honda about my request. Msg & data rates may apply."


class Inbox:
    """The mail relay: notes when each recipient's first message arrived."""

    def __init__(self) -> None:
        self.first: dict[str, float] = {}
        self.count = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        now = time.time()
        with self.lock:
            self.count += 1
            for rcpt in envelope.rcpt_tos:
                self.first.setdefault(rcpt.lower(), now)
        return "250 OK"


def fake_messages(base_url: str, since: int) -> tuple[int, list[dict[str, str]]]:
    with urllib.request.urlopen(f"{base_url}/_fake/messages?since={since}", timeout=10) as response:  # noqa: S310
        body = json.loads(response.read())
    return int(body["total"]), list(body["items"])


def collect_first_texts(base_url: str, phones: set[str], stop: threading.Event, out: dict[str, float]) -> None:
    seen = 0
    while not stop.is_set():
        total, items = fake_messages(base_url, seen)
        seen = total
        for item in items:
            to = item.get("To", "")
            if to in phones and to not in out:
                out[to] = datetime.fromisoformat(item["created_at"]).timestamp()
        stop.wait(0.05)


def post(url: str, key: str, body: bytes, content_type: str) -> int:
    request = urllib.request.Request(  # noqa: S310 - loopback
        url, data=body, method="POST", headers={"Authorization": f"Bearer {key}", "Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def api_key(stack: Stack) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "apikey", "create", "--name", "bench", "--store", "north-honda"],
        cwd=ROOT, env=stack.env, check=True, capture_output=True, text=True,
    )
    return result.stdout.strip().splitlines()[-1]


def adf_document(n: int) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<?adf version="1.0"?>\n<adf><prospect status="new">'
        f'<id sequence="1" source="BenchLeads">BL-{n}</id><requestdate>2026-11-24T10:00:00-05:00</requestdate>'
        '<vehicle interest="buy" status="used"><year>2022</year><make>Honda</make><model>CR-V</model></vehicle>'
        f'<customer><contact><name part="first">Bench</name><name part="last">Lead {n}</name>'
        f'<phone type="mobile">+1301555{n % 10000:04d}</phone></contact>'
        "<comments>Is it still available?</comments></customer>"
        "<vendor><vendorname>North Honda</vendorname></vendor>"
        '<provider><name part="full">BenchLeads</name></provider></prospect></adf>\n'
    ).encode()


def run(
    leads: int, rate: float, calls_per_second: float, adf: int, clients: int, database_url: str | None,
    intake_only: bool = False,
) -> None:
    inbox = Inbox()
    smtp_port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    try:
        with gateway_stack(BASIC_CONFIG, database_url=database_url, fake_twilio=True) as stack:
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            stack.env.update(
                PUBLIC_BASE_URL=base, GATEWAY_SWEEP_INTERVAL="1", SMTP_URL=f"smtp://127.0.0.1:{smtp_port}",
                GATEWAY_API_RATE_LIMIT="1000000",  # one key sends every request here
            )
            stack.gunicorn("wsgi:app", port, workers=2, threads=2)
            web = stack.processes[-1].pid
            # As `gateway serve` runs them: one process for urgent work (texts), one urgent and default
            # (e-mail), one every lane.
            workers = 0 if intake_only else stack.spawn(
                sys.executable, "-m", "gateway.cli", "worker", "--concurrency", "3"
            ).pid
            wait_http(f"{base}/healthz")
            time.sleep(1.5)
            key = api_key(stack)
            if intake_only:
                intake_rate(base, key, adf, clients, stack.env["DATABASE_URL"], {"web": web}, build=False)
                return
            forms(stack, base, key, inbox, leads, rate, calls_per_second)
            intake_rate(base, key, adf, clients, stack.env["DATABASE_URL"], {"web": web, "workers": workers})
    finally:
        controller.stop()


def forms(stack: Stack, base: str, key: str, inbox: Inbox, leads: int, rate: float, calls_per_second: float) -> None:
    phones = [f"+1202555{3000 + n:04d}" for n in range(leads)]
    sent_at: dict[str, float] = {}
    first_text: dict[str, float] = {}
    stop = threading.Event()
    poller = threading.Thread(
        target=collect_first_texts, args=(stack.env["TWILIO_API_BASE_URL"], set(phones), stop, first_text), daemon=True
    )
    poller.start()
    poster = HttpPoster(base, AUTH_TOKEN, account_sid=ACCOUNT_SID)
    calls_played = 0
    calls_failed = 0

    def calls() -> None:
        nonlocal calls_played, calls_failed
        n = 0
        while not stop.is_set() and calls_per_second > 0:
            try:
                list(play_call(poster, to=SIMULTANEOUS, caller=f"+1240555{n % 10000:04d}", outcome="no-answer"))
                calls_played += 1
            except SimulationError:
                calls_failed += 1
            n += 1
            stop.wait(1 / calls_per_second)

    caller = threading.Thread(target=calls, daemon=True)

    def submit(n: int) -> int:
        body = {
            "store": "north-honda", "source": "Website", "first_name": "Bench", "last_name": f"Lead {n}",
            "phone": phones[n], "email": f"lead-{n}@example.com", "external_id": f"bench-{n}",
            "vehicle": {"year": 2024, "make": "Honda", "model": "Civic"},
            "sms_consent": {"granted": True, "text": CONSENT},
        }
        sent_at[phones[n]] = time.time()
        return post(f"{base}/api/v1/leads", key, json.dumps(body).encode(), "application/json")

    # A warm-up form: first requests import and connect; not counted.
    post(f"{base}/api/v1/leads", key, json.dumps(
        {"store": "north-honda", "phone": "+12025559999", "sms_consent": {"granted": True, "text": CONSENT}}
    ).encode(), "application/json")
    caller.start()
    statuses: list[int] = []
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=16) as pool:
        futures = []
        for n in range(leads):
            delay = started + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(submit, n))
        statuses = [f.result() for f in futures]
    offered = time.monotonic() - started
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        texts_done = all(p in first_text for p in phones)
        mails_done = all(f"lead-{n}@example.com" in inbox.first for n in range(leads))
        if texts_done and mails_done:
            break
        time.sleep(0.2)
    stop.set()
    poller.join(timeout=5)
    caller.join(timeout=10)
    text_ms = [(first_text[p] - sent_at[p]) * 1000 for p in phones if p in first_text]
    mail_s = [inbox.first[f"lead-{n}@example.com"] - sent_at[phones[n]]
              for n in range(leads) if f"lead-{n}@example.com" in inbox.first]
    print(f"form leads: {leads} offered in {offered:.1f} s ({leads / offered:.1f}/s), "
          f"{statuses.count(201)} answered 201, {calls_played} missed calls played alongside"
          + (f" ({calls_failed} timed out)" if calls_failed else ""))
    print(f"  form -> first text at the provider ({len(text_ms)} texts): {figures(text_ms, 'ms', 0)}"
          "  (target p99 <= 1000 ms)")
    print(f"  form -> acknowledgement at the SMTP server ({len(mail_s)} e-mails): {figures(mail_s, 's', 2)}"
          "  (target p99 <= 60 s)")


def figures(values: list[float], unit: str, digits: int) -> str:
    marks = (("p50", 50), ("p95", 95), ("p99", 99))
    parts = [f"{label} {percentile(values, p):.{digits}f} {unit}" for label, p in marks]
    return ", ".join(parts) + f", max {max(values, default=0):.{digits}f} {unit}"


def intake_rate(
    base: str, key: str, documents: int, clients: int, database_url: str, roots: dict[str, int], build: bool = True
) -> None:
    bodies = [adf_document(n) for n in range(documents)]
    database = Database(database_url, pool=False)
    try:
        cpu_before = {name: tree_cpu_seconds(pid) for name, pid in roots.items()}
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=clients) as pool:
            statuses = list(pool.map(lambda b: post(f"{base}/api/v1/intake/adf", key, b, "application/xml"), bodies))
        elapsed = time.monotonic() - started
        cpu = {name: tree_cpu_seconds(pid) - cpu_before[name] for name, pid in roots.items()}
        stored = statuses.count(202)
        print(f"ADF intake: {documents} documents by {clients} clients in {elapsed:.1f} s: {stored / elapsed:.0f} "
              f"documents/s parsed and stored ({stored} answered 202)  (target >= 200/s); {load()}")
        if stored and cpu["web"] > 0:
            per_document = cpu["web"] / stored
            workers = f", workers {cpu['workers']:.1f} s in all" if "workers" in cpu else " (no worker running)"
            print(f"  CPU while they came in: web {per_document * 1000:.1f} ms a document (2 cores: "
                  f"{2 / per_document:.0f} documents/s){workers}")
        if not build:
            return
        built, failed = wait_for_leads(database, stored, started)
        until = time.monotonic() - started
        print(f"  leads built: {built} of {stored} ({failed} failed) {until:.1f} s after the first document: "
              f"{built / until:.0f} leads/s, {until - elapsed:.1f} s after the last answer")
        print(f"  stored -> lead in the database ({built} leads): {figures(lead_delays(database), 's', 2)}")
        alone = single_documents(base, key, database, first=documents, count=10)
        print(f"  one document at a time (every 0.5 s, {len(alone)} documents): POST -> lead in the database "
              f"{figures(alone, 'ms', 0)}")
    finally:
        database.dispose()


def single_documents(base: str, key: str, database: Database, first: int, count: int) -> list[float]:
    """Milliseconds from each POST to its lead in the database, documents sent one at a time."""
    query = text("SELECT lead_id FROM intake_records WHERE id = :id")
    delays: list[float] = []
    for n in range(first, first + count):
        sent = time.monotonic()
        request = urllib.request.Request(  # noqa: S310 - loopback
            f"{base}/api/v1/intake/adf", data=adf_document(n), method="POST",
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/xml"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            record_id = json.loads(response.read())["items"][0]["intake_id"]
        while time.monotonic() - sent < 30:
            with database.engine.connect() as connection:
                if connection.execute(query, {"id": record_id}).scalar() is not None:
                    delays.append((time.monotonic() - sent) * 1000)
                    break
            time.sleep(0.005)
        time.sleep(max(0.0, sent + 0.5 - time.monotonic()))
    return delays


def tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of a process and its descendants so far (Linux /proc; 0 elsewhere)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return 0.0
    parents: dict[int, int] = {}
    seconds: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        parents[int(entry.name)] = int(fields[1])
        seconds[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    total, stack = 0.0, [root]
    while stack:
        pid = stack.pop()
        total += seconds.get(pid, 0.0)
        stack.extend(child for child, parent in parents.items() if parent == pid)
    return total


def load() -> str:
    return "load average " + ", ".join(f"{value:.1f}" for value in os.getloadavg())


def wait_for_leads(database: Database, expected: int, started: float, timeout: float = 600) -> tuple[int, int]:
    """Polls until every ADF record stored has its lead (or failed): (built, failed)."""
    query = text(
        "SELECT count(lead_id), count(error) FROM intake_records WHERE channel = 'adf-http'"
    )
    built = failed = 0
    while time.monotonic() - started < timeout:
        with database.engine.connect() as connection:
            built, failed = connection.execute(query).one()
        if built + failed >= expected:
            break
        time.sleep(0.05)
    return int(built), int(failed)


def lead_delays(database: Database) -> list[float]:
    """Seconds from each ADF record's storing to its lead's creation (both written with the machine's clock)."""
    query = text(
        "SELECT r.received_at, l.created_at FROM intake_records r JOIN leads l ON l.id = r.lead_id "
        "WHERE r.channel = 'adf-http'"
    )
    with database.engine.connect() as connection:
        rows = connection.execute(query).all()
    return [(_moment(created) - _moment(received)).total_seconds() for received, created in rows]


def _moment(value: Any) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leads", type=int, default=300)
    parser.add_argument("--rate", type=float, default=20.0, help="form leads per second")
    parser.add_argument("--calls-per-second", type=float, default=5.0, help="missed calls played alongside")
    parser.add_argument("--adf", type=int, default=1000, help="ADF documents for the intake rate")
    parser.add_argument("--clients", type=int, default=4, help="clients posting ADF documents at once")
    parser.add_argument("--postgres", action="store_true", help="run on a throwaway PostgreSQL server")
    parser.add_argument("--intake-only", action="store_true",
                        help="ADF only, with no worker running: the intake tier's own rate (no lead is built)")
    args = parser.parse_args()
    if not args.postgres:
        run(args.leads, args.rate, args.calls_per_second, args.adf, args.clients, None, args.intake_only)
        return
    from tests.support import postgres

    server = postgres.PostgresServer()
    server.start()
    try:
        server.execute("CREATE DATABASE gateway_bench")
        run(args.leads, args.rate, args.calls_per_second, args.adf, args.clients, server.url("gateway_bench"),
            args.intake_only)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
