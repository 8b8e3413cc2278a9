"""The provider adapter: one seam over the real `twilio` SDK, and a sandbox that records, not sends."""

from __future__ import annotations

import base64
import json
import logging
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit

import urllib3
from requests.utils import get_environ_proxies
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http import HttpClient
from twilio.http.response import Response
from twilio.rest import Client

from gateway.settings import Settings

log = logging.getLogger(__name__)

# Provider error codes the gateway acts on.
ERROR_OPTED_OUT = 21610  # "Attempt to send to unsubscribed recipient"
ERROR_NOT_MOBILE = 21614  # "'To' number is not a valid mobile number"
ERROR_LANDLINE = 30006  # "Landline or unreachable carrier"
NOT_TEXTABLE_CODES = frozenset({ERROR_NOT_MOBILE, ERROR_LANDLINE})

# The call statuses after which nothing about a call changes any more.
FINAL_CALL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})
# The API's largest page: a long gap to reconcile takes as few requests as it can.
LIST_PAGE_SIZE = 1000
# The most recent texts from one number to one recipient read when looking for a text in doubt: far more
# than any conversation holds in the hours a text stays in doubt.
OUTBOUND_LIST_LIMIT = 200


class ProviderError(Exception):
    """The provider refused or could not be reached. `retryable` says whether trying again may help."""

    def __init__(self, message: str, *, code: int | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status

    @property
    def retryable(self) -> bool:
        return self.status is None or self.status >= 500 or self.status == 429


@dataclass(frozen=True)
class SentMessage:
    sid: str
    status: str


@dataclass(frozen=True)
class ProviderNumber:
    sid: str
    phone_number: str
    voice_url: str | None
    sms_url: str | None
    status_callback: str | None
    voice_fallback_url: str | None = None
    sms_fallback_url: str | None = None


@dataclass(frozen=True)
class NumberUrls:
    voice_url: str
    voice_fallback_url: str
    sms_url: str
    sms_fallback_url: str
    status_callback: str


@dataclass(frozen=True)
class ProviderCall:
    """A call as the provider's Calls resource shows it. Times are aware UTC; duration is whole seconds
    and, like end_time, only known once a call has completed."""

    sid: str
    from_number: str
    to_number: str
    status: str
    direction: str
    start_time: datetime | None
    end_time: datetime | None
    duration: int | None

    @property
    def final(self) -> bool:
        return self.status in FINAL_CALL_STATUSES


@dataclass(frozen=True)
class ProviderMessage:
    """A text as the provider's Messages resource shows it; its times are aware UTC."""

    sid: str
    from_number: str
    to_number: str
    body: str
    direction: str
    date_sent: datetime | None
    num_media: int
    status: str = ""
    error_code: int | None = None
    date_created: datetime | None = None


class Provider(Protocol):
    sandbox: bool

    def send_sms(
        self, *, to: str, from_: str, body: str, media_urls: list[str], status_callback: str | None
    ) -> SentMessage: ...

    def create_call(
        self, *, to: str, from_: str, url: str, status_callback: str | None, timeout: int
    ) -> str: ...

    def list_numbers(self) -> list[ProviderNumber]: ...

    def update_number(self, sid: str, urls: NumberUrls) -> None: ...

    def list_calls(self, to: str, started_after: datetime) -> list[ProviderCall]: ...

    def list_inbound_messages(self, to: str, sent_after: datetime) -> list[ProviderMessage]: ...

    def list_outbound_messages(self, to: str, from_: str, created_after: datetime) -> list[ProviderMessage]: ...

    def fetch_call(self, sid: str) -> ProviderCall | None: ...


class TwilioProvider:
    sandbox = False

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        base_url: str,
        timeout: float = 10.0,
        *,
        list_page_size: int = LIST_PAGE_SIZE,
    ) -> None:
        self._client = Client(account_sid, auth_token, http_client=PooledHttpClient(base_url, timeout))
        # The SDK builds every REST URL from this base; tests point it at a local fake of the API.
        self._client.api.base_url = base_url
        self._list_page_size = list_page_size

    def _call(self, what: str, action: Any) -> Any:
        try:
            return action()
        except TwilioRestException as error:
            raise ProviderError(
                f"{what}: {error.msg}", code=error.code, status=error.status
            ) from None
        except TwilioException as error:
            raise _refused_page(what, error) or ProviderError(f"{what}: {error}") from None
        except (OSError, urllib3.exceptions.HTTPError) as error:  # connection refused, timeout, DNS
            raise ProviderError(f"{what}: {error}") from None

    def send_sms(
        self, *, to: str, from_: str, body: str, media_urls: list[str], status_callback: str | None
    ) -> SentMessage:
        params: dict[str, Any] = {"to": to, "from_": from_}
        if body:
            params["body"] = body
        if media_urls:
            params["media_url"] = media_urls
        if status_callback:
            params["status_callback"] = status_callback
        message = self._call("send text", lambda: self._client.messages.create(**params))
        return SentMessage(sid=message.sid, status=message.status or "queued")

    def create_call(
        self, *, to: str, from_: str, url: str, status_callback: str | None, timeout: int
    ) -> str:
        params: dict[str, Any] = {"to": to, "from_": from_, "url": url, "timeout": timeout}
        if status_callback:
            params["status_callback"] = status_callback
            params["status_callback_event"] = ["completed"]
        call = self._call("place call", lambda: self._client.calls.create(**params))
        return str(call.sid)

    def list_numbers(self) -> list[ProviderNumber]:
        numbers = self._call("list numbers", lambda: self._client.incoming_phone_numbers.list())
        return [
            ProviderNumber(
                sid=n.sid,
                phone_number=n.phone_number,
                voice_url=n.voice_url,
                sms_url=n.sms_url,
                status_callback=n.status_callback,
                voice_fallback_url=n.voice_fallback_url,
                sms_fallback_url=n.sms_fallback_url,
            )
            for n in numbers
        ]

    def update_number(self, sid: str, urls: NumberUrls) -> None:
        self._call(
            "update number",
            lambda: self._client.incoming_phone_numbers(sid).update(
                voice_url=urls.voice_url,
                voice_method="POST",
                voice_fallback_url=urls.voice_fallback_url,
                voice_fallback_method="POST",
                sms_url=urls.sms_url,
                sms_method="POST",
                sms_fallback_url=urls.sms_fallback_url,
                sms_fallback_method="POST",
                status_callback=urls.status_callback,
                status_callback_method="POST",
            ),
        )

    def list_calls(self, to: str, started_after: datetime) -> list[ProviderCall]:
        """Every call to `to` that started at or after `started_after` (aware), oldest first, all pages read.

        The API takes the time in whole seconds, so the watermark counts from the start of its second: a
        call listed once may be listed again, and callers tell calls apart by SID. What the API returns
        from before that second is left out here, so the answer does not depend on how finely it filters.
        """
        since = _whole_second(started_after, "started_after")
        calls = self._call(
            "list calls",
            lambda: self._client.calls.list(
                to=to, start_time_after=since, page_size=self._list_page_size
            ),
        )
        found = [_provider_call(call) for call in reversed(calls)]  # the API lists newest first
        return [call for call in found if call.start_time is not None and call.start_time >= since]

    def list_inbound_messages(self, to: str, sent_after: datetime) -> list[ProviderMessage]:
        """Every text received on `to` at or after `sent_after` (aware), oldest first, all pages read.

        The same whole-second watermark as `list_calls`; texts the account sent are left out.
        """
        since = _whole_second(sent_after, "sent_after")
        messages = self._call(
            "list texts",
            lambda: self._client.messages.list(
                to=to, date_sent_after=since, page_size=self._list_page_size
            ),
        )
        found = [_provider_message(message) for message in reversed(messages)]
        return [
            message
            for message in found
            if message.direction == "inbound" and message.date_sent is not None and message.date_sent >= since
        ]

    def list_outbound_messages(self, to: str, from_: str, created_after: datetime) -> list[ProviderMessage]:
        """The texts the account sent from `from_` to `to` created at or after `created_after` (aware), oldest
        first: of the OUTBOUND_LIST_LIMIT most recent.

        No time filter is sent: the API filters texts by when they were sent, and a text still queued at
        the provider has no such time. The creation time is compared here, to the whole second.
        """
        since = _whole_second(created_after, "created_after")
        messages = self._call(
            "list sent texts",
            lambda: self._client.messages.list(
                to=to, from_=from_, limit=OUTBOUND_LIST_LIMIT, page_size=min(self._list_page_size, OUTBOUND_LIST_LIMIT)
            ),
        )
        found = [_provider_message(message) for message in messages]
        return sorted(
            (
                message
                for message in found
                if message.direction.startswith("outbound")
                and message.date_created is not None
                and message.date_created >= since
            ),
            key=lambda message: (message.date_created, message.sid),
        )

    def fetch_call(self, sid: str) -> ProviderCall | None:
        """The call as the provider has it now, or None when the provider has no call with that SID."""
        try:
            call = self._call("fetch call", lambda: self._client.calls(sid).fetch())
        except ProviderError as error:
            if error.status == 404:
                return None
            raise
        return _provider_call(call)


