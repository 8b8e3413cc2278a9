"""Who is looking: sign-in by a texted code or an API key, sessions kept in the database, CSRF tokens and
per-address limits on failed attempts.

The cookie holds only a random id; the row holds its digest, so signing out (or revoking the key, or an
agent leaving the configuration) ends the session wherever a copy of the cookie lives.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from flask import Request, g, request
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from gateway import runtime, web
from gateway.api.keys import find_key, store_ids
from gateway.dashboard.models import SignInCode, WorkspaceSession
from gateway.messaging.outbound import queue_text
from gateway.models import Agent, ApiKey, Role, Store, TrackedNumber
from gateway.phones import InvalidPhone, mask, to_e164

log = logging.getLogger(__name__)

SESSION_COOKIE = "gw_session"
CSRF_COOKIE = "gw_csrf"
CSRF_FIELD = "csrf_token"
SESSION_IDLE = timedelta(hours=12)
SESSION_LIFETIME = timedelta(days=7)
SEEN_EVERY = timedelta(minutes=5)  # last_seen_at is written at most this often

CODE_LIFETIME = timedelta(minutes=10)
CODE_TRIES = 5
CODES_PER_AGENT = 3  # codes texted to one person per CODE_LIFETIME
FAILURES_PER_ADDRESS = 10  # failed sign-ins (wrong code, unknown number or key) per window
API_KEY_FAILURES_PER_ADDRESS = 30  # failed bearer keys on the API per window


@dataclass(frozen=True)
class Viewer:
    """A signed-in person: an agent or manager, or an administrator's API key."""

    name: str
    store_ids: frozenset[int] | None  # None: every store
    agent: Agent | None = None
    api_key: ApiKey | None = None
    departments: frozenset[str] | None = None  # an agent sees leads of their departments only
    session_id: int = 0
    store_names: list[str] = field(default_factory=list)

    @property
    def agent_id(self) -> int | None:
        return self.agent.id if self.agent is not None else None

    @property
    def role(self) -> str:
        if self.agent is None:
            return "administrator"
        return "manager" if self.agent.role == Role.MANAGER.value else "agent"

    @property
    def is_agent(self) -> bool:
        return self.role == "agent"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _now() -> datetime:
    return runtime.current().clock.now()


def client_address(req: Request) -> str:
    """The address that made the request (gunicorn behind a proxy should set REMOTE_ADDR from it)."""
    return (req.remote_addr or "unknown")[:64]


# --- per-address limits (gateway/web.py) ----------------------------------------------------------------

check_failures = web.check_failures
record_failure = web.record_failure
TooManyAttempts = web.TooManyAttempts

SIGN_IN_KINDS = ("code", "phone", "key")


# --- codes by text ----------------------------------------------------------------------------------------


def _code_digest(agent_id: int, code: str) -> str:
    secret = runtime.current().settings.secret_key.encode()
    return hmac.new(secret, f"sign-in:{agent_id}:{code}".encode(), hashlib.sha256).hexdigest()


def agent_for_phone(session: Session, raw: str) -> Agent | None:
    try:
        phone = to_e164(raw)
    except InvalidPhone:
        return None
    return session.scalar(
        select(Agent).where(Agent.phone == phone, Agent.active.is_(True)).order_by(Agent.id).limit(1)
    )


def store_sender(session: Session, store: Store) -> str:
    """The store's own number a sign-in code comes from: its first tracked number, else its main line."""
    number = session.scalar(
        select(TrackedNumber.number)
        .where(TrackedNumber.store_id == store.id, TrackedNumber.active.is_(True))
        .order_by(TrackedNumber.id)
        .limit(1)
    )
    return number or store.main_line


def send_code(session: Session, agent: Agent, now: datetime) -> bool:
    """Text a fresh code to the agent. False when they were sent too many codes lately."""
    recent = session.scalar(
        select(func.count()).where(SignInCode.agent_id == agent.id, SignInCode.created_at >= now - CODE_LIFETIME)
    )
    if int(recent or 0) >= CODES_PER_AGENT:
        return False
    code = f"{secrets.randbelow(1_000_000):06d}"
    session.add(
        SignInCode(agent_id=agent.id, code_hash=_code_digest(agent.id, code), created_at=now,
                   expires_at=now + CODE_LIFETIME)
    )
    queue_text(
        session,
        to=agent.phone,
        from_=store_sender(session, agent.store),
        body=f"{code} is your {agent.store.name} workspace sign-in code. It works for 10 minutes. "
        "Nobody from the store will ask you for it.",
        kind="sign_in_code",
        now=now,
        agent=agent,
        store_id=agent.store_id,
    )
    if runtime.current().settings.sandbox:
        # Sandbox mode sends nothing: the person at the console running `gateway serve` reads it here.
        log.warning("sandbox: sign-in code for %s (%s) is %s", agent.name, mask(agent.phone), code)
    return True


