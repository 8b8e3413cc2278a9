"""What the gateway can tell about itself: health checks, the lanes' lag and Prometheus metrics.

- `GET /healthz`: the process answers (liveness).
- `GET /readyz`: 200 while the database and Redis answer and the urgent lane's oldest job is under
  READY_LAG seconds old; else 503 with a JSON body naming each check that failed.
- `GET /metrics`: the Prometheus text format (instruments are defined where they are measured: here,
  gateway/worker.py, gateway/crm/delivery.py). With `PROMETHEUS_MULTIPROC_DIR` set (gunicorn.conf.py and
  `gateway serve` set it to the instance folder's `metrics/`), the counters and histograms of every
  web and worker process of this machine are summed; the lanes, the CRM outbox and the spool are read
  when scraped. `GATEWAY_METRICS_TOKEN` makes it require `Authorization: Bearer <token>`.
- `gateway status` prints the same figures for a person (`status_report`).
"""

from __future__ import annotations

import hmac
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Flask, Response, jsonify, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import REGISTRY, Collector
from redis import Redis
from redis.exceptions import RedisError
from rq.worker_registration import get_keys
from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from gateway import runtime, web
from gateway.crm.models import CrmDelivery
from gateway.jobs import LANES, Lane, make_queue
from gateway.runtime import Runtime

READY_LAG = 5.0
MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_WAIT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

WEBHOOK_SECONDS = Histogram(
    "gateway_webhook_seconds", "Time to answer a provider webhook, by endpoint.", ["endpoint"],
    buckets=_LATENCY_BUCKETS,
)
HOTPATH_COMMIT_SECONDS = Histogram(
    "gateway_hotpath_commit_seconds", "Time of one hot-path transaction (a batch of ringing calls).",
    buckets=_LATENCY_BUCKETS,
)
JOB_WAIT_SECONDS = Histogram(
    "gateway_job_wait_seconds", "How long a job waited in its lane before a worker took it.", ["lane"],
    buckets=_WAIT_BUCKETS,
)
TEXTS = Counter("gateway_texts_total", "Outbound texts by outcome and refusal code.", ["outcome", "code"])
RECONCILED = Counter(
    "gateway_reconciled_total", "Calls and texts found at the provider that no webhook had told of.", ["kind"]
)
TEXTS_IN_DOUBT = Counter(
    "gateway_texts_in_doubt_total",
    "Texts left in doubt by a stopped worker, settled against the provider's log: taken, sent_again, not_sent.",
    ["outcome"],
)


@dataclass(frozen=True)
class Backlog:
    """Work of one kind waiting in the database: counts by state, and the oldest unfinished item's age."""

    counts: dict[str, int]
    oldest_seconds: float  # 0 when nothing waits


@dataclass(frozen=True)
class _BacklogSource:
    name: str  # the metric's name: gateway_<name>{state=...}, gateway_<name>_oldest_seconds
    title: str  # how `gateway status` names it
    read: Callable[[Session, datetime], Backlog]


_BACKLOGS: dict[str, _BacklogSource] = {}


def register_backlog(name: str, title: str, read: Callable[[Session, datetime], Backlog]) -> None:
    """A feature's waiting work, shown by `gateway status` and served by /metrics (the features above the
    core register theirs; the core does not import them)."""
    _BACKLOGS[name] = _BacklogSource(name, title, read)


def backlogs(current: Runtime) -> list[tuple[_BacklogSource, Backlog]]:
    now = current.clock.now()
    with current.database.session() as session:
        return [(source, source.read(session, now)) for source in _BACKLOGS.values()]


@dataclass(frozen=True)
class LaneState:
    lane: Lane
    depth: int
    oldest_seconds: float  # 0 when empty
    workers: int = 0  # worker processes listening on the lane


def _listening(redis: Redis) -> dict[str, int]:
    """How many registered RQ workers listen on each lane (a worker registers when it starts)."""
    counts: dict[str, int] = {}
    for lane in LANES:
        counts[lane.value] = len(get_keys(make_queue(redis, lane)))
    return counts


