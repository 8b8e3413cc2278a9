"""A local fake of Twilio's REST API (2010-04-01), for tests and benchmarks.

The real `twilio` SDK talks to it once its base URL points here::

    with FakeTwilio() as fake:
        client = twilio.rest.Client(fake.account_sid, fake.auth_token)
        client.api.base_url = fake.base_url
        client.messages.create(to="+12025550123", from_="+12025550100", body="Hi")
        assert fake.wait_for_messages(1)[0]["Body"] == "Hi"

Resources, validation codes and the error body follow Twilio's OpenAPI description of the 2010-04-01 API:
Messages, Calls and IncomingPhoneNumbers (create, fetch, list with paging, update). Requests are checked
with HTTP Basic auth against the account SID and auth token given to the fake.

Lists page as Twilio pages them: `PageSize` (default 50, 1..1000), `Page`, and the `PageToken` that
`next_page_uri` and `previous_page_uri` carry (PA<sid>/PB<sid>: the page after/before that record), with
`first_page_uri`, `uri`, `page`, `page_size`, `start` and `end`; the SDK's `list()` and `stream()` follow
`next_page_uri`. Calls and Messages list newest first (calls by start_time, else date_created; messages by
date_sent, else date_created). Their filters:

    Calls     To, From, Status, ParentCallSid; StartTime, StartTime>, StartTime<; EndTime, EndTime>, EndTime<
    Messages  To, From; DateSent, DateSent>, DateSent<

A time is a UTC day (`2019-06-11`) or a moment: ISO 8601 as the SDK sends it (`2019-06-11T22:05:25Z`),
RFC 2822 (`Wed, 19 Jun 2019 22:04:00 -0000`) or `06/11/2019 22:05:25 MST`. `X` keeps that UTC day;
`X>` keeps that day or moment and later; `X<` keeps what is earlier ("started before"), except that
`DateSent<` also keeps the day or moment itself ("on and before"), as the reference words each. A record
without that time (a queued call has no start_time, an unsent text no date_sent) fails a time filter. A bad
PageSize, Page, PageToken, Status or time is Twilio's 400 with code 20001.

A text the gateway sends is recorded (`messages`) with `received_at`, when its request came in, and
`created_at`, when the fake answered it: with a latency set (`set_latency`), that much later; `waiting`
counts the requests the latency holds at the moment.

Tests steer it from Python (`fail_next`, `set_error_for_recipient`, `set_latency`, `set_down`, `reset`),
and seed what the provider has that the gateway never heard of: a call or a text whose webhook was lost
(`add_inbound_call`, `add_inbound_message`), a text the account sent whose answer was lost
(`add_sent_message`) and a call's later status (`set_call_status`; a fetch of the call by SID shows it).
When it runs as a separate process (`python -m tests.fakes.twilio_api --port 0`, which prints its base
URL on one line), the same controls are plain HTTP under `/_fake/`, without auth:

    GET  /_fake/messages?since=N   {"total": n, "items": [records from index N]}
    GET  /_fake/calls?since=N      the same for calls
    GET  /_fake/numbers            {"items": [IncomingPhoneNumber resources]}
    POST /_fake/numbers            PhoneNumber, FriendlyName -> {"sid": ...}
    POST /_fake/inbound_call       From, To, Sid, Status, StartTime, Duration -> 201 {"sid": ...}
    POST /_fake/inbound_message    From, To, Body, Sid, DateSent, NumMedia -> 201 {"sid": ...}
    POST /_fake/sent_message       From, To, Body, DateCreated, Status -> 201 {"sid": ...}
    POST /_fake/call_status        Sid, Status, Duration (404 for an unknown Sid)
    POST /_fake/fail_next          Kind, Status, Code, Message, Count
    POST /_fake/recipient_error    To, Code, Status, Message, Kind
    POST /_fake/latency            Seconds
    POST /_fake/down               Down=true|false
    POST /_fake/reset

Only From and To are required by the two seeds; left out, Sid is a new one, Status is completed and
StartTime or DateSent is now (given, either takes any form a time filter takes). A bad value answers 400
with Twilio's error body.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import bisect
import contextlib
import functools
import hmac
import json
import logging
import math
import re
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone
from email.utils import format_datetime, parsedate_to_datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import phonenumbers

logger = logging.getLogger(__name__)

API_VERSION = "2010-04-01"
DEFAULT_ACCOUNT_SID = "AC" + "0" * 31 + "1"
DEFAULT_AUTH_TOKEN = "fake-auth-token"
KINDS = ("messages", "calls", "numbers")
MAX_BODY_LENGTH = 1600
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000

CALL_STATUSES = ("queued", "ringing", "in-progress", "completed", "busy", "failed", "no-answer", "canceled")
FINAL_CALL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})
SENT_MESSAGE_STATUSES = frozenset({"accepted", "queued", "sent", "delivered", "undelivered", "failed"})

# Form parameters the API accepts more than once; the fake records them as lists.
REPEATABLE = frozenset(
    {"MediaUrl", "StatusCallbackEvent", "RecordingStatusCallbackEvent", "PersistentAction"}
)

# Messages Twilio uses for the codes tests inject most often.
KNOWN_ERRORS = {
    20003: "Authenticate",
    20404: "The requested resource was not found",
    20429: "Too Many Requests",
    20500: "Internal Server Error",
    20503: "Service Unavailable",
    21211: "Invalid 'To' Phone Number",
    21408: "Permission to send an SMS has not been enabled for the region indicated by the 'To' number",
    21610: "Attempt to send to unsubscribed recipient",
    21612: "The 'To' phone number is not currently reachable via SMS",
    21614: "'To' number is not a valid mobile number",
    30006: "Landline or unreachable carrier",
}

# The GSM 03.38 alphabet: texts made only of these characters travel in 7-bit segments.
_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿"
    "abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENDED = frozenset("^{}\\[~]|€\f")  # each takes two septets (escape + character)

_PATH = re.compile(r"/2010-04-01/Accounts/(?P<account>[^/]+)/(?P<rest>.+)")
_RESOURCE_PATHS = (
    (re.compile(r"Messages\.json"), "messages"),
    (re.compile(r"Messages/(?P<sid>[^/]+)\.json"), "message"),
    (re.compile(r"Calls\.json"), "calls"),
    (re.compile(r"Calls/(?P<sid>[^/]+)\.json"), "call"),
    (re.compile(r"IncomingPhoneNumbers\.json"), "numbers"),
    (re.compile(r"IncomingPhoneNumbers/(?P<sid>[^/]+)\.json"), "number"),
)
_RECORDING_MEDIA = re.compile(r"/2010-04-01/Accounts/(?P<account>[^/]+)/Recordings/(?P<sid>RE[0-9a-f]+)\.mp3")
_CAMEL_BOUNDARY = re.compile(r"(?<!^)(?=[A-Z])")
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_SLASHED_TIME = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4}) (\d{1,2}):(\d{2}):(\d{2})(?: ([A-Z]{2,4}))?")
_ZONE_HOURS = {
    "UTC": 0, "GMT": 0, "EST": -5, "EDT": -4, "CST": -6, "CDT": -5, "MST": -7, "MDT": -6, "PST": -8, "PDT": -7,
}

# IncomingPhoneNumber fields a POST may change (form name -> resource field is CamelCase -> snake_case).
_NUMBER_UPDATABLE = frozenset(
    {
        "FriendlyName",
        "VoiceUrl",
        "VoiceMethod",
        "VoiceFallbackUrl",
        "VoiceFallbackMethod",
        "VoiceApplicationSid",
        "VoiceCallerIdLookup",
        "VoiceReceiveMode",
        "SmsUrl",
        "SmsMethod",
        "SmsFallbackUrl",
        "SmsFallbackMethod",
        "SmsApplicationSid",
        "StatusCallback",
        "StatusCallbackMethod",
        "TrunkSid",
        "EmergencyStatus",
        "EmergencyAddressSid",
        "IdentitySid",
        "AddressSid",
        "BundleSid",
    }
)
_METHOD_FIELDS = frozenset(
    {"VoiceMethod", "VoiceFallbackMethod", "SmsMethod", "SmsFallbackMethod", "StatusCallbackMethod"}
)

Json = dict[str, Any]
Form = Mapping[str, list[str]]
Answer = tuple[int, Json, list[tuple[str, str]]]  # HTTP status, JSON body, extra headers


class ApiError(Exception):
    """An answer in Twilio's error shape; the SDK turns it into `TwilioRestException`."""

    def __init__(self, status: int, code: int, message: str, headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = list(headers)

    def body(self) -> Json:
        return error_body(self.status, self.code, self.message)


def error_body(status: int, code: int, message: str) -> Json:
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: Form
    form: Form
    authorization: str | None
    # When the request came in: with a latency set, a text is recorded (`created_at`) that much later.
    received_at: datetime = field(default_factory=lambda: _now())


@dataclass
class _Failure:
    status: int
    code: int
    message: str
    remaining: int


@dataclass
class _State:
    """Everything a test can see or steer; guarded by FakeTwilio._lock."""

    messages: list[Json] = field(default_factory=list)
    calls: list[Json] = field(default_factory=list)
    call_updates: list[Json] = field(default_factory=list)
    rejected: list[Json] = field(default_factory=list)
    message_resources: dict[str, Json] = field(default_factory=dict)
    call_resources: dict[str, Json] = field(default_factory=dict)
    numbers: dict[str, Json] = field(default_factory=dict)
    failures: dict[str, list[_Failure]] = field(default_factory=dict)
    recipient_errors: dict[tuple[str, str], ApiError] = field(default_factory=dict)
    latency: float = 0.0
    down: bool = False
    recordings: dict[str, bytes] = field(default_factory=dict)


class FakeTwilio:
    """Twilio's REST API on 127.0.0.1, threaded, with test-side controls. Every method is thread-safe."""

    def __init__(
        self,
        account_sid: str = DEFAULT_ACCOUNT_SID,
        auth_token: str = DEFAULT_AUTH_TOKEN,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self._address = (host, port)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._state = _State()
        self._waiting = 0  # API requests held by the latency right now
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle ---------------------------------------------------------------------------------------

    def start(self) -> FakeTwilio:
        if self._server is not None:
            raise RuntimeError("the fake Twilio API is already running")
        server = _Server(self._address, self)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-twilio", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        server.close_connections()
        server.server_close()
        if thread is not None:
            thread.join()
        self._server = self._thread = None

    def __enter__(self) -> FakeTwilio:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """What `client.api.base_url` is set to, e.g. ``http://127.0.0.1:40123``."""
        if self._server is None:
            raise RuntimeError("the fake Twilio API is not running; call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # -- seeding and reading back -------------------------------------------------------------------------

    def add_number(self, phone_number: str, friendly_name: str | None = None) -> str:
        """Seed an IncomingPhoneNumber owned by the account; returns its SID ("PN" + 32 hex)."""
        if not _is_phone_number(phone_number):
            raise ValueError(f"{phone_number!r} is not an E.164 phone number")
        now = _now()
        sid = _sid("PN")
        resource = self._number_resource(sid, phone_number, friendly_name or _national(phone_number), now)
        with self._lock:
            self._state.numbers[sid] = resource
        return sid

    def release_number(self, sid: str) -> None:
        """Take a seeded number off the account (`reset` keeps numbers: a test that adds some releases them)."""
        with self._lock:
            self._state.numbers.pop(sid, None)

    @property
    def numbers(self) -> dict[str, Json]:
        """The current IncomingPhoneNumber resources by SID (copies), in the order they were added."""
        with self._lock:
            return {sid: _copy(resource) for sid, resource in self._state.numbers.items()}

    @property
    def waiting(self) -> int:
        """API requests that came in and are held by the latency (`set_latency`), not yet handled."""
        with self._lock:
            return self._waiting

    @property
    def messages(self) -> list[Json]:
        """Messages created so far: their form parameters plus "sid" and "created_at" (aware UTC)."""
        with self._lock:
            return [dict(record) for record in self._state.messages]

    @property
    def calls(self) -> list[Json]:
        """Calls created so far: their form parameters plus "sid" and "created_at" (aware UTC)."""
        with self._lock:
            return [dict(record) for record in self._state.calls]

    @property
    def call_updates(self) -> list[Json]:
        """POSTs to existing calls (redirects, hang-ups): form parameters plus "sid" and "created_at"."""
        with self._lock:
            return [dict(record) for record in self._state.call_updates]

    @property
    def rejected(self) -> list[Json]:
        """Creates answered with an error: form parameters plus "kind", "status", "code", "created_at"."""
        with self._lock:
            return [dict(record) for record in self._state.rejected]

    def wait_for_messages(self, n: int, timeout: float = 5.0) -> list[Json]:
        """Block until at least `n` messages exist; return them all. TimeoutError if they never come."""
        return self._wait_for("messages", n, timeout)

    def wait_for_calls(self, n: int, timeout: float = 5.0) -> list[Json]:
        """Block until at least `n` calls exist; return them all. TimeoutError if they never come."""
        return self._wait_for("calls", n, timeout)

    def _wait_for(self, kind: str, n: int, timeout: float) -> list[Json]:
        def records() -> list[Json]:
            found: list[Json] = getattr(self._state, kind)  # reset() swaps the state: look it up each time
            return found

        with self._changed:
            if not self._changed.wait_for(lambda: len(records()) >= n, timeout):
                raise TimeoutError(f"expected at least {n} {kind} within {timeout}s, got {len(records())}")
            return [dict(record) for record in records()]

    # -- records made on the provider's side ----------------------------------------------------------------
    # Calls and texts that reached the account without the gateway seeing a webhook for them: only listing
    # the provider's Calls and Messages finds them. They are API resources only, not `calls` / `messages`.

    def add_inbound_call(
        self,
        *,
        from_: str,
        to: str,
        sid: str | None = None,
        status: str = "completed",
        start_time: datetime | None = None,
        duration: int | None = None,
    ) -> str:
        """Seed a call a customer placed to `to` (the account's number); returns its SID.

        `start_time` (aware; default now) is also its date_created. A "completed" call ends `duration`
        seconds (default 0) after it started; the other final statuses (busy, failed, no-answer, canceled)
        have no end_time or duration, as the API shows them; queued, ringing and in-progress calls have
        not ended. ValueError for a bad SID, a SID already used, a bad status or a duration out of place.
        """
        if not from_:
            raise ValueError("from_ is required (a withheld caller is 'anonymous')")
        if not _is_phone_number(to):
            raise ValueError(f"{to!r} is not an E.164 phone number")
        started = _aware(start_time or _now(), "start_time")
        sid = _given_sid(("CA",), sid)
        with self._lock:
            if sid in self._state.call_resources:
                raise ValueError(f"a call {sid} already exists")
            resource = self._call_resource(sid, caller=from_, to=to, own_number=to, now=started)
            resource.update(direction="inbound", start_time=_rfc2822(started))
            _move_call(resource, status, duration, started)
            self._state.call_resources[sid] = resource
        return sid

    def set_call_status(self, sid: str, status: str, duration: int | None = None) -> None:
        """Move a call (seeded or created) to `status`, e.g. to a final one with its talk time in seconds.

        The same rules as `add_inbound_call`; a completed call ends `duration` seconds after it started
        (a call that had not started starts now). KeyError for an unknown SID.
        """
        now = _now()
        with self._lock:
            resource = self._state.call_resources.get(sid)
            if resource is None:
                raise KeyError(sid)
            changed = dict(resource)
            _move_call(changed, status, duration, now)  # on a copy: a refused change leaves the call as it was
            resource.update(changed)

    def add_inbound_message(
        self,
        *,
        from_: str,
        to: str,
        body: str,
        sid: str | None = None,
        date_sent: datetime | None = None,
        num_media: int = 0,
    ) -> str:
        """Seed a text a customer sent to `to` (the account's number), status "received"; returns its SID.

        `date_sent` (aware; default now) is also its date_created. A SID is "SM" + 32 hex digits, or "MM"
        for a text with media (a new one starts "MM" when `num_media` > 0). ValueError for a bad or used SID.
        """
        if not from_:
            raise ValueError("from_ is required")
        if not _is_phone_number(to):
            raise ValueError(f"{to!r} is not an E.164 phone number")
        if num_media < 0:
            raise ValueError("num_media cannot be negative")
        sent = _aware(date_sent or _now(), "date_sent")
        sid = _given_sid(("MM", "SM") if num_media else ("SM", "MM"), sid)
        resource = self._message_resource(sid, sender=from_, to=to, body=body, num_media=num_media, now=sent)
        resource.update(direction="inbound", status="received", date_sent=_rfc2822(sent))
        with self._lock:
            if sid in self._state.message_resources:
                raise ValueError(f"a message {sid} already exists")
            self._state.message_resources[sid] = resource
        return sid

    def add_sent_message(
        self,
        *,
        from_: str,
        to: str,
        body: str,
        date_created: datetime | None = None,
        status: str = "sent",
    ) -> str:
        """Seed a text the account sent from `from_` whose answer never reached the sender; returns its SID.

        `date_created` (aware; default now) is also its date_sent, except while it is "accepted" or "queued".
        ValueError for a status a sent text cannot have.
        """
        if status not in SENT_MESSAGE_STATUSES:
            raise ValueError(f"status must be one of {', '.join(sorted(SENT_MESSAGE_STATUSES))}")
        if not _is_phone_number(to) or not _is_phone_number(from_):
            raise ValueError("from_ and to must be E.164 phone numbers")
        created = _aware(date_created or _now(), "date_created")
        sid = _given_sid(("SM",), None)
        resource = self._message_resource(sid, sender=from_, to=to, body=body, num_media=0, now=created)
        resource["status"] = status
        if status not in ("accepted", "queued"):
            resource["date_sent"] = _rfc2822(created)
        with self._lock:
            self._state.message_resources[sid] = resource
        return sid

    # -- failure injection --------------------------------------------------------------------------------

    def fail_next(
        self, kind: str, status: int, code: int, message: str | None = None, count: int = 1
    ) -> None:
        """The next `count` requests of `kind` that would succeed get this error instead.

        "messages" and "calls" count creates; "numbers" counts every IncomingPhoneNumbers request.
        """
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        if count < 1:
            raise ValueError("count must be at least 1")
        failure = _Failure(status, code, message or KNOWN_ERRORS.get(code, f"Error {code}"), count)
        with self._lock:
            self._state.failures.setdefault(kind, []).append(failure)

    def set_error_for_recipient(
        self,
        to: str,
        code: int,
        status: int = 400,
        message: str | None = None,
        *,
        kind: str = "messages",
    ) -> None:
        """Every create of `kind` to `to` (exact string) fails with this error until reset()."""
        if kind not in ("messages", "calls"):
            raise ValueError("kind must be 'messages' or 'calls'")
        error = ApiError(status, code, message or KNOWN_ERRORS.get(code, f"Error {code}"))
        with self._lock:
            self._state.recipient_errors[(kind, to)] = error

    def set_latency(self, seconds: float) -> None:
        """Every API request waits this long before it is answered."""
        if seconds < 0:
            raise ValueError("latency cannot be negative")
        with self._lock:
            self._state.latency = float(seconds)

    def set_down(self, down: bool = True) -> None:
        """While down, every API request is answered 503 (code 20503)."""
        with self._lock:
            self._state.down = down

    def add_recording(self, audio: bytes) -> str:
        """Keep a recording; returns its RecordingUrl (GET it + ".mp3", with the account's Basic auth)."""
        sid = _sid("RE")
        with self._lock:
            self._state.recordings[sid] = audio
        return f"{self.base_url}/{API_VERSION}/Accounts/{self.account_sid}/Recordings/{sid}"

    def recording(self, request: Request) -> tuple[int, bytes, str] | None:
        """The MP3 of a GET .../Recordings/<sid>.mp3, or None when the path is not a recording."""
        match = _RECORDING_MEDIA.fullmatch(request.path)
        if match is None or request.method != "GET":
            return None
        try:
            self._authenticate(request.authorization)
        except ApiError as error:
            return error.status, json.dumps(error.body()).encode(), "application/json"
        with self._lock:
            audio = self._state.recordings.get(match["sid"]) if match["account"] == self.account_sid else None
        if audio is None:
            return 404, json.dumps(_not_found(request.path).body()).encode(), "application/json"
        return 200, audio, "audio/mpeg"

    def reset(self) -> None:
        """Forget messages and calls (created or seeded), injected failures, latency and outage; keep numbers."""
        with self._lock:
            numbers = self._state.numbers
            self._state = _State(numbers=numbers)
            self._changed.notify_all()

    # -- the API --------------------------------------------------------------------------------------

    def respond(self, request: Request) -> Answer:
        """Answer one HTTP request: (status, JSON body, extra headers). The HTTP server calls this."""
        try:
            if request.path.startswith("/_fake/"):
                return self._control(request)
            with self._lock:
                latency, down = self._state.latency, self._state.down
            if latency:
                with self._lock:
                    self._waiting += 1
                try:
                    time.sleep(latency)
                finally:
                    with self._lock:
                        self._waiting -= 1
            if down:
                raise ApiError(503, 20503, "Service Unavailable")
            self._authenticate(request.authorization)
            return self._route(request)
        except ApiError as error:
            return error.status, error.body(), error.headers
        except Exception:
            logger.exception("fake Twilio API failed on %s %s", request.method, request.path)
            return 500, error_body(500, 20500, "Internal Server Error"), []

    def _authenticate(self, authorization: str | None) -> None:
        scheme, _, encoded = (authorization or "").partition(" ")
        try:
            decoded = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            decoded = b""
        username, _, password = decoded.partition(b":")
        expected_user, expected_password = self.account_sid.encode(), self.auth_token.encode()
        user_ok = hmac.compare_digest(username, expected_user)
        password_ok = hmac.compare_digest(password, expected_password)
        if scheme.lower() != "basic" or not (user_ok and password_ok):
            raise ApiError(401, 20003, "Authenticate", [("WWW-Authenticate", 'Basic realm="Twilio API"')])

    def _route(self, request: Request) -> Answer:
        match = _PATH.fullmatch(request.path)
        if match is None or match["account"] != self.account_sid:
            raise _not_found(request.path)
        for pattern, name in _RESOURCE_PATHS:
            found = pattern.fullmatch(match["rest"])
            if found is None:
                continue
            handler = self._handlers.get((name, request.method))
            if handler is None:
                raise ApiError(405, 20004, "Method not allowed")
            return handler(request, found.groupdict().get("sid") or "")
        raise _not_found(request.path)

    @functools.cached_property
    def _handlers(self) -> dict[tuple[str, str], Callable[[Request, str], Answer]]:
        return {
            ("messages", "POST"): self._create_message,
            ("messages", "GET"): self._list_messages,
            ("message", "GET"): self._fetch_message,
            ("calls", "POST"): self._create_call,
            ("calls", "GET"): self._list_calls,
            ("call", "GET"): self._fetch_call,
            ("call", "POST"): self._update_call,
            ("numbers", "GET"): self._list_numbers,
            ("numbers", "POST"): self._create_number,
            ("number", "GET"): self._fetch_number,
            ("number", "POST"): self._post_number,
        }

    # Messages

    def _create_message(self, request: Request, _: str) -> Answer:
        form = request.form
        try:
            to = _one(form, "To")
            if not to:
                raise ApiError(400, 21604, "A 'To' phone number is required.")
            if not _is_phone_number(to.removeprefix("whatsapp:")):
                raise ApiError(400, 21211, f"The 'To' number {to} is not a valid phone number.")
            sender, service = _one(form, "From"), _one(form, "MessagingServiceSid")
            if not sender and not service:
                raise ApiError(400, 21603, "A 'From' phone number is required.")
            if sender and not _is_sender(sender.removeprefix("whatsapp:")):
                raise ApiError(
                    400,
                    21212,
                    f"The 'From' number {sender} is not a valid phone number, shortcode, "
                    "or alphanumeric sender ID.",
                )
            body = _one(form, "Body") or ""
            media = [url for url in form.get("MediaUrl", []) if url]
            if not body and not media and not _one(form, "ContentSid"):
                raise ApiError(400, 21602, "Message body is required.")
            if len(body) > MAX_BODY_LENGTH:
                raise ApiError(
                    400,
                    21617,
                    f"The concatenated message body exceeds the {MAX_BODY_LENGTH} character limit.",
                )
            self._injected_failure("messages", to)
        except ApiError as error:
            self._reject("messages", form, error)
            raise
        now = _now()
        sid = _sid("SM")
        resource = self._message_resource(sid, sender=sender, to=to, body=body, num_media=len(media), now=now)
        resource.update(
            messaging_service_sid=service,
            # A Messaging Service first accepts the message, then picks a sender and queues it.
            status="queued" if sender else "accepted",
        )
        with self._changed:
            self._state.message_resources[sid] = resource
            self._state.messages.append({**_record(form, sid, now), "received_at": request.received_at})
            self._changed.notify_all()
        return 201, resource, []

    def _message_resource(
        self, sid: str, *, sender: str | None, to: str, body: str, num_media: int, now: datetime
    ) -> Json:
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{sid}.json"
        return {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": body,
            "date_created": _rfc2822(now),
            "date_sent": None,
            "date_updated": _rfc2822(now),
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": sender,
            "messaging_service_sid": None,
            "num_media": str(num_media),
            "num_segments": str(segments(body)),
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "queued",
            "subresource_uris": {"media": uri.removesuffix(".json") + "/Media.json"},
            "to": to,
            "uri": uri,
        }

    def _fetch_message(self, request: Request, sid: str) -> Answer:
        with self._lock:
            resource = self._state.message_resources.get(sid)
            if resource is None:
                raise _not_found(request.path)
            return 200, _copy(resource), []

    def _list_messages(self, request: Request, _: str) -> Answer:
        # "<" takes in the whole day or moment named ("on and before"), unlike the Calls filters.
        sent = _time_filter(request.query, "DateSent", before_is_inclusive=True)
        _paging(request.query)  # a bad PageSize is refused before anything is read
        with self._lock:
            resources = [_copy(r) for r in self._state.message_resources.values()]
        ordered = _newest_first(resources, ("date_sent", "date_created"))

        def keep(resource: Json) -> bool:
            return _matches(resource, request.query, {"To": "to", "From": "from"}) and sent(resource["date_sent"])

        return 200, self._page(request, "messages", ordered, keep), []

    # Calls

    def _create_call(self, request: Request, _: str) -> Answer:
        form = request.form
        try:
            to, caller = _one(form, "To"), _one(form, "From")
            if not to:
                raise ApiError(400, 21201, "No 'To' number is specified")
            if not caller:
                raise ApiError(400, 21213, "No 'From' number is specified")
            if not (to.startswith(("client:", "sip:")) or _is_phone_number(to)):
                raise ApiError(
                    400, 21211, f"The phone number you are attempting to call, {to}, is not valid."
                )
            if not (caller.startswith("client:") or _is_phone_number(caller)):
                raise ApiError(
                    400, 21212, f"The phone number provided, {caller}, is not a valid phone number."
                )
            url = _one(form, "Url")
            if not (url or _one(form, "Twiml") or _one(form, "ApplicationSid")):
                raise ApiError(400, 21205, "Url parameter is required.")
            if url and not _is_http_url(url):
                raise ApiError(400, 21205, f"Url is not a valid URL: {url}")
            self._injected_failure("calls", to)
        except ApiError as error:
            self._reject("calls", form, error)
            raise
        now = _now()
        sid = _sid("CA")
        with self._changed:
            resource = self._call_resource(sid, caller=caller, to=to, own_number=caller, now=now)
            self._state.call_resources[sid] = resource
            self._state.calls.append(_record(form, sid, now))
            self._changed.notify_all()
        return 201, resource, []

    def _call_resource(self, sid: str, *, caller: str, to: str, own_number: str, now: datetime) -> Json:
        """A queued outbound-api call; the caller holds the lock (`own_number` names the account's number)."""
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{sid}.json"
        base = uri.removesuffix(".json")
        number_sid = next(
            (sid for sid, n in self._state.numbers.items() if n["phone_number"] == own_number), None
        )
        return {
            "account_sid": self.account_sid,
            "annotation": None,
            "answered_by": None,
            "api_version": API_VERSION,
            "caller_name": None,
            "date_created": _rfc2822(now),
            "date_updated": _rfc2822(now),
            "direction": "outbound-api",
            "duration": None,
            "end_time": None,
            "forwarded_from": None,
            "from": caller,
            "from_formatted": _national(caller),
            "group_sid": None,
            "parent_call_sid": None,
            "phone_number_sid": number_sid,
            "price": None,
            "price_unit": "USD",
            "queue_time": "0",
            "sid": sid,
            "start_time": None,
            "status": "queued",
            "subresource_uris": {
                name: f"{base}/{name.title().replace('_', '')}.json"
                for name in ("notifications", "recordings", "payments", "events", "siprec", "streams")
            },
            "to": to,
            "to_formatted": _national(to),
            "trunk_sid": None,
            "uri": uri,
        }

    def _fetch_call(self, request: Request, sid: str) -> Answer:
        with self._lock:
            resource = self._state.call_resources.get(sid)
            if resource is None:
                raise _not_found(request.path)
            return 200, _copy(resource), []

    def _list_calls(self, request: Request, _: str) -> Answer:
        status = _one(request.query, "Status")
        if status and status not in CALL_STATUSES:
            raise ApiError(400, 20001, f"Invalid Status: {status}. Must be one of {', '.join(CALL_STATUSES)}")
        started = _time_filter(request.query, "StartTime", before_is_inclusive=False)
        ended = _time_filter(request.query, "EndTime", before_is_inclusive=False)
        _paging(request.query)
        with self._lock:
            resources = [_copy(r) for r in self._state.call_resources.values()]
        ordered = _newest_first(resources, ("start_time", "date_created"))
        fields = {"To": "to", "From": "from", "Status": "status", "ParentCallSid": "parent_call_sid"}

        def keep(resource: Json) -> bool:
            return (
                _matches(resource, request.query, fields)
                and started(resource["start_time"])
                and ended(resource["end_time"])
            )

        return 200, self._page(request, "calls", ordered, keep), []

    def _update_call(self, request: Request, sid: str) -> Answer:
        status = _one(request.form, "Status")
        if status is not None and status not in ("canceled", "completed"):
            raise ApiError(400, 21218, f"Invalid Status: {status}")
        url = _one(request.form, "Url")
        if url and not _is_http_url(url):
            raise ApiError(400, 21205, f"Url is not a valid URL: {url}")
        now = _now()
        with self._lock:
            resource = self._state.call_resources.get(sid)
            if resource is None:
                raise _not_found(request.path)
            if status:
                resource["status"] = status
                resource["end_time"] = _rfc2822(now)
            resource["date_updated"] = _rfc2822(now)
            self._state.call_updates.append(_record(request.form, sid, now))
            return 200, _copy(resource), []

    # IncomingPhoneNumbers

    def _list_numbers(self, request: Request, _: str) -> Answer:
        self._injected_failure("numbers", None)
        wanted = _one(request.query, "PhoneNumber")
        digits = re.sub(r"\D", "", wanted or "")
        with self._lock:
            resources = [_copy(r) for r in self._state.numbers.values()]

        def keep(resource: Json) -> bool:
            fields = {"FriendlyName": "friendly_name", "Origin": "origin"}
            return _matches(resource, request.query, fields) and digits in resource["phone_number"]

        return 200, self._page(request, "incoming_phone_numbers", resources, keep), []

    def _fetch_number(self, request: Request, sid: str) -> Answer:
        self._injected_failure("numbers", None)
        with self._lock:
            resource = self._state.numbers.get(sid)
            if resource is None:
                raise _not_found(request.path)
            return 200, _copy(resource), []

    def _create_number(self, request: Request, _: str) -> Answer:
        self._injected_failure("numbers", None)
        phone_number, area_code = _one(request.form, "PhoneNumber"), _one(request.form, "AreaCode")
        if not phone_number and not area_code:
            raise ApiError(400, 21421, "PhoneNumber or AreaCode is required.")
        with self._lock:
            owned = {n["phone_number"] for n in self._state.numbers.values()}
        if area_code:
            candidates = (f"+1{area_code}555{line:04d}" for line in range(100, 10000))
            phone_number = next((c for c in candidates if c not in owned and _is_phone_number(c)), None)
            if phone_number is None:
                raise ApiError(400, 21452, f"No numbers found in area code {area_code}.")
        if phone_number is None or not _is_phone_number(phone_number):
            raise ApiError(400, 21421, f"PhoneNumber {phone_number} is invalid.")
        if phone_number in owned:
            raise ApiError(400, 21422, f"PhoneNumber {phone_number} is not available.")
        sid = self.add_number(phone_number, _one(request.form, "FriendlyName"))
        updates = {k: v for k, v in request.form.items() if k in _NUMBER_UPDATABLE}
        return 201, self._update_number(request.path, sid, updates), []

    def _post_number(self, request: Request, sid: str) -> Answer:
        self._injected_failure("numbers", None)
        return 200, self._update_number(request.path, sid, request.form), []

    def _update_number(self, path: str, sid: str, form: Form) -> Json:
        changes: Json = {}
        for name, values in form.items():
            if name not in _NUMBER_UPDATABLE:
                continue  # Twilio ignores parameters it does not know
            value: Any = values[-1]
            if name in _METHOD_FIELDS:
                value = value.upper()
                if value not in ("GET", "POST"):
                    raise ApiError(400, 21403, f"{name} must be GET or POST, not {values[-1]}")
            elif name.endswith("Url") or name == "StatusCallback":
                if value and not _is_http_url(value):
                    raise ApiError(400, 21502, f"{name} is not a valid URL: {value}")
            elif name == "VoiceCallerIdLookup":
                value = value.lower() == "true"
            changes[_CAMEL_BOUNDARY.sub("_", name).lower()] = value
        with self._lock:
            resource = self._state.numbers.get(sid)
            if resource is None:
                raise _not_found(path)
            resource.update(changes)
            resource["date_updated"] = _rfc2822(_now())
            return _copy(resource)

    def _number_resource(self, sid: str, phone_number: str, friendly_name: str, now: datetime) -> Json:
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/IncomingPhoneNumbers/{sid}.json"
        return {
            "account_sid": self.account_sid,
            "address_requirements": "none",
            "address_sid": None,
            "api_version": API_VERSION,
            "beta": False,
            "bundle_sid": None,
            "capabilities": {"voice": True, "sms": True, "mms": True, "fax": False},
            "date_created": _rfc2822(now),
            "date_updated": _rfc2822(now),
            "emergency_address_sid": None,
            "emergency_address_status": "unregistered",
            "emergency_status": "Inactive",
            "friendly_name": friendly_name,
            "identity_sid": None,
            "origin": "twilio",
            "phone_number": phone_number,
            "sid": sid,
            "sms_application_sid": "",
            "sms_fallback_method": "POST",
            "sms_fallback_url": "",
            "sms_method": "POST",
            "sms_url": "",
            "status": "in-use",
            "status_callback": "",
            "status_callback_method": "POST",
            "subresource_uris": {"assigned_add_ons": uri.removesuffix(".json") + "/AssignedAddOns.json"},
            "trunk_sid": None,
            "type": "local",
            "uri": uri,
            "voice_application_sid": "",
            "voice_caller_id_lookup": False,
            "voice_fallback_method": "POST",
            "voice_fallback_url": "",
            "voice_method": "POST",
            "voice_receive_mode": "voice",
            "voice_url": "",
        }

    # Paging, as Twilio does it: PageSize and Page, plus an opaque PageToken the next_page_uri carries.

    def _page(self, request: Request, key: str, ordered: list[Json], keep: Callable[[Json], bool]) -> Json:
        """One page of the records in `ordered` (a snapshot of the list's whole order) that `keep` accepts."""
        size, page = _paging(request.query)
        token = _one(request.query, "PageToken") or ""
        positions = [position for position, item in enumerate(ordered) if keep(item)]
        first, stop = page * size, page * size + size
        if token:
            # PA<sid>: the page after that record; PB<sid>: the page before it. The anchor is a place in the
            # unfiltered order, so a page stays put when records are added or one leaves the filter.
            anchor = next(
                (position for position, item in enumerate(ordered) if item["sid"] == token[2:]), None
            )
            if token[:2] not in ("PA", "PB") or anchor is None:
                raise ApiError(400, 20001, f"Invalid PageToken: {token}")
            if token.startswith("PA"):
                first = bisect.bisect_right(positions, anchor)
                stop = first + size
            else:
                stop = bisect.bisect_left(positions, anchor)
                first = max(0, stop - size)
        chunk = [ordered[position] for position in positions[first:stop]]
        filters = [
            (name, value)
            for name, values in request.query.items()
            if name not in ("PageSize", "Page", "PageToken")
            for value in values
        ]

        def uri(page_number: int, page_token: str | None = None) -> str:
            params = [*filters, ("PageSize", str(size)), ("Page", str(page_number))]
            if page_token:
                params.append(("PageToken", page_token))
            return f"{request.path}?{urlencode(params)}"

        has_next = bool(chunk) and stop < len(positions)
        start = page * size  # as Twilio reports it: the page number times its size
        return {
            key: chunk,
            "end": start + max(len(chunk) - 1, 0),
            "first_page_uri": uri(0),
            "next_page_uri": uri(page + 1, "PA" + chunk[-1]["sid"]) if has_next else None,
            "page": page,
            "page_size": size,
            "previous_page_uri": uri(page - 1, "PB" + chunk[0]["sid"]) if page > 0 and chunk else None,
            "start": start,
            "uri": uri(page, token or None),
        }

    # Failure injection

    def _injected_failure(self, kind: str, to: str | None) -> None:
        with self._lock:
            error = self._state.recipient_errors.get((kind, to)) if to is not None else None
            if error is not None:
                raise ApiError(error.status, error.code, error.message)
            queue = self._state.failures.get(kind)
            if queue:
                failure = queue[0]
                failure.remaining -= 1
                if failure.remaining <= 0:
                    queue.pop(0)
                raise ApiError(failure.status, failure.code, failure.message)

    def _reject(self, kind: str, form: Form, error: ApiError) -> None:
        record = _record(form, None, _now())
        record.update(kind=kind, status=error.status, code=error.code)
        with self._lock:
            self._state.rejected.append(record)

    # The /_fake/ control API, for a fake running in another process

    def _control(self, request: Request) -> Answer:
        action = request.path.removeprefix("/_fake/").strip("/")
        form = request.form
        try:
            if request.method == "GET" and action in ("messages", "calls"):
                since = int(_one(request.query, "since") or 0)
                records = self.messages if action == "messages" else self.calls
                items = [
                    {**r, **{name: r[name].isoformat() for name in ("created_at", "received_at") if name in r}}
                    for r in records[since:]
                ]
                return 200, {"total": len(records), "items": items}, []
            if request.method == "GET" and action == "numbers":
                return 200, {"items": list(self.numbers.values())}, []
            if request.method != "POST":
                raise ApiError(404, 20404, f"The requested resource {request.path} was not found")
            if action == "numbers":
                sid = self.add_number(_required(form, "PhoneNumber"), _one(form, "FriendlyName"))
                return 201, {"sid": sid}, []
            if action == "inbound_call":
                sid = self.add_inbound_call(
                    from_=_required(form, "From"),
                    to=_required(form, "To"),
                    sid=_one(form, "Sid") or None,
                    status=_one(form, "Status") or "completed",
                    start_time=_form_time(form, "StartTime"),
                    duration=_form_int(form, "Duration"),
                )
                return 201, {"sid": sid}, []
            if action == "inbound_message":
                sid = self.add_inbound_message(
                    from_=_required(form, "From"),
                    to=_required(form, "To"),
                    body=_one(form, "Body") or "",
                    sid=_one(form, "Sid") or None,
                    date_sent=_form_time(form, "DateSent"),
                    num_media=_form_int(form, "NumMedia") or 0,
                )
                return 201, {"sid": sid}, []
            if action == "sent_message":
                sid = self.add_sent_message(
                    from_=_required(form, "From"),
                    to=_required(form, "To"),
                    body=_one(form, "Body") or "",
                    date_created=_form_time(form, "DateCreated"),
                    status=_one(form, "Status") or "sent",
                )
                return 201, {"sid": sid}, []
            if action == "call_status":
                sid = _required(form, "Sid")
                try:
                    self.set_call_status(sid, _required(form, "Status"), _form_int(form, "Duration"))
                except KeyError:
                    raise _not_found(f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{sid}.json") from None
                return 200, {"ok": True}, []
            if action == "fail_next":
                self.fail_next(
                    _required(form, "Kind"),
                    int(_required(form, "Status")),
                    int(_required(form, "Code")),
                    _one(form, "Message"),
                    int(_one(form, "Count") or 1),
                )
            elif action == "recipient_error":
                self.set_error_for_recipient(
                    _required(form, "To"),
                    int(_required(form, "Code")),
                    int(_one(form, "Status") or 400),
                    _one(form, "Message"),
                    kind=_one(form, "Kind") or "messages",
                )
            elif action == "latency":
                self.set_latency(float(_required(form, "Seconds")))
            elif action == "down":
                self.set_down((_one(form, "Down") or "true").lower() == "true")
            elif action == "reset":
                self.reset()
            else:
                raise ApiError(404, 20404, f"The requested resource {request.path} was not found")
        except ValueError as error:
            raise ApiError(400, 20001, str(error)) from None
        return 200, {"ok": True}, []


# -- HTTP ---------------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], fake: FakeTwilio) -> None:
        self.fake = fake
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, connection: socket.socket, *, open_: bool) -> None:
        with self._connections_lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        """Wake handler threads parked on idle keep-alive connections so they end with the server."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # the client hung up; nothing to answer
        logger.exception("fake Twilio API: unexpected error serving %s", client_address)


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 keeps the SDK's pooled connections open: one thread per connection, not per request.
    protocol_version = "HTTP/1.1"
    server_version = "FakeTwilio"
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, open_=True)

    def finish(self) -> None:
        self.server.track(self.connection, open_=False)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: benchmarks push thousands of requests a second through the fake."""

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def _serve(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            self._write(400, error_body(400, 20001, "Bad Content-Length"), [])
            return
        raw = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        request = Request(
            method=self.command,
            path=parts.path,
            query=parse_qs(parts.query, keep_blank_values=True),
            form=parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True),
            authorization=self.headers.get("Authorization"),
        )
        media = self.server.fake.recording(request)
        if media is not None:
            code, audio, content_type = media
            self.wfile.write(
                (f"HTTP/1.1 {code} {HTTPStatus(code).phrase}\r\nContent-Type: {content_type}\r\n"
                 f"Content-Length: {len(audio)}\r\n\r\n").encode("latin-1") + audio
            )
            return
        status, payload, headers = self.server.fake.respond(request)
        self._write(status, payload, headers)

    def _write(self, status: int, payload: Json, headers: list[tuple[str, str]]) -> None:
        body = json.dumps(payload).encode()
        lines = [
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
            "Content-Type: application/json; charset=utf-8",
            f"Content-Length: {len(body)}",
            *(f"{name}: {value}" for name, value in headers),
        ]
        if self.close_connection:
            lines.append("Connection: close")
        # One write for head and body: no Nagle/delayed-ACK stall between them.
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)


# -- helpers ------------------------------------------------------------------------------------------


def segments(body: str) -> int:
    """How many SMS segments `body` takes: GSM-7 when every character fits, else UCS-2."""
    if not body:
        return 1
    if all(char in _GSM_BASIC or char in _GSM_EXTENDED for char in body):
        septets = sum(2 if char in _GSM_EXTENDED else 1 for char in body)
        return 1 if septets <= 160 else math.ceil(septets / 153)
    units = len(body.encode("utf-16-le")) // 2
    return 1 if units <= 70 else math.ceil(units / 67)


def _now() -> datetime:
    return datetime.now(UTC)


def _rfc2822(moment: datetime) -> str:
    return format_datetime(moment.replace(microsecond=0))  # "Thu, 24 Aug 2023 05:01:45 +0000"


@functools.lru_cache(maxsize=65536)  # a list sorts and filters on these; times repeat to the second
def _parse_rfc2822(text: str) -> datetime:
    return parsedate_to_datetime(text)


def _sid(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


def _one(values: Form, name: str) -> str | None:
    found = values.get(name)
    return found[-1] if found else None


def _required(values: Form, name: str) -> str:
    value = _one(values, name)
    if not value:
        raise ValueError(f"{name} is required")
    return value


def _form_time(form: Form, name: str) -> datetime | None:
    value = _one(form, name)
    return parse_time(value)[0] if value else None


def _form_int(form: Form, name: str) -> int | None:
    value = _one(form, name)
    return int(value) if value else None


def _record(form: Form, sid: str | None, now: datetime) -> Json:
    record: Json = {name: list(values) if name in REPEATABLE else values[-1] for name, values in form.items()}
    if sid is not None:
        record["sid"] = sid
    record["created_at"] = now
    return record


def _paging(query: Form) -> tuple[int, int]:
    """PageSize and Page of a list request, checked as Twilio checks them."""
    try:
        size = int(_one(query, "PageSize") or DEFAULT_PAGE_SIZE)
        page = int(_one(query, "Page") or 0)
    except ValueError:
        raise ApiError(400, 20001, "PageSize and Page must be integers") from None
    if not 1 <= size <= MAX_PAGE_SIZE or page < 0:
        raise ApiError(400, 20001, f"PageSize must be 1..{MAX_PAGE_SIZE} and Page at least 0")
    return size, page


def parse_time(value: str) -> tuple[datetime, bool]:
    """A date filter's value as aware UTC, and whether it named a whole day rather than a moment.

    Accepted, as the API accepts them: ``2019-06-11`` (a UTC day); ISO 8601 such as ``2019-06-11T22:05:25Z``
    (what the SDK sends) or ``2019-06-11 22:05:25.000``; RFC 2822 such as ``Wed, 19 Jun 2019 22:04:00 -0000``;
    and ``06/11/2019 22:05:25 MST`` with a US zone abbreviation. A time without a zone is UTC (GMT).
    ValueError for anything else.
    """
    text = value.strip()
    if _DAY.fullmatch(text):
        day = date.fromisoformat(text)
        return datetime(day.year, day.month, day.day, tzinfo=UTC), True
    moment: datetime | None = None
    slashed = _SLASHED_TIME.fullmatch(text)
    if slashed is not None:
        month, day_of_month, year, hour, minute, second, zone = slashed.groups()
        if (zone or "UTC") not in _ZONE_HOURS:
            raise ValueError(f"unknown time zone {zone!r} in {value!r}")
        offset = timezone(timedelta(hours=_ZONE_HOURS[zone or "UTC"]))
        moment = datetime(
            int(year), int(month), int(day_of_month), int(hour), int(minute), int(second), tzinfo=offset
        )
    else:
        with contextlib.suppress(ValueError):
            moment = datetime.fromisoformat(text)
        if moment is None:
            with contextlib.suppress(ValueError, TypeError, IndexError):
                moment = parsedate_to_datetime(text)
    if moment is None:
        raise ValueError(f"{value!r} is neither a date nor a date and time")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC), False


def _time_filter(query: Form, name: str, *, before_is_inclusive: bool) -> Callable[[str | None], bool]:
    """The test that `name`, `name>` and `name<` in a list query put on one RFC 2822 field of a record.

    `name` keeps the UTC day named (or the day of the moment named); `name>` keeps that day or moment and
    later; `name<` keeps what is earlier, and with `before_is_inclusive` the day or moment itself too.
    A record without the time fails every such filter. A value that is not a time is Twilio's 400.
    """
    tests: list[Callable[[datetime], bool]] = []

    def moment(parameter: str) -> tuple[datetime, bool] | None:
        value = _one(query, parameter)
        if not value:
            return None
        try:
            return parse_time(value)
        except ValueError:
            raise ApiError(400, 20001, f"Invalid value for {parameter}: {value}") from None

    on, after, before = moment(name), moment(name + ">"), moment(name + "<")
    if on is not None:
        day = on[0].date()
        tests.append(lambda found: found.date() == day)
    if after is not None:
        since = after[0]
        tests.append(lambda found: found >= since)
    if before is not None:
        until, whole_day = before
        if before_is_inclusive and whole_day:
            tests.append(lambda found: found < until + timedelta(days=1))
        elif before_is_inclusive:
            tests.append(lambda found: found <= until)
        else:
            tests.append(lambda found: found < until)

    def check(value: str | None) -> bool:
        if not tests:
            return True
        if not value:
            return False
        found = _parse_rfc2822(value)
        return all(test(found) for test in tests)

    return check


def _newest_first(resources: list[Json], fields: tuple[str, ...]) -> list[Json]:
    """Newest first by the first of `fields` a record has (RFC 2822); among equals, the later added first."""

    def moment(resource: Json) -> datetime:
        value = next((resource[name] for name in fields if resource.get(name)), None)
        return _parse_rfc2822(value) if value else datetime.min.replace(tzinfo=UTC)

    ranked = sorted(enumerate(resources), key=lambda pair: (moment(pair[1]), pair[0]), reverse=True)
    return [resource for _, resource in ranked]


def _aware(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
    return moment.astimezone(UTC)


def _given_sid(prefixes: tuple[str, ...], sid: str | None) -> str:
    """`sid` when it has the shape of a Twilio SID with one of `prefixes`, a new SID when it is None."""
    if sid is None:
        return _sid(prefixes[0])
    if not (sid[:2] in prefixes and re.fullmatch(r"[0-9a-fA-F]{32}", sid[2:])):
        raise ValueError(f"{sid!r} is not a SID: {' or '.join(prefixes)} and 32 hexadecimal digits")
    return sid


def _move_call(resource: Json, status: str, duration: int | None, now: datetime) -> None:
    """Put a call resource in `status`, with the times and duration the API shows for it."""
    if status not in CALL_STATUSES:
        raise ValueError(f"status must be one of {CALL_STATUSES}, not {status!r}")
    if duration is not None and (status != "completed" or duration < 0):
        raise ValueError("only a completed call has a duration, and it is not negative")
    if status not in ("queued", "ringing") and resource["start_time"] is None:
        resource["start_time"] = _rfc2822(now)
    resource["status"] = status
    # The API leaves end_time and duration empty for calls that are ongoing or did not complete.
    resource["end_time"] = resource["duration"] = None
    if status == "completed":
        seconds = duration or 0
        started = _parse_rfc2822(resource["start_time"])
        resource["duration"] = str(seconds)
        resource["end_time"] = _rfc2822(started + timedelta(seconds=seconds))
    resource["date_updated"] = _rfc2822(now)


def _copy(resource: Json) -> Json:
    return {key: dict(value) if isinstance(value, dict) else value for key, value in resource.items()}


def _matches(resource: Json, query: Form, fields: Mapping[str, str]) -> bool:
    return all(
        resource.get(field_name) == _one(query, name)
        for name, field_name in fields.items()
        if _one(query, name)
    )


def _not_found(path: str) -> ApiError:
    return ApiError(404, 20404, f"The requested resource {path} was not found")


def _parse(number: str) -> phonenumbers.PhoneNumber | None:
    if not number.startswith("+"):
        return None  # the gateway sends E.164 only; anything else is a bug worth seeing in tests
    try:
        return phonenumbers.parse(number)
    except phonenumbers.NumberParseException:
        return None


@functools.lru_cache(maxsize=65536)  # validation is most of the cost of a create; benchmarks repeat numbers
def _is_phone_number(number: str) -> bool:
    parsed = _parse(number)
    return parsed is not None and phonenumbers.is_valid_number(parsed)


def _is_sender(sender: str) -> bool:
    """A phone number, a short code or an alphanumeric sender ID."""
    if _is_phone_number(sender) or re.fullmatch(r"\d{5,6}", sender):
        return True
    return bool(re.fullmatch(r"[A-Za-z0-9 ]{1,11}", sender)) and any(c.isalpha() for c in sender)


def _is_http_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def _national(number: str) -> str:
    parsed = _parse(number)
    if parsed is None:
        return number
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL)


# -- running it as a process ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.twilio_api",
        description="Serve a fake of Twilio's REST API and print its base URL on one line.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--account-sid", default=DEFAULT_ACCOUNT_SID)
    parser.add_argument("--auth-token", default=DEFAULT_AUTH_TOKEN)
    parser.add_argument("--number", action="append", default=[], help="seed an IncomingPhoneNumber (E.164)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds each API request waits")
    args = parser.parse_args(argv)

    fake = FakeTwilio(args.account_sid, args.auth_token, host=args.host, port=args.port)
    for number in args.number:
        fake.add_number(number)
    fake.set_latency(args.latency)
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    with fake:
        print(fake.base_url, flush=True)
        stopping.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
