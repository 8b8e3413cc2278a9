"""The TwiML a caller hears about recording: a disclosure before any agent is bridged on a recorded number,
and voicemail prompts that say the message is recorded. Read back with XPath."""

from __future__ import annotations

from xml.etree import ElementTree

import pytest

from gateway.simulator import new_sid
from tests.support.config import BASIC_CONFIG, CUSTOMER, SEQUENTIAL, SIMULTANEOUS, store_hours
from tracked_numbers.services import DEFAULT_RECORDING_DISCLOSURE

RECORDED = BASIC_CONFIG.replace("record: false", "record: true")
WORDING = "Calls to North Honda are recorded. Stay on the line to agree."
CUSTOM = RECORDED.replace(
    "    response_sla: 5m\n", f'    response_sla: 5m\n    recording_disclosure: "{WORDING}"\n', 1
)


def incoming(twilio, to: str = SIMULTANEOUS) -> tuple[str, ElementTree.Element]:
    sid = new_sid("CA")
    response = twilio.post(
        "/webhooks/voice/incoming", {"CallSid": sid, "From": CUSTOMER, "To": to, "CallStatus": "ringing"}
    )
    assert response.status_code == 200
    return sid, ElementTree.fromstring(response.get_data(as_text=True))


def verbs(root: ElementTree.Element) -> list[str]:
    return [child.tag for child in root]


def test_a_recorded_number_discloses_before_the_dial(configure, twilio):
    configure(RECORDED)
    _, root = incoming(twilio)
    assert verbs(root) == ["Say", "Dial"]
    assert root.findtext("./Say") == DEFAULT_RECORDING_DISCLOSURE
    assert root.find("./Dial[@record='record-from-answer-dual']") is not None
    assert root.findall("./Dial/Number")


def test_the_store_wording_replaces_the_default_and_follows_the_greeting(configure, twilio):
    configure(CUSTOM.replace("record: true, cadence: missed-call}", 'record: true, cadence: missed-call,\n'
                             '     prompts: {greeting: "Welcome to {store}."}}', 1))
    _, root = incoming(twilio)
    assert verbs(root) == ["Say", "Say", "Dial"]
    assert [say.text for say in root.findall("./Say")] == ["Welcome to North Honda.", WORDING]


def test_an_unrecorded_number_says_nothing_about_recording(configured, twilio):
    _, root = incoming(twilio)
    assert verbs(root) == ["Dial"]
    assert root.find("./Dial[@record]") is None


def test_the_disclosure_is_said_once_not_at_each_step_of_a_sequential_plan(configure, twilio):
    configure(RECORDED)
    sid, first = incoming(twilio, SEQUENTIAL)
    assert first.findtext("./Say") == DEFAULT_RECORDING_DISCLOSURE
    response = twilio.post(
        f"/webhooks/voice/dial-complete?call={sid}&step=0",
        {"CallSid": sid, "From": CUSTOMER, "To": SEQUENTIAL, "CallStatus": "in-progress",
         "DialCallStatus": "no-answer"},
    )
    second = ElementTree.fromstring(response.get_data(as_text=True))
    assert verbs(second) == ["Dial"]


@pytest.mark.parametrize("hours", ["open", "closed"])
def test_the_default_voicemail_prompts_say_the_message_is_recorded(configure, twilio, hours):
    # Open with nobody to ring (every ring agent off duty) or closed: either way, the voicemail.
    config = store_hours(BASIC_CONFIG, hours)
    if hours == "open":
        config = config.replace("{key: alice, ", '{key: alice, schedule: {mon: "01:00-02:00"}, ')
    configure(config)
    _, root = incoming(twilio, "+12025550126")  # rings alice alone
    assert verbs(root) == ["Say", "Record", "Say", "Hangup"]
    assert "Your message will be recorded." in (root.findtext("./Say[1]") or "")
