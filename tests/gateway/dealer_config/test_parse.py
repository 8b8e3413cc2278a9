"""The configuration file: every kind of mistake is reported with its file, line and field."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest

from gateway.dealer_config.parse import load_config, parse_config
from gateway.dealer_config.schema import (
    DAYS,
    ROLES,
    STRATEGIES,
    TRIGGER_STATUSES,
    ConfigError,
    GatewayConfig,
    Problem,
)
from gateway.durations import format_duration, parse_duration
from gateway.models import LeadStatus, RingStrategy, Role

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "dealer-group.yaml"

# A small sound file; tests change one line of it and expect problems at known lines.
BASE = """\
stores:
  - key: north
    name: North Honda
    timezone: America/New_York
    main_line: "+12025550100"
    hours:
      sales: {mon: "09:00-20:00", sat: "09:00-18:00"}
      service: {mon: "07:30-18:00"}
  - key: west
    name: West Toyota
    timezone: America/Los_Angeles
    main_line: "+13105550100"
    hours:
      sales: {mon: "09:00-21:00"}
agents:
  - {key: alice, name: Alice Ng, phone: "+12025550111", store: north, departments: [sales]}
  - {key: bob, name: Bob Li, phone: "+13105550111", store: west, departments: [sales]}
cadences:
  - key: follow-up
    steps:
      - {after: 0s, text: "Hi from {store}"}
      - {after: 4h, text: "Still there, {first_name}?"}
numbers:
  - {number: "+12025550123", store: north, department: sales, source: Web, ring: [alice], cadence: follow-up}
