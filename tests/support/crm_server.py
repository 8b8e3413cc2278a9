"""A dealership CRM on loopback for the outbox tests: takes ADF and JSON leads, or fails on demand.

Modes: "ok" (200, deduplicating by Idempotency-Key as real CRMs do), "error" (500), "reject" (400),
"slow" (answers only after `slow_seconds`, with a 504, so the sender has timed out by then), "hang"
(takes the request and never answers, until `stop()`). `latency` delays every answer by up to that many
seconds, at random, so concurrent deliveries finish in any order; `delay` by exactly that many.
`stop()` closes the port (connections refused); `start()` opens the same port again.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from gateway.crm.formats import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, verify_webhook


@dataclass
class Request:
    path: str
    headers: Message
    body: bytes
    status: int

    @property
    def key(self) -> str | None:
        return self.headers.get(IDEMPOTENCY_HEADER)


class _Server(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], crm: FakeCrm) -> None:
        super().__init__(address, _Handler)
        self.crm = crm


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        status = self.server.crm.handle(self.path, self.headers, body)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()


class FakeCrm:
    def __init__(self, secret: str | None = None, now: Any = None) -> None:
        self.mode = "ok"
        self.slow_seconds = 1.0
        self.latency = 0.0
        self.delay = 0.0
        self._released = threading.Event()
        self.secret = secret
        # Signature checks use this clock (the gateway signs with its clock, which tests move).
        self.now = now or (lambda: int(time.time()))
        self.requests: list[Request] = []
        self.accepted: list[Request] = []  # first delivery of each key, in arrival order
        self.duplicates: list[Request] = []  # a key seen again after it was accepted
        self.bad_signatures = 0
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def start(self) -> FakeCrm:
        self._released.clear()
        self._server = _Server(("127.0.0.1", self.port), self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.start()
        return self

    def stop(self) -> None:
        self._released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            if self._thread is not None:
                self._thread.join()
            self._server = None

    def __enter__(self) -> FakeCrm:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def url(self, path: str = "/leads") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def handle(self, path: str, headers: Message, body: bytes) -> int:
        with self._lock:
            mode = self.mode
            latency = self.latency
            delay = self.delay
        if delay:
            time.sleep(delay)
        if latency:
            time.sleep(random.uniform(0, latency))
        if mode == "hang":
            self._released.wait(60)
            return 504
        if mode == "slow":
            time.sleep(self.slow_seconds)
            status = 504
        elif mode == "error":
            status = 500
        elif mode == "reject":
            status = 400
        elif self.secret is not None and "json" in headers.get("Content-Type", "") and not verify_webhook(
            self.secret, body, headers.get(SIGNATURE_HEADER), int(self.now())
        ):
            status = 401
        else:
            status = 200
        request = Request(path, headers, body, status)
        with self._lock:
            if status == 401:
                self.bad_signatures += 1
            self.requests.append(request)
            if status == 200:
                if any(r.key == request.key for r in self.accepted):
                    self.duplicates.append(request)
                else:
                    self.accepted.append(request)
        return status

    def accepted_keys(self) -> list[str | None]:
        with self._lock:
            return [r.key for r in self.accepted]
