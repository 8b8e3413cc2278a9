"""Helpers for the workspace tests: sign in by code (read from the provider fake) or by key, the CSRF
token of a page, a voicemail that really plays."""

from __future__ import annotations

import re
from typing import Any

from gateway.simulator import new_sid
from tests.gateway.agents.helpers import call_ends, nobody_answers, record_action, recording, ring, transcription
from tests.support.config import CUSTOMER, SIMULTANEOUS

CSRF = re.compile(r'name="csrf_token" value="([0-9a-f]+)"')
CODE = re.compile(r"\b(\d{6})\b is your")

# One second of silent MPEG-1 Layer III frames (128 kb/s, 44.1 kHz): a file a browser decodes and plays.
_FRAME = bytes.fromhex("fffb9000") + bytes(413)
SILENT_MP3 = _FRAME * 40


def csrf_of(html: str) -> str:
    match = CSRF.search(html)
    assert match, "the page has no form with a CSRF token"
    return match.group(1)


def latest_code(fake: Any, phone: str) -> str:
    texts = [m for m in fake.messages if m.get("To") == phone and CODE.search(m.get("Body", ""))]
    assert texts, f"no sign-in code was texted to {phone}"
    match = CODE.search(texts[-1]["Body"])
    assert match is not None
    return match.group(1)


def sign_in_by_code(client: Any, fake: Any, work: Any, phone: str) -> Any:
    page = client.get("/sign-in").get_data(as_text=True)
    response = client.post("/sign-in", data={"csrf_token": csrf_of(page), "phone": phone})
    assert response.status_code == 200, response.get_data(as_text=True)
    work()
    code = latest_code(fake, phone)
    page = response.get_data(as_text=True)
    return client.post("/sign-in", data={"csrf_token": csrf_of(page), "phone": phone, "code": code})


def sign_in_by_key(client: Any, key: str) -> Any:
    page = client.get("/sign-in").get_data(as_text=True)
    return client.post("/sign-in", data={"csrf_token": csrf_of(page), "key": key})


def post_form(client: Any, page_path: str, action: str, data: dict[str, str] | None = None) -> Any:
    """Post a form of a page with that page's CSRF token."""
    html = client.get(page_path).get_data(as_text=True)
    return client.post(action, data={"csrf_token": csrf_of(html), **(data or {})})


def voicemail_call(twilio: Any, fake: Any, *, to: str = SIMULTANEOUS, caller: str = CUSTOMER,
                   transcript: str = "Hi, it's Maria, call me back about the CR-V please.") -> str:
    sid = ring(twilio, to=to, caller=caller)
    nobody_answers(twilio, sid, to=to, caller=caller)
    record_action(twilio, sid, 1, to=to, caller=caller)
    recording_sid = new_sid("RE")
    recording(twilio, sid, recording_sid=recording_sid, url=fake.add_recording(SILENT_MP3), duration=1)
    call_ends(twilio, sid, to=to, caller=caller)
    transcription(twilio, sid, text=transcript, recording_sid=recording_sid)
    return sid
