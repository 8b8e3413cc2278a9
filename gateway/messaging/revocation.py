"""A request to stop texting in the customer's own words: which phrases opt out, which only may.

The FCC's revocation rule (TCPA Consent Order, FCC 24-24; 47 C.F.R. § 64.1200(a)(10)-(11), in force
2025-04-11) lets a customer revoke consent by any reasonable method: "stop", "quit", "end", "revoke",
"opt out", "cancel" or "unsubscribe" in reply to a text, or other words a reasonable person would read
as a request to stop; one confirmation text without marketing may follow within five minutes. Pure
functions here: no Flask, no database. gateway/messaging/inbound.py asks `classify` about every text that is not a
keyword (STOP, START, HELP... stay in compliance.py).

- Clear (`Revocation.clear`): the text, or one clause of it, is one of the phrases below and nothing
  else but politeness ("please stop texting me", "remove me from your list", "no me envies mensajes").
  The phone is opted out exactly as STOP does, and the gateway confirms it once, since the provider
  answers only its own keywords. A one-word request ("alto", "baja", "cancelar", "unsubscribe", "stop
  please") is clear only as the whole text: "cancelar mi cita" is about an appointment.
- Unclear (`clear` False): the text asks to stop, but with conditions or in passing ("stop texting me
  so late", "wrong number", "leave me alone"): automated texts pause and a person reviews it, as
  before. These patterns err toward flagging: a wrongly flagged text costs a person a look, a missed
  one keeps texting someone who asked us to stop.
  "Cancel please", "quit it" and "end" with politeness are unclear too: in reply to an appointment
  reminder they may mean the appointment.
- Neither: "don't stop", "can you stop by", "stop by Saturday", "alto means tall?".

Text is compared after NFKC, without invisible format characters, case-folded, without accents ("envíes"
is "envies", "más" is "mas") and with apostrophes dropped ("don't" is "dont"); punctuation and emoji
end a clause. Spanish commands are in the subjunctive ("no me envíes"): the indicative ("no me envías",
"you don't send me") is a different word and not a request.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

Language = Literal["en", "es"]


@dataclass(frozen=True, slots=True)
class Revocation:
    """A request to stop: `clear` (opt out now) or not (pause and ask a person), the phrase as matched
    (normalised, for the record) and its language (for the confirmation)."""

    clear: bool
    phrase: str
    language: Language


# ---------------------------------------------------------------------------------------------------
# The phrases (normalised: lower case, no accents, no apostrophes, single spaces)

# Clear anywhere as a clause of their own.
_CLEAR_EN = frozenset(
    {
        "stop texting", "stop texting me", "stop texting this number", "stop txting me", "stop texing me",
        "stop messaging", "stop messaging me", "stop msging me", "stop contacting me",
        "stop sending texts", "stop sending me texts", "stop sending me text messages", "stop sending messages",
        "stop sending me messages", "stop sending me these", "stop the texts", "stop these texts",
        "stop all texts", "stop all messages", "stop text messages", "stop the messages", "stop these messages",
        "opt out", "opt me out", "opt out of texts", "opt out of text messages", "opt out of these texts",
        "opt out of your texts", "opt out of messages", "opt out of this list",
        "unsubscribe me", "unsubscribe me from your list", "unsubscribe me from this list",
        "unsubscribe me from texts", "unsubscribe me from these texts",
        "remove me", "remove me from your list", "remove me from the list", "remove me from this list",
        "remove me from your texting list", "remove me from your text list", "remove me from your contact list",
        "remove me from your mailing list", "remove me from your texts", "remove my number",
        "remove my number from your list", "remove my number from the list",
        "take me off your list", "take me off the list", "take me off this list", "take me off your texting list",
        "take my number off your list", "delete my number", "delete my number from your list",
        "do not text", "do not text me", "dont text me", "do not text this number", "dont text this number",
        "do not message me", "dont message me", "do not contact me", "dont contact me", "never text me",
        "never contact me", "no more texts", "no more text messages", "no more messages",
    }
)  # fmt: skip
_CLEAR_ES = frozenset(
    {
        "no me envies mensajes", "no me envies mas mensajes", "no me envies mas", "no me envien mensajes",
        "no me envien mas mensajes", "no me mandes mensajes", "no me mandes mas mensajes", "no me manden mensajes",
        "no me manden mas mensajes", "no me escribas", "no me escribas mas", "no me escriban", "no me escriban mas",
        "no me contactes", "no me contacten", "no me contacten mas",
        "deja de enviarme mensajes", "dejen de enviarme mensajes", "deja de mandarme mensajes",
        "dejen de mandarme mensajes", "deja de escribirme", "dejen de escribirme",
        "no quiero mas mensajes", "no quiero recibir mensajes", "no quiero recibir mas mensajes", "no mas mensajes",
        "darme de baja", "dar de baja", "dame de baja", "denme de baja", "quiero darme de baja",
        "sacame de la lista", "sacame de su lista", "saquenme de la lista", "saquenme de su lista",
        "borren mi numero", "borra mi numero", "eliminen mi numero", "elimina mi numero",
        "cancelar suscripcion", "cancelar mi suscripcion",
    }
)  # fmt: skip
# Clear only as the whole text (with politeness around it).
_SINGLE_EN = frozenset({"stop", "stop all", "unsubscribe", "unsub", "revoke", "optout"})
_SINGLE_ES = frozenset({"alto", "parar", "baja", "cancelar", "desuscribir", "desuscribirme"})
# The rest of the FCC's words, with politeness around them: a person decides ("cancel please").
_SINGLE_UNCLEAR_EN = frozenset({"cancel", "end", "quit"})

# Politeness that may come before or after a phrase without making it less clear.
_BEFORE = tuple(
    tuple(words.split())
    for words in (
        "can you please", "could you please", "would you please", "will you please", "can you", "could you",
        "would you", "will you", "can u", "i want to", "i would like to", "id like to", "i wish to", "i said",
        "please", "pls", "plz", "kindly", "just", "ok", "okay", "hi", "hey", "hello", "so",
        "por favor", "favor de", "hola", "oye", "ya",
    )
)  # fmt: skip
_AFTER = tuple(
    tuple(words.split())
    for words in (
        "thank you", "right now", "any more", "ever again", "for good", "por favor",
        "please", "pls", "plz", "now", "asap", "immediately", "thanks", "thx", "ty", "already", "anymore",
        "again", "it", "gracias", "ya",
    )
)  # fmt: skip


# Requests that may mean stop, searched within one clause (with apostrophes kept as typed, made plain).
_TARGET = (
    r"(?:text\w*|txt\w*|messag\w*|msgs?|sms|spam\w*|contact\w*|call\w*|e-?mail\w*|bother\w*|"
    r"harass\w*|offers?|promo\w*|ads|marketing)"
)
_UNCLEAR_PATTERNS = [
    re.compile(p)
    for p in (
        # "stop", "please stop", "stop it", "stop please", "unsubscribe", "opt out" as a clause of its own
        r"^(?:(?:please|pls|plz|ok|okay|just|so)\s+)*"
        r"(?:stop|stop\s*all|unsubscribe|opt\s*-?\s*out)"
        r"(?:\s+(?:please|pls|plz|now|it|this|that|thanks|thank\s+you|ty|immediately|asap|already))*$",
        # "stop texting me", "quit messaging", "stop sending me texts" (not "don't stop texting me")
        r"(?<!n't )(?<!nt )(?<!not )(?<!never )\b(?:stop|quit|cease)\s+(?:all\s+)?"
        r"(?:(?:the|these|those|your|with\s+the)\s+)?(?:sending\s+(?:me\s+|us\s+)?(?:(?:the|these|your)\s+)?)?"
        + _TARGET
        + r"(?!\w)",
        # "don't text me", "do not contact me", "never call this number", "please don't text"
        r"\b(?:do\s+not|don't|dont|never)\s+(?:ever\s+)?"
        r"(?:text|txt|message|msg|sms|contact|call|e-?mail|bother|harass)\w*"
        r"(?:\s+(?:me|us|this\s+(?:number|phone|line))\b(?!\s+back)(?:\s+(?:again|anymore|any\s+more))?|"
        r"\s+(?:again|anymore|any\s+more)\b|$)",
        # "remove me from your list", "delete my number", "take me off your list"
        r"\b(?:remove|delete|erase)\s+(?:me|my\s+(?:number|phone|info\w*|contact\w*|name|details))"
        r"(?:\s+(?:from|off|out\s+of)\b|$)",
        r"\btake\s+(?:me|my\s+(?:number|phone|info\w*|name))\s+(?:off|out\s+of)\b",
        r"\bunsubscribe\b",
        # "opt me out", "opt out of texts", but not "opt out of the service contract"
        r"\bopt(?:ing)?\s*-?\s*(?:me\s+)?out\b(?!\s+of\b)",
        r"\bopt(?:ing)?\s*-?\s*(?:me\s+)?out\s+of\s+(?:all\s+)?(?:(?:the|your|these|this)\s+)?"
        r"(?:text\w*|txt\w*|messag\w*|sms|list|mailing\w*|marketing|promo\w*)",
        r"\bleave\s+me\s+alone\b",
        r"\bno\s+more\s+" + _TARGET,
        r"\b(?:don't|dont|do\s+not)\s+want\s+(?:(?:any\s*more|more|any|your|these|the|those)\s+)?" + _TARGET,
        r"\blose\s+(?:my|this)\s+number\b",
        # "wrong number", "you have the wrong number", "sorry, wrong person"
        r"^(?:(?:sorry|hi|hello|hey)\s+)?(?:this\s+is\s+|you\s+have\s+|you've\s+got\s+|you\s+got\s+|u\s+have\s+)?"
        r"(?:(?:a|the)\s+)?wrong\s+(?:number|person|phone)\b",
    )
]
# Clause boundaries: sentence punctuation, brackets, quotes, emoji, and a dash standing alone.
# "&" is not a boundary, so "Stop & Shop" stays one clause and is not read as "stop".
_CLAUSE_BREAK = re.compile(r"[^\w\s'&@$%#+/-]+|\s-+\s|\n")


# ---------------------------------------------------------------------------------------------------
# Normalising

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'", "\u00b4": "'"})
_WORD_BREAK = re.compile(r"[^\w\s]+|_")


def _normalise(body: str) -> str:
    """NFKC, without invisible format characters, typographic apostrophes made plain, case-folded."""
    text = unicodedata.normalize("NFKC", body)
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    return text.translate(_APOSTROPHES).casefold()


def _without_accents(text: str) -> str:
    return "".join(ch for ch in unicodedata.normalize("NFKD", text) if unicodedata.category(ch) != "Mn")


def clauses(body: str) -> list[tuple[str, ...]]:
    """The words of each clause: no accents, no apostrophes; punctuation and emoji end a clause, and a
    hyphen inside a word splits it ("opt-out" is "opt out")."""
    text = _without_accents(_normalise(body)).replace("'", "")
    text = re.sub(r"(?<=\w)-(?=\w)", " ", text)
    found = [tuple(part.split()) for part in _WORD_BREAK.split(text)]
    return [words for words in found if words]


def _strip(words: tuple[str, ...]) -> tuple[str, ...]:
    """The words without the politeness around them."""
    changed = True
    while changed and words:
        changed = False
        for filler in _BEFORE:
            if words[: len(filler)] == filler and len(words) > len(filler):
                words, changed = words[len(filler) :], True
                break
        for filler in _AFTER:
            if words[-len(filler) :] == filler and len(words) > len(filler):
                words, changed = words[: -len(filler)], True
                break
    return words


def _is_politeness(words: tuple[str, ...]) -> bool:
    return any(words == filler for filler in (*_BEFORE, *_AFTER))


def _contains(words: tuple[str, ...], phrase: tuple[str, ...]) -> bool:
    size = len(phrase)
    return any(words[i : i + size] == phrase for i in range(len(words) - size + 1))


_SPANISH_PHRASES = tuple(tuple(phrase.split()) for phrase in sorted(_CLEAR_ES))


# ---------------------------------------------------------------------------------------------------
# The decision


def classify(body: str) -> Revocation | None:
    """Whether a text that is not a keyword asks to stop being texted, and how clearly."""
    parts = clauses(body)
    meaningful = [words for words in parts if not _is_politeness(words)]
    for words in meaningful:
        core = " ".join(_strip(words))
        if core in _CLEAR_EN:
            return Revocation(True, core, "en")
        if core in _CLEAR_ES:
            return Revocation(True, core, "es")
    if len(meaningful) == 1:
        core = " ".join(_strip(meaningful[0]))
        if core in _SINGLE_EN:
            return Revocation(True, core, "en")
        if core in _SINGLE_ES:
            return Revocation(True, core, "es")
        if core in _SINGLE_UNCLEAR_EN:
            return Revocation(False, core, "en")
    for words in meaningful:
        for phrase in _SPANISH_PHRASES:
            if _contains(words, phrase):
                return Revocation(False, " ".join(phrase), "es")
    text = _normalise(body)
    for clause in _CLAUSE_BREAK.split(text):
        words_text = " ".join(clause.split())
        for pattern in _UNCLEAR_PATTERNS:
            found = pattern.search(words_text) if words_text else None
            if found:
                return Revocation(False, found.group(0).strip()[:64], "en")
    return None
