"""A ring is answered before its commit (gateway/calls/hotpath.py): later webhooks about the call, in this web
process or another, find it logged as it was answered; round-robin turns hold across processes; a ring
the database refuses after its answer is kept and logged later."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from xml.etree import ElementTree

import pytest
from sqlalchemy import func, select

from gateway.calls import hotpath
from gateway.calls import services as call_services
from gateway.calls.hotpath import Statements
from gateway.embedded_redis import free_port
from gateway.models import Call, Lead
from gateway.simulator import HttpPoster, new_sid, sign
from tests.support import postgres
from tests.support.config import BASIC_CONFIG, CUSTOMER, ROUND_ROBIN, SIMULTANEOUS, store_hours
from tests.support.unreachable import dead_redis
from tests.support.webhooks import SignedClient

ALICE, BEN, CARA = "+12025550111", "+12025550112", "+12025550113"
ROOT = Path(__file__).resolve().parents[2]


def signed(app, settings) -> SignedClient:
    return SignedClient(app.test_client(), settings.public_base_url, settings.webhook_auth_token)


def ring_unflushed(app, settings, to=SIMULTANEOUS, sid=None, caller=CUSTOMER):
    """The incoming-call webhook as the provider sends it, without waiting for the writer afterwards."""
    sid = sid or new_sid("CA")
    params = {"CallSid": sid, "From": caller, "To": to, "CallStatus": "ringing"}
    url = settings.public_base_url + "/webhooks/voice/incoming"
    response = app.test_client().post(
        "/webhooks/voice/incoming", data=params,
        headers={"X-Twilio-Signature": sign(settings.webhook_auth_token, url, params)},
    )
    assert response.status_code == 200
    return sid, ElementTree.fromstring(response.get_data(as_text=True))


def first_rung(root: ElementTree.Element) -> str:
    return (root.findall("./Dial/Number")[0].text or "").strip()


def hold_writer(app, seconds: float) -> None:
    """Keep the app's writer busy for a moment, so what is queued next is committed after it."""
    hotpath.hot_path(app).log(lambda db: time.sleep(seconds), lambda error: None)


def committed_rows(app, sid) -> int:
    """The call's committed rows, read beside a writer that holds its transaction open. Not through a
    session: on SQLite every session's transaction begins IMMEDIATE, so it would wait for that writer
    (and give up with "database is locked" once the busy timeout ran out)."""
    row = hotpath.hot_path(app).read(
        lambda statements: statements.fetch("SELECT count(*) FROM calls WHERE sid = :sid", {"sid": sid}))
    assert row is not None
    return int(row[0])


def calls_with(db, sid) -> list[Call]:
    with db.session() as session:
        return list(session.scalars(select(Call).where(Call.sid == sid)))


@pytest.mark.usefixtures("configured")
def test_the_end_of_a_call_reaching_another_process_first_waits_for_the_ring(app, make_app, db, settings,
                                                                             monkeypatch):
    ring_unflushed(app, settings)  # the writer's first commit: it is known healthy from here
    held, holding = threading.Event(), threading.Event()

    def hold(_statements: Statements) -> None:
        holding.set()
        held.wait(60)

    # This process commits its next ring late: its writer is held inside a transaction by an event, not
    # a pause, so that a busy machine cannot commit the ring before the check below.
    hotpath.hot_path(app).log(hold, lambda error: None)
    assert holding.wait(60)
    sid, root = ring_unflushed(app, settings)
    assert [n.text for n in root.findall("./Dial/Number")] == [ALICE, BEN]
    assert committed_rows(app, sid) == 0  # answered, not yet committed

    # The other process waits for the ring as long as it takes here (the SQLite writer holds its lock
    # while held, so the ring is let go now and reaches the database while the other process waits).
    monkeypatch.setattr(call_services, "RING_LOG_GRACE", 60.0)
    held.set()
    other = signed(make_app(), settings)  # another web process
    ended = other.post("/webhooks/voice/status",
                       {"CallSid": sid, "From": CUSTOMER, "To": SIMULTANEOUS, "CallStatus": "no-answer"})
    assert ended.status_code == 204
    [call] = calls_with(db, sid)
    assert call.ringing_agents == [["alice", "ben"]]  # the ring as answered, not a row made up from the end
    assert call.processed_at is not None
    assert call.lead_id is not None


