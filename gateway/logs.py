"""Logging: JSON lines in production, plain in tests; phone numbers are masked where they are logged, the
web server's access log included (`MaskingLogger`, named by gunicorn.conf.py)."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from gunicorn.glogging import Logger

from gateway.phones import mask

_configured = False
# Exceptions a signal handler raises to stop the process. A signal that lands while a line is written
# would otherwise see its exception swallowed by the handler's error report ("--- Logging error ---"),
# as KeyboardInterrupt and SystemExit are not.
_STOPS: tuple[type[BaseException], ...] = ()


def let_through(stop: type[BaseException]) -> None:
    """A log line being written when `stop` is raised does not swallow it: it goes on up the stack."""
    global _STOPS
    if stop not in _STOPS:
        _STOPS = (*_STOPS, stop)


class LineHandler(logging.StreamHandler[TextIO]):
    """The stream handler of `configure_logging`: an exception passed to `let_through` is not swallowed."""

    def handleError(self, record: logging.LogRecord) -> None:
        if isinstance(sys.exc_info()[1], _STOPS):
            raise  # the exception in hand, which logging would report and drop
        super().handleError(record)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("call_sid", "job_id", "message_sid"):
            value = getattr(record, key, None)
            if value:
                entry[key] = value
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(*, json_logs: bool, level: int = logging.INFO) -> None:
    global _configured
    if _configured:
        return
    _configured = True
    handler = LineHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if json_logs else logging.Formatter("%(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)


# --- the web server's access log, without customers' numbers or live links -------------------------------

LINK = re.compile(r"/c/[^/?#\s\"']+")
# A number as it appears in a URL or header: E.164 with `+` or its encoding `%2B` (separators allowed),
# a North American number written nationally, `(202) 555-0194` in any encoding, or a bare run of 7 to
# 15 digits (national numbers, numbers whose `+` a form turned into a space).
PHONE = re.compile(
    r"(?:\+|%2[Bb])\d(?:[\d.\-]|%20|%2[Dd]|\(|\)|%28|%29){5,24}\d"
    r"|(?<![\dA-Za-z])(?:\(|%28)?\d{3}(?:\)|%29)?(?:%20|\+|[.\-])?\d{3}(?:%20|%2[Dd]|[.\-])\d{4}(?![\dA-Za-z])"
    r"|(?<![\dA-Za-z])\d{7,15}(?![\dA-Za-z])"
)


def _masked(match: re.Match[str]) -> str:
    text = match.group()
    encoded = text[:3].upper() == "%2B"
    digits = re.sub(r"%[0-9A-Fa-f]{2}|\D", "", text[3:] if encoded else text)
    prefix = "+" if text.startswith("+") else ("%2B" if encoded else "")
    masked = mask(("+" if prefix else "") + digits)
    return prefix + masked[1:] if prefix else masked


def scrub(text: str) -> str:
    """A line of the access log with no click-to-call token and no whole phone number."""
    return PHONE.sub(_masked, LINK.sub("/c/[link]", text))


class MaskingLogger(Logger):  # type: ignore[misc]  # gunicorn ships no type hints
    """gunicorn's logger, with every atom of the access log scrubbed (request line, path, query,
    referer, any header or environ value a custom format names)."""

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> dict[str, Any]:
        values: dict[str, Any] = super().atoms(resp, req, environ, request_time)
        return {key: scrub(value) if isinstance(value, str) else value for key, value in values.items()}
