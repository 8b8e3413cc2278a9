"""The failsafe's spool: webhooks the database could not take, kept and replayed once it is back.

When the database is down the incoming-call webhook answers with a Dial of the store's main line (known
from the route cache or from a map on disk written here while the database was up; webhooks/failsafe.py
answers). The webhook itself is kept: as an RQ job when
Redis is up, else as a file in the instance spool folder that the worker's sweep replays. So is a ring
answered with its ring plan that the database refused a moment later (gateway/calls/hotpath.py).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from flask import Flask
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from gateway import runtime
from gateway.calls.hotpath import RingingCall
from gateway.calls.routes import Route, load_route, main_lines, route_cache
from gateway.calls.services import (
    CallEnded,
    IncomingCall,
    caller_id_failed,
    finish_call,
    get_call,
    record_incoming,
)
from gateway.jobs import PendingJob, enqueue, register_sweeper
from gateway.phones import caller_number

log = logging.getLogger(__name__)

FAILSAFE_FILE = "failsafe-main-lines.json"


def init_app(app: Flask) -> None:
    register_sweeper("webhook-spool", replay_spool)
    register_replayer("incoming", lambda session, form, at: replay_call(session, "incoming", form, at))
    register_replayer("status", lambda session, form, at: replay_call(session, "status", form, at))
    register_replayer("ring", replay_ring)
    settings = app.extensions["gateway"].settings
    try:
        with app.extensions["gateway"].database.session() as session:
            write_main_lines(session, settings.instance_dir)
    except (SQLAlchemyError, OSError) as error:
        log.warning("could not refresh the failsafe map: %s", error)


def write_main_lines(session: Session, instance_dir: Path) -> None:
    instance_dir.mkdir(parents=True, exist_ok=True)
    path = instance_dir / FAILSAFE_FILE
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(main_lines(session), sort_keys=True))
    os.replace(temporary, path)


def main_line_for(number: str) -> str | None:
    route = route_cache().peek(number)
    if route is not None:
        return route.main_line
    path = runtime.current().settings.instance_dir / FAILSAFE_FILE
    try:
        known: dict[str, str] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return known.get(number)


Replayer = Callable[[Session, dict[str, Any], datetime], None]
_replayers: dict[str, Replayer] = {}


def register_replayer(kind: str, replayer: Replayer) -> None:
    """How to handle a kept webhook of this kind once the database answers; it must be idempotent."""
    _replayers[kind] = replayer


def spool(kind: str, data: dict[str, Any], now: datetime) -> None:
    """Keep a webhook the database could not take: an RQ job when Redis is up, else a file on disk."""
    current = runtime.current()
    args = (kind, data, now.isoformat())
    if enqueue(current.redis, [PendingJob(replay_job, args)]):
        return
    _write_spool_file(kind, data, now.isoformat())


def _write_spool_file(kind: str, data: dict[str, Any], received_at: str) -> None:
    folder = runtime.current().settings.spool_dir
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{received_at.replace(':', '').replace('+', 'p')}-{secrets.token_hex(4)}.json"
    temporary = folder / (name + ".tmp")
    temporary.write_text(json.dumps({"kind": kind, "data": data, "received_at": received_at}))
    os.replace(temporary, folder / name)


def replay_job(kind: str, data: dict[str, Any], received_at: str) -> None:
    """RQ job: replay a kept webhook. The database still down: back to the disk spool, which the sweep
    retries for as long as it takes, instead of RQ's few retries and its failed-job list."""
    current = runtime.current()
    try:
        with current.database.session() as session:
            _replayers[kind](session, data, datetime.fromisoformat(received_at))
    except SQLAlchemyError as error:
        log.warning("database still unavailable for a kept %s webhook (%s); spooled to disk", kind, error)
        _write_spool_file(kind, data, received_at)


def replay_spool(session: Session, now: datetime) -> None:
    """The sweep: replay kept webhooks in the order they arrived; one that fails stays for next time."""
    folder = runtime.current().settings.spool_dir
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.json")):
        item = json.loads(path.read_text())
        _replayers[item["kind"]](session, item["data"], datetime.fromisoformat(item["received_at"]))
        session.commit()
        path.unlink()


def _log_if_new(
    session: Session,
    route: Route | None,
    call: IncomingCall,
    received_at: datetime,
    after_hours: bool = False,
    steps: list[list[str]] | None = None,
    *,
    forwarded: bool = False,
) -> None:
    """Log a call the database never took; a second replay finds it logged and does nothing."""
    if route is None or get_call(session, call.sid) is not None:
        return
    row, inserted = record_incoming(
        session, call, route.origin, after_hours=after_hours, steps=steps or [], now=received_at
    )
    if inserted and forwarded:
        row.kind = "forwarded"
        row.voicemail_started = False


def ring_record(ringing: RingingCall) -> dict[str, Any]:
    """What a ring the caller was answered for needs to be logged later (see replay_ring)."""
    return {
        "CallSid": ringing.sid,
        "caller": ringing.caller,
        "To": ringing.to,
        "CallStatus": ringing.status,
        "after_hours": ringing.after_hours,
        "steps": ringing.steps,
        "caller_id_unverified": ringing.caller_id_unverified,
    }


def replay_ring(session: Session, record: dict[str, Any], received_at: datetime) -> None:
    """Log a ring that was answered with its ring plan but that the database refused in that moment."""
    caller = record.get("caller")
    call = IncomingCall(
        sid=str(record.get("CallSid") or ""),
        caller=str(caller) if caller else None,
        to=str(record.get("To") or ""),
        status=str(record.get("CallStatus") or "ringing"),
        caller_id_unverified=bool(record.get("caller_id_unverified")),
    )
    steps = [list(step) for step in record.get("steps") or []]
    _log_if_new(session, load_route(session, call.to), call, received_at, bool(record.get("after_hours")), steps)


def replay_call(session: Session, kind: str, form: dict[str, Any], received_at: datetime) -> None:
    """Log a kept call webhook; safe to run twice (the call SID is unique, the end is claimed once)."""
    sid = str(form.get("CallSid") or "")
    to = str(form.get("To") or "")
    route = load_route(session, to)
    # A call kept by the failsafe went to the main line, never to our Dial.
    forwarded = IncomingCall(
        sid=sid,
        caller=caller_number(form.get("From")),
        to=to,
        caller_id_unverified=caller_id_failed(form.get("StirVerstat")),
    )
    if kind == "incoming":
        _log_if_new(session, route, forwarded, received_at, forwarded=True)
    elif kind == "status":
        raw = str(form.get("CallDuration") or "")
        ended = CallEnded(
            sid=sid,
            status=str(form.get("CallStatus") or "completed"),
            duration=int(raw) if raw.isdigit() else None,
            caller=forwarded.caller,
            to=to,
            caller_id_unverified=forwarded.caller_id_unverified,
        )
        _log_if_new(session, route, forwarded, received_at, forwarded=True)
        finish_call(session, ended, route.origin if route else None, received_at)
