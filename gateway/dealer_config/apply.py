"""Configuration as code: make the database say what a checked configuration file says.

`apply_config` is idempotent and touches only rows whose configured values differ, so applying the same
file twice changes nothing (and `updated_at` stays put). It never commits: the caller commits once,
so a file is applied entirely or not at all.

What leaves the file is retired, not erased, wherever history points at it: agents become inactive
(they may own leads and tasks), numbers are deactivated (calls and leads refer to them), and stores
are kept as they are. Cadence definitions hold no history of their own and are deleted.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.dealer_config.schema import AgentConfig, CadenceConfig, GatewayConfig, NumberConfig, StoreConfig

# Configuration as code spans every package's configured rows, the way create_app wires the packages
# together, so this module is the one place in the core that writes a feature's model.
from gateway.models import Agent, CadenceDefinition, Store, TrackedNumber

# Column -> the name the configuration file uses for it, for the "changed ..." lines.
_LABELS = {
    "response_sla_seconds": "response_sla",
    "after_hours_grace_seconds": "after_hours_grace",
    "store_id": "store",
    "ring_timeout_seconds": "ring_timeout",
    "cadence_key": "cadence",
}


def apply_config(session: Session, config: GatewayConfig) -> list[str]:
    """Write the stores, agents, cadences and numbers of `config`; return one line per change.

    Lines read like "added store north-honda", "changed agent alice: phone, departments",
    "deactivated agent bob", "removed number +12025550123". A store that is in the database but not
    in the file is never deleted; it is reported on every run as "kept store X (not in file; it has
    data)" because the file and the database disagree about it. Does not commit.
    """
    changes: list[str] = []
    store_ids = _apply_stores(session, config.stores, changes)
    _apply_agents(session, config.agents, store_ids, changes)
    _apply_cadences(session, config.cadences, changes)
    _apply_numbers(session, config.numbers, store_ids, changes)
    session.flush()
    return changes


def _apply_stores(session: Session, wanted: list[StoreConfig], changes: list[str]) -> dict[str, int]:
    rows = {row.key: row for row in session.scalars(select(Store))}
    for store in wanted:
        values = {
            "name": store.name,
            "timezone": store.timezone,
            "main_line": store.main_line,
            "hours": copy.deepcopy(store.hours),
            "response_sla_seconds": store.response_sla_seconds,
            "after_hours_grace_seconds": store.after_hours_grace_seconds,
            "crm": copy.deepcopy(store.crm),
            "text_unverified_callers": store.text_unverified_callers,
            "recording_disclosure": store.recording_disclosure,
        }
        row = rows.get(store.key)
        if row is None:
            rows[store.key] = row = Store(key=store.key, **values)
            session.add(row)
            changes.append(f"added store {store.key}")
        else:
            changes.extend(describe_changes("store", store.key, _update(row, values)))
    in_file = {store.key for store in wanted}
    changes.extend(f"kept store {key} (not in file; it has data)" for key in sorted(set(rows) - in_file))
    session.flush()  # new stores need their ids before agents and numbers point at them
    return {key: row.id for key, row in rows.items()}


def _apply_agents(
    session: Session, wanted: list[AgentConfig], store_ids: Mapping[str, int], changes: list[str]
) -> None:
    rows = {row.key: row for row in session.scalars(select(Agent))}
    for agent in wanted:
        values = {
            "name": agent.name,
            "phone": agent.phone,
            "email": agent.email,
            "store_id": _store_id(store_ids, agent.store, f"agent {agent.key}"),
            "departments": list(agent.departments),
            "role": agent.role,
            "schedule": copy.deepcopy(agent.schedule),
            "active": True,
        }
        row = rows.get(agent.key)
        if row is None:
            session.add(Agent(key=agent.key, **values))
            changes.append(f"added agent {agent.key}")
        else:
            changes.extend(describe_changes("agent", agent.key, _update(row, values)))
    in_file = {agent.key for agent in wanted}
    for key in sorted(set(rows) - in_file):
        if rows[key].active:
            rows[key].active = False
            changes.append(f"deactivated agent {key}")


def _apply_cadences(session: Session, wanted: list[CadenceConfig], changes: list[str]) -> None:
    rows = {row.key: row for row in session.scalars(select(CadenceDefinition))}
    for cadence in wanted:
        values = {
            "steps": [
                {"after": step.after_seconds, "text": step.text, "relative_to": step.relative_to}
                for step in cadence.steps
            ],
            "trigger": copy.deepcopy(cadence.trigger),
        }
        row = rows.get(cadence.key)
        if row is None:
            session.add(CadenceDefinition(key=cadence.key, **values))
            changes.append(f"added cadence {cadence.key}")
        else:
            changes.extend(describe_changes("cadence", cadence.key, _update(row, values)))
    in_file = {cadence.key for cadence in wanted}
    for key in sorted(set(rows) - in_file):
        session.delete(rows[key])
        changes.append(f"removed cadence {key}")


def _apply_numbers(
    session: Session, wanted: list[NumberConfig], store_ids: Mapping[str, int], changes: list[str]
) -> None:
    rows = {row.number: row for row in session.scalars(select(TrackedNumber))}
    for number in wanted:
        values = {
            "store_id": _store_id(store_ids, number.store, f"number {number.number}"),
            "department": number.department,
            "source": number.source,
            "source_weight": number.source_weight,
            "ring": list(number.ring),
            "strategy": number.strategy,
            "ring_timeout_seconds": number.ring_timeout_seconds,
            "screen": number.screen,
            "record": number.record,
            "cadence_key": number.cadence,
            "prompts": dict(number.prompts),
            "active": True,
        }
        row = rows.get(number.number)
        if row is None:
            session.add(TrackedNumber(number=number.number, **values))
            changes.append(f"added number {number.number}")
        else:
            changes.extend(describe_changes("number", number.number, _update(row, values)))
    in_file = {number.number for number in wanted}
    for key in sorted(set(rows) - in_file):
        if rows[key].active:
            rows[key].active = False
            changes.append(f"removed number {key}")


def describe_changes(kind: str, key: str, changed: list[str]) -> list[str]:
    """The line for one existing row: nothing when nothing changed; "reactivated" when it came back."""
    if not changed:
        return []
    if "active" in changed:
        rest = [name for name in changed if name != "active"]
        return [f"reactivated {kind} {key}" + (f": {', '.join(rest)}" if rest else "")]
    return [f"changed {kind} {key}: {', '.join(changed)}"]


def _update(row: object, values: Mapping[str, Any]) -> list[str]:
    """Set only the attributes whose value differs (so untouched rows keep their updated_at)."""
    changed = []
    for attribute, value in values.items():
        if getattr(row, attribute) != value:
            setattr(row, attribute, value)
            changed.append(_LABELS.get(attribute, attribute))
    return changed


def _store_id(store_ids: Mapping[str, int], key: str, owner: str) -> int:
    try:
        return store_ids[key]
    except KeyError:
        # load_config rejects such a file; this guards configurations built some other way.
        message = f"{owner} names store {key!r}, which is neither in the file nor in the database"
        raise ValueError(message) from None
