"""The configuration file: YAML in, checked frozen dataclasses out, every mistake reported with its line.

The file is read as YAML nodes (not plain Python values) so each value keeps the line it came from, and
the whole file is checked before anything is returned: one run lists every problem, in file order, as
`file:line: field: message`. Nothing reaches the database unless the file is entirely sound.
It is one reader walking the tree in file order, over 600 lines because each section's checks need
the sections before them (agents name stores, numbers name agents and cadences); the checked shape
is gateway/dealer_config/schema.py.
"""

from __future__ import annotations

import itertools
import re
import string
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from gateway.dealer_config.schema import (
    AGENT_KEYS,
    APPOINTMENT_STATUSES,
    CADENCE_KEYS,
    CRM_FIELDS,
    DAYS,
    DEFAULT_AFTER_HOURS_GRACE_SECONDS,
    DEFAULT_REGION,
    DEFAULT_RESPONSE_SLA_SECONDS,
    DEFAULT_RING_TIMEOUT_SECONDS,
    DEFAULT_ROLE,
    DEFAULT_SOURCE_WEIGHT,
    DEFAULT_STRATEGY,
    MAX_TEXT_LENGTH,
    NUMBER_KEYS,
    PROMPTS,
    RELATIVE_TO,
    RING_TIMEOUT_RANGE_SECONDS,
    ROLES,
    SOURCE_WEIGHT_RANGE,
    STEP_KEYS,
    STORE_KEYS,
    STRATEGIES,
    TEMPLATE_VARIABLES,
    TOP_KEYS,
    TRIGGER_STATUSES,
    AgentConfig,
    CadenceConfig,
    ConfigError,
    DayHours,
    GatewayConfig,
    NumberConfig,
    Problem,
    StepConfig,
    StoreConfig,
    WeekHours,
)
from gateway.durations import format_duration, parse_duration

_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_TIME = re.compile(r"(\d{1,2}):(\d{2})")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")
_MERGE_TAG = "tag:yaml.org,2002:merge"
_NULL_TAG = "tag:yaml.org,2002:null"
_BOOL_TAG = "tag:yaml.org,2002:bool"
_INT_TAG = "tag:yaml.org,2002:int"


def load_config(path: Path) -> GatewayConfig:
    """Read and check the configuration file at `path`. Raises ConfigError listing every problem."""
    filename = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        problem = Problem(filename, 0, "", f"cannot read the file: {exc.strerror or exc}")
        raise ConfigError([problem]) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError([Problem(filename, line, "", "the file is not UTF-8 text")]) from None
    return parse_config(text, filename)


def parse_config(text: str, filename: str = "<config>") -> GatewayConfig:
    """Check the YAML `text` (named `filename` in messages). Raises ConfigError listing every problem."""
    try:
        loader = yaml.SafeLoader(text)  # refuses characters YAML does not allow, before any parsing
    except yaml.YAMLError as exc:
        position = getattr(exc, "position", None)
        line = text[:position].count("\n") + 1 if isinstance(position, int) else 0
        reason = getattr(exc, "reason", None) or "characters YAML does not allow"
        raise ConfigError([Problem(filename, line, "", f"unreadable YAML: {reason}")]) from None
    reader = _Reader(filename, loader)
    try:
        config = reader.read()
    finally:
        reader.close()
    if reader.problems:
        raise ConfigError(sorted(reader.problems, key=lambda problem: problem.line))
    return config


def template_variables(text: str) -> list[str]:
    """The {variables} a cadence text uses, in order. ValueError when its braces do not pair up."""
    return [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]