@pytest.mark.usefixtures("configured")
def test_a_webhook_in_the_same_process_flushes_the_writer(app, db, settings, monkeypatch, twilio):
    ring_unflushed(app, settings)
    # An hour's linger: the ring is committed in time for the view only because the view asked for it.
    monkeypatch.setattr(hotpath, "LINGER_SECONDS", 3600.0)
    hold_writer(app, 0.1)  # both rings below queue up: calls coming in together, so the writer lingers
    ring_unflushed(app, settings)
    sid, _ = ring_unflushed(app, settings)
    response = twilio.post(f"/webhooks/voice/screen?call={sid}&agent=alice&step=0", {"CallSid": new_sid("CA")})
    assert b"<Gather" in response.get_data()
    assert len(calls_with(db, sid)) == 1


@pytest.mark.usefixtures("configured")
def test_the_end_of_a_call_never_logged_is_still_settled(app, db, twilio):
    sid = new_sid("CA")
    ended = twilio.post("/webhooks/voice/status",
                        {"CallSid": sid, "From": CUSTOMER, "To": SIMULTANEOUS, "CallStatus": "completed"})
    assert ended.status_code == 204
    [call] = calls_with(db, sid)
    assert call.outcome == "abandoned"
    assert call.lead_id is not None


@pytest.mark.usefixtures("configured")
def test_round_robin_turns_hold_across_processes_and_a_retry_keeps_its_turn(app, make_app, settings, db):
    other = make_app()
    firsts = []
    sids = []
    for serving in (app, other, app, other):
        sid, root = ring_unflushed(serving, settings, to=ROUND_ROBIN, caller=f"+1202555{len(sids) + 7000}")
        sids.append(sid)
        firsts.append(first_rung(root))
    assert firsts == [ALICE, BEN, CARA, ALICE]
    _, again = ring_unflushed(app, settings, to=ROUND_ROBIN, sid=sids[1], caller="+12025557001")
    assert first_rung(again) == BEN  # the provider's retry, answered by the other process
    for serving in (app, other):
        assert hotpath.hot_path(serving).flush(timeout=120)
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Call)) == 4


@pytest.mark.usefixtures("configured")
def test_round_robin_without_redis_rotates_in_the_database_and_waits_for_its_commit(make_app, settings, db):
    no_redis = make_app(redis_url=dead_redis())
    ring_unflushed(no_redis, settings)  # prove the database first
    firsts = []
    for n in range(3):
        sid, root = ring_unflushed(no_redis, settings, to=ROUND_ROBIN, caller=f"+1202555{n + 7100}")
        firsts.append(first_rung(root))
        assert len(calls_with(db, sid)) == 1  # committed before the answer
    assert sorted(firsts) == [ALICE, BEN, CARA]


@pytest.mark.usefixtures("configured")
def test_a_ring_the_database_refuses_after_its_answer_is_logged_later(app, db, settings, work, monkeypatch):
    ring_unflushed(app, settings)
    writer = hotpath.hot_path(app)
    refuse = writer.engine.dialect.dbapi.OperationalError  # type: ignore[union-attr]
    original = Statements.flush

    def failing(self):
        raise refuse("disk I/O error")

    monkeypatch.setattr(Statements, "flush", failing)
    sid, root = ring_unflushed(app, settings)
    assert [n.text for n in root.findall("./Dial/Number")] == [ALICE, BEN]  # the caller was already ringing
    assert writer.flush(timeout=120)  # a guard for a busy machine, not a measure
    monkeypatch.setattr(Statements, "flush", original)
    assert calls_with(db, sid) == []

    work(sweep=False)  # kept as a job: logged from it once the database takes it
    [call] = calls_with(db, sid)
    assert call.ringing_agents == [["alice", "ben"]]
    assert call.outcome == "ringing"
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Lead)) == 0


