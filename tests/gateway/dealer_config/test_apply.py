"""Applying the configuration file: adds, changes, retires, and is idempotent; nothing half-applied."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from gateway.database import Base, Database
from gateway.dealer_config.apply import apply_config
from gateway.dealer_config.parse import load_config, parse_config
from gateway.dealer_config.schema import ConfigError, GatewayConfig
from gateway.models import Agent, CadenceDefinition, Store, TrackedNumber

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "dealer-group.yaml"
EXAMPLE_TEXT = EXAMPLE.read_text()

EXAMPLE_ADDED = [
    "added store north-honda",
    "added store pacific-toyota",
    "added agent alice",
    "added agent ben",
    "added agent carla",
    "added agent dmitri",
    "added agent priya",
    "added agent tomas",
    "added cadence missed-call",
    "added cadence web-lead",
    "added cadence appointment-reminders",
    "added cadence no-show",
    "added number +12025550123",
    "added number +12025550124",
    "added number +13105550123",
    "added number +13105550124",
]


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path}/t.db")
    Base.metadata.create_all(database.engine)
    yield database
    database.dispose()


def apply(db: Database, text: str) -> list[str]:
    """Parse and apply `text` in one transaction, committed when apply_config returns."""
    config = parse_config(text, "group.yaml")
    with db.session() as session:
        return apply_config(session, config)


def edit(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} must occur once"
    return text.replace(old, new)


def snapshot(db: Database) -> dict[str, list[dict[str, Any]]]:
    """Every configured row, every column."""
    tables: dict[str, list[dict[str, Any]]] = {}
    with db.session() as session:
        for model in (Store, Agent, CadenceDefinition, TrackedNumber):
            columns = [column.key for column in model.__table__.columns]
            rows = session.scalars(select(model).order_by(model.id)).unique()
            tables[model.__tablename__] = [{name: getattr(row, name) for name in columns} for row in rows]
    return tables


def updated_at(db: Database) -> dict[str, datetime]:
    stamps: dict[str, datetime] = {}
    with db.session() as session:
        for store in session.scalars(select(Store)):
            stamps[f"store {store.key}"] = store.updated_at
        for number in session.scalars(select(TrackedNumber)).unique():
            stamps[f"number {number.number}"] = number.updated_at
        for cadence in session.scalars(select(CadenceDefinition)):
            stamps[f"cadence {cadence.key}"] = cadence.updated_at
    return stamps


def test_example_is_written_as_configured(db: Database) -> None:
    assert apply(db, EXAMPLE_TEXT) == EXAMPLE_ADDED

    with db.session() as session:
        north = session.scalars(select(Store).where(Store.key == "north-honda")).one()
        assert (north.name, north.timezone) == ("North Honda", "America/New_York")
        assert north.main_line == "+12025550100"
        assert north.hours["sales"]["sat"] == [["09:00", "18:00"]]
        assert north.hours["service"]["sun"] == []
        assert (north.response_sla_seconds, north.after_hours_grace_seconds) == (300, 1800)
        assert [entry["type"] for entry in north.crm] == ["adf-http", "adf-email", "webhook"]

        carla = session.scalars(select(Agent).where(Agent.key == "carla")).one()
        assert (carla.store.key, carla.departments, carla.role, carla.active) == (
            "north-honda",
            ["service"],
            "agent",
            True,
        )
        assert carla.schedule is not None
        assert carla.schedule["mon"] == [["07:30", "12:00"]]
        assert carla.schedule["sat"] == []

        reminders = session.scalars(
            select(CadenceDefinition).where(CadenceDefinition.key == "appointment-reminders")
        ).one()
        assert reminders.trigger == {"status": "appointment_set"}
        assert [(step["after"], step["relative_to"]) for step in reminders.steps] == [
            (0, "start"),
            (-86400, "appointment"),
            (-7200, "appointment"),
        ]

        service = session.scalars(select(TrackedNumber).where(TrackedNumber.number == "+12025550124")).one()
        assert (service.store.key, service.department, service.source) == (
            "north-honda",
            "service",
            "Google Business Profile",
        )
        assert service.ring == ["carla", "dmitri"]
        assert (service.strategy, service.ring_timeout_seconds) == ("sequential", 15)
        assert (service.screen, service.record, service.cadence_key, service.active) == (
            True,
            True,
            "missed-call",
            True,
        )
        assert set(service.prompts) == {"greeting", "voicemail", "whisper"}
        mailer = session.scalars(select(TrackedNumber).where(TrackedNumber.number == "+13105550124")).one()
        assert (mailer.source_weight, mailer.cadence_key, mailer.prompts) == (5, None, {})


def test_applying_the_same_file_twice_changes_nothing(db: Database) -> None:
    apply(db, EXAMPLE_TEXT)
    before, stamps = snapshot(db), updated_at(db)

    assert apply(db, EXAMPLE_TEXT) == []

    assert snapshot(db) == before
    assert updated_at(db) == stamps


def test_changes_are_reported_by_field_and_touch_only_the_changed_rows(db: Database) -> None:
    apply(db, EXAMPLE_TEXT)
    stamps = updated_at(db)
    text = edit(EXAMPLE_TEXT, 'phone: "+12025550111", email: alice', 'phone: "+12025550119", email: alice')
    text = edit(text, "store: north-honda, departments: [sales], role: agent}\n  - {key: ben",
                "store: north-honda, departments: [sales, service], role: agent}\n  - {key: ben")
    text = edit(text, "    response_sla: 10m\n", "    response_sla: 15m\n")
    text = edit(text, 'secret: "change-me-pacific"', 'secret: "rotated"')
    text = edit(text, "strategy: round-robin, ring_timeout: 20s", "strategy: sequential, ring_timeout: 25s")
    text = edit(text, "{after: 1h, text:", "{after: 2h, text:")

    assert apply(db, text) == [
        "changed store pacific-toyota: response_sla, crm",
        "changed agent alice: phone, departments",
        "changed cadence no-show: steps",
        "changed number +13105550123: strategy, ring_timeout",
    ]

    after = updated_at(db)
    changed = {"store pacific-toyota", "cadence no-show", "number +13105550123"}
    assert {key for key in stamps if after[key] != stamps[key]} == changed
    with db.session() as session:
        alice = session.scalars(select(Agent).where(Agent.key == "alice")).one()
        assert (alice.phone, alice.departments) == ("+12025550119", ["sales", "service"])
        pacific = session.scalars(select(Store).where(Store.key == "pacific-toyota")).one()
        assert pacific.response_sla_seconds == 900
        assert pacific.crm[1]["secret"] == "rotated"
    assert apply(db, text) == []


def test_an_agent_moves_store(db: Database) -> None:
    apply(db, EXAMPLE_TEXT)
    text = edit(EXAMPLE_TEXT, "ring: [priya, tomas]", "ring: [tomas]")
    text = edit(text, "store: pacific-toyota, departments: [sales], role: agent}",
                "store: north-honda, departments: [sales], role: agent}")
    assert apply(db, text) == ["changed agent priya: store", "changed number +13105550123: ring"]
    with db.session() as session:
        priya = session.scalars(select(Agent).where(Agent.key == "priya")).one()
        assert priya.store.key == "north-honda"


def without_pacific(text: str) -> str:
    """The example with the west-coast store, its people and numbers, and the no-show cadence removed."""
    text = text[: text.index("  - key: pacific-toyota")] + text[text.index("agents:") :]
    text = text[: text.index("  - {key: priya")] + text[text.index("\ncadences:") + 1 :]
    text = text[: text.index("  - key: no-show")] + text[text.index("numbers:") :]
    return text[: text.index("  # Website calls")]


def test_what_leaves_the_file_is_retired(db: Database) -> None:
    apply(db, EXAMPLE_TEXT)
    text = without_pacific(EXAMPLE_TEXT)
    text = edit(text, "ring: [alice, ben]", "ring: [alice]")
    ben = text[text.index("  - {key: ben,") : text.index("  # Carla works")]
    text = edit(text, ben, "")

    assert apply(db, text) == [
        "kept store pacific-toyota (not in file; it has data)",
        "deactivated agent ben",
        "deactivated agent priya",
        "deactivated agent tomas",
        "removed cadence no-show",
        "changed number +12025550123: ring",
        "removed number +13105550123",
        "removed number +13105550124",
    ]

    with db.session() as session:
        stores = session.scalars(select(Store.key).order_by(Store.key)).all()
        assert stores == ["north-honda", "pacific-toyota"]
        active = dict(session.execute(select(Agent.key, Agent.active)).all())
        assert active == {
            "alice": True,
            "ben": False,
            "carla": True,
            "dmitri": True,
            "priya": False,
            "tomas": False,
        }
        assert session.scalars(select(CadenceDefinition.key).order_by(CadenceDefinition.key)).all() == [
            "appointment-reminders",
            "missed-call",
            "web-lead",
        ]
        numbers = dict(session.execute(select(TrackedNumber.number, TrackedNumber.active)).all())
        assert numbers == {
            "+12025550123": True,
            "+12025550124": True,
            "+13105550123": False,
            "+13105550124": False,
        }

    # The store stays out of the file: it is mentioned again, and nothing else is.
    assert apply(db, text) == ["kept store pacific-toyota (not in file; it has data)"]

    # Putting everything back reactivates what was retired and recreates the cadence.
    assert apply(db, EXAMPLE_TEXT) == [
        "reactivated agent ben",
        "reactivated agent priya",
        "reactivated agent tomas",
        "added cadence no-show",
        "changed number +12025550123: ring",
        "reactivated number +13105550123",
        "reactivated number +13105550124",
    ]
    assert apply(db, EXAMPLE_TEXT) == []


def test_a_retired_number_comes_back_with_its_changes(db: Database) -> None:
    apply(db, EXAMPLE_TEXT)
    block = EXAMPLE_TEXT[EXAMPLE_TEXT.index("  - {number: \"+13105550124\"") :]
    assert apply(db, EXAMPLE_TEXT.replace(block, "")) == ["removed number +13105550124"]
    assert apply(db, edit(EXAMPLE_TEXT, "source_weight: 5,", "source_weight: 7,")) == [
        "reactivated number +13105550124: source_weight"
    ]


def test_a_file_with_problems_leaves_the_database_untouched(db: Database) -> None:
    apply(db, EXAMPLE_TEXT)
    before = snapshot(db)
    text = without_pacific(EXAMPLE_TEXT)  # many changes...
    text = edit(text, "ring: [alice, ben]", "ring: [alice, zed]")  # ...and one mistake

    with pytest.raises(ConfigError, match=r"group\.yaml:\d+: numbers\[0\]\.ring\[1\]: unknown agent 'zed'"):
        apply(db, text)

    assert snapshot(db) == before


def test_a_failure_part_way_through_rolls_everything_back(db: Database) -> None:
    apply(db, EXAMPLE_TEXT)
    before = snapshot(db)
    config = load_config(EXAMPLE)
    # A configuration built in code, not read from a file, naming a store nobody has: the stores are
    # written (and flushed) before the agent fails, and the caller's rollback must undo them.
    renamed = replace(config.stores[0], key="east-honda", name="East Honda")
    stray = replace(config.agents[0], key="zoe", store="nowhere")
    broken = GatewayConfig(
        stores=[renamed, *config.stores], agents=[*config.agents, stray], cadences=[], numbers=[]
    )

    with pytest.raises(ValueError, match="agent zoe names store 'nowhere'"), db.session() as session:
        apply_config(session, broken)

    assert snapshot(db) == before


def test_apply_config_never_commits(db: Database) -> None:
    session = db.sessions()
    try:
        assert apply_config(session, load_config(EXAMPLE)) == EXAMPLE_ADDED
        session.rollback()
    finally:
        session.close()
    assert snapshot(db) == {"stores": [], "agents": [], "cadence_definitions": [], "tracked_numbers": []}