def _describe(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    kind = node.tag.rsplit(":", 1)[-1]
    return {
        "null": "nothing",
        "bool": f"true/false ({node.value})",
        "int": f"a number ({node.value})",
        "float": f"a number ({node.value})",
    }.get(kind, f"{node.value!r}")


def _minutes(text: str) -> int | None:
    match = _TIME.fullmatch(text.strip())
    if match is None:
        return None
    hours, minutes = int(match.group(1)), int(match.group(2))
    if minutes > 59 or hours > 23:
        return None
    return hours * 60 + minutes


class _Reader:
    """Walks the YAML nodes, collecting problems; a bad value gets a stand-in so the walk goes on."""

    def __init__(self, filename: str, loader: yaml.SafeLoader) -> None:
        self.filename = filename
        self.problems: list[Problem] = []
        self.loader = loader
        self.flattened: set[int] = set()
        # What the sections define, for the references between them. A key is registered even when
        # the rest of its entry is broken, so one mistake does not echo through every reference.
        self.store_departments: dict[str, set[str] | None] = {}  # None: hours unreadable
        self.agent_stores: dict[str, str] = {}
        self.cadence_triggered: dict[str, bool] = {}
        self.first_seen: dict[tuple[str, str], int] = {}

    def close(self) -> None:
        self.loader.dispose()

    # -- reporting ---------------------------------------------------------------------------------

    def report(self, node: Node | None, path: str, message: str) -> None:
        line = node.start_mark.line + 1 if node is not None and node.start_mark is not None else 0
        self.problems.append(Problem(self.filename, line, path, message))

    def unique(self, kind: str, value: str, node: Node, path: str, label: str) -> None:
        if not value:
            return
        first = self.first_seen.get((kind, value))
        if first is None:
            self.first_seen[(kind, value)] = node.start_mark.line + 1
        else:
            self.report(node, path, f"duplicate {label} (first at line {first})")

    # -- the document ------------------------------------------------------------------------------

    def read(self) -> GatewayConfig:
        empty = GatewayConfig()
        try:
            root = self.loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            self.problems.append(_syntax_problem(self.filename, exc))
            return empty
        if root is None:
            self.problems.append(
                Problem(self.filename, 1, "", "the file is empty; expected stores, agents, cadences, numbers")
            )
            return empty
        if not isinstance(root, MappingNode):
            self.report(
                root,
                "",
                "the top level must be a mapping with keys stores, agents, cadences, numbers "
                f"(got {_describe(root)})",
            )
            return empty
        top = self.mapping(root, "", TOP_KEYS, required=("stores",))
        if top is None:
            return empty
        stores = [self.store(node, path) for node, path in self.items(top.get("stores"), "stores")]
        agents = [self.agent(node, path) for node, path in self.items(top.get("agents"), "agents")]
        cadences = [self.cadence(node, path) for node, path in self.items(top.get("cadences"), "cadences")]
        numbers = [self.number(node, path) for node, path in self.items(top.get("numbers"), "numbers")]
        return GatewayConfig(
            stores=[s for s in stores if s is not None],
            agents=[a for a in agents if a is not None],
            cadences=[c for c in cadences if c is not None],
            numbers=[n for n in numbers if n is not None],
        )

    # -- stores --------------------------------------------------------------------------------------

    def store(self, node: Node, path: str) -> StoreConfig | None:
        required = ("key", "name", "timezone", "main_line", "hours")
        fields = self.mapping(node, path, STORE_KEYS, required)
        if fields is None:
            return None
        key = self.identifier(fields.get("key"), f"{path}.key")
        if "key" in fields:
            self.unique("store", key, fields["key"], f"{path}.key", f"store key {key!r}")
        hours = self.department_hours(fields.get("hours"), f"{path}.hours")
        if key and key not in self.store_departments:
            self.store_departments[key] = set(hours) if hours is not None else None
        crm = [self.crm(item, item_path) for item, item_path in self.items(fields.get("crm"), f"{path}.crm")]
        return StoreConfig(
            key=key,
            name=self.text(fields.get("name"), f"{path}.name"),
            timezone=self.timezone(fields.get("timezone"), f"{path}.timezone"),
            main_line=self.phone(fields.get("main_line"), f"{path}.main_line"),
            hours=hours or {},
            response_sla_seconds=self.duration(
                fields.get("response_sla"), f"{path}.response_sla", DEFAULT_RESPONSE_SLA_SECONDS, minimum=0
            ),
            after_hours_grace_seconds=self.duration(
                fields.get("after_hours_grace"),
                f"{path}.after_hours_grace",
                DEFAULT_AFTER_HOURS_GRACE_SECONDS,
                minimum=0,
            ),
            crm=[entry for entry in crm if entry is not None],
            text_unverified_callers=self.boolean(
                fields.get("text_unverified_callers"), f"{path}.text_unverified_callers", False
            ),
            recording_disclosure=(
                self.text(fields["recording_disclosure"], f"{path}.recording_disclosure")
                if "recording_disclosure" in fields
                else None
            ),
        )

    def department_hours(self, node: Node | None, path: str) -> dict[str, WeekHours] | None:
        fields = self.mapping(node, path, None)
        if fields is None:
            return None
        hours: dict[str, WeekHours] = {}
        for department, week_node in fields.items():
            department_path = f"{path}.{department}"
            self.check_identifier(department, week_node, department_path, max_length=32)
            hours[department] = self.week(week_node, department_path) or {day: [] for day in DAYS}
        return hours

    def crm(self, node: Node, path: str) -> dict[str, str] | None:
        kind = self.peek(node, "type")
        allowed = ("type", *CRM_FIELDS[kind]) if kind in CRM_FIELDS else ("type", "url", "to", "secret")
        fields = self.mapping(node, path, allowed, required=allowed if kind in CRM_FIELDS else ("type",))
        if fields is None:
            return None
        if kind not in CRM_FIELDS:
            if "type" in fields:
                self.report(
                    fields["type"],
                    f"{path}.type",
                    f"unknown CRM type {kind!r}; allowed: {', '.join(CRM_FIELDS)}",
                )
            return None
        entry = {"type": kind}
        if "url" in allowed:
            entry["url"] = self.url(fields.get("url"), f"{path}.url")
        if "to" in allowed:
            entry["to"] = self.email(fields.get("to"), f"{path}.to")
        if "secret" in allowed:
            entry["secret"] = self.text(fields.get("secret"), f"{path}.secret")
        return entry

    # -- agents ------------------------------------------------------------------------------------

    def agent(self, node: Node, path: str) -> AgentConfig | None:
        fields = self.mapping(
            node, path, AGENT_KEYS, required=("key", "name", "phone", "store", "departments")
        )
        if fields is None:
            return None
        key = self.identifier(fields.get("key"), f"{path}.key")
        if "key" in fields:
            self.unique("agent", key, fields["key"], f"{path}.key", f"agent key {key!r}")
        store = self.reference_store(fields.get("store"), f"{path}.store")
        if key and key not in self.agent_stores:
            self.agent_stores[key] = store
        departments: list[str] = []
        for item, item_path in self.items(fields.get("departments"), f"{path}.departments", non_empty=True):
            department = self.text(item, item_path)
            if department in departments:
                self.report(item, item_path, f"department {department!r} is listed twice")
            elif department:
                self.check_department(store, department, item, item_path)
                departments.append(department)
        role = self.choice(fields.get("role"), f"{path}.role", ROLES, DEFAULT_ROLE)
        email_node = fields.get("email")
        schedule_node = fields.get("schedule")
        return AgentConfig(
            key=key,
            name=self.text(fields.get("name"), f"{path}.name"),
            phone=self.phone(fields.get("phone"), f"{path}.phone"),
            email=self.email(email_node, f"{path}.email") if email_node is not None else None,
            store=store,
            departments=departments,
            role=role,
            schedule=self.week(schedule_node, f"{path}.schedule") if schedule_node is not None else None,
        )

    # -- cadences ----------------------------------------------------------------------------------

    def cadence(self, node: Node, path: str) -> CadenceConfig | None:
        fields = self.mapping(node, path, CADENCE_KEYS, required=("key", "steps"))
        if fields is None:
            return None
        key = self.identifier(fields.get("key"), f"{path}.key")
        if "key" in fields:
            self.unique("cadence", key, fields["key"], f"{path}.key", f"cadence key {key!r}")
        trigger: dict[str, str] | None = None
        trigger_status = None
        trigger_fields = self.mapping(fields.get("trigger"), f"{path}.trigger", ("status",), ("status",))
        if trigger_fields is not None and "status" in trigger_fields:
            status_path = f"{path}.trigger.status"
            trigger_status = self.choice(trigger_fields["status"], status_path, TRIGGER_STATUSES, "")
            trigger = {"status": trigger_status}
        if key and key not in self.cadence_triggered:
            self.cadence_triggered[key] = "trigger" in fields
        steps: list[StepConfig] = []
        previous: dict[str, int] = {}
        for item, item_path in self.items(fields.get("steps"), f"{path}.steps", non_empty=True):
            step = self.step(item, item_path, "trigger" in fields, trigger_status)
            if step is None:
                continue
            earlier = previous.get(step.relative_to)
            if earlier is not None and step.after_seconds <= earlier:
                after_node = self.peek_node(item, "after")
                self.report(
                    after_node,
                    f"{item_path}.after",
                    f"steps must be in order of 'after': {format_duration(step.after_seconds)} is not later "
                    f"than the step before it ({format_duration(earlier)})",
                )
            previous[step.relative_to] = step.after_seconds
            steps.append(step)
        return CadenceConfig(key=key, steps=steps, trigger=trigger)

    def step(self, node: Node, path: str, has_trigger: bool, trigger_status: str | None) -> StepConfig | None:
        fields = self.mapping(node, path, STEP_KEYS, required=("after", "text"))
        if fields is None:
            return None
        relative_to = self.choice(fields.get("relative_to"), f"{path}.relative_to", RELATIVE_TO, "start")
        if relative_to == "appointment" and trigger_status not in APPOINTMENT_STATUSES:
            self.report(
                fields["relative_to"],
                f"{path}.relative_to",
                "steps relative to an appointment need the cadence trigger status "
                f"{' or '.join(APPOINTMENT_STATUSES)}",
            )
        problems_before = len(self.problems)
        after = self.duration(fields.get("after"), f"{path}.after", 0)
        if after < 0 and relative_to != "appointment":
            self.report(
                fields["after"],
                f"{path}.after",
                "a negative 'after' counts back from an appointment; add relative_to: appointment",
            )
        after_is_sound = len(self.problems) == problems_before
        text = self.template(fields.get("text"), f"{path}.text", has_trigger)
        if "after" not in fields or "text" not in fields or not after_is_sound:
            return None  # no order check against a step whose time is unknown
        return StepConfig(after_seconds=after, text=text, relative_to=relative_to)

    def template(self, node: Node | None, path: str, has_trigger: bool) -> str:
        text = self.text(node, path, empty_message="empty text")
        if not text:
            return text
        if len(text) > MAX_TEXT_LENGTH:
            self.report(node, path, f"longer than {MAX_TEXT_LENGTH} characters ({len(text)})")
        try:
            variables = template_variables(text)
        except ValueError as exc:
            self.report(node, path, f"{exc} (write {{{{ and }}}} for literal braces)")
            return text
        for name in variables:
            if name not in TEMPLATE_VARIABLES:
                allowed = ", ".join(f"{{{v}}}" for v in TEMPLATE_VARIABLES)
                self.report(node, path, f"unknown variable {{{name}}}; allowed: {allowed}")
            elif name == "appointment_time" and not has_trigger:
                message = "{appointment_time} needs a cadence with a trigger (a lead with an appointment)"
                self.report(node, path, message)
        return text

    # -- numbers -----------------------------------------------------------------------------------

    def number(self, node: Node, path: str) -> NumberConfig | None:
        fields = self.mapping(
            node, path, NUMBER_KEYS, required=("number", "store", "department", "source", "ring")
        )
        if fields is None:
            return None
        number = self.phone(fields.get("number"), f"{path}.number")
        if "number" in fields:
            self.unique("number", number, fields["number"], f"{path}.number", f"number {number}")
        store = self.reference_store(fields.get("store"), f"{path}.store")
        department = self.text(fields.get("department"), f"{path}.department")
        if department and "department" in fields:
            self.check_department(store, department, fields["department"], f"{path}.department")
        ring: list[str] = []
        for item, item_path in self.items(fields.get("ring"), f"{path}.ring", non_empty=True):
            agent = self.text(item, item_path)
            if not agent:
                continue
            if agent in ring:
                self.report(item, item_path, f"agent {agent!r} is listed twice")
                continue
            ring.append(agent)
            if agent not in self.agent_stores:
                self.report(item, item_path, f"unknown agent {agent!r}")
            elif store in self.store_departments and self.agent_stores[agent] not in ("", store):
                self.report(
                    item,
                    item_path,
                    f"agent {agent!r} belongs to store {self.agent_stores[agent]!r}, not {store!r}",
                )
        low, high = RING_TIMEOUT_RANGE_SECONDS
        ring_timeout_node = fields.get("ring_timeout")
        ring_timeout = self.duration(ring_timeout_node, f"{path}.ring_timeout", DEFAULT_RING_TIMEOUT_SECONDS)
        if not low <= ring_timeout <= high:
            self.report(
                ring_timeout_node,
                f"{path}.ring_timeout",
                f"must be between {format_duration(low)} and {format_duration(high)} "
                f"(got {format_duration(ring_timeout)})",
            )
        cadence = None
        if "cadence" in fields:
            cadence = self.identifier(fields["cadence"], f"{path}.cadence")
            if cadence and cadence not in self.cadence_triggered:
                self.report(fields["cadence"], f"{path}.cadence", f"unknown cadence {cadence!r}")
            elif self.cadence_triggered.get(cadence):
                self.report(
                    fields["cadence"],
                    f"{path}.cadence",
                    f"cadence {cadence!r} is started by a lead status (it has a trigger); "
                    "a number needs a cadence without one",
                )
        prompts: dict[str, str] = {}
        prompt_fields = self.mapping(fields.get("prompts"), f"{path}.prompts", PROMPTS)
        for name, prompt_node in (prompt_fields or {}).items():
            prompts[name] = self.text(prompt_node, f"{path}.prompts.{name}")
        return NumberConfig(
            number=number,
            store=store,
            department=department,
            source=self.text(fields.get("source"), f"{path}.source"),
            ring=ring,
            source_weight=self.integer(
                fields.get("source_weight"),
                f"{path}.source_weight",
                DEFAULT_SOURCE_WEIGHT,
                SOURCE_WEIGHT_RANGE,
            ),
            strategy=self.choice(fields.get("strategy"), f"{path}.strategy", STRATEGIES, DEFAULT_STRATEGY),
            ring_timeout_seconds=ring_timeout,
            screen=self.boolean(fields.get("screen"), f"{path}.screen", True),
            record=self.boolean(fields.get("record"), f"{path}.record", False),
            cadence=cadence,
            prompts=prompts,
        )

    # -- references --------------------------------------------------------------------------------

    def reference_store(self, node: Node | None, path: str) -> str:
        store = self.text(node, path)
        if store and store not in self.store_departments:
            self.report(node, path, f"unknown store {store!r}")
        return store

    def check_department(self, store: str, department: str, node: Node, path: str) -> None:
        departments = self.store_departments.get(store)
        if departments is None or department in departments:
            return  # unknown store or unreadable hours: already reported
        having = f" (it has hours for: {', '.join(sorted(departments))})" if departments else ""
        self.report(node, path, f"store {store!r} has no hours for department {department!r}{having}")

    # -- shapes --------------------------------------------------------------------------------------

    def mapping(
        self,
        node: Node | None,
        path: str,
        allowed: Sequence[str] | None,
        required: Sequence[str] = (),
    ) -> dict[str, Node] | None:
        """The keys of a mapping node. Unknown, duplicate and missing keys are reported; an explicit
        null counts as absent. `allowed=None` takes any plain key (departments)."""
        if node is None:
            return None
        if not isinstance(node, MappingNode):
            self.report(node, path, f"expected a mapping, got {_describe(node)}")
            return None
        if id(node) not in self.flattened:
            self.flattened.add(id(node))
            seen: set[str] = set()
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG or not isinstance(key_node, ScalarNode):
                    continue
                if key_node.value in seen:
                    self.report(key_node, _join(path, key_node.value), "duplicate key")
                seen.add(key_node.value)
            try:
                self.loader.flatten_mapping(node)  # YAML merge keys (<<: *defaults)
            except yaml.MarkedYAMLError as exc:
                self.report(node, path, f"bad merge key: {exc.problem}")
                return None
        fields: dict[str, Node] = {}
        nulls: set[str] = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                self.report(key_node, path, f"keys must be plain names, got {_describe(key_node)}")
                continue
            name = str(key_node.value)
            if allowed is not None and name not in allowed:
                self.report(key_node, _join(path, name), f"unknown key; allowed keys: {', '.join(allowed)}")
                continue
            if isinstance(value_node, ScalarNode) and value_node.tag == _NULL_TAG:
                nulls.add(name)
                fields.pop(name, None)
                continue
            nulls.discard(name)
            fields[name] = value_node
        for name in required:
            if name in nulls:
                self.report(node, _join(path, name), "must have a value")
            elif name not in fields:
                self.report(node, _join(path, name), "required key is missing")
        return fields

    def items(self, node: Node | None, path: str, *, non_empty: bool = False) -> list[tuple[Node, str]]:
        if node is None:
            return []
        if not isinstance(node, SequenceNode):
            self.report(node, path, f"expected a list, got {_describe(node)}")
            return []
        if non_empty and not node.value:
            self.report(node, path, "must not be empty")
        return [(item, f"{path}[{index}]") for index, item in enumerate(node.value)]

    def peek(self, node: Node, key: str) -> str:
        value = self.peek_node(node, key)
        return str(value.value) if isinstance(value, ScalarNode) else ""

    @staticmethod
    def peek_node(node: Node, key: str) -> Node | None:
        if isinstance(node, MappingNode):
            for key_node, value_node in node.value:
                if isinstance(key_node, ScalarNode) and key_node.value == key:
                    return value_node  # type: ignore[no-any-return]
        return None

    # -- scalars -------------------------------------------------------------------------------------

    def scalar(self, node: Node, path: str, expected: str) -> ScalarNode | None:
        if isinstance(node, ScalarNode) and node.tag != _NULL_TAG:
            return node
        self.report(node, path, f"expected {expected}, got {_describe(node)}")
        return None

    def text(self, node: Node | None, path: str, *, empty_message: str = "must not be empty") -> str:
        if node is None:
            return ""
        scalar = self.scalar(node, path, "a string")
        if scalar is None:
            return ""
        value = str(scalar.value)
        if not value.strip():
            self.report(node, path, empty_message)
            return ""
        return value.strip()

    def identifier(self, node: Node | None, path: str) -> str:
        value = self.text(node, path)
        if value and node is not None:
            self.check_identifier(value, node, path, max_length=64)
        return value

    def check_identifier(self, value: str, node: Node, path: str, *, max_length: int) -> None:
        if not _IDENTIFIER.fullmatch(value) or len(value) > max_length:
            self.report(
                node,
                path,
                f"{value!r} is not a usable key: up to {max_length} letters, digits, '.', '-' or '_'",
            )

    def choice(self, node: Node | None, path: str, allowed: Sequence[str], default: str) -> str:
        value = self.text(node, path)
        if node is None or not value:
            return default
        if value not in allowed:
            self.report(node, path, f"{value!r} is not one of: {', '.join(allowed)}")
            return default
        return value

    def boolean(self, node: Node | None, path: str, default: bool) -> bool:
        if node is None:
            return default
        if isinstance(node, ScalarNode) and node.tag == _BOOL_TAG:
            return self.loader.construct_yaml_bool(node)
        self.report(node, path, f"expected true or false, got {_describe(node)}")
        return default

    def integer(self, node: Node | None, path: str, default: int, bounds: tuple[int, int]) -> int:
        if node is None:
            return default
        if not (isinstance(node, ScalarNode) and node.tag == _INT_TAG):
            self.report(node, path, f"expected a whole number, got {_describe(node)}")
            return default
        value = self.loader.construct_yaml_int(node)
        low, high = bounds
        if not low <= value <= high:
            self.report(node, path, f"must be between {low} and {high} (got {value})")
            return default
        return value

    def duration(self, node: Node | None, path: str, default: int, *, minimum: int | None = None) -> int:
        if node is None:
            return default
        scalar = self.scalar(node, path, "a duration such as 30s, 5m, 4h or 1d")
        if scalar is None:
            return default
        try:
            seconds = parse_duration(str(scalar.value))
        except ValueError as exc:
            self.report(node, path, str(exc))
            return default
        if minimum is not None and seconds < minimum:
            floor = "negative" if minimum == 0 else f"less than {format_duration(minimum)}"
            self.report(node, path, f"must not be {floor}")
            return default
        return seconds

    def phone(self, node: Node | None, path: str) -> str:
        value = self.text(node, path)
        if not value:
            return ""
        try:
            parsed = phonenumbers.parse(value, DEFAULT_REGION)
        except phonenumbers.NumberParseException:
            self.report(node, path, f"{value!r} is not a phone number")
            return ""
        if not phonenumbers.is_valid_number(parsed):
            self.report(node, path, f"{value!r} is not a valid phone number")
            return ""
        if parsed.extension:
            self.report(node, path, f"{value!r} has an extension; the gateway dials whole numbers only")
            return ""
        return str(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))

    def timezone(self, node: Node | None, path: str) -> str:
        value = self.text(node, path)
        if not value:
            return ""
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            self.report(node, path, f"unknown time zone {value!r} (use a name like America/New_York)")
            return ""
        return value

    def email(self, node: Node | None, path: str) -> str:
        value = self.text(node, path)
        if value and not _EMAIL.fullmatch(value):
            self.report(node, path, f"{value!r} is not an e-mail address")
        return value

    def url(self, node: Node | None, path: str) -> str:
        value = self.text(node, path)
        if not value:
            return ""
        try:
            parts = urlsplit(value)
            valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        except ValueError:
            valid = False
        if not valid:
            self.report(node, path, f"{value!r} is not an http(s) URL")
        return value

    # -- opening hours -------------------------------------------------------------------------------

    def week(self, node: Node | None, path: str) -> WeekHours | None:
        fields = self.mapping(node, path, DAYS)
        if fields is None:
            return None
        week: WeekHours = {day: [] for day in DAYS}
        for day, day_node in fields.items():
            week[day] = self.day(day_node, f"{path}.{day}")
        return week

    def day(self, node: Node, path: str) -> DayHours:
        scalar = self.scalar(node, path, "'HH:MM-HH:MM' or 'closed'")
        if scalar is None:
            return []
        text = str(scalar.value).strip()
        if text.lower() == "closed":
            return []
        ranges: list[tuple[int, int, str]] = []
        for part in text.split(","):
            start_text, dash, end_text = part.strip().partition("-")
            start, end = _minutes(start_text), _minutes(end_text)
            if dash and end is None and end_text.strip() == "24:00":
                self.report(node, path, f"{part.strip()!r}: there is no 24:00; end the day at 23:59")
                return []
            if not dash or start is None or end is None:
                self.report(
                    node,
                    path,
                    f"{part.strip()!r} is not a time range; use 'HH:MM-HH:MM' "
                    "(several separated by commas) or 'closed'",
                )
                return []
            if start >= end:
                how = "ends before it starts" if start > end else "starts and ends at the same time"
                self.report(node, path, f"{part.strip()!r} {how}")
                return []
            ranges.append((start, end, part.strip()))
        ranges.sort()
        for (_, first_end, first), (second_start, _, second) in itertools.pairwise(ranges):
            if second_start < first_end:
                self.report(node, path, f"{first!r} and {second!r} overlap")
                return []
        return [[_clock(start), _clock(end)] for start, end, _ in ranges]


def _syntax_problem(filename: str, exc: yaml.MarkedYAMLError) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    message = f"YAML syntax error: {exc.problem or exc.context or 'unreadable'}"
    if exc.context and exc.problem and exc.context_mark is not None:
        message += f" ({exc.context} at line {exc.context_mark.line + 1})"
    return Problem(filename, mark.line + 1 if mark is not None else 0, "", message)


def _clock(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
