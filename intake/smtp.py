"""`gateway intake smtp`: the SMTP server third-party lead sites e-mail ADF to (aiosmtpd, GATEWAY_INTAKE_SMTP).

It takes mail for `<store-key>@` any domain and for the addresses in a store's `intake_emails`, and
refuses other recipients at RCPT (550), so a wrong address bounces to its sender instead of vanishing.
Each accepted message is committed before the server answers 250: the prospects of its ADF (body or
attachment) stored for the worker to build their leads (as `POST /api/v1/intake/adf` does), or, when
it holds no readable ADF, the whole message behind a review task. A database that cannot take it gets
451, and the sending server tries again later. Nothing is accepted and then lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from flask import Flask

from gateway import runtime
from intake import jobs, services

log = logging.getLogger(__name__)
# aiosmtpd logs every connection and command at INFO ("Peer", "EOF received", ...); the line that matters,
# what each accepted message became, is this module's own. Its warnings and errors still show.
logging.getLogger("mail.log").setLevel(logging.WARNING)

MAX_MESSAGE_BYTES = 10 * 1024 * 1024
# The stores and their intake addresses are read again at most this often (config apply changes them).
ADDRESS_BOOK_TTL = 5.0


def parse_address(text: str) -> tuple[str, int]:
    """"host:port" -> (host, port); ValueError naming what is wrong."""
    host, colon, port = text.strip().rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"GATEWAY_INTAKE_SMTP must be host:port (got {text!r})")
    return host.strip("[]"), int(port)


class IntakeHandler:
    """aiosmtpd handler: recipients checked against the stores, messages handed to the intake service
    in a thread (the database work must not block the server's event loop)."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self._book: tuple[float, dict[str, str], list[str]] = (0.0, {}, [])

    def _address_book(self) -> tuple[dict[str, str], list[str]]:
        loaded_at, addresses, keys = self._book
        if time.monotonic() - loaded_at > ADDRESS_BOOK_TTL:
            with self.app.app_context(), runtime.current().database.session() as session:
                addresses, keys = services.intake_addresses(session)
            self._book = (time.monotonic(), addresses, keys)
        return addresses, keys

    def accepts(self, address: str) -> bool:
        addresses, keys = self._address_book()
        return bool(services.store_keys_for([address], addresses, known_stores=keys))

    def receive(self, raw: bytes, recipients: list[str]) -> services.MailResult:
        with self.app.app_context():
            current = runtime.current()
            with current.database.session() as session:
                result = services.receive_mail(session, raw, recipients, current.clock.now())
            if services.count_new(result.stored):
                jobs.request_build(current.redis, services.count_new(result.stored))
            return result

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        try:
            known = await asyncio.get_running_loop().run_in_executor(None, self.accepts, address)
        except Exception:
            log.exception("intake: could not read the stores' addresses")
            return "451 4.3.0 Temporary failure; try again later"
        if not known:
            return "550 5.1.1 No store takes leads at this address"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content or b""
        content = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogateescape")
        try:
            result = await asyncio.get_running_loop().run_in_executor(
                None, self.receive, content, list(envelope.rcpt_tos)
            )
        except Exception:
            log.exception("intake: a message could not be stored; the sender will retry")
            return "451 4.3.0 Temporary failure; try again later"
        log.info(
            "intake mail for %s: %d prospect(s) stored, %d for review, %d repl(ies)",
            ",".join(result.stores) or "?", len(result.stored), len(result.reviews), len(result.replies),
        )
        return "250 2.0.0 Message accepted"


class IntakeServer:
    """The SMTP server on host:port, in a thread of its own (aiosmtpd's Controller)."""

    def __init__(self, app: Flask, host: str, port: int) -> None:
        self.handler = IntakeHandler(app)
        self.controller: Any = Controller(
            self.handler, hostname=host, port=port, data_size_limit=MAX_MESSAGE_BYTES,
            ident="Dealer Gateway lead intake",
        )
        self.host = host
        self.port = port

    def start(self) -> None:
        self.controller.start()
        log.info("intake SMTP server listening on %s:%d", self.host, self.port)

    def stop(self) -> None:
        self.controller.stop()
