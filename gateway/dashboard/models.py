"""The workspace's sign-in rows: sessions kept server-side and texted sign-in codes (failed attempts are
`gateway.models.SignInFailure`, shared with the API).

Typed SQLAlchemy models only: no session, no Flask. Secrets are stored as SHA-256 digests: a copy of the
table signs nobody in.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from gateway.database import Base, utcnow


class WorkspaceSession(Base):
    """A signed-in browser. The cookie holds a random id; this row holds its digest. Signing out ends the
    row, so a cookie copied before the sign-out stops working."""

    __tablename__ = "workspace_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id"))
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    ended_at: Mapped[datetime | None] = mapped_column()


class SignInCode(Base):
    """A six-digit code texted to an agent's mobile: ten minutes, five tries, used once."""

    __tablename__ = "sign_in_codes"
    __table_args__ = (Index("ix_sign_in_codes_agent_created", "agent_id", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id"))
    code_hash: Mapped[str] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    used_at: Mapped[datetime | None] = mapped_column()
