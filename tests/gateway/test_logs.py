"""Logging: the access log of a real gunicorn, started as a plain `gunicorn wsgi:app` in the project
folder, holds no customer's number and no click-to-call link; a stop raised while a line is written is
not swallowed."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime

import pytest

from gateway import logs
from gateway.agents.click_to_call import make_token
from gateway.embedded_redis import free_port
from gateway.logs import scrub

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NUMBER = "2025550194"


@pytest.mark.parametrize(
    ("line", "kept"),
    [
        ("GET /api/v1/leads?phone=%2B12025550194 HTTP/1.1", "phone=%2B1********94"),
        ("GET /api/v1/leads?phone=+12025550194 HTTP/1.1", "phone=+1********94"),
        ("GET /api/v1/leads?phone=%2b1%20202-555-0194 HTTP/1.1", "phone=%2B1********94"),
        ("GET /api/v1/leads?phone=(202)%20555-0194 HTTP/1.1", "phone=20******94"),
        ("GET /api/v1/leads?phone=%28202%29+555.0194 HTTP/1.1", "phone=20******94"),
        ("GET /api/v1/leads?phone=2025550194 HTTP/1.1", "phone=20******94"),
        ("GET /c/WzM4LDEsImFiYyIsMTc2NDc3MDAwMF0.Zx-_9 HTTP/1.1", "GET /c/[link] HTTP/1.1"),
        ("https://gw.example/c/WzM4LDEs.abc?utm=1", "https://gw.example/c/[link]?utm=1"),
        ("GET /api/v1/leads/12?limit=50 HTTP/1.1", "GET /api/v1/leads/12?limit=50 HTTP/1.1"),
        ("GET /api/v1/metrics?since=2026-11-24T10:00:00Z HTTP/1.1", "since=2026-11-24T10:00:00Z"),
    ],
)
def test_scrub_masks_numbers_and_links_and_keeps_the_rest(line, kept):
    scrubbed = scrub(line)
    assert kept in scrubbed
    assert "555" not in scrubbed.replace("2026", "")
    assert "WzM4" not in scrubbed


def _get(url: str, headers: dict[str, str] | None = None) -> None:
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - loopback
    with contextlib.suppress(urllib.error.HTTPError):
        urllib.request.urlopen(request, timeout=5).close()  # noqa: S310


def test_plain_gunicorn_in_the_project_folder_writes_a_masked_access_log(settings, database_url, tmp_path):
    port = free_port()
    log = tmp_path / "access.log"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "GATEWAY_"))},
        "DATABASE_URL": database_url,
        "REDIS_URL": settings.redis_url or "",
        "SECRET_KEY": settings.secret_key,
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "GATEWAY_INSTANCE_DIR": str(tmp_path / "instance"),
    }
    server = subprocess.Popen(  # no --config: gunicorn finds ./gunicorn.conf.py itself
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1",
         "--access-logfile", str(log), "wsgi:app"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    token = make_token(settings, 38, 1, datetime.now(UTC))
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=1).close()  # noqa: S310 - loopback
                break
            except OSError:
                if server.poll() is not None:
                    raise AssertionError(server.stderr.read().decode() if server.stderr else "exited") from None
                time.sleep(0.1)
        _get(f"{base}/api/v1/leads?phone=%2B1{NUMBER}")
        _get(f"{base}/api/v1/leads?phone=+1{NUMBER}&store=north-honda")
        _get(f"{base}/c/{token}", headers={"Referer": f"{base}/c/{token}?from=%2B1{NUMBER}"})
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        if server.stderr is not None:
            server.stderr.close()
    text = log.read_text()
    lines = [line for line in text.splitlines() if "/healthz" not in line]
    assert len(lines) == 3, text
    assert NUMBER not in text
    assert token not in text
    assert token.split(".")[0] not in text
    # Each request's line, found by what it asked (a thread may log after the next request's thread).
    encoded, plain, link = (
        next(line for line in lines if marker in line) for marker in ("leads?phone=%2B1", "store=", "GET /c/")
    )
    assert "phone=%2B1********94" in encoded
    assert "phone=+1********94&store=north-honda" in plain
    assert '"GET /c/[link] HTTP/1.1"' in link
    assert f"{base}/c/[link]?from=%2B1********94" in link


class _Stop(Exception):
    pass


class _StreamInterrupted(io.StringIO):
    """A stream whose write is where the stop signal lands."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.error = error

    def write(self, text: str) -> int:
        raise self.error


def test_a_stop_raised_while_a_line_is_written_goes_up_the_stack_and_a_write_error_does_not(monkeypatch):
    monkeypatch.setattr(logs, "_STOPS", ())
    logs.let_through(_Stop)
    logger = logging.getLogger("tests.logs.stop")
    logger.propagate = False
    monkeypatch.setattr(logging, "raiseExceptions", False)  # the write error's report, kept out of the output
    try:
        logger.addHandler(handler := logs.LineHandler(_StreamInterrupted(_Stop())))
        with pytest.raises(_Stop):
            logger.warning("redis unavailable")
        logger.removeHandler(handler)

        logger.addHandler(handler := logs.LineHandler(_StreamInterrupted(OSError("disk full"))))
        logger.warning("redis unavailable")  # reported by logging and dropped, as before
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