"""


def edit(old: str, new: str, text: str = BASE) -> str:
    assert text.count(old) == 1, f"{old!r} must occur once"
    return text.replace(old, new)


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "x.yaml")
    return str(caught.value).splitlines()


def only_problem(text: str) -> str:
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


# -- sound files -------------------------------------------------------------------------------------


def test_base_file_parses_with_defaults_and_normalised_values() -> None:
    config = parse_config(edit('main_line: "+12025550100"', 'main_line: "(202) 555-0100"'), "x.yaml")

    north = config.stores[0]
    assert north.main_line == "+12025550100"
    assert north.hours["sales"] == {
        "mon": [["09:00", "20:00"]],
        "tue": [],
        "wed": [],
        "thu": [],
        "fri": [],
        "sat": [["09:00", "18:00"]],
        "sun": [],
    }
    assert north.response_sla_seconds == 300
    assert north.after_hours_grace_seconds == 1800
    assert north.crm == []
    alice = config.agents[0]
    assert (alice.role, alice.email, alice.schedule) == ("agent", None, None)
    number = config.numbers[0]
    assert (number.source_weight, number.strategy, number.ring_timeout_seconds) == (10, "simultaneous", 18)
    assert (number.screen, number.record, number.prompts) == (True, False, {})
    steps = config.cadences[0].steps
    assert [(s.after_seconds, s.relative_to) for s in steps] == [(0, "start"), (14400, "start")]
    assert config.cadences[0].trigger is None


def test_example_file_loads_and_shows_every_feature() -> None:
    config = load_config(EXAMPLE)

    assert {store.timezone for store in config.stores} == {"America/New_York", "America/Los_Angeles"}
    assert all(set(store.hours) == {"sales", "service"} for store in config.stores)
    assert {entry["type"] for store in config.stores for entry in store.crm} == {
        "adf-http",
        "adf-email",
        "webhook",
    }
    hosts = [
        urlsplit(entry["url"]).hostname or "" if "url" in entry else entry["to"].split("@")[1]
        for store in config.stores
        for entry in store.crm
    ]
    # Nothing in the example reaches beyond this machine: HTTP goes to loopback, mail to a reserved domain.
    assert all(host == "127.0.0.1" or host.endswith(".example.invalid") for host in hosts)
    managers = {agent.store for agent in config.agents if agent.role == "manager"}
    assert managers == {store.key for store in config.stores}
    assert any(agent.schedule for agent in config.agents)
    assert 4 <= len(config.agents) <= 6
    assert {number.strategy for number in config.numbers} == set(STRATEGIES)
    cadences = {cadence.key: cadence for cadence in config.cadences}
    assert [s.after_seconds for s in cadences["missed-call"].steps] == [0, 4 * 3600, 86400, 3 * 86400]
    reminders = cadences["appointment-reminders"]
    assert reminders.trigger == {"status": "appointment_set"}
    assert [(s.after_seconds, s.relative_to) for s in reminders.steps] == [
        (0, "start"),
        (-86400, "appointment"),
        (-7200, "appointment"),
    ]
    assert cadences["no-show"].trigger == {"status": "no_show"}
    numbers = [n.number for n in config.numbers] + [a.phone for a in config.agents]
    numbers += [s.main_line for s in config.stores]
    assert all(n[:-2] in ("+120255501", "+131055501") for n in numbers)


def test_merge_keys_and_anchors_are_followed() -> None:
    text = edit(
        '      sales: {mon: "09:00-21:00"}\n',
        '      sales: &week {mon: "09:00-21:00"}\n      service: *week\n',
    )
    text = edit(
        '  - {key: bob, name: Bob Li, phone: "+13105550111", store: west, departments: [sales]}\n',
        '  - &bob {key: bob, name: Bob Li, phone: "+13105550111", store: west, departments: [sales]}\n'
        "  - {<<: *bob, key: carol, name: Carol Diaz, departments: [service]}\n",
        text,
    )
    config = parse_config(text, "x.yaml")
    assert config.stores[1].hours["service"]["mon"] == [["09:00", "21:00"]]
    carol = config.agents[2]
    assert (carol.key, carol.phone, carol.store) == ("carol", "+13105550111", "west")
    assert carol.departments == ["service"]


# -- the file as a whole -------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_empty_file(text: str) -> None:
    assert only_problem(text) == "x.yaml:1: the file is empty; expected stores, agents, cadences, numbers"


def test_top_level_must_be_a_mapping() -> None:
    assert only_problem("# stores\n- north\n- west\n") == (
        "x.yaml:2: the top level must be a mapping with keys stores, agents, cadences, numbers (got a list)"
    )


def test_yaml_syntax_error_has_the_line_of_the_mark() -> None:
    text = edit("    name: West Toyota\n", "    name: West: Toyota\n")
    assert only_problem(text) == "x.yaml:10: YAML syntax error: mapping values are not allowed here"


def test_unclosed_flow_mapping() -> None:
    found = only_problem(edit("sat: \"09:00-18:00\"}", "sat: \"09:00-18:00\""))
    assert found.startswith("x.yaml:8: YAML syntax error: ")


def test_characters_yaml_refuses() -> None:
    assert only_problem(edit("North Honda", "North\x07Honda")) == (
        "x.yaml:3: unreadable YAML: special characters are not allowed"
    )


def test_missing_file_and_non_utf8_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "absent.yaml")
    assert str(caught.value) == f"{tmp_path / 'absent.yaml'}: cannot read the file: No such file or directory"

    path = tmp_path / "latin1.yaml"
    path.write_bytes(edit("North Honda", "North Hond\xe4").encode("latin-1"))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}:3: the file is not UTF-8 text"


def test_load_config_names_the_file_in_problems(tmp_path: Path) -> None:
    path = tmp_path / "group.yaml"
    path.write_text(edit("ring: [alice]", "ring: [alice, zed]"))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.problems == (Problem(str(path), 24, "numbers[0].ring[1]", "unknown agent 'zed'"),)
    assert str(caught.value) == f"{path}:24: numbers[0].ring[1]: unknown agent 'zed'"


def test_every_problem_is_reported_in_file_order() -> None:
    text = edit("ring: [alice]", "ring: [zed]")
    text = edit("timezone: America/New_York", "timezone: Mars/Olympus", text)
    text = edit("Still there, {first_name}?", "Still there, {name}?", text)
    text = edit("store: west, departments", "store: east, departments", text)
    assert problems(text) == [
        "x.yaml:4: stores[0].timezone: unknown time zone 'Mars/Olympus' (use a name like America/New_York)",
        "x.yaml:17: agents[1].store: unknown store 'east'",
        "x.yaml:22: cadences[0].steps[1].text: unknown variable {name}; allowed: {first_name}, {store}, "
        "{agent}, {source}, {tracked_number}, {appointment_time}",
        "x.yaml:24: numbers[0].ring[0]: unknown agent 'zed'",
    ]


# -- keys and types ------------------------------------------------------------------------------------


def test_unknown_keys_name_the_allowed_ones() -> None:
    text = edit("stores:\n", "version: 2\nstores:\n")
    text = edit("    name: West Toyota\n", "    name: West Toyota\n    colour: red\n", text)
    text = edit("cadence: follow-up}", "cadence: follow-up, prompts: {hello: hi}}", text)
    assert problems(text) == [
        "x.yaml:1: version: unknown key; allowed keys: stores, agents, cadences, numbers",
        "x.yaml:12: stores[1].colour: unknown key; allowed keys: key, name, timezone, main_line, hours, "
        "response_sla, after_hours_grace, crm, text_unverified_callers, recording_disclosure",
        "x.yaml:26: numbers[0].prompts.hello: unknown key; allowed keys: greeting, voicemail, whisper",
    ]


def test_missing_and_empty_required_keys() -> None:
    text = edit('name: Bob Li, phone: "+13105550111", ', "name: Bob Li, ")
    text = edit("    name: West Toyota\n", "    name:\n", text)
    text = edit("source: Web, ", 'source: " ", ', text)
    assert problems(text) == [
        "x.yaml:9: stores[1].name: must have a value",
        "x.yaml:17: agents[1].phone: required key is missing",
        "x.yaml:24: numbers[0].source: must not be empty",
    ]


def test_stores_is_required() -> None:
    assert only_problem("agents: []\n") == "x.yaml:1: stores: required key is missing"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("stores:\n  - key: north", "stores: north\nold:\n  - key: north", None),
        ("ring: [alice]", "ring: alice", "x.yaml:24: numbers[0].ring: expected a list, got 'alice'"),
        (
            "ring: [alice]",
            "ring: [alice], screen: \"yes\"",
            "x.yaml:24: numbers[0].screen: expected true or false, got 'yes'",
        ),
        (
            "ring: [alice]",
            'ring: [alice], source_weight: "5"',
            "x.yaml:24: numbers[0].source_weight: expected a whole number, got '5'",
        ),
        ("ring: [alice]", "ring: [[alice]]", "x.yaml:24: numbers[0].ring[0]: expected a string, got a list"),
        (
            "departments: [sales]}\n  - {key: bob",
            "departments: {sales: 1}}\n  - {key: bob",
            "x.yaml:16: agents[0].departments: expected a list, got a mapping",
        ),
        (
            '      service: {mon: "07:30-18:00"}',
            '      service: ["07:30-18:00"]',
            "x.yaml:8: stores[0].hours.service: expected a mapping, got a list",
        ),
        (
            'sat: "09:00-18:00"',
            "sat: [1]",
            "x.yaml:7: stores[0].hours.sales.sat: expected 'HH:MM-HH:MM' or 'closed', got a list",
        ),
    ],
)
def test_wrong_types(old: str, new: str, expected: str | None) -> None:
    found = problems(edit(old, new))
    if expected is None:  # stores given as a string: the type problem comes first
        assert found[0] == "x.yaml:1: stores: expected a list, got 'north'"
    else:
        assert found == [expected]


def test_yaml_duplicate_mapping_key() -> None:
    text = edit("    name: West Toyota\n", "    name: West Toyota\n    name: West Kia\n")
    assert only_problem(text) == "x.yaml:11: stores[1].name: duplicate key"


# -- values --------------------------------------------------------------------------------------------


def test_invalid_timezone() -> None:
    assert only_problem(edit("America/Los_Angeles", "Pacific Time")) == (
        "x.yaml:11: stores[1].timezone: unknown time zone 'Pacific Time' (use a name like America/New_York)"
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('"+1202555012"', "'+1202555012' is not a valid phone number"),
        ('"call me"', "'call me' is not a phone number"),
        ('"555-0100"', "'555-0100' is not a valid phone number"),
        (
            '"+1 202-555-0100 ext. 12"',
            "'+1 202-555-0100 ext. 12' has an extension; the gateway dials whole numbers only",
        ),
    ],
)
def test_malformed_phone_numbers(value: str, message: str) -> None:
    text = edit('phone: "+12025550111"', f"phone: {value}")
    assert only_problem(text) == f"x.yaml:16: agents[0].phone: {message}"


def test_phone_numbers_default_to_us_and_are_stored_e164() -> None:
    text = edit('phone: "+12025550111"', 'phone: "202-555-0111"')
    text = edit('number: "+12025550123"', "number: (202) 555-0123", text)
    config = parse_config(text, "x.yaml")
    assert config.agents[0].phone == "+12025550111"
    assert config.numbers[0].number == "+12025550123"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("5x", "invalid duration '5x' (use 30s, 5m, 4h, 1d, 1h30m, -24h or plain seconds)"),
        ("30m1h", "invalid duration '30m1h' (units go largest first, each once: 1h30m)"),
        ("-5m", "must not be negative"),
        ("[5m]", "expected a duration such as 30s, 5m, 4h or 1d, got a list"),
    ],
)
def test_bad_durations(value: str, message: str) -> None:
    text = edit("    name: West Toyota\n", f"    name: West Toyota\n    response_sla: {value}\n")
    assert only_problem(text) == f"x.yaml:11: stores[1].response_sla: {message}"


def test_durations_in_the_file() -> None:
    text = edit(
        "    name: West Toyota\n",
        "    name: West Toyota\n    response_sla: 1h30m\n    after_hours_grace: 90\n",
    )
    store = parse_config(text, "x.yaml").stores[1]
    assert (store.response_sla_seconds, store.after_hours_grace_seconds) == (5400, 90)


# -- opening hours ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            '"9am-5pm"',
            "'9am-5pm' is not a time range; use 'HH:MM-HH:MM' (several separated by commas) or 'closed'",
        ),
        (
            '"09:00-25:00"',
            "'09:00-25:00' is not a time range; use 'HH:MM-HH:MM' (several separated by commas) or 'closed'",
        ),
        (
            '"09:60-12:00"',
            "'09:60-12:00' is not a time range; use 'HH:MM-HH:MM' (several separated by commas) or 'closed'",
        ),
        ('"20:00-09:00"', "'20:00-09:00' ends before it starts"),
        ('"18:00-24:00"', "'18:00-24:00': there is no 24:00; end the day at 23:59"),
        ('"09:00-09:00"', "'09:00-09:00' starts and ends at the same time"),
        ('"09:00-13:00, 12:00-18:00"', "'09:00-13:00' and '12:00-18:00' overlap"),
        (
            '"closed, 09:00-12:00"',
            "'closed' is not a time range; use 'HH:MM-HH:MM' (several separated by commas) or 'closed'",
        ),
        ("shut", "'shut' is not a time range; use 'HH:MM-HH:MM' (several separated by commas) or 'closed'"),
    ],
)
def test_bad_hours(value: str, message: str) -> None:
    text = edit('sat: "09:00-18:00"', f"sat: {value}")
    assert only_problem(text) == f"x.yaml:7: stores[0].hours.sales.sat: {message}"


def test_unknown_day() -> None:
    assert only_problem(edit('sat: "09:00-18:00"', 'saturday: "09:00-18:00"')) == (
        "x.yaml:7: stores[0].hours.sales.saturday: unknown key; "
        "allowed keys: mon, tue, wed, thu, fri, sat, sun"
    )


def test_hours_ranges_closed_days_and_whole_days() -> None:
    text = edit(
        'sat: "09:00-18:00"',
        'sat: "13:00-18:00, 9:00-12:00", sun: closed, fri: "00:00-23:59", thu: "09:00-12:00,12:00-13:00"',
    )
    sales = parse_config(text, "x.yaml").stores[0].hours["sales"]
    assert list(sales) == list(DAYS)
    assert sales["sat"] == [["09:00", "12:00"], ["13:00", "18:00"]]
    assert sales["sun"] == []
    assert sales["fri"] == [["00:00", "23:59"]]
    assert sales["thu"] == [["09:00", "12:00"], ["12:00", "13:00"]]
    assert sales["tue"] == []


def test_department_names_must_be_keys() -> None:
    assert only_problem(edit("      service: {", "      body shop: {")) == (
        "x.yaml:8: stores[0].hours.body shop: 'body shop' is not a usable key: "
        "up to 32 letters, digits, '.', '-' or '_'"
    )


def test_agent_schedule_has_the_shape_of_hours() -> None:
    agent = "departments: [sales]}\n  - {key: bob"
    good = edit(agent, 'departments: [sales], schedule: {mon: "10:00-14:00"}}\n  - {key: bob')
    schedule = parse_config(good, "x.yaml").agents[0].schedule
    assert schedule is not None
    assert schedule["mon"] == [["10:00", "14:00"]]
    assert schedule["sun"] == []
    bad = edit(agent, 'departments: [sales], schedule: {mon: "14:00-10:00"}}\n  - {key: bob')
    assert only_problem(bad) == "x.yaml:16: agents[0].schedule.mon: '14:00-10:00' ends before it starts"


# -- duplicates and references -----------------------------------------------------------------------------


def test_duplicate_keys_and_numbers() -> None:
    text = edit("  - key: west\n", "  - key: north\n")
    text = edit("{key: bob,", "{key: alice,", text)
    text = edit("      - {after: 4h", "  - key: follow-up\n    steps:\n      - {after: 4h", text)
    text += '  - {number: "202 555 0123", store: north, department: sales, source: Web, ring: [alice]}\n'
    found = problems(text)
    assert "x.yaml:9: stores[1].key: duplicate store key 'north' (first at line 2)" in found
    assert "x.yaml:17: agents[1].key: duplicate agent key 'alice' (first at line 16)" in found
    assert "x.yaml:22: cadences[1].key: duplicate cadence key 'follow-up' (first at line 19)" in found
    assert "x.yaml:27: numbers[1].number: duplicate number +12025550123 (first at line 26)" in found


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "store: west, departments",
            "store: east, departments",
            "x.yaml:17: agents[1].store: unknown store 'east'",
        ),
        (
            "store: north, department: sales",
            "store: south, department: sales",
            "x.yaml:24: numbers[0].store: unknown store 'south'",
        ),
        (
            "ring: [alice]",
            "ring: [alice, bob]",
            "x.yaml:24: numbers[0].ring[1]: agent 'bob' belongs to store 'west', not 'north'",
        ),
        (
            "ring: [alice]",
            "ring: [alice, alice]",
            "x.yaml:24: numbers[0].ring[1]: agent 'alice' is listed twice",
        ),
        ("ring: [alice]", "ring: []", "x.yaml:24: numbers[0].ring: must not be empty"),
        (
            "cadence: follow-up}",
            "cadence: missed}",
            "x.yaml:24: numbers[0].cadence: unknown cadence 'missed'",
        ),
        (
            "department: sales, source",
            "department: parts, source",
            "x.yaml:24: numbers[0].department: store 'north' has no hours for department 'parts' "
            "(it has hours for: sales, service)",
        ),
        (
            "store: west, departments: [sales]",
            "store: west, departments: [sales, service]",
            "x.yaml:17: agents[1].departments[1]: store 'west' has no hours for department 'service' "
            "(it has hours for: sales)",
        ),
    ],
)
def test_references(old: str, new: str, expected: str) -> None:
    assert only_problem(edit(old, new)) == expected


def test_a_broken_entry_still_resolves_by_its_key() -> None:
    # Alice's phone is wrong, but the number that rings her must not also say "unknown agent".
    assert only_problem(edit('phone: "+12025550111"', 'phone: "12"')) == (
        "x.yaml:16: agents[0].phone: '12' is not a valid phone number"
    )


# -- agents and numbers ------------------------------------------------------------------------------------


def test_role_and_strategy_must_be_known() -> None:
    text = edit("store: north, departments: [sales]}", "store: north, departments: [sales], role: boss}")
    text = edit("ring: [alice]", "ring: [alice], strategy: random", text)
    assert problems(text) == [
        "x.yaml:16: agents[0].role: 'boss' is not one of: agent, manager",
        "x.yaml:24: numbers[0].strategy: 'random' is not one of: simultaneous, sequential, round-robin",
    ]


@pytest.mark.parametrize(
    ("value", "ok"), [("4s", False), ("5s", True), ("2m", True), ("120", True), ("121", False), ("18s", True)]
)
def test_ring_timeout_between_5s_and_120s(value: str, ok: bool) -> None:
    text = edit("ring: [alice]", f"ring: [alice], ring_timeout: {value}")
    if ok:
        assert parse_config(text, "x.yaml").numbers[0].ring_timeout_seconds == parse_duration(value)
    else:
        got = format_duration(parse_duration(value))
        expected = f"x.yaml:24: numbers[0].ring_timeout: must be between 5s and 2m (got {got})"
        assert only_problem(text) == expected


@pytest.mark.parametrize(("value", "ok"), [("0", True), ("40", True), ("41", False), ("-1", False)])
def test_source_weight_between_0_and_40(value: str, ok: bool) -> None:
    text = edit("ring: [alice]", f"ring: [alice], source_weight: {value}")
    if ok:
        assert parse_config(text, "x.yaml").numbers[0].source_weight == int(value)
    else:
        expected = f"x.yaml:24: numbers[0].source_weight: must be between 0 and 40 (got {value})"
        assert only_problem(text) == expected


def test_prompts_screen_and_record() -> None:
    text = edit(
        "ring: [alice]",
        'ring: [alice], screen: false, record: yes, prompts: {greeting: "Hello", whisper: "Press 1"}',
    )
    number = parse_config(text, "x.yaml").numbers[0]
    assert (number.screen, number.record) == (False, True)
    assert number.prompts == {"greeting": "Hello", "whisper": "Press 1"}
    assert only_problem(edit("ring: [alice]", 'ring: [alice], prompts: {voicemail: ""}')) == (
        "x.yaml:24: numbers[0].prompts.voicemail: must not be empty"
    )


# -- CRM destinations --------------------------------------------------------------------------------------


def crm(*entries: str) -> str:
    lines = "".join(f"      - {entry}\n" for entry in entries)
    return edit("    name: West Toyota\n", f"    name: West Toyota\n    crm:\n{lines}")


def test_crm_destinations_of_each_type() -> None:
    text = crm(
        '{type: adf-http, url: "https://crm.example.invalid/adf"}',
        "{type: adf-email, to: leads@crm.example.invalid}",
        '{type: webhook, url: "http://hooks.example.invalid/x", secret: s3cret}',
    )
    assert parse_config(text, "x.yaml").stores[1].crm == [
        {"type": "adf-http", "url": "https://crm.example.invalid/adf"},
        {"type": "adf-email", "to": "leads@crm.example.invalid"},
        {"type": "webhook", "url": "http://hooks.example.invalid/x", "secret": "s3cret"},
    ]


def test_crm_mistakes() -> None:
    text = crm(
        "{type: soap, url: https://x.example}",
        "{type: adf-http, url: ftp://x.example/adf}",
        "{type: adf-email, to: not-an-address}",
        "{type: webhook, url: https://hooks.example.invalid}",
        "{type: adf-email, to: a@b.example, url: https://x.example}",
        "{url: https://x.example}",
    )
    assert problems(text) == [
        "x.yaml:12: stores[1].crm[0].type: unknown CRM type 'soap'; allowed: adf-http, adf-email, webhook",
        "x.yaml:13: stores[1].crm[1].url: 'ftp://x.example/adf' is not an http(s) URL",
        "x.yaml:14: stores[1].crm[2].to: 'not-an-address' is not an e-mail address",
        "x.yaml:15: stores[1].crm[3].secret: required key is missing",
        "x.yaml:16: stores[1].crm[4].url: unknown key; allowed keys: type, to",
        "x.yaml:17: stores[1].crm[5].type: required key is missing",
    ]


# -- cadences ----------------------------------------------------------------------------------------------


def test_cadence_text_mistakes_name_the_cadence_and_step() -> None:
    text = edit('text: "Still there, {first_name}?"', 'text: ""')
    assert only_problem(text) == "x.yaml:22: cadences[0].steps[1].text: empty text"
    text = edit('text: "Hi from {store}"', 'text: "Hi {name}, from {store} {dealer}"')
    assert problems(text) == [
        f"x.yaml:21: cadences[0].steps[0].text: unknown variable {{{name}}}; "
        "allowed: {first_name}, {store}, "
        "{agent}, {source}, {tracked_number}, {appointment_time}"
        for name in ("name", "dealer")
    ]
    text = edit('text: "Hi from {store}"', 'text: "Hi from {store"')
    assert only_problem(text) == (
        "x.yaml:21: cadences[0].steps[0].text: expected '}' before end of string "
        "(write {{ and }} for literal braces)"
    )


def test_literal_braces_and_every_variable_are_allowed() -> None:
    names = "{first_name} {store} {agent} {source} {tracked_number} {appointment_time}"
    cadence = (
        "  - key: no-show\n"
        "    trigger: {status: no_show}\n"
        "    steps:\n"
        f'      - {{after: 1h, text: "{{{{braces}}}} {names}"}}\n'
        "numbers:\n"
    )
    text = edit("numbers:\n", cadence)
    assert parse_config(text, "x.yaml").cadences[1].steps[0].text == "{{braces}} " + names


def test_cadence_steps_must_be_in_order_and_not_empty() -> None:
    assert only_problem(edit("{after: 4h,", "{after: 0,")) == (
        "x.yaml:22: cadences[0].steps[1].after: steps must be in order of 'after': 0s is not later than "
        "the step before it (0s)"
    )
    steps = '    steps:\n      - {after: 0s, text: "Hi from {store}"}\n'
    steps += '      - {after: 4h, text: "Still there, {first_name}?"}\n'
    text = edit(steps, "    steps: []\n")
    assert only_problem(text) == "x.yaml:20: cadences[0].steps: must not be empty"


def test_cadence_trigger_and_appointment_steps() -> None:
    reminders = """\
  - key: reminders
    trigger: {status: appointment_confirmed}
    steps:
      - {after: 0s, text: "Booked for {appointment_time}"}
      - {after: -24h, relative_to: appointment, text: "Tomorrow at {appointment_time}"}
      - {after: -2h, relative_to: appointment, text: "Soon: {appointment_time}"}
