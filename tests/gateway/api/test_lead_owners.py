"""A lead and its owner appear together: read while calls and texts are settled, no lead is ownerless."""

from __future__ import annotations

import threading

import pytest

from gateway.simulator import new_sid, play_call
from tests.support.api import bearer, make_key
from tests.support.config import SEQUENTIAL, SIMULTANEOUS
from tests.support.webhooks import AppPoster, SignedClient


@pytest.mark.usefixtures("configured")
def test_no_lead_is_ever_read_without_its_owner(app, db, settings, clock):
    key = make_key(db, clock.now())
    stop = threading.Event()
    seen: list[dict[str, object]] = []
    problems: list[str] = []

    def read() -> None:
        client = app.test_client()
        while not stop.is_set():
            response = client.get("/api/v1/leads?limit=200", headers=bearer(key))
            if response.status_code != 200:
                problems.append(f"GET /leads answered {response.status_code}")
                continue
            seen.extend(response.get_json()["items"])

    def contacts(offset: int) -> None:
        signed = SignedClient(app.test_client(), settings.public_base_url, settings.webhook_auth_token)
        poster = AppPoster(signed)
        for n in range(offset, offset + 8):
            caller = f"+12025550{n:03d}"
            if n % 2:
                list(play_call(poster, to=SIMULTANEOUS, caller=caller, outcome="no-answer"))
            else:
                params = {"MessageSid": new_sid("SM"), "From": caller, "To": SEQUENTIAL, "Body": "Is it in stock?"}
                assert signed.post("/webhooks/sms/incoming", params).status_code == 200

    reader = threading.Thread(target=read)
    reader.start()
    writers = [threading.Thread(target=contacts, args=(offset,)) for offset in (100, 200, 300)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    stop.set()
    reader.join()

    assert not problems
    assert seen, "the reader saw no lead at all"
    assert [lead for lead in seen if lead["owner"] is None] == []
    final = app.test_client().get("/api/v1/leads?limit=200", headers=bearer(key)).get_json()["items"]
    assert len(final) == 24
    assert all(lead["owner"] for lead in final)
