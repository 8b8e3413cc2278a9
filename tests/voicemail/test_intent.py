"""Reading a voicemail transcript: department hint, intent words, time-frame words."""

from __future__ import annotations

import pytest

from voicemail.intent import first_words, read_intent


@pytest.mark.parametrize(
    ("transcript", "department", "intents", "frames"),
    [
        ("Hi, I need an oil change and my brakes are squeaking, can I come in tomorrow?",
         "service", {"service", "appointment"}, {"tomorrow"}),
        ("Do you have the part number for a 2019 Accord mirror?", "parts", {"parts"}, set()),
        ("What's your best price on the Pilot? I want to trade in my Civic. Today if possible.",
         "sales", {"price", "trade-in"}, {"today"}),
        ("Can I test-drive the Civic this weekend?", "sales", {"test drive"}, {"this weekend"}),
        ("I'd like to schedule an appointment ASAP", None, {"appointment"}, {"right away"}),
        ("Call me back please.", None, set(), set()),
        ("", None, set(), set()),
    ],
)
def test_read_intent(transcript, department, intents, frames):
    intent = read_intent(transcript)
    assert intent.department == department
    assert set(intent.intents) == intents
    assert set(intent.time_frames) == frames


def test_words_match_whole_words_only():
    intent = read_intent("My departure is delayed; the priceless apartment is todayish")
    assert intent.intents == ()
    assert intent.time_frames == ()


def test_first_words_cuts_at_a_word_boundary():
    text = "Hello this is a long message about the blue Civic that I saw on your website yesterday evening"
    cut = first_words(text, 30)
    assert cut.endswith("...")
    assert len(cut) <= 33
    assert text.startswith(cut.removesuffix("..."))
    assert first_words("  short   text ") == "short text"
