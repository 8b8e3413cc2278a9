"""The voicemail's recording over the API: streamed to authorised API users through the gateway (the
provider's URL never leaves it). The provider's callbacks are webhooks/voicemail.py."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from urllib.parse import urlsplit

import requests
from flask import Blueprint, Response, g
from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway import runtime, web
from gateway.api import authenticate, require_store
from gateway.dashboard.auth import current_viewer
from gateway.dashboard.pages import error_page
from gateway.dashboard.queries import can_see
from gateway.dashboard.timeline import Entry
from gateway.models import Call, Lead
from gateway.settings import Settings
from gateway.web import ApiError
from voicemail import services
from voicemail.models import Voicemail

log = logging.getLogger(__name__)

api_blueprint = Blueprint("voicemail_api", __name__, url_prefix="/api/v1")
page_blueprint = Blueprint("voicemail_pages", __name__)
_RECORDING_PATH = re.compile(r"/2010-04-01/Accounts/(AC[0-9a-zA-Z]{32})/Recordings/(RE[0-9a-zA-Z]{32})")
CHUNK = 64 * 1024


def provider_media_url(settings: Settings, recording_url: str) -> str:
    """Where to fetch the MP3: our configured provider API and account, never a host from a payload."""
    path = urlsplit(recording_url).path
    for suffix in (".mp3", ".wav", ".json"):
        path = path.removesuffix(suffix)
    match = _RECORDING_PATH.fullmatch(path)
    if match is None or match.group(1) != settings.twilio_account_sid:
        raise ValueError("not a recording of this account")
    return f"{settings.twilio_api_base_url}{path}.mp3"


class RecordingUnavailable(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def stream_recording(session: Session, call: Call) -> Response:
    """The call's voicemail as MP3, streamed from the provider through the gateway (whoever asks has been
    authorised by the caller). RecordingUnavailable when there is none or the provider cannot give it."""
    voicemail = services.voicemail_of(session, call.id)
    if voicemail is None or voicemail.recording_url is None or not services.playable(voicemail):
        raise RecordingUnavailable(404, "no_recording", "This call has no voicemail recording.")
    settings = runtime.current().settings
    if settings.sandbox or not settings.twilio_auth_token or not settings.twilio_account_sid:
        raise RecordingUnavailable(503, "provider_unavailable", "Recordings need the provider's credentials.")
    try:
        url = provider_media_url(settings, voicemail.recording_url)
    except ValueError:
        log.error("call %s has a recording URL outside the account; not fetched", call.sid)
        raise RecordingUnavailable(404, "no_recording", "This call has no voicemail recording.") from None
    call_id = call.id
    session.close()  # nothing more to read; do not hold a connection while the audio streams
    try:
        upstream = requests.get(
            url, auth=(settings.twilio_account_sid, settings.twilio_auth_token), stream=True, timeout=(3.05, 30)
        )
    except requests.RequestException as error:
        log.warning("recording of call %s could not be fetched: %s", call_id, error)
        raise RecordingUnavailable(
            502, "provider_unreachable", "The provider could not be reached; try again."
        ) from None
    if upstream.status_code != 200:
        upstream.close()
        if upstream.status_code == 404:
            raise RecordingUnavailable(404, "no_recording", "The provider no longer has this recording.")
        raise RecordingUnavailable(
            502, "provider_error", f"The provider answered {upstream.status_code}; try again."
        )

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


@api_blueprint.get("/calls/<int:call_id>/recording")
def call_recording(call_id: int) -> Response:
    """The voicemail of a call as MP3, for an API key that may see the call's store."""
    authenticate()
    session = web.session()
    call = session.get(Call, call_id)
    if call is None:
        raise ApiError(404, "not_found", f"No call {call_id}.")
    require_store(call.store_id)
    try:
        return stream_recording(session, call)
    except RecordingUnavailable as error:
        raise ApiError(error.status, error.code, error.message) from None


@page_blueprint.get("/calls/<int:call_id>/recording")
def page_recording(call_id: int) -> Response:
    """The same recording for a person signed in to the workspace who may see the call's lead."""
    g.workspace_page = True
    viewer = current_viewer()
    if viewer is None:
        return error_page(403, "Sign in first", "Sign in to the workspace to play recordings.")
    session = web.session()
    call = session.get(Call, call_id) if 0 < call_id <= 2**31 - 1 else None
    lead = session.get(Lead, call.lead_id) if call is not None and call.lead_id is not None else None
    if call is None or lead is None or not can_see(viewer, lead):
        return error_page(404, "Not found", "There is no such recording, or it belongs to another store.")
    try:
        return stream_recording(session, call)
    except RecordingUnavailable as error:
        return error_page(error.status, "No recording", error.message)


def timeline_entries(session: Session, lead: Lead) -> list[Entry]:
    """The lead's voicemails for its timeline: a player (through the page route above) and the transcript."""
    entries: list[Entry] = []
    for voicemail in session.scalars(select(Voicemail).where(Voicemail.lead_id == lead.id).order_by(Voicemail.id)):
        details = []
        if voicemail.duration:
            details.append(f"Length {voicemail.duration} s")
        if voicemail.transcription_status == "failed":
            details.append("No transcript: the provider could not transcribe it.")
        elif voicemail.transcript is None:
            details.append("Transcript not in yet.")
        playable = services.playable(voicemail) and voicemail.recording_url is not None
        entries.append(
            Entry(
                voicemail.created_at, "voicemail", "Voicemail",
                body=f"“{voicemail.transcript}”" if voicemail.transcript else "",
                details=details,
                audio_url=f"/calls/{voicemail.call_id}/recording" if playable else None,
            )
        )
    return entries
