"""The voicemail's recording over the API: streamed to authorised API users through the gateway (the
provider's URL never leaves it). The provider's callbacks are webhooks/voicemail.py."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from urllib.parse import urlsplit

import requests
from flask import Blueprint, Response

from gateway import runtime, web
from gateway.api import authenticate, require_store
from gateway.models import Call
from gateway.settings import Settings
from gateway.web import ApiError
from voicemail import services

log = logging.getLogger(__name__)

api_blueprint = Blueprint("voicemail_api", __name__, url_prefix="/api/v1")
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
