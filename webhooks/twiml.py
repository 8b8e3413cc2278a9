"""TwiML answers for the voice flow, built with the SDK's VoiceResponse."""

from __future__ import annotations

import re
from typing import Protocol
from urllib.parse import urlencode
from xml.sax.saxutils import escape, quoteattr

from flask import Response
from twilio.twiml.voice_response import VoiceResponse

from gateway.calls.routes import Route
from tracked_numbers.services import (
    DEFAULT_CLOSED_PROMPT,
    DEFAULT_RECORDING_DISCLOSURE,
    DEFAULT_VOICEMAIL_PROMPT,
    DEFAULT_WHISPER,
    agent_by_key,
)

VOICE = "Polly.Joanna"
SORRY_UNKNOWN = (
    "Sorry, this number is not taking calls right now. Please call the dealership's main number. Goodbye."
)


def respond(twiml: VoiceResponse | str) -> Response:
    return Response(str(twiml), status=200, mimetype="text/xml")


_URL_SAFE = re.compile(r"[A-Za-z0-9._-]*")


def url(base: str, path: str, **params: str | int) -> str:
    if not params:
        return f"{base}{path}"
    values = [str(v) for v in params.values()]
    if all(_URL_SAFE.fullmatch(v) for v in values):
        # SIDs, agent keys and step numbers need no escaping; urlencode is slow on the hot path.
        return f"{base}{path}?" + "&".join(f"{k}={v}" for k, v in zip(params, values, strict=True))
    return f"{base}{path}?" + urlencode(params)


class RingView(Protocol):
    """A ringing call as the TwiML sees it (a Call row or gateway.calls.hotpath.RingState)."""

    @property
    def sid(self) -> str: ...
    @property
    def ringing_agents(self) -> list[list[str]]: ...
    @property
    def dial_step(self) -> int: ...
    @property
    def after_hours(self) -> bool: ...
    @property
    def voicemail_started(self) -> bool: ...


def for_call(route: Route, call: RingView, base: str) -> str:
    """The TwiML for where the call stands: ring the current step, or take a voicemail.

    Written as a string with escaping, not built with VoiceResponse: this answers every incoming call,
    and the element tree costs more than the rest of the request. Tests read it back with an XML parser.
    """
    steps = call.ringing_agents or []
    if call.voicemail_started or call.dial_step >= len(steps):
        return voicemail(route, call, base)
    return dial_step(route, call, base)


def _attr(value: str | int) -> str:
    return quoteattr(str(value))


def dial_step(route: Route, call: RingView, base: str) -> str:
    parts = ['<?xml version="1.0" encoding="UTF-8"?><Response>']
    greeting = route.prompts.get("greeting")
    if greeting and call.dial_step == 0:
        parts.append(f"<Say voice={_attr(VOICE)}>{escape(route.prompt('greeting', ''))}</Say>")
    if route.record and call.dial_step == 0:
        # Told before any agent is bridged: some states require every party's consent to a recording.
        parts.append(f"<Say voice={_attr(VOICE)}>{escape(disclosure(route))}</Say>")
    action = url(base, "/webhooks/voice/dial-complete", call=call.sid, step=call.dial_step)
    record = ' record="record-from-answer-dual"' if route.record else ""
    parts.append(
        f'<Dial action={_attr(action)} answerOnBridge="true" method="POST"{record} '
        f"timeout={_attr(route.ring_timeout)}>"
    )
    leg = "/webhooks/voice/screen" if route.screen else "/webhooks/voice/connect"
    for key in call.ringing_agents[call.dial_step]:
        agent = agent_by_key(route, key)
        if agent is None:
            continue
        target = url(base, leg, call=call.sid, agent=agent.key, step=call.dial_step)
        parts.append(f'<Number method="POST" url={_attr(target)}>{escape(agent.phone)}</Number>')
    parts.append("</Dial></Response>")
    return "".join(parts)


def disclosure(route: Route) -> str:
    """The recording disclosure: the store's wording, else the default."""
    return (route.recording_disclosure or "").strip() or DEFAULT_RECORDING_DISCLOSURE


def voicemail(route: Route, call: RingView, base: str) -> str:
    prompt = (
        route.prompt("closed", DEFAULT_CLOSED_PROMPT)
        if call.after_hours
        else route.prompt("voicemail", DEFAULT_VOICEMAIL_PROMPT)
    )
    action = url(base, "/webhooks/voice/voicemail", call=call.sid)
    transcribed = url(base, "/webhooks/voicemail/transcription", call=call.sid)
    recorded = url(base, "/webhooks/voicemail/recording", call=call.sid)
    return (
        '<?xml version="1.0" encoding="UTF-8"?><Response>'
        f"<Say voice={_attr(VOICE)}>{escape(prompt)}</Say>"
        f'<Record action={_attr(action)} maxLength="180" method="POST" playBeep="true" '
        f'recordingStatusCallback={_attr(recorded)} recordingStatusCallbackEvent="completed absent failed" '
        f'recordingStatusCallbackMethod="POST" timeout="5" transcribe="true" '
        f"transcribeCallback={_attr(transcribed)} />"
        f"<Say voice={_attr(VOICE)}>We did not get a message. We will call you back. Goodbye.</Say>"
        "<Hangup /></Response>"
    )


def screen(route: Route, call_sid: str, agent_key: str, step: int, base: str) -> VoiceResponse:
    """What the agent hears when the leg is answered: press 1, so a cell voicemail never counts."""
    response = VoiceResponse()
    gather = response.gather(
        num_digits=1,
        timeout=8,
        action=url(base, "/webhooks/voice/screen-result", call=call_sid, agent=agent_key, step=step),
        method="POST",
    )
    gather.say(route.prompt("whisper", DEFAULT_WHISPER), voice=VOICE)
    response.hangup()
    return response


def connected() -> VoiceResponse:
    """An empty answer on the agent's leg bridges the two."""
    return VoiceResponse()


def hangup(message: str | None = None) -> VoiceResponse:
    response = VoiceResponse()
    if message:
        response.say(message, voice=VOICE)
    response.hangup()
    return response


def forward(main_line: str) -> VoiceResponse:
    """The failsafe: a caller never hits a dead line."""
    response = VoiceResponse()
    response.dial(main_line, answer_on_bridge=True)
    return response


def unknown_number() -> VoiceResponse:
    return hangup(SORRY_UNKNOWN)
