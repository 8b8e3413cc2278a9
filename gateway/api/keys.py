"""API keys: shown once, stored hashed, scoped to stores."""

from __future__ import annotations

import hashlib
import secrets
import weakref
from datetime import datetime

from sqlalchemy import bindparam, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from gateway.models import ApiKey, Store

PREFIX = "gw_"


class UnknownStore(ValueError):
    pass


def hash_key(plaintext: str) -> str:
    # Keys carry 256 random bits, so one round of SHA-256 is enough (no password stretching needed).
    return hashlib.sha256(plaintext.encode()).hexdigest()


def create_key(session: Session, name: str, stores: list[str] | None, now: datetime) -> tuple[ApiKey, str]:
    """A new key; returns the row and the plaintext, which is never stored."""
    if stores:
        known = set(session.scalars(select(Store.key).where(Store.key.in_(stores))))
        missing = sorted(set(stores) - known)
        if missing:
            raise UnknownStore(f"unknown store(s): {', '.join(missing)}")
    prefix = secrets.token_hex(4)
    plaintext = f"{PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    key = ApiKey(
        name=name,
        prefix=prefix,
        key_hash=hash_key(plaintext),
        stores=sorted(set(stores)) if stores else None,
        created_at=now,
    )
    session.add(key)
    session.flush()
    return key, plaintext


# Built once: every API request runs it.
_BY_HASH = select(ApiKey).where(ApiKey.key_hash == bindparam("key_hash"))


def find_key(session: Session, plaintext: str) -> ApiKey | None:
    if not plaintext.startswith(PREFIX) or len(plaintext) > 200:
        return None
    key = session.scalar(_BY_HASH, {"key_hash": hash_key(plaintext)})
    if key is None or key.revoked_at is not None:
        return None
    return key


def list_keys(session: Session) -> list[ApiKey]:
    return list(session.scalars(select(ApiKey).order_by(ApiKey.id)))


def revoke_key(session: Session, key_id_or_prefix: str, now: datetime) -> ApiKey | None:
    # A prefix is eight hex digits and may be all decimal ones: it is looked for first, the id after it.
    key = session.scalar(select(ApiKey).where(ApiKey.prefix == key_id_or_prefix))
    if key is None and key_id_or_prefix.isdigit():
        key = session.get(ApiKey, int(key_id_or_prefix))
    if key is not None and key.revoked_at is None:
        key.revoked_at = now
    return key


# Store key -> id, per database. A store is never deleted nor its key changed, so an id once read
# stays right; a key not found (a store not configured yet) is looked up again next time.
_STORE_IDS: weakref.WeakKeyDictionary[Engine, dict[str, int]] = weakref.WeakKeyDictionary()


def store_ids(session: Session, key: ApiKey) -> set[int] | None:
    """The ids of the stores this key may see; None means every store."""
    if key.stores is None:
        return None
    bind = session.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
    known = _STORE_IDS.setdefault(engine, {})
    missing = [store for store in key.stores if store not in known]
    if missing:
        found = session.execute(select(Store.key, Store.id).where(Store.key.in_(missing)))
        known.update({store: store_id for store, store_id in found})
    return {known[store] for store in key.stores if store in known}
