"""Voicemail over HTTP: the provider's recording and transcription callbacks, and the recording itself,
streamed to authorised API users through the gateway (the provider's URL never leaves it)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from urllib.parse import urlsplit

import requests
from flask import Blueprint, Response, request

from gateway import runtime, web
from gateway.api import authenticate, require_store
from gateway.models import Call
from gateway.settings import Settings
from gateway.web import ApiError
from voicemail import services
from webhooks import payloads
from webhooks.signature import provider_webhook
from webhooks.voice import logged_call

log = logging.getLogger(__name__)

blueprint = Blueprint("voicemail", __name__, url_prefix="/webhooks/voicemail")
api_blueprint = Blueprint("voicemail_api", __name__, url_prefix="/api/v1")

_RECORDING_PATH = re.compile(r"/2010-04-01/Accounts/(AC[0-9a-zA-Z]{32})/Recordings/(RE[0-9a-zA-Z]{32})")
CHUNK = 64 * 1024


def _bad_request(error: ValueError) -> Response:
    return web.json_error(400, "bad_request", str(error))


def _call_sid(form: Mapping[str, str]) -> str:
    """The call the callback is about: `call=` in our callback URL, else the provider's CallSid."""
    if request.args.get("call"):
        return payloads.sid(request.args, "call", "CA")
    return payloads.sid(form, "CallSid", "CA")


def _optional_sid(form: Mapping[str, str], name: str, prefix: str) -> str | None:
    return payloads.sid(form, name, prefix) if (form.get(name) or "").strip() else None


def _whole_number(form: Mapping[str, str], name: str) -> int | None:
    raw = (form.get(name) or "").strip()
    return int(raw) if raw.isdigit() and len(raw) < 9 else None


def recording_callback(form: Mapping[str, str]) -> services.RecordingCallback:
    status = (form.get("RecordingStatus") or "").strip()
    if status not in services.RECORDING_STATUSES:
        raise ValueError("RecordingStatus must be completed, absent or failed")
    url = (form.get("RecordingUrl") or "").strip() or None
    if url is not None and (len(url) > 500 or not url.startswith(("https://", "http://"))):
        raise ValueError("RecordingUrl is not a URL")
    return services.RecordingCallback(
        call_sid=_call_sid(form),
        status=status,
        recording_sid=_optional_sid(form, "RecordingSid", "RE"),
        recording_url=url,
        duration=_whole_number(form, "RecordingDuration"),
        error_code=_whole_number(form, "ErrorCode"),
    )


def transcription_callback(form: Mapping[str, str]) -> services.TranscriptionCallback:
    status = (form.get("TranscriptionStatus") or "").strip()
    if status not in services.TRANSCRIPTION_STATUSES:
        raise ValueError("TranscriptionStatus must be completed or failed")
    url = (form.get("RecordingUrl") or "").strip() or None
    if url is not None and (len(url) > 500 or not url.startswith(("https://", "http://"))):
        url = None
    return services.TranscriptionCallback(
        call_sid=_call_sid(form),
        status=status,
        transcription_sid=_optional_sid(form, "TranscriptionSid", "TR"),
        text=(form.get("TranscriptionText") or "")[:5000],
        recording_sid=_optional_sid(form, "RecordingSid", "RE"),
        recording_url=url,
    )


@blueprint.post("/recording")
@provider_webhook
def recording_status() -> Response:
    try:
        callback = recording_callback(request.form)
    except ValueError as error:
        return _bad_request(error)
    session = web.session()
    logged_call(session, callback.call_sid)
    services.record_recording(session, callback, runtime.current().clock.now())
    session.commit()
    return Response(status=204)


@blueprint.post("/transcription")
@provider_webhook
def transcription() -> Response:
    try:
        callback = transcription_callback(request.form)
    except ValueError as error:
        return _bad_request(error)
    session = web.session()
    logged_call(session, callback.call_sid)
    services.record_transcription(session, callback, runtime.current().clock.now())
    session.commit()
    return Response(status=204)


def provider_media_url(settings: Settings, recording_url: str) -> str:
    """Where to fetch the MP3: our configured provider API and account, never a host from a payload."""
    path = urlsplit(recording_url).path
    for suffix in (".mp3", ".wav", ".json"):
        path = path.removesuffix(suffix)
    match = _RECORDING_PATH.fullmatch(path)
    if match is None or match.group(1) != settings.twilio_account_sid:
        raise ValueError("not a recording of this account")
    return f"{settings.twilio_api_base_url}{path}.mp3"


@api_blueprint.get("/calls/<int:call_id>/recording")
def call_recording(call_id: int) -> Response:
    """The voicemail of a call as MP3, for an API key that may see the call's store."""
    authenticate()
    session = web.session()
    call = session.get(Call, call_id)
    if call is None:
        raise ApiError(404, "not_found", f"No call {call_id}.")
    require_store(call.store_id)
    voicemail = services.voicemail_of(session, call.id)
    if voicemail is None or voicemail.recording_url is None or not services.playable(voicemail):
        raise ApiError(404, "no_recording", "This call has no voicemail recording.")
    settings = runtime.current().settings
    if settings.sandbox or not settings.twilio_auth_token or not settings.twilio_account_sid:
        raise ApiError(503, "provider_unavailable", "Recordings need the provider's credentials.")
    try:
        url = provider_media_url(settings, voicemail.recording_url)
    except ValueError:
        log.error("call %s has a recording URL outside the account; not fetched", call.sid)
        raise ApiError(404, "no_recording", "This call has no voicemail recording.") from None
    session.close()  # nothing more to read; do not hold a connection while the audio streams
    try:
        upstream = requests.get(
            url, auth=(settings.twilio_account_sid, settings.twilio_auth_token), stream=True, timeout=(3.05, 30)
        )
    except requests.RequestException as error:
        log.warning("recording of call %s could not be fetched: %s", call_id, error)
        raise ApiError(502, "provider_unreachable", "The provider could not be reached; try again.") from None
    if upstream.status_code != 200:
        upstream.close()
        if upstream.status_code == 404:
            raise ApiError(404, "no_recording", "The provider no longer has this recording.")
        raise ApiError(502, "provider_error", f"The provider answered {upstream.status_code}; try again.")

    def audio() -> Iterator[bytes]:
        try:
            yield from upstream.iter_content(CHUNK)
        finally:
            upstream.close()

    response = Response(audio(), mimetype="audio/mpeg")
    response.headers["Cache-Control"] = "private, no-store"
    response.headers["Content-Disposition"] = f'inline; filename="voicemail-{call_id}.mp3"'
    length = upstream.headers.get("Content-Length")
    if length and length.isdigit():
        response.headers["Content-Length"] = length
    return response
