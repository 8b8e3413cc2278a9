"""`gateway serve` on the embedded defaults, as a newcomer runs it: SQLite, embedded Redis, gunicorn and a
worker as real processes; a simulated missed call becomes a lead, and the sandbox records the texts."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from gateway.embedded_redis import free_port

ROOT = Path(__file__).resolve().parents[2]


def gateway(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def get_json(url: str, key: str) -> dict:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - loopback
        return json.loads(response.read())


@pytest.mark.skipif(os.environ.get("GATEWAY_TEST_DATABASE") == "postgresql", reason="embedded defaults are SQLite")
def test_serve_runs_everything_on_the_embedded_defaults(tmp_path):
    port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "PUBLIC_BASE_URL"}
    }
    env.update(GATEWAY_INSTANCE_DIR=str(tmp_path / "instance"), GATEWAY_REDIS_PORT=str(free_port()))
    serve = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port), "--web-workers", "1"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        assert serve.stdout is not None
        banner = ""
        deadline = time.monotonic() + 60
        while "curl" not in banner and time.monotonic() < deadline:
            banner += serve.stdout.readline()
        assert "sandbox" in banner
        base = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=1).close()  # noqa: S310
                break
            except OSError:
                time.sleep(0.1)
        client_env = {**env, "PUBLIC_BASE_URL": base}
        assert "added store north-honda" in gateway(client_env, "config", "apply", "examples/dealer-group.yaml")
        played = gateway(client_env, "simulate", "call", "--from", "+12025550199", "--to", "+12025550123")
        assert "status callback answered 204" in played
        key = gateway(client_env, "apikey", "create", "--name", "newcomer").strip().splitlines()[-1]
        leads = get_json(f"{base}/api/v1/leads", key)["items"]
        assert [lead["phone"] for lead in leads] == ["+12025550199"]
        assert leads[0]["owner"] in {"alice", "ben"}
        # The worker sends (in sandbox mode: records) the first cadence text and the owner's alert.
        statuses: list[str] = []
        for _ in range(100):
            lead = get_json(f"{base}/api/v1/leads/{leads[0]['id']}", key)
            statuses = [m["status"] for m in lead["messages"]]
            if statuses and all(s == "sandbox" for s in statuses):
                break
            time.sleep(0.1)
        assert "sandbox" in statuses
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(timeout=20)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait()
        if serve.stdout is not None:
            serve.stdout.close()


def _descendants(pid: int) -> set[int]:
    """Every process below `pid`, from /proc (children of children too: gunicorn's workers)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        # SO_REUSEADDR: connections closing (TIME_WAIT) do not hold a port; a listener does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.mark.skipif(os.environ.get("GATEWAY_TEST_DATABASE") == "postgresql", reason="embedded defaults are SQLite")
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_serve_writes_its_url_for_simulate_and_a_stop_signal_leaves_nothing_running(tmp_path, stop_signal):
    port, redis_port = free_port(), free_port()
    instance = tmp_path / "instance"
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "PUBLIC_BASE_URL"}
    }
    env.update(GATEWAY_INSTANCE_DIR=str(instance), GATEWAY_REDIS_PORT=str(redis_port))
    serve = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port), "--web-workers", "2", "--workers", "2"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    started: set[int] = set()
    output = ""
    try:
        assert serve.stdout is not None
        while "Stop with Ctrl-C" not in output:
            line = serve.stdout.readline()
            assert line, output
            output += line
        base = f"http://127.0.0.1:{port}"
        assert (instance / "serve-url").read_text().split() == [base, base]
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=1).close()  # noqa: S310
                break
            except OSError:
                time.sleep(0.1)
        # No --url and no PUBLIC_BASE_URL (whose default port is 8000): simulate finds the running gateway.
        gateway(env, "config", "apply", "examples/dealer-group.yaml")
        played = gateway(env, "simulate", "call", "--from", "+12025550199", "--to", "+12025550123")
        assert "status callback answered 204" in played
        with contextlib.suppress(urllib.error.HTTPError):
            urllib.request.urlopen(f"{base}/api/v1/leads?phone=%2B12025550199", timeout=5).close()  # noqa: S310
        started = _descendants(serve.pid)
        assert len(started) >= 6  # Redis, two workers, gunicorn's arbiter and its two workers
    finally:
        serve.send_signal(stop_signal)
        try:
            code = serve.wait(timeout=60)
        except subprocess.TimeoutExpired:
            serve.kill()
            raise
        finally:
            rest = serve.stdout.read() if serve.stdout is not None else ""
            if serve.stdout is not None:
                serve.stdout.close()
    output += rest
    assert code == 0, output
    assert [pid for pid in started if _alive(pid)] == []
    assert _port_free(port)
    assert _port_free(redis_port)
    assert not (instance / "serve-url").exists()
    assert "Traceback" not in output
    assert rest.strip().splitlines()[-1:] == [f"{signal.Signals(stop_signal).name}: stopped the web server, "
                                              "the workers, the e-mail intake and Redis."]
    # The access log (gunicorn's, on serve's output) masks the number it was asked for.
    assert "phone=%2B1********99" in output
    assert "2025550199" not in output.replace("+12025550199", "")
