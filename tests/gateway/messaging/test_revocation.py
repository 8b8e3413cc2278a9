"""Requests to stop in the customer's own words: clear ones, unclear ones, and the near misses."""

from __future__ import annotations

import pytest

from gateway.messaging.revocation import _CLEAR_EN, _CLEAR_ES, _SINGLE_EN, _SINGLE_ES, Revocation, classify, clauses

CLEAR_EN = [
    "opt out",
    "Opt-out",
    "OPT OUT!",
    "opt me out please",
    "I want to opt out of these texts",
    "stop texting me",
    "STOP TEXTING ME!!!",
    "Please stop texting me.",
    "Hi, stop texting me",
    "I bought a car already. Please stop texting me.",
    "can you please stop texting me",
    "remove me from your list",
    "Remove me from your list please 🙏",
    "take me off your list",
    "do not text",
    "Do not text me",
    "Don\u2019t text me",  # a phone keyboard's apostrophe
    "dont text me anymore",
    "never text me again",
    "unsubscribe me",
    "Unsubscribe me, thanks",
    "no more texts",
    "stop please",
    "STOP PLEASE",
    "Stop it.",
    "STOP 🛑",
    "\uff33\uff34\uff2f\uff30 \uff34\uff25\uff38\uff34\uff29\uff2e\uff27 \uff2d\uff25",  # full-width
    "stop\u200b texting me",  # a zero-width space from a copy and paste
]
CLEAR_ES = [
    "Alto",
    "ALTO!",
    "alto por favor",
    "parar",
    "Baja",
    "baja por favor",
    "cancelar",
    "No me envíes mensajes",
    "no me envies mas mensajes",
    "No me envíes más mensajes, gracias",
    "Por favor no me manden más mensajes",
    "quiero darme de baja",
    "Sáquenme de su lista",
    "Dejen de enviarme mensajes.",
]
UNCLEAR = [
    "stop texting me so late",
    "please don't text me before 9am",
    "wrong number",
    "leave me alone",
    "how do I unsubscribe",
    "not interested. stop",
    "stop calling me",
    "I don't want any more texts from the service department",
    "no me envíes mensajes en la noche",
    "Por favor no me escribas después de las 8",
    "Cancel please",  # the FCC's words with politeness: maybe the appointment, so a person decides
    "quit it",
    "end please",
]
NEITHER = [
    "don't stop",
    "Don't stop texting me!",
    "please don't stop texting me updates on my car",
    "stop by Saturday",
    "can you stop by",
    "Can you stop by at 5?",
    "I'll stop in tomorrow",
    "alto means tall?",
    "Is the alto trim available?",
    "baja el precio?",
    "cancelar mi cita",
    "Quiero cancelar mi cita",
    "¿No me envías mensajes?",  # "you don't send me messages?": the indicative is not a request
    "¿Para cuándo?",
    "parar en la tienda",
    "Stop & Shop",
    "The end",
    "if you don't text me back I'll go somewhere else",
    "Text me when the car is ready",
    "Can I cancel my appointment?",
    "I want to opt out of the extended warranty",
    "please",
    "",
    "🙏",
]


@pytest.mark.parametrize("body", CLEAR_EN)
def test_clear_english(body: str) -> None:
    found = classify(body)
    assert found is not None
    assert (found.clear, found.language) == (True, "en")


@pytest.mark.parametrize("body", CLEAR_ES)
def test_clear_spanish(body: str) -> None:
    found = classify(body)
    assert found is not None
    assert (found.clear, found.language) == (True, "es")


@pytest.mark.parametrize("body", UNCLEAR)
def test_unclear_requests_are_for_a_person(body: str) -> None:
    found = classify(body)
    assert found is not None
    assert found.clear is False


@pytest.mark.parametrize("body", NEITHER)
def test_near_misses_are_not_requests(body: str) -> None:
    assert classify(body) is None


@pytest.mark.parametrize("phrase", sorted(_CLEAR_EN | _CLEAR_ES))
def test_every_listed_phrase_is_clear_alone_and_in_a_sentence(phrase: str) -> None:
    expected = Revocation(True, phrase, "es" if phrase in _CLEAR_ES else "en")
    assert classify(phrase) == expected
    assert classify(f"Thanks. {phrase.capitalize()}!") == expected


@pytest.mark.parametrize("phrase", sorted(_CLEAR_EN))
def test_a_negated_or_conditional_phrase_is_not_clear(phrase: str) -> None:
    for body in (f"don't {phrase}", f"if you {phrase}", f"{phrase} after 8pm"):
        found = classify(body)
        assert found is None or found.clear is False, body


@pytest.mark.parametrize("word", sorted(_SINGLE_EN | _SINGLE_ES))
def test_one_word_is_clear_only_as_the_whole_text(word: str) -> None:
    found = classify(word)
    assert found is not None
    assert found.clear is True
    inside = classify(f"{word} the order for the blue one")
    assert inside is None or inside.clear is False


def test_clauses_fold_case_accents_apostrophes_and_hyphens() -> None:
    assert clauses("Don\u2019t  TEXT me; opt-out. ¡Más!") == [("dont", "text", "me"), ("opt", "out"), ("mas",)]