numbers:
"""
    cadence = parse_config(edit("numbers:\n", reminders), "x.yaml").cadences[1]
    assert cadence.trigger == {"status": "appointment_confirmed"}
    assert [(s.after_seconds, s.relative_to) for s in cadence.steps] == [
        (0, "start"),
        (-86400, "appointment"),
        (-7200, "appointment"),
    ]

    out_of_order = edit("after: -2h", "after: -25h", reminders)
    assert only_problem(edit("numbers:\n", out_of_order)) == (
        "x.yaml:28: cadences[1].steps[2].after: steps must be in order of 'after': -1d1h is not later than "
        "the step before it (-1d)"
    )
    no_show = edit("appointment_confirmed", "no_show", reminders)
    assert problems(edit("numbers:\n", no_show)) == [
        f"x.yaml:{line}: cadences[1].steps[{step}].relative_to: steps relative to an appointment need "
        "the cadence trigger status appointment_set or appointment_confirmed"
        for line, step in ((27, 1), (28, 2))
    ]
    unknown = edit("appointment_confirmed", "sold", reminders)
    found = problems(edit("numbers:\n", unknown))
    assert found[0] == (
        "x.yaml:24: cadences[1].trigger.status: 'sold' is not one of: "
        "appointment_set, appointment_confirmed, no_show"
    )


def test_negative_steps_need_an_appointment() -> None:
    assert only_problem(edit("{after: 4h,", "{after: -4h,")) == (
        "x.yaml:22: cadences[0].steps[1].after: a negative 'after' counts back from an appointment; "
        "add relative_to: appointment"
    )
    text = edit("{after: 4h,", "{after: 4h, relative_to: appointment,")
    assert only_problem(text) == (
        "x.yaml:22: cadences[0].steps[1].relative_to: steps relative to an appointment need the cadence "
        "trigger status appointment_set or appointment_confirmed"
    )
    text = edit("{after: 4h,", "{after: 4h, relative_to: meeting,")
    assert only_problem(text) == (
        "x.yaml:22: cadences[0].steps[1].relative_to: 'meeting' is not one of: start, appointment"
    )


def test_appointment_time_needs_a_triggered_cadence() -> None:
    assert only_problem(edit("Hi from {store}", "See you at {appointment_time}")) == (
        "x.yaml:21: cadences[0].steps[0].text: {appointment_time} needs a cadence with a trigger "
        "(a lead with an appointment)"
    )


def test_a_number_needs_a_cadence_without_trigger() -> None:
    text = edit("    steps:\n", "    trigger: {status: no_show}\n    steps:\n")
    assert only_problem(text) == (
        "x.yaml:25: numbers[0].cadence: "
        "cadence 'follow-up' is started by a lead status (it has a trigger); "
        "a number needs a cadence without one"
    )


# -- the vocabulary stays in step with the models -----------------------------------------------------------


def test_vocabulary_matches_the_models() -> None:
    assert [role.value for role in Role] == list(ROLES)
    assert [strategy.value for strategy in RingStrategy] == list(STRATEGIES)
    assert set(TRIGGER_STATUSES) <= {status.value for status in LeadStatus}


def test_config_error_is_a_value_error_with_structured_problems() -> None:
    with pytest.raises(ValueError, match=r"^x.yaml:24: numbers\[0\]\.ring\[0\]: unknown agent 'zed'$"):
        parse_config(edit("ring: [alice]", "ring: [zed]"), "x.yaml")
    assert str(Problem("f.yaml", 0, "", "cannot read")) == "f.yaml: cannot read"
    assert isinstance(parse_config(BASE), GatewayConfig)


# -- durations ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds", "formatted"),
    [
        ("30s", 30, "30s"),
        ("5m", 300, "5m"),
        ("4h", 14400, "4h"),
        ("1d", 86400, "1d"),
        ("90", 90, "1m30s"),
        ("0", 0, "0s"),
        ("1h30m", 5400, "1h30m"),
        ("1d2h3m4s", 93784, "1d2h3m4s"),
        ("-24h", -86400, "-1d"),
        ("-2h", -7200, "-2h"),
        (" 2D ", 172800, "2d"),
    ],
)
def test_parse_and_format_duration(text: str, seconds: int, formatted: str) -> None:
    assert parse_duration(text) == seconds
    assert format_duration(seconds) == formatted
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize("text", ["", "5x", "1.5h", "h", "-", "1h 30m", "--5m", "30m1h", "1h1h", "5 m"])
def test_bad_durations_raise_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_a_store_may_text_unverified_callers_and_word_its_recording_disclosure() -> None:
    text = edit(
        "    name: West Toyota\n",
        '    name: West Toyota\n    text_unverified_callers: true\n    recording_disclosure: "We record calls."\n',
    )
    north, west = parse_config(text, "x.yaml").stores
    assert (north.text_unverified_callers, north.recording_disclosure) == (False, None)
    assert (west.text_unverified_callers, west.recording_disclosure) == (True, "We record calls.")


def test_text_unverified_callers_must_be_a_boolean_and_the_disclosure_not_empty() -> None:
    text = edit(
        "    name: West Toyota\n",
        '    name: West Toyota\n    text_unverified_callers: sometimes\n    recording_disclosure: "  "\n',
    )
    found = problems(text)
    assert len(found) == 2, found
    assert found == [
        "x.yaml:11: stores[1].text_unverified_callers: expected true or false, got 'sometimes'",
        "x.yaml:12: stores[1].recording_disclosure: must not be empty",
    ]
