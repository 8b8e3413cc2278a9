"""Voicemail webhooks: the provider's recording and transcription callbacks, in any order."""

from __future__ import annotations

from collections.abc import Mapping

from flask import Blueprint, Response, request

from gateway import runtime, web
from gateway.calls.services import logged_call
from voicemail import services
from webhooks import payloads
from webhooks.signature import provider_webhook

blueprint = Blueprint("voicemail", __name__, url_prefix="/webhooks/voicemail")


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
