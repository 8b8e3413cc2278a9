"""gunicorn's settings for the gateway in production: `gunicorn wsgi:app` in the project folder reads
this file (and `gateway serve` runs gunicorn there). Command-line options override it.

- Two processes of two threads each (`gthread`): the incoming-call webhook mostly waits (on Redis, on
  the hot path's writer), so threads answer more calls per core than more processes would, and two
  processes keep a call answered while one is busy. Not four threads: on the peak day (bench/day.py)
  four requests of one process at once mostly waited for each other (one interpreter lock, and on
  SQLite one writer), and the urgent worker waited behind them: two threads answered webhooks in p50
  243 ms instead of 394 and sent the first text in p50 0.33 s instead of 1.6 s. On a busier machine, three
  processes, three threads, four single-thread processes and a smaller `worker_connections` were each no
  better (bench/README.md, "A machine another program also uses"). `WEB_CONCURRENCY`
  changes the process count, `GUNICORN_CMD_ARGS="--threads N"` the threads.
- The access log masks phone numbers and never holds a click-to-call link (gateway/logs.py).
- Prometheus: every process writes its counters to one folder (`PROMETHEUS_MULTIPROC_DIR`, by default
  the instance folder's `metrics/`), so `GET /metrics` sums them; a process that exits is marked dead.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

logger_class = "gateway.logs.MaskingLogger"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = 2
# The provider gives up on a webhook after 15 s; a request still running after 30 is stuck.
timeout = 30
graceful_timeout = 10

_METRICS = "PROMETHEUS_MULTIPROC_DIR"
if not os.environ.get(_METRICS):
    # Started on its own (not by `gateway serve`, which prepares the folder for web and workers alike):
    # a fresh folder for this server's processes.
    _folder = Path(os.environ.get("GATEWAY_INSTANCE_DIR", "instance")).resolve() / "metrics"
    shutil.rmtree(_folder, ignore_errors=True)
    _folder.mkdir(parents=True, exist_ok=True)
    os.environ[_METRICS] = str(_folder)


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
