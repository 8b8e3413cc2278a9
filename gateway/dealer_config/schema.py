"""The dealer configuration as checked: frozen dataclasses, the file's vocabulary and defaults, and the
problems a check reports (`file:line: field: message`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# These mirror gateway.models.Role, gateway.models.RingStrategy and gateway.models.LeadStatus;
# a test keeps them in step (the core does not import feature packages).
ROLES = ("agent", "manager")
STRATEGIES = ("simultaneous", "sequential", "round-robin")
TRIGGER_STATUSES = ("appointment_set", "appointment_confirmed", "no_show")
APPOINTMENT_STATUSES = ("appointment_set", "appointment_confirmed")
RELATIVE_TO = ("start", "appointment")
TEMPLATE_VARIABLES = ("first_name", "store", "agent", "source", "tracked_number", "appointment_time")
PROMPTS = ("greeting", "voicemail", "whisper")
CRM_FIELDS = {"adf-http": ("url",), "adf-email": ("to",), "webhook": ("url", "secret")}

DEFAULT_REGION = "US"
DEFAULT_ROLE = "agent"
DEFAULT_STRATEGY = "simultaneous"
DEFAULT_RESPONSE_SLA_SECONDS = 300
DEFAULT_AFTER_HOURS_GRACE_SECONDS = 1800
DEFAULT_SOURCE_WEIGHT = 10
SOURCE_WEIGHT_RANGE = (0, 40)
DEFAULT_RING_TIMEOUT_SECONDS = 18
RING_TIMEOUT_RANGE_SECONDS = (5, 120)
# Twilio refuses message bodies longer than this.
MAX_TEXT_LENGTH = 1600

TOP_KEYS = ("stores", "agents", "cadences", "numbers")
STORE_KEYS = (
    "key", "name", "timezone", "main_line", "hours", "response_sla", "after_hours_grace", "crm",
    "text_unverified_callers", "recording_disclosure",
)
AGENT_KEYS = ("key", "name", "phone", "email", "store", "departments", "role", "schedule")
CADENCE_KEYS = ("key", "steps", "trigger")
STEP_KEYS = ("after", "text", "relative_to")
NUMBER_KEYS = (
    "number",
    "store",
    "department",
    "source",
    "source_weight",
    "ring",
    "strategy",
    "ring_timeout",
    "screen",
    "record",
    "cadence",
    "prompts",
)

# One day's opening hours: [["09:00", "13:00"], ["14:00", "18:00"]]; [] when closed.
DayHours = list[list[str]]
# A week: all seven days, "mon".."sun".
WeekHours = dict[str, DayHours]

@dataclass(frozen=True)
class StoreConfig:
    key: str
    name: str
    timezone: str
    main_line: str  # E.164
    hours: dict[str, WeekHours]  # department -> week
    response_sla_seconds: int = DEFAULT_RESPONSE_SLA_SECONDS
    after_hours_grace_seconds: int = DEFAULT_AFTER_HOURS_GRACE_SECONDS
    crm: list[dict[str, str]] = field(default_factory=list)  # [{"type": "adf-http", "url": ...}, ...]
    text_unverified_callers: bool = False  # automated texts to callers whose caller ID failed verification
    recording_disclosure: str | None = None  # None: the default wording


@dataclass(frozen=True)
class AgentConfig:
    key: str
    name: str
    phone: str  # E.164
    email: str | None
    store: str  # store key
    departments: list[str]
    role: str = DEFAULT_ROLE
    schedule: WeekHours | None = None  # when on duty; None: whenever the department is open


@dataclass(frozen=True)
class StepConfig:
    after_seconds: int  # negative only when relative to an appointment
    text: str
    relative_to: str = "start"  # "start" (enrolment) | "appointment"


@dataclass(frozen=True)
class CadenceConfig:
    key: str
    steps: list[StepConfig]
    trigger: dict[str, str] | None = None  # {"status": "appointment_set"}: enrol on that lead status


@dataclass(frozen=True)
class NumberConfig:
    number: str  # E.164
    store: str
    department: str
    source: str
    ring: list[str]  # agent keys, in order
    source_weight: int = DEFAULT_SOURCE_WEIGHT
    strategy: str = DEFAULT_STRATEGY
    ring_timeout_seconds: int = DEFAULT_RING_TIMEOUT_SECONDS
    screen: bool = True
    record: bool = False
    cadence: str | None = None
    prompts: dict[str, str] = field(default_factory=dict)  # greeting, voicemail, whisper


@dataclass(frozen=True)
class GatewayConfig:
    stores: list[StoreConfig] = field(default_factory=list)
    agents: list[AgentConfig] = field(default_factory=list)
    cadences: list[CadenceConfig] = field(default_factory=list)
    numbers: list[NumberConfig] = field(default_factory=list)


@dataclass(frozen=True)
class Problem:
    file: str
    line: int  # 1-based; 0 when the problem is with the file as a whole
    field: str  # where in the document, e.g. "numbers[0].ring[1]"; "" for the document itself
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class ConfigError(ValueError):
    """The file has problems; `problems` lists every one and str() gives one line per problem."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))