def lane_states(redis: Redis, now: datetime | None = None) -> list[LaneState]:
    """Each lane's queued jobs and the age of its oldest, in one round trip and one more per lane."""
    moment = now or datetime.now(UTC)
    queues = [make_queue(redis, lane) for lane in LANES]
    with redis.pipeline(transaction=False) as pipe:
        for queue in queues:
            pipe.llen(queue.key)
            pipe.lindex(queue.key, 0)
        answers = pipe.execute()
    states = []
    for index, queue in enumerate(queues):
        depth, head = int(answers[2 * index]), answers[2 * index + 1]
        age = 0.0
        if head is not None:
            job_id = head.decode() if isinstance(head, bytes) else str(head)
            raw = redis.hget(f"{queue.job_class.redis_job_namespace_prefix}{job_id}", "enqueued_at")
            if raw:
                age = max(0.0, (moment - _parse_time(raw)).total_seconds())
        states.append(LaneState(LANES[index], depth, age))
    listening = _listening(redis)
    return [LaneState(s.lane, s.depth, s.oldest_seconds, listening.get(s.lane.value, 0)) for s in states]


def _parse_time(raw: Any) -> datetime:
    text_value = raw.decode() if isinstance(raw, bytes) else str(raw)
    parsed = datetime.fromisoformat(text_value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def spool_size(current: Runtime) -> int:
    folder = current.settings.spool_dir
    return len(list(folder.glob("*.json"))) if folder.is_dir() else 0


def crm_counts(current: Runtime) -> dict[tuple[str, str], int]:
    with current.database.session() as session:
        rows = session.execute(
            select(CrmDelivery.status, CrmDelivery.kind, func.count()).group_by(CrmDelivery.status, CrmDelivery.kind)
        ).all()
    return {(status, kind): count for status, kind, count in rows}


@dataclass(frozen=True)
class Readiness:
    ready: bool
    checks: dict[str, dict[str, Any]]


def readiness(current: Runtime) -> Readiness:
    checks: dict[str, dict[str, Any]] = {}
    try:
        with current.database.session() as session:
            session.execute(text("SELECT 1"))
        checks["database"] = {"ok": True}
    except SQLAlchemyError as error:
        checks["database"] = {"ok": False, "error": f"the database does not answer: {type(error).__name__}"}
    try:
        current.redis.ping()
        urgent = next(state for state in lane_states(current.redis) if state.lane == Lane.URGENT)
        checks["redis"] = {"ok": True}
        behind = urgent.oldest_seconds >= READY_LAG
        checks["urgent_lane"] = {
            "ok": not behind,
            "depth": urgent.depth,
            "oldest_seconds": round(urgent.oldest_seconds, 3),
            **({"error": f"the oldest urgent job has waited {urgent.oldest_seconds:.1f} s"} if behind else {}),
        }
    except RedisError as error:
        checks["redis"] = {"ok": False, "error": f"Redis does not answer: {type(error).__name__}"}
    return Readiness(all(check["ok"] for check in checks.values()), checks)


class _StateCollector(Collector):
    """The figures read when scraped: the lanes, the CRM outbox by status and kind, the spool."""

    def __init__(self, current: Runtime) -> None:
        self.current = current

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily("gateway_lane_depth", "Jobs waiting in each lane.", labels=["lane"])
        age = GaugeMetricFamily("gateway_lane_oldest_seconds", "Age of each lane's oldest job.", labels=["lane"])
        workers = GaugeMetricFamily("gateway_lane_workers", "Worker processes listening on each lane.", labels=["lane"])
        try:
            for state in lane_states(self.current.redis):
                depth.add_metric([state.lane.value], state.depth)
                age.add_metric([state.lane.value], state.oldest_seconds)
                workers.add_metric([state.lane.value], state.workers)
            yield depth
            yield age
            yield workers
        except RedisError:
            pass
        outbox = GaugeMetricFamily(
            "gateway_crm_deliveries", "CRM deliveries by status and destination kind.", labels=["status", "kind"]
        )
        try:
            for (status, kind), count in sorted(crm_counts(self.current).items()):
                outbox.add_metric([status, kind], count)
            yield outbox
        except SQLAlchemyError:
            pass
        try:
            for source, backlog in backlogs(self.current):
                family = GaugeMetricFamily(f"gateway_{source.name}", f"{source.title} by state.", labels=["state"])
                for label, count in sorted(backlog.counts.items()):
                    family.add_metric([label], count)
                yield family
                yield GaugeMetricFamily(
                    f"gateway_{source.name}_oldest_seconds", f"Age of the oldest unfinished of the {source.title}.",
                    value=backlog.oldest_seconds,
                )
        except SQLAlchemyError:
            pass
        yield GaugeMetricFamily(
            "gateway_failsafe_spool_files", "Webhooks kept on disk for the database.", value=spool_size(self.current)
        )


def scrape(current: Runtime) -> bytes:
    registry = CollectorRegistry()
    registry.register(_StateCollector(current))
    if os.environ.get(MULTIPROCESS_DIR):
        multiprocess: Any = MultiProcessCollector  # the library's constructor carries no annotations
        multiprocess(registry)
        return generate_latest(registry)
    # One process: its instruments are in the library's default registry, wherever they are defined.
    return generate_latest(REGISTRY) + generate_latest(registry)


def status_report(current: Runtime) -> list[str]:
    """`gateway status`: the lanes, the workers, the outbox, the spool and the checks, one screen."""
    state = readiness(current)
    lines = [f"ready: {'yes' if state.ready else 'NO'}"]
    for name, check in state.checks.items():
        detail = check.get("error") or ", ".join(f"{k} {v}" for k, v in check.items() if k != "ok") or "ok"
        lines.append(f"  {name:<12} {'ok' if check['ok'] else 'FAIL'}  {detail}")
    lines.append("lanes:")
    try:
        for lane in lane_states(current.redis):
            lines.append(f"  {lane.lane.value:<8} {lane.depth:>6} waiting, oldest {lane.oldest_seconds:6.1f} s, "
                         f"{lane.workers} worker process(es) listening")
    except RedisError:
        lines.append("  (Redis does not answer)")
    lines.append("crm deliveries:")
    try:
        counts = crm_counts(current)
        for (status, kind), count in sorted(counts.items()):
            lines.append(f"  {status:<11} {kind:<10} {count:>7}")
        if not counts:
            lines.append("  none")
    except SQLAlchemyError:
        lines.append("  (the database does not answer)")
    try:
        for source, backlog in backlogs(current):
            summary = ", ".join(f"{count} {label}" for label, count in backlog.counts.items())
            oldest = f" (the oldest {backlog.oldest_seconds:.1f} s old)" if backlog.oldest_seconds else ""
            lines.append(f"{source.title}: {summary}{oldest}")
    except SQLAlchemyError:
        lines.append("waiting work: (the database does not answer)")
    lines.append(f"failsafe spool: {spool_size(current)} webhook(s) waiting for the database")
    return lines


blueprint = Blueprint("health", __name__)


@blueprint.get("/healthz")
def health() -> Response:
    return Response("ok\n", mimetype="text/plain")


@blueprint.get("/readyz")
def ready() -> Response:
    state = readiness(runtime.current())
    body = {"status": "ready" if state.ready else "not ready", "checks": state.checks}
    response = jsonify(body)
    response.status_code = 200 if state.ready else 503
    response.headers["Cache-Control"] = "no-store"
    return response


@blueprint.get("/metrics")
def metrics() -> Response:
    current = runtime.current()
    token = current.settings.metrics_token
    if token:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            response = web.json_error(401, "unauthorized", "GET /metrics needs Authorization: Bearer <token>.")
            response.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    return Response(scrape(current), mimetype=CONTENT_TYPE_LATEST)


class _Timer:
    def __init__(self) -> None:
        self.started = time.perf_counter()

    def seconds(self) -> float:
        return time.perf_counter() - self.started


def init_app(app: Flask) -> None:
    app.register_blueprint(blueprint)

    @app.before_request
    def _start() -> None:
        if request.path.startswith("/webhooks/"):
            request.environ["gateway.timer"] = _Timer()

    @app.teardown_request
    def _finish(_error: BaseException | None) -> None:
        timer = request.environ.get("gateway.timer")
        if isinstance(timer, _Timer):
            WEBHOOK_SECONDS.labels(endpoint=request.path).observe(timer.seconds())

