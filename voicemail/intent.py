"""What a voicemail transcript asks for: a department hint, intent words and time-frame words.

Plain word lists, searched on word boundaries and case-insensitively. Transcripts are short and
machine-made, so a list a person can read and extend beats anything cleverer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# intent word -> the phrases that say it (regular expressions, matched on word boundaries)
INTENTS: dict[str, tuple[str, ...]] = {
    "service": (r"service", r"oil change", r"repairs?", r"brakes?", r"maintenance", r"check engine",
                r"recall", r"tires?", r"inspection"),
    "parts": (r"parts?", r"accessor(?:y|ies)"),
    "trade-in": (r"trade[- ]?in", r"trading in", r"trade my"),
    "price": (r"prices?", r"pricing", r"how much", r"quotes?", r"best deal", r"out the door", r"msrp"),
    "test drive": (r"test[- ]?drive", r"drive it"),
    "appointment": (r"appointments?", r"schedule", r"book(?:ed|ing)?", r"come in", r"stop by"),
    "financing": (r"financ(?:e|ing)", r"lease", r"leasing", r"loan", r"credit", r"payments?"),
}

# which department an intent word points to
DEPARTMENT_OF_INTENT = {
    "service": "service",
    "parts": "parts",
    "trade-in": "sales",
    "price": "sales",
    "test drive": "sales",
    "financing": "sales",
}

TIME_FRAMES: dict[str, tuple[str, ...]] = {
    "today": (r"today", r"this (?:morning|afternoon|evening)"),
    "tonight": (r"tonight",),
    "tomorrow": (r"tomorrow",),
    "this weekend": (r"this weekend", r"on the weekend", r"(?:this )?(?:saturday|sunday)"),
    "right away": (r"asap", r"as soon as possible", r"right away", r"right now", r"immediately", r"urgent(?:ly)?"),
}


def _compile(table: dict[str, tuple[str, ...]]) -> dict[str, re.Pattern[str]]:
    return {
        word: re.compile(r"\b(?:" + "|".join(phrases) + r")\b", re.IGNORECASE)
        for word, phrases in table.items()
    }


_INTENT_PATTERNS = _compile(INTENTS)
_TIME_PATTERNS = _compile(TIME_FRAMES)


@dataclass(frozen=True)
class Intent:
    department: str | None  # None: nothing in the words points to one department
    intents: tuple[str, ...]
    time_frames: tuple[str, ...]


def read_intent(transcript: str | None) -> Intent:
    """Search the transcript; the department is the one most intent words point to."""
    text = " ".join((transcript or "").split())
    if not text:
        return Intent(None, (), ())
    found = tuple(word for word, pattern in _INTENT_PATTERNS.items() if pattern.search(text))
    frames = tuple(word for word, pattern in _TIME_PATTERNS.items() if pattern.search(text))
    votes: dict[str, int] = {}
    for word in found:
        department = DEPARTMENT_OF_INTENT.get(word)
        if department is not None:
            votes[department] = votes.get(department, 0) + 1
    department = max(votes, key=lambda d: votes[d]) if votes else None
    return Intent(department, found, frames)


def first_words(transcript: str, limit: int = 80) -> str:
    """The transcript's start, cut at a word boundary, with an ellipsis when cut."""
    text = " ".join(transcript.split())
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0] or text[:limit]
    return cut.rstrip(",.;:") + "..."
