"""When the database is down a caller still reaches a person: a Dial of the store's main line.

The webhook is kept by the spool (gateway/calls/failsafe.py) and the call logged once the database is back.
"""

from __future__ import annotations

import logging
from datetime import datetime

from flask import Response

from gateway.calls.failsafe import main_line_for, spool
from webhooks import twiml

log = logging.getLogger(__name__)


def forward_call(to: str, form: dict[str, str], now: datetime) -> Response:
    spool("incoming", form, now)
    main_line = main_line_for(to)
    if main_line is None:
        log.error("no main line known for %s while the database is down", to)
        return twiml.respond(twiml.unknown_number())
    return twiml.respond(twiml.forward(main_line))
