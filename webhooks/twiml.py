"""TwiML answers for the voice flow, built with the SDK's VoiceResponse."""

from __future__ import annotations

from urllib.parse import urlencode

from flask import Response
from twilio.twiml.voice_response import Dial, VoiceResponse

from gateway.models import Call
from tracked_numbers.services import (
    DEFAULT_CLOSED_PROMPT,
    DEFAULT_VOICEMAIL_PROMPT,
    DEFAULT_WHISPER,
    Route,
    agent_by_key,
)

VOICE = "Polly.Joanna"
SORRY_UNKNOWN = (
    "Sorry, this number is not taking calls right now. Please call the dealership's main number. Goodbye."
)


def respond(twiml: VoiceResponse | str) -> Response:
    return Response(str(twiml), status=200, mimetype="text/xml")


def url(base: str, path: str, **params: str | int) -> str:
    return f"{base}{path}" + ("?" + urlencode(params) if params else "")


def for_call(route: Route, call: Call, base: str) -> VoiceResponse:
    """The TwiML for where the call stands: ring the current step, or take a voicemail."""
    steps: list[list[str]] = call.ringing_agents or []
    if call.voicemail_started or call.dial_step >= len(steps):
        return voicemail(route, call, base)
    return dial_step(route, call, base)


def dial_step(route: Route, call: Call, base: str) -> VoiceResponse:
    response = VoiceResponse()
    greeting = route.prompts.get("greeting")
    if greeting and call.dial_step == 0:
        response.say(route.prompt("greeting", ""), voice=VOICE)
    dial = Dial(
        action=url(base, "/webhooks/voice/dial-complete", call=call.sid, step=call.dial_step),
        method="POST",
        timeout=route.ring_timeout,
        answer_on_bridge=True,
    )
    if route.record:
        dial.record = "record-from-answer-dual"
    for key in call.ringing_agents[call.dial_step]:
        agent = agent_by_key(route, key)
        if agent is None:
            continue
        leg = "/webhooks/voice/screen" if route.screen else "/webhooks/voice/connect"
        dial.number(
            agent.phone,
            url=url(base, leg, call=call.sid, agent=agent.key, step=call.dial_step),
            method="POST",
        )
    response.append(dial)
    return response


def voicemail(route: Route, call: Call, base: str) -> VoiceResponse:
    response = VoiceResponse()
    prompt = (
        route.prompt("closed", DEFAULT_CLOSED_PROMPT)
        if call.after_hours
        else route.prompt("voicemail", DEFAULT_VOICEMAIL_PROMPT)
    )
    response.say(prompt, voice=VOICE)
    response.record(
        action=url(base, "/webhooks/voice/voicemail", call=call.sid),
        method="POST",
        max_length=180,
        timeout=5,
        play_beep=True,
        transcribe=True,
        transcribe_callback=url(base, "/webhooks/voicemail/transcription", call=call.sid),
        recording_status_callback=url(base, "/webhooks/voicemail/recording", call=call.sid),
        recording_status_callback_event="completed absent failed",
        recording_status_callback_method="POST",
    )
    response.say("We did not get a message. We will call you back. Goodbye.", voice=VOICE)
    response.hangup()
    return response


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
