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


def serve_env(tmp_path: Path) -> dict[str, str]:
    """The newcomer's environment, with ports of its own: Redis and the e-mail intake too, which would
    otherwise be the defaults that every `serve` of a parallel test run tries to take at once."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "PUBLIC_BASE_URL"}
    }
    env.update(
        GATEWAY_INSTANCE_DIR=str(tmp_path / "instance"),
        GATEWAY_REDIS_PORT=str(free_port()),
        GATEWAY_INTAKE_SMTP=f"127.0.0.1:{free_port()}",
    )
    return env


def start_serve(env: dict[str, str], log_path: Path, *args: str) -> subprocess.Popen[bytes]:
    """`gateway serve`, its output (and its children's) to a file: a pipe nobody reads fills up and
    blocks the processes writing to it, and a blocking read waits forever for a line that never comes."""
    with log_path.open("wb") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", *args], cwd=ROOT, env=env,
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
        )


def wait_for_banner(serve: subprocess.Popen[bytes], log_path: Path, seconds: float = 120.0) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and serve.poll() is None:
        output = log_path.read_text()
        if "Stop with Ctrl-C" in output:
            return output
        time.sleep(0.1)
    output = log_path.read_text()
    assert "Stop with Ctrl-C" in output, output
    return output


def wait_until_healthy(base: str) -> None:
    for _ in range(600):
        try:
            urllib.request.urlopen(f"{base}/healthz", timeout=1).close()  # noqa: S310 - loopback
            return
        except OSError:
            time.sleep(0.1)


@pytest.mark.skipif(os.environ.get("GATEWAY_TEST_DATABASE") == "postgresql", reason="embedded defaults are SQLite")
def test_serve_runs_everything_on_the_embedded_defaults(tmp_path):
    port = free_port()
    env = serve_env(tmp_path)
    log_path = tmp_path / "serve.log"
    serve = start_serve(env, log_path, "--port", str(port), "--web-workers", "1")
    try:
        assert "sandbox" in wait_for_banner(serve, log_path)
        base = f"http://127.0.0.1:{port}"
        wait_until_healthy(base)
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
        for _ in range(300):
            lead = get_json(f"{base}/api/v1/leads/{leads[0]['id']}", key)
            statuses = [m["status"] for m in lead["messages"]]
            if statuses and all(s == "sandbox" for s in statuses):
                break
            time.sleep(0.1)
        assert "sandbox" in statuses
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(timeout=60)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait()


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first), None once the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


Process = tuple[int, str]  # a process id and the process's start time: ids are reused, the pair is not


def _descendants(pid: int) -> set[Process]:
    """Every process below `pid`, from /proc (children of children too: gunicorn's workers)."""
    parents: dict[int, int] = {}
    started: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None:
                parents[int(entry.name)] = int(fields[1])
                started[int(entry.name)] = fields[19]
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return {(child, started[child]) for child in found}


def _alive(process: Process) -> bool:
    """Still running: the same process (not another that got its id since), and not a zombie."""
    pid, started = process
    fields = _stat(pid)
    return fields is not None and fields[19] == started and fields[0] != "Z"


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
    port = free_port()
    env = serve_env(tmp_path)
    instance = Path(env["GATEWAY_INSTANCE_DIR"])
    log_path = tmp_path / "serve.log"
    serve = start_serve(env, log_path, "--port", str(port), "--web-workers", "2", "--workers", "2")
    started: set[Process] = set()
    left: list[Process] = []
    try:
        wait_for_banner(serve, log_path)
        base = f"http://127.0.0.1:{port}"
        assert (instance / "serve-url").read_text().split() == [base, base]
        wait_until_healthy(base)
        # No --url and no PUBLIC_BASE_URL (whose default port is 8000): simulate finds the running gateway.
        gateway(env, "config", "apply", "examples/dealer-group.yaml")
        played = gateway(env, "simulate", "call", "--from", "+12025550199", "--to", "+12025550123")
        assert "status callback answered 204" in played
        with contextlib.suppress(urllib.error.HTTPError):
            urllib.request.urlopen(f"{base}/api/v1/leads?phone=%2B12025550199", timeout=5).close()  # noqa: S310
        started = _descendants(serve.pid)
        assert len(started) >= 6  # Redis, two workers, gunicorn's arbiter and its two workers
        stopping_at = len(log_path.read_bytes())
    finally:
        serve.send_signal(stop_signal)
        try:
            code = serve.wait(timeout=120)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait()
            raise
        finally:
            left = [process for process in started if _alive(process)]
            for pid, _ in left:  # ours: a stop that failed leaves nothing behind for the next test
                os.kill(pid, signal.SIGKILL)
    output = log_path.read_text()
    rest = log_path.read_bytes()[stopping_at:].decode()
    assert code == 0, output
    assert left == []
    assert _port_free(port)
    assert _port_free(int(env["GATEWAY_REDIS_PORT"]))
    assert _port_free(int(env["GATEWAY_INTAKE_SMTP"].rsplit(":", 1)[1]))
    assert not (instance / "serve-url").exists()
    assert "Traceback" not in output
    assert rest.strip().splitlines()[-1:] == [f"{signal.Signals(stop_signal).name}: stopped the web server, "
                                              "the workers, the e-mail intake and Redis."]
    # The access log (gunicorn's, on serve's output) masks the number it was asked for.
    assert "phone=%2B1********99" in output
    assert "2025550199" not in output.replace("+12025550199", "")