@pytest.mark.skipif(not postgres.available(), reason="PostgreSQL binaries not installed")
def test_a_running_gateway_sends_callers_to_the_main_line_once_postgres_stops(tmp_path, redis_server):
    """Two gunicorn processes on a real PostgreSQL answer rings before committing them; when the server
    stops, the very next calls get the store's main line, from both processes."""
    server = postgres.PostgresServer()
    server.start()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        server.execute("CREATE DATABASE gateway")
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = {**os.environ, "DATABASE_URL": server.url("gateway"), "REDIS_URL": redis_server.url,
               "PUBLIC_BASE_URL": base, "SECRET_KEY": "test", "TWILIO_ACCOUNT_SID": "AC" + "7" * 32,
               "TWILIO_AUTH_TOKEN": "token", "TWILIO_API_BASE_URL": f"http://127.0.0.1:{free_port()}",
               "GATEWAY_INSTANCE_DIR": str(tmp_path / "instance")}
        config = tmp_path / "config.yaml"
        config.write_text(store_hours(BASIC_CONFIG, "open"))
        for command in (["db", "upgrade"], ["config", "apply", str(config)]):
            subprocess.run([sys.executable, "-m", "gateway.cli", *command], cwd=ROOT, env=env, check=True,
                           capture_output=True, timeout=60)
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "2",
             "--worker-class", "gthread", "--threads", "4", "--log-level", "error", "wsgi:app"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))
        poster = HttpPoster(base, "token")
        for _ in range(200):
            try:
                urllib.request.urlopen(f"{base}/healthz", timeout=1).close()  # noqa: S310 - loopback
                break
            except OSError:
                time.sleep(0.1)

        def ring() -> str:
            params = {"CallSid": new_sid("CA"), "From": CUSTOMER, "To": SIMULTANEOUS, "CallStatus": "ringing"}
            status, body = poster.post(f"{base}/webhooks/voice/incoming", params)
            assert status == 200, body
            root = ElementTree.fromstring(body)
            return ",".join((n.text or "").strip() for n in root.iter("Number")) or (root.findtext("Dial") or "")

        answered = {ring() for _ in range(20)}  # both processes have committed rings by now
        assert answered == {f"{ALICE},{BEN}"}
        server.stop()
        time.sleep(0.5)
        assert {ring() for _ in range(10)} == {"+12025550100"}  # the main line, at once
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=20)
        server.stop()


@pytest.mark.usefixtures("configured")
def test_the_screen_prompt_and_an_answered_dial_do_not_wait_for_a_writer(app, db, settings, twilio):
    """Ring webhooks that only read answer while another process's transaction holds the write lock."""
    sid, _ = ring_unflushed(app, settings)
    hotpath.hot_path(app).flush()
    holding, release, released = threading.Event(), threading.Event(), threading.Event()

    def writer() -> None:  # another writer, mid-transaction (a long status callback, say)
        with db.session() as session:
            session.execute(select(func.count()).select_from(Call))
            session.execute(Call.__table__.update().where(Call.sid == "CA-none").values(status="x"))
            holding.set()
            release.wait(20)
            session.rollback()
        released.set()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert holding.wait(10)
        screen = twilio.post(f"/webhooks/voice/screen?call={sid}&agent=alice&step=0", {"CallSid": new_sid("CA")})
        assert b"<Gather" in screen.get_data()
        assert not released.is_set()  # answered while the writer still held the lock
        ended = twilio.post(f"/webhooks/voice/dial-complete?call={sid}&step=0",
                            {"CallSid": sid, "DialCallStatus": "no-answer", "CallStatus": "completed"})
        assert b"<Hangup" in ended.get_data()  # the caller hung up while it rang: nothing to write
        assert not released.is_set()
    finally:
        release.set()
        thread.join()
