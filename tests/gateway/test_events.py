"""The list of each event's subscribers in gateway/events.py is the list `create_app` wires."""

from __future__ import annotations

import re

from gateway import events


def _documented() -> dict[str, set[str]]:
    text = " ".join((events.__doc__ or "").split())
    found: dict[str, set[str]] = {}
    for name, receivers in re.findall(r"- (\w+): (.*?)(?= - \w+:|$)", text):
        found[name] = {r.strip() for r in receivers.split(",")}
    return found


def test_every_event_lists_its_subscribers(app):
    wired = {
        name: {f"{f.__module__}.{f.__name__}" for f in signal.receivers_for(None) if hasattr(f, "__name__")}
        for name, signal in events.SIGNALS.items()
    }
    assert {name: receivers for name, receivers in wired.items() if receivers} == _documented()
