"""Per-address limits on failed attempts: wrong sign-in codes, unknown numbers, unknown API keys.

Failures are rows (`SignInFailure`), so every web process sees the same count; past the limit the caller
answers 429 with Retry-After until the oldest failure in the window ages out.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from gateway.models import SignInFailure

WINDOW = timedelta(minutes=15)


class TooManyAttempts(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__("too many failed attempts")
        self.retry_after = retry_after


def check_failures(session: Session, address: str, kinds: tuple[str, ...], limit: int, now: datetime) -> None:
    """Raise TooManyAttempts when the address failed `limit` times within the window."""
    count, oldest = session.execute(
        select(func.count(), func.min(SignInFailure.at)).where(
            SignInFailure.address == address, SignInFailure.kind.in_(kinds), SignInFailure.at >= now - WINDOW
        )
    ).one()
    if int(count or 0) >= limit:
        release = (oldest or now) + WINDOW
        raise TooManyAttempts(max(1, int((release - now).total_seconds()) + 1))


def record_failure(session: Session, address: str, kind: str, now: datetime) -> None:
    session.add(SignInFailure(address=address[:64], kind=kind, at=now))
    # Old rows are of no use to any limit: drop them now and then, as failures are written.
    if secrets.randbelow(50) == 0:
        session.execute(delete(SignInFailure).where(SignInFailure.at < now - WINDOW))
