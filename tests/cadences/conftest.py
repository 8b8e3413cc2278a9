"""Fixtures for the cadence tests: the dealer group with every kind of cadence, missed calls played
through the simulator, the texts the provider fake received."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from gateway.database import Database
from gateway.simulator import play_call
from tests.cadences.helpers import CADENCE_CONFIG, Snapshot, read_snapshot
from tests.support.config import CUSTOMER, SIMULTANEOUS


@pytest.fixture
def cadence_config(configure: Callable[[str], list[str]]) -> None:
    configure(CADENCE_CONFIG)


@pytest.fixture
def missed_call(poster: Any) -> Callable[..., str]:
    def play(to: str = SIMULTANEOUS, caller: str = CUSTOMER, outcome: str = "no-answer", sid: str | None = None) -> str:
        lines = list(play_call(poster, to=to, caller=caller, outcome=outcome, call_sid=sid))
        return lines[0].split()[1]  # "call CA... from ..."

    return play


@pytest.fixture
def snapshot(db: Database) -> Callable[[], Snapshot]:
    return lambda: read_snapshot(db)


@pytest.fixture
def texts(fake_twilio: Any) -> Callable[..., list[dict[str, Any]]]:
    def to(number: str = CUSTOMER) -> list[dict[str, Any]]:
        return [m for m in fake_twilio.messages if m.get("To") == number]

    return to
