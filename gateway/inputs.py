"""Untrusted values parsed in one place per kind: whole numbers, ids, instants, JSON documents.

Every HTTP face (the API, the pages, signed links) reads its input through these, so a new endpoint
inherits the bounds: no value reaches the database that a column cannot hold (SQLite integers are
64-bit, PostgreSQL's INTEGER 32-bit; a date before year 1 in UTC cannot be stored at all), and no
document costs the parser unbounded recursion. Each function raises ValueError with a sentence that
names what is wrong; callers turn it into their 4xx.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from typing import Any

# ids are INTEGER columns, 32-bit on PostgreSQL: a larger id cannot exist, and would not bind.
MAX_ID = 2**31 - 1
# The largest whole number any query parameter or claim may carry (fits a signed 64-bit column).
MAX_INTEGER = 2**63 - 1
# JSON documents: deeper nesting than this is no request a client of ours sends.
MAX_JSON_DEPTH = 32
MAX_JSON_BYTES = 256 * 1024

_DIGITS = re.compile(r"[0-9]{1,19}")
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_JSON_BRACKET = re.compile(rb"[\[\]{}]")


def whole_number(raw: str, *, low: int = 0, high: int = MAX_INTEGER, name: str = "value") -> int:
    """ASCII digits only, within [low, high]: '²' and Arabic-Indic digits pass str.isdigit, and int()
    takes the latter, but no client of ours means them."""
    text = raw.strip()
    if not _DIGITS.fullmatch(text):
        raise ValueError(f"{name} must be a whole number from {low} to {high}")
    value = int(text)
    if not low <= value <= high:
        raise ValueError(f"{name} must be a whole number from {low} to {high}")
    return value


def row_id(raw: str, *, name: str = "id") -> int:
    """A row id from text: a whole number from 1 to MAX_ID."""
    return whole_number(raw, low=1, high=MAX_ID, name=name)


def is_row_id(value: Any) -> bool:
    """A row id from a decoded document (a cursor, a signed claim): an int, not a bool, not a float."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_ID


def instant(text: str, *, name: str = "time") -> datetime:
    """ISO 8601 with an offset (or Z), as UTC. Naive times are refused (whose 3 pm?), and so is any
    instant that has no UTC equivalent a database can store (0001-01-01T00:00:00+05:00)."""
    if not isinstance(text, str) or len(text) > 64:
        raise ValueError(f"{name} must be an ISO 8601 time with an offset")
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name} must be ISO 8601 with an offset, e.g. 2026-11-27T15:30:00-05:00") from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} needs an offset, e.g. 2026-11-27T15:30:00-05:00")
    try:
        return moment.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValueError(f"{name} is out of range") from None


def epoch_instant(value: Any, *, name: str = "time") -> datetime:
    """Unix seconds from a decoded document, as UTC; years 1970 to 9999 only."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 253402300799:
        raise ValueError(f"{name} is out of range")
    return datetime.fromtimestamp(value, UTC)


def json_depth(data: bytes) -> int:
    """How deeply a JSON text nests, counted without parsing it (so without recursion)."""
    depth = deepest = 0
    for match in _JSON_BRACKET.finditer(_JSON_STRING.sub(b'""', data)):
        if match.group() in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"{text[:20]} is out of range")
    return value


def json_document(data: str | bytes, *, max_depth: int = MAX_JSON_DEPTH, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Parse JSON with bounds: size, nesting depth, and no NaN or Infinity (a database takes neither)."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    if len(raw) > max_bytes:
        raise ValueError(f"the JSON document is larger than {max_bytes} bytes")
    if json_depth(raw) > max_depth:
        raise ValueError(f"the JSON document nests deeper than {max_depth} levels")
    try:
        return json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:  # a bracket count the scan could not see; never a 500
        raise ValueError(f"the JSON document nests deeper than {max_depth} levels") from None