def _whole_second(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
    # The SDK writes the time as given with a "Z" after it: it has to be UTC already.
    return moment.astimezone(UTC).replace(microsecond=0)


def _aware_or_none(value: object) -> datetime | None:
    # The SDK hands back the raw text when a date does not parse; such a time is as good as unknown.
    return value.astimezone(UTC) if isinstance(value, datetime) and value.tzinfo is not None else None


def _whole_number(value: object) -> int | None:
    try:
        return int(str(value)) if value not in (None, "") else None
    except ValueError:
        return None


def _provider_call(call: Any) -> ProviderCall:
    return ProviderCall(
        sid=str(call.sid),
        from_number=call._from or "",  # the SDK names a call's "from" `_from`
        to_number=call.to or "",
        status=str(call.status or ""),
        direction=str(call.direction or ""),
        start_time=_aware_or_none(call.start_time),
        end_time=_aware_or_none(call.end_time),
        duration=_whole_number(call.duration),
    )


def _provider_message(message: Any) -> ProviderMessage:
    return ProviderMessage(
        sid=str(message.sid),
        from_number=message.from_ or "",
        to_number=message.to or "",
        body=message.body or "",
        direction=str(message.direction or ""),
        date_sent=_aware_or_none(message.date_sent),
        num_media=_whole_number(message.num_media) or 0,
        status=str(message.status or ""),
        error_code=_whole_number(message.error_code),
        date_created=_aware_or_none(message.date_created),
    )


def _refused_page(what: str, error: TwilioException) -> ProviderError | None:
    """The provider's error for a list page the API answered with an error; None for other failures.

    The SDK raises those as TwilioException("Unable to fetch page", response), not TwilioRestException:
    the status and Twilio's code are read from the response, so a 401 is not taken for a retryable outage.
    """
    response = error.args[1] if len(error.args) > 1 else None
    if not isinstance(response, Response):
        return None
    try:
        body = json.loads(response.text)
        code, message = int(body["code"]), str(body["message"])
    except (ValueError, KeyError, TypeError):
        code, message = None, f"HTTP {response.status_code}"
    return ProviderError(f"{what}: {message}", code=code, status=int(response.status_code))


@dataclass
class SandboxProvider:
    """No credentials: texts and calls are recorded (and shown by the gateway), never sent."""

    sandbox: bool = True
    sent: list[dict[str, Any]] = field(default_factory=list)

    def send_sms(
        self, *, to: str, from_: str, body: str, media_urls: list[str], status_callback: str | None
    ) -> SentMessage:
        sid = "SM" + secrets.token_hex(16)
        self.sent.append({"sid": sid, "to": to, "from": from_, "body": body})
        log.info("sandbox: text %s recorded, not sent", sid)
        return SentMessage(sid=sid, status="sandbox")

    def create_call(
        self, *, to: str, from_: str, url: str, status_callback: str | None, timeout: int
    ) -> str:
        sid = "CA" + secrets.token_hex(16)
        self.sent.append({"sid": sid, "to": to, "from": from_, "url": url})
        log.info("sandbox: call %s recorded, not placed", sid)
        return sid

    def list_numbers(self) -> list[ProviderNumber]:
        return []

    def update_number(self, sid: str, urls: NumberUrls) -> None:
        raise ProviderError("sandbox mode: set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN to sync numbers")

    def list_calls(self, to: str, started_after: datetime) -> list[ProviderCall]:
        return []  # nothing reaches a sandbox but the simulator's webhooks: there is nothing to reconcile

    def list_inbound_messages(self, to: str, sent_after: datetime) -> list[ProviderMessage]:
        return []

    def list_outbound_messages(self, to: str, from_: str, created_after: datetime) -> list[ProviderMessage]:
        return []

    def fetch_call(self, sid: str) -> ProviderCall | None:
        return None


def make_provider(settings: Settings) -> Provider:
    if settings.twilio_account_sid and settings.twilio_auth_token:
        return TwilioProvider(
            settings.twilio_account_sid, settings.twilio_auth_token, settings.twilio_api_base_url
        )
    return SandboxProvider()


# --- the SDK's HTTP transport ---
# The `twilio` SDK's HTTP transport, on urllib3's connection pools.
#
# The SDK takes any `twilio.http.HttpClient`; its default one goes through `requests`, whose session
# prepares, merges settings and runs hooks for every call: more than the rest of a text's send costs the
# worker once the database work is batched. This one encodes the request the way the default does (query
# and form body with repeated keys for lists, JSON where the SDK asks for it, HTTP Basic from the SDK's
# credentials), sends it on a pooled keep-alive connection with the same timeout and no redirects, and
# gives the SDK back the same `Response`. The environment's proxy settings (HTTPS_PROXY, NO_PROXY) are read
# once, for the API's base URL.

http_log = logging.getLogger("twilio.http_client")

JSON_TYPES = frozenset({"application/json", "application/scim+json"})
# Provider calls in flight at once from one process: a batch of texts sends sixteen at a time
# (gateway.messaging.outbound.PROVIDER_CONCURRENCY), and a job's own calls go alongside.
POOL_SIZE = 20


class PooledHttpClient(HttpClient):  # type: ignore[misc]  # the SDK is untyped here
    def __init__(self, base_url: str, timeout: float) -> None:
        super().__init__(logger=log, is_async=False, timeout=timeout)
        proxy = get_environ_proxies(base_url).get(urlsplit(base_url).scheme)
        self._pool: urllib3.PoolManager = (
            urllib3.ProxyManager(proxy, maxsize=POOL_SIZE, block=False)
            if proxy
            else urllib3.PoolManager(maxsize=POOL_SIZE, block=False)
        )

    def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        if timeout is None:
            timeout = self.timeout
        elif timeout <= 0:
            raise ValueError(timeout)
        sent: dict[str, str] = dict(headers or {})
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
            sent["Authorization"] = f"Basic {token}"
        if params:
            url = f"{url}{'&' if '?' in url else '?'}{urlencode(params, doseq=True)}"
        body: str | None = None
        if sent.get("Content-Type") in JSON_TYPES:
            body = json.dumps(data) if data is not None else None
        elif data:
            body = urlencode(_form(data), doseq=True)
            sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
        if http_log.isEnabledFor(logging.DEBUG):
            http_log.debug("%s %s", method.upper(), url)
        answer = self._pool.request(
            method.upper(),
            url,
            body=body,
            headers=sent,
            timeout=urllib3.Timeout(connect=timeout, read=timeout),
            redirect=allow_redirects,
            retries=False,
        )
        response = Response(answer.status, answer.data.decode("utf-8"), answer.headers)
        self._test_only_last_response = response
        return response


def _form(data: dict[str, object]) -> dict[str, Any]:
    # As requests encodes a form: no None values, lists as repeated keys.
    return {key: value for key, value in data.items() if value is not None}
