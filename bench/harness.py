"""Shared bench plumbing: a gateway stack (embedded Redis, migrated database, configuration, gunicorn,
workers, the Twilio fake) started as separate processes on loopback, and stopped by their PIDs."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.embedded_redis import EmbeddedRedis, free_port  # noqa: E402

ACCOUNT_SID = "AC" + "7" * 32
AUTH_TOKEN = "bench-auth-token"


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - loopback only
                return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not come up") from None
            time.sleep(0.1)


@dataclass
class Stack:
    folder: Path
    env: dict[str, str]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def spawn(self, *argv: str, env: dict[str, str] | None = None, quiet: bool = True) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            list(argv),
            cwd=ROOT,
            env=env or self.env,
            stdout=subprocess.DEVNULL if quiet else None,
            stderr=subprocess.DEVNULL if quiet else None,
        )
        self.processes.append(process)
        return process

    def gunicorn(self, app: str, port: int, workers: int | None = None, threads: int | None = None,
                 env: dict[str, str] | None = None) -> None:
        """gunicorn with the project's gunicorn.conf.py (the production settings); `workers` and `threads`
        override them when given."""
        overrides = ["--workers", str(workers)] if workers else []
        overrides += ["--threads", str(threads)] if threads else []
        self.spawn(
            sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py"), "--bind", f"127.0.0.1:{port}",
            *overrides, "--log-level", "error", app,
            env=env,
        )
        wait_http(f"http://127.0.0.1:{port}/healthz" if app == "wsgi:app" else f"http://127.0.0.1:{port}/")

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


@contextlib.contextmanager
def gateway_stack(config: str, database_url: str | None = None, fake_twilio: bool = False) -> Iterator[Stack]:
    """Redis + migrated database + applied configuration; gunicorn and workers are started by the caller."""
    folder = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    redis = EmbeddedRedis(free_port(), folder / "redis")
    redis.start()
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url or f"sqlite:///{folder / 'bench.sqlite3'}",
        REDIS_URL=redis.url,
        SECRET_KEY="bench-secret",
        GATEWAY_INSTANCE_DIR=str(folder / "instance"),
        TWILIO_ACCOUNT_SID=ACCOUNT_SID,
        TWILIO_AUTH_TOKEN=AUTH_TOKEN,
    )
    stack = Stack(folder, env)
    try:
        if fake_twilio:
            fake = subprocess.Popen(
                [sys.executable, "-m", "tests.fakes.twilio_api", "--port", "0",
                 "--account-sid", ACCOUNT_SID, "--auth-token", AUTH_TOKEN],
                cwd=ROOT, stdout=subprocess.PIPE, env=env,
            )
            stack.processes.append(fake)
            assert fake.stdout is not None
            env["TWILIO_API_BASE_URL"] = fake.stdout.readline().decode().strip()
        else:
            # Texts go nowhere real: a closed loopback port.
            env["TWILIO_API_BASE_URL"] = f"http://127.0.0.1:{free_port()}"
        config_file = folder / "config.yaml"
        config_file.write_text(config)
        subprocess.run(
            [sys.executable, "-m", "gateway.cli", "config", "apply", str(config_file)],
            cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL,
        )
        yield stack
    finally:
        stack.stop()
        redis.stop()


def wait_workers(redis_url: str, count: int, timeout: float = 120.0) -> None:
    """Until `count` RQ workers have registered (each registers once its app is loaded and it listens)."""
    from redis import Redis

    client = Redis.from_url(redis_url)
    deadline = time.monotonic() + timeout
    try:
        while len(client.smembers("rq:workers")) < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"fewer than {count} workers registered after {timeout:.0f} s")
            time.sleep(0.2)
    finally:
        client.close()
