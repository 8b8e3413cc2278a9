"""A new call's row: the one definition of its columns that every writer of `calls` uses.

The hot path's INSERT (gateway/calls/hotpath.py), a ring replayed by the failsafe, a call whose end
arrived first and a click-to-call all start their row here, so a new column is added in one place.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from gateway.models import CallOutcome, Direction


def new_call(
    *,
    sid: str,
    store_id: int | None,
    tracked_number_id: int | None,
    from_number: str | None,
    to_number: str,
    status: str,
    now: datetime,
    started_at: datetime | None = None,
    direction: str = Direction.INBOUND.value,
    kind: str = "customer",
    after_hours: bool = False,
    ringing_agents: list[list[str]] | None = None,
    voicemail_started: bool = False,
    lead_id: int | None = None,
    caller_id_unverified: bool = False,
) -> dict[str, Any]:
    """The column values of a call as it starts (ringing, no step taken, nobody answered yet)."""
    return {
        "sid": sid,
        "lead_id": lead_id,
        "store_id": store_id,
        "tracked_number_id": tracked_number_id,
        "from_number": from_number,
        "to_number": to_number,
        "direction": direction,
        "kind": kind,
        "status": status,
        "outcome": CallOutcome.RINGING.value,
        "after_hours": after_hours,
        "dial_step": 0,
        "ringing_agents": ringing_agents or [],
        "answered_by_id": None,
        "voicemail_started": voicemail_started,
        "caller_id_unverified": caller_id_unverified,
        "started_at": started_at or now,
        "created_at": now,
    }


COLUMNS = tuple(new_call(sid="", store_id=None, tracked_number_id=None, from_number=None, to_number="",
                         status="", now=datetime.min.replace(tzinfo=UTC)))