def redeem_code(session: Session, agent: Agent, code: str, now: datetime) -> bool:
    """True when `code` is the agent's latest live code; every wrong try counts against it."""
    row = session.scalar(
        select(SignInCode)
        .where(SignInCode.agent_id == agent.id, SignInCode.used_at.is_(None), SignInCode.expires_at > now)
        .order_by(SignInCode.id.desc())
        .limit(1)
    )
    if row is None or row.attempts >= CODE_TRIES:
        return False
    if hmac.compare_digest(row.code_hash, _code_digest(agent.id, code.strip())):
        row.used_at = now
        return True
    row.attempts += 1
    return False


# --- sessions --------------------------------------------------------------------------------------------


def start_session(session: Session, now: datetime, *, agent: Agent | None = None,
                  api_key: ApiKey | None = None) -> str:
    token = secrets.token_urlsafe(32)
    session.add(
        WorkspaceSession(
            token_hash=_digest(token),
            agent_id=agent.id if agent is not None else None,
            api_key_id=api_key.id if api_key is not None else None,
            created_at=now,
            last_seen_at=now,
            expires_at=now + SESSION_LIFETIME,
        )
    )
    return token


def end_session(session: Session, token: str | None, now: datetime) -> None:
    if not token:
        return
    row = session.scalar(select(WorkspaceSession).where(WorkspaceSession.token_hash == _digest(token)))
    if row is not None and row.ended_at is None:
        row.ended_at = now


def _load_viewer(session: Session, token: str, now: datetime) -> Viewer | None:
    row = session.scalar(select(WorkspaceSession).where(WorkspaceSession.token_hash == _digest(token)))
    if row is None or row.ended_at is not None or row.expires_at <= now or row.last_seen_at + SESSION_IDLE <= now:
        return None
    if now - row.last_seen_at >= SEEN_EVERY:
        row.last_seen_at = now
        session.commit()
    if row.agent_id is not None:
        agent = session.get(Agent, row.agent_id)
        if agent is None or not agent.active:
            return None
        manager = agent.role == Role.MANAGER.value
        return Viewer(
            name=agent.name,
            store_ids=frozenset({agent.store_id}),
            agent=agent,
            departments=None if manager else frozenset(agent.departments or []),
            session_id=row.id,
            store_names=[agent.store.name],
        )
    key = session.get(ApiKey, row.api_key_id) if row.api_key_id is not None else None
    if key is None or key.revoked_at is not None:
        return None
    ids = store_ids(session, key)
    names = list(
        session.scalars(
            select(Store.name).where(Store.id.in_(ids)).order_by(Store.name) if ids is not None
            else select(Store.name).order_by(Store.name)
        )
    )
    return Viewer(name=key.name, store_ids=frozenset(ids) if ids is not None else None, api_key=key,
                  session_id=row.id, store_names=names)


def current_viewer() -> Viewer | None:
    """The signed-in person of this request, loaded once."""
    if "viewer" not in g:
        token = request.cookies.get(SESSION_COOKIE)
        g.viewer = _load_viewer(web.session(), token, _now()) if token else None
    viewer: Viewer | None = g.viewer
    return viewer


def find_admin_key(session: Session, plaintext: str) -> ApiKey | None:
    return find_key(session, plaintext.strip()) if plaintext.strip() else None


def _secure() -> bool:
    return runtime.current().settings.public_base_url.startswith("https://")


def set_session_cookie(response: Response, token: str) -> None:
    response.set_cookie(SESSION_COOKIE, token, max_age=int(SESSION_LIFETIME.total_seconds()), httponly=True,
                        secure=_secure(), samesite="Lax", path="/")


def clear_session_cookie(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, secure=_secure(), samesite="Lax")


# --- CSRF ------------------------------------------------------------------------------------------------
#
# Every form carries a token: an HMAC of the session cookie (signed in) or of a random pre-session cookie
# (the sign-in forms), checked on every POST. A cross-site page can send the cookie but cannot read it,
# so it cannot make the token.


def _csrf_anchor() -> str:
    token = request.cookies.get(SESSION_COOKIE)
    if token and current_viewer() is not None:
        return "s:" + token
    anchor = request.cookies.get(CSRF_COOKIE) or g.get("new_csrf_cookie")
    if not anchor:
        anchor = secrets.token_urlsafe(24)
        g.new_csrf_cookie = anchor
    return "c:" + anchor


def csrf_token() -> str:
    secret = runtime.current().settings.secret_key.encode()
    return hmac.new(secret, ("csrf:" + _csrf_anchor()).encode(), hashlib.sha256).hexdigest()


def csrf_valid() -> bool:
    sent = request.form.get(CSRF_FIELD, "")
    if not sent:
        return False
    return hmac.compare_digest(sent, csrf_token())


def set_csrf_cookie(response: Response) -> None:
    anchor = g.get("new_csrf_cookie")
    if anchor:
        response.set_cookie(CSRF_COOKIE, anchor, httponly=True, secure=_secure(), samesite="Lax", path="/")
