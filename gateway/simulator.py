"""Plays the provider's side of a call or a text against a gateway: signed webhooks, TwiML followed.

Used by `gateway simulate` against a running gateway and by the tests against the app, so anyone can
watch a missed call become a lead without a Twilio account.
"""

from __future__ import annotations

import secrets
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol
from xml.etree import ElementTree

from twilio.request_validator import RequestValidator

from gateway.settings import Settings

ACCOUNT_SID = "AC" + "0" * 32  # sandbox mode has no account; a gateway with one refuses any other
MAX_STEPS = 20
# Written by `gateway serve` into the instance folder while it runs: the URL it listens on, then the
# PUBLIC_BASE_URL it gave the web server (what signatures are checked against).
SERVE_URL_FILE = "serve-url"


class SimulationError(RuntimeError):
    pass


class Poster(Protocol):
    base_url: str
    account_sid: str

    def post(self, url: str, params: dict[str, str]) -> tuple[int, str]: ...


def sign(token: str, url: str, params: dict[str, str]) -> str:
    return str(RequestValidator(token).compute_signature(url, params))


class HttpPoster:
    """Signed form POSTs over HTTP, as the provider sends them.

    `signed_base`: the base URL the gateway checks signatures against (its PUBLIC_BASE_URL) when that is
    not the address posted to, as when the provider reaches it through a proxy or tunnel."""

    def __init__(
        self,
        base_url: str,
        token: str,
        timeout: float = 10.0,
        *,
        account_sid: str | None = None,
        signed_base: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.account_sid = account_sid or ACCOUNT_SID
        self.signed_base = (signed_base or base_url).rstrip("/")

    def post(self, url: str, params: dict[str, str]) -> tuple[int, str]:
        if url.startswith(self.signed_base + "/"):
            url = url[len(self.signed_base):]
        if url.startswith("/"):
            signed, url = self.signed_base + url, self.base_url + url
        else:
            signed = url
        if not url.startswith(("http://", "https://")):
            raise SimulationError(f"not an http URL: {url}")
        data = urllib.parse.urlencode(params).encode()
        request = urllib.request.Request(  # noqa: S310 - http(s) only, checked above
            url,
            data=data,
            headers={
                "X-Twilio-Signature": sign(self.token, signed, params),
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as error:
            return int(error.code), error.read().decode(errors="replace")
        except OSError as error:
            raise SimulationError(f"could not reach the gateway at {url}: {error}") from None


def write_serve_url(instance_dir: Path, url: str, public_base_url: str) -> Path:
    path = instance_dir / SERVE_URL_FILE
    instance_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{url}\n{public_base_url}\n")
    return path


def poster_for(settings: Settings, url: str | None) -> HttpPoster:
    """Where `gateway simulate` posts: --url; else the gateway `gateway serve` runs from this instance
    folder (its serve-url file); else PUBLIC_BASE_URL. Signed with the account the gateway expects."""
    account = None if settings.sandbox else settings.twilio_account_sid
    if url:
        return HttpPoster(url, settings.webhook_auth_token, account_sid=account)
    try:
        lines = (settings.instance_dir / SERVE_URL_FILE).read_text().split()
    except OSError:
        lines = []
    if lines and lines[0].startswith(("http://", "https://")):
        signed = lines[1] if len(lines) > 1 else lines[0]
        return HttpPoster(lines[0], settings.webhook_auth_token, account_sid=account, signed_base=signed)
    return HttpPoster(settings.public_base_url, settings.webhook_auth_token, account_sid=account)


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def _parse(body: str) -> ElementTree.Element:
    try:
        root = ElementTree.fromstring(body)  # noqa: S314 - our own gateway's TwiML
    except ElementTree.ParseError as error:
        raise SimulationError(f"the gateway did not answer TwiML: {body[:200]!r}") from error
    if root.tag != "Response":
        raise SimulationError(f"the gateway answered <{root.tag}>, not <Response>")
    return root


def play_call(
    poster: Poster,
    *,
    to: str,
    caller: str,
    outcome: str,
    transcript: str = "",
    call_sid: str | None = None,
) -> Iterator[str]:
    """Yield one line per step. Outcomes: no-answer, answer, voicemail, voicemail-pickup, busy, hangup."""
    sid = call_sid or new_sid("CA")
    base = {
        "AccountSid": poster.account_sid,
        "CallSid": sid,
        "From": caller,
        "Caller": caller,
        "To": to,
        "Called": to,
        "Direction": "inbound",
        "ApiVersion": "2010-04-01",
    }
    status, body = poster.post("/webhooks/voice/incoming", {**base, "CallStatus": "ringing"})
    yield f"call {sid} from {caller} to {to}: gateway answered {status}"
    if status != 200:
        raise SimulationError(f"incoming call refused with {status}: {body[:200]}")
    duration = 0
    for _ in range(MAX_STEPS):
        root = _parse(body)
        next_body: str | None = None
        for verb in root:
            if verb.tag in {"Say", "Play", "Pause"}:
                continue
            if verb.tag == "Hangup":
                break
            if verb.tag == "Dial":
                numbers = verb.findall("Number")
                if not numbers:
                    yield f"forwarded to {(verb.text or '').strip()} (failsafe)"
                    duration += 30
                    break
                yield "ringing " + ", ".join((n.text or "").strip() for n in numbers)
                dial_status, dial_seconds, line = _agent_legs(poster, base, numbers, outcome)
                yield line
                if outcome == "hangup":
                    duration += 10
                    yield "caller hung up while it rang"
                    poster.post(
                        verb.get("action", ""),
                        {**base, "CallStatus": "completed", "DialCallStatus": "canceled"},
                    )
                    break
                duration += dial_seconds or int(verb.get("timeout", "20"))
                code, next_body = poster.post(
                    verb.get("action", ""),
                    {
                        **base,
                        "CallStatus": "in-progress",
                        "DialCallStatus": dial_status,
                        "DialCallSid": new_sid("CA"),
                        "DialCallDuration": str(dial_seconds),
                    },
                )
                if code != 200:
                    raise SimulationError(f"Dial action answered {code}: {next_body[:200]}")
                break
            if verb.tag == "Record":
                if outcome != "voicemail":
                    yield "caller hung up at the voicemail prompt without a message"
                    duration += 8
                    break
                yield from _leave_voicemail(poster, base, verb, transcript)
                duration += 20
                break
        if next_body is None:
            break
        body = next_body
    code, _ = poster.post(
        "/webhooks/voice/status", {**base, "CallStatus": "completed", "CallDuration": str(duration)}
    )
    yield f"call ended after {duration}s: status callback answered {code}"


def _agent_legs(
    poster: Poster, base: dict[str, str], numbers: list[ElementTree.Element], outcome: str
) -> tuple[str, int, str]:
    """What happens on the agents' phones; returns (DialCallStatus, seconds, description)."""
    if outcome in {"no-answer", "voicemail", "hangup"}:
        return "no-answer", 0, "nobody picked up"
    if outcome == "busy":
        return "busy", 0, "the agents' lines were busy"
    number = numbers[0]
    leg = {
        **base,
        "CallSid": new_sid("CA"),
        "ParentCallSid": base["CallSid"],
        "To": (number.text or "").strip(),
        "Called": (number.text or "").strip(),
        "Direction": "outbound-dial",
        "CallStatus": "in-progress",
    }
    code, body = poster.post(number.get("url", ""), leg)
    root = _parse(body) if code == 200 else ElementTree.Element("Response")
    gather = root.find("Gather")
    if outcome == "voicemail-pickup":
        # The agent's cell voicemail picks up: it hears the prompt and presses nothing.
        return "completed", 20, f"{leg['To']}'s voicemail picked up and pressed nothing"
    if gather is not None:
        code, body = poster.post(gather.get("action", ""), {**leg, "Digits": "1"})
        if code != 200 or _parse(body).find("Hangup") is not None:
            return "completed", 5, f"{leg['To']} pressed 1 but was not connected"
    return "completed", 60, f"{leg['To']} answered and talked for 60s"


def _leave_voicemail(
    poster: Poster, base: dict[str, str], record: ElementTree.Element, transcript: str
) -> Iterator[str]:
    recording_sid = new_sid("RE")
    recording_url = f"https://api.twilio.com/2010-04-01/Accounts/{poster.account_sid}/Recordings/{recording_sid}"
    recorded = {
        **base,
        "CallStatus": "completed",
        "RecordingSid": recording_sid,
        "RecordingUrl": recording_url,
        "RecordingDuration": "14",
        "Digits": "hangup",
    }
    code, _ = poster.post(record.get("action", ""), recorded)
    yield f"caller left a 14s voicemail: Record action answered {code}"
    callback = record.get("recordingStatusCallback")
    if callback:
        code, _ = poster.post(
            callback,
            {
                **base,
                "RecordingSid": recording_sid,
                "RecordingUrl": recording_url,
                "RecordingStatus": "completed",
                "RecordingDuration": "14",
                "RecordingChannels": "1",
                "RecordingSource": "RecordVerb",
            },
        )
        yield f"recording status callback answered {code}"
    transcribe = record.get("transcribeCallback")
    if transcribe and transcript:
        code, _ = poster.post(
            transcribe,
            {
                **base,
                "RecordingSid": recording_sid,
                "RecordingUrl": recording_url,
                "TranscriptionSid": new_sid("TR"),
                "TranscriptionStatus": "completed",
                "TranscriptionText": transcript,
            },
        )
        yield f"transcription callback answered {code}"


def play_text(poster: Poster, *, to: str, sender: str, body: str, media: list[str] | None = None) -> Iterator[str]:
    """An inbound text, as the provider posts it to the SMS URL."""
    sid = new_sid("SM")
    params = {
        "AccountSid": poster.account_sid,
        "MessageSid": sid,
        "SmsSid": sid,
        "SmsMessageSid": sid,
        "From": sender,
        "To": to,
        "Body": body,
        "NumMedia": str(len(media or [])),
        "NumSegments": "1",
        "ApiVersion": "2010-04-01",
    }
    for index, url in enumerate(media or []):
        params[f"MediaUrl{index}"] = url
        params[f"MediaContentType{index}"] = "image/jpeg"
    code, answer = poster.post("/webhooks/sms/incoming", params)
    yield f"text {sid} from {sender} to {to}: gateway answered {code}"
    if answer.strip():
        yield answer.strip()
