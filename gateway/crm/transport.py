"""How CRM deliveries leave the gateway: ADF by HTTP POST or e-mail, signed JSON webhooks by HTTP POST.

I/O only: the bodies come rendered from `crm_formats`, retries and bookkeeping belong to the outbox.
Every failure is a `DeliveryError` that says whether trying again later can help: a CRM that is down,
slow or overloaded gets retried; one that rejects the request outright goes to the dead letters.
"""

from __future__ import annotations

import http.client
import logging
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from typing import Any

from gateway import mail
from gateway.crm.formats import (
    ADF_CONTENT_TYPE,
    IDEMPOTENCY_HEADER,
    JSON_CONTENT_TYPE,
    PROVIDER_NAME,
    SIGNATURE_HEADER,
    sign_webhook,
)

logger = logging.getLogger(__name__)

USER_AGENT = "DealerGateway/0.1 (CRM delivery)"
# 4xx answers that mean "not now" rather than "never": request timeout, conflict, rate limit.
RETRYABLE_STATUSES = frozenset({408, 409, 429})
DEFAULT_SENDER = mail.DEFAULT_SENDER
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_SNIPPET = 300


class DeliveryError(Exception):
    """A delivery failed. `retryable`: the same request may succeed later (5xx, timeout, refused)."""

    def __init__(self, message: str, retryable: bool, status: int | None = None) -> None:
        # All three go to Exception so the error survives pickling (RQ keeps failed jobs' errors).
        super().__init__(message, retryable, status)
        self.message = message
        self.retryable = retryable
        self.status = status

    def __str__(self) -> str:
        return self.message


# -------------------------------------------------------------------------------------------- HTTP


def post_adf(url: str, body: bytes, idempotency_key: str, timeout: float) -> None:
    """POST an ADF document to a CRM's lead endpoint. Raises DeliveryError."""
    _post(url, body, {"Content-Type": ADF_CONTENT_TYPE, IDEMPOTENCY_HEADER: idempotency_key}, timeout)


def post_json(
    url: str,
    body: bytes,
    secret: str,
    idempotency_key: str,
    timeout: float,
    now: int | None = None,
) -> None:
    """POST a JSON event signed with `secret` at unix time `now` (default: the clock).

    Raises DeliveryError.
    """
    timestamp = int(time.time()) if now is None else now
    headers = {
        "Content-Type": JSON_CONTENT_TYPE,
        IDEMPOTENCY_HEADER: idempotency_key,
        SIGNATURE_HEADER: sign_webhook(secret, body, timestamp),
    }
    _post(url, body, headers, timeout)


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """urllib would turn a redirected POST into a GET and drop the lead; a redirect is an error here."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_RefuseRedirects)


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise DeliveryError(f"not an http(s) URL: {parts.scheme or '?'}://{parts.hostname or '?'}", False)
    # Errors name the host only: a CRM URL may carry a token in its path or query.
    where = f"POST to {parts.hostname}"
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
        url, data=body, method="POST", headers={"User-Agent": USER_AGENT, "Accept": "*/*", **headers}
    )
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            response.read(_SNIPPET)
            status = response.status
    except urllib.error.HTTPError as error:
        with error:
            detail = _error_snippet(error)
        retryable = error.code >= 500 or error.code in RETRYABLE_STATUSES
        if 300 <= error.code < 400:
            detail = f"redirected to {error.headers.get('Location', '?')}; update the destination URL"
        message = f"{where}: HTTP {error.code} {error.reason}{detail}"
        raise DeliveryError(message, retryable, status=error.code) from None
    except urllib.error.URLError as error:
        raise DeliveryError(f"{where}: {_describe(error.reason)}", True) from None
    except (OSError, http.client.HTTPException) as error:
        # Read timeouts, resets and garbled answers: the CRM may be fine on the next attempt.
        raise DeliveryError(f"{where}: {_describe(error)}", True) from None
    logger.debug("crm delivery accepted", extra={"host": parts.hostname, "status": status})


def _error_snippet(error: urllib.error.HTTPError) -> str:
    try:
        text = error.read(_SNIPPET).decode("utf-8", "replace")
    except (OSError, http.client.HTTPException):
        return ""
    text = _CONTROL.sub(" ", text).strip()
    return f": {text}" if text else ""


_describe = mail.describe


# -------------------------------------------------------------------------------------------- SMTP
# The SMTP conversation itself is the core mail sender's (gateway/mail.py), shared with the cadences'
# e-mail steps; here its errors become DeliveryErrors the outbox understands.

SmtpTarget = mail.SmtpTarget


def parse_smtp_url(smtp_url: str) -> SmtpTarget:
    """Raises DeliveryError (not retryable) when the URL cannot name a mail server."""
    try:
        return mail.parse_smtp_url(smtp_url)
    except mail.MailError as error:
        raise DeliveryError(error.message, error.retryable, error.status) from None


def send_adf_email(
    smtp_url: str,
    to: str,
    store_name: str,
    body: bytes,
    idempotency_key: str,
    timeout: float,
    *,
    sender: str | None = None,
) -> None:
    """E-mail an ADF document to a CRM's lead address. Raises DeliveryError.

    The message is plain text holding only the XML (what CRM lead parsers read); its Message-ID is
    derived from `idempotency_key`, so a retried delivery repeats it and the receiver can drop the copy.
    The sender is `sender`, else the URL's ?from=, else the SMTP user when it is an address.
    """
    target = parse_smtp_url(smtp_url)
    from_address = sender or target.default_sender()
    to = to.strip()
    if not to or any(c.isspace() for c in to):
        raise DeliveryError("the ADF e-mail destination is not an address", False)
    try:
        message = adf_email_message(from_address, to, store_name, body, idempotency_key)
    except ValueError as error:  # a header the e-mail policy refuses
        raise DeliveryError(f"cannot build the ADF e-mail: {error}", False) from None
    try:
        mail.submit(target, message, from_address, to, timeout)
    except mail.MailError as error:
        raise DeliveryError(error.message, error.retryable, error.status) from None
    logger.debug("adf e-mail accepted", extra={"host": target.host})


def adf_email_message(
    sender: str, to: str, store_name: str, body: bytes, idempotency_key: str
) -> EmailMessage:
    """The e-mail carrying one ADF document: subject naming the store, body = the XML, stable Message-ID."""
    message = EmailMessage()
    message["From"] = formataddr((PROVIDER_NAME, sender))
    message["To"] = to
    store = mail.one_line(store_name)
    message["Subject"] = f"ADF lead: {store}" if store else "ADF lead"
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = message_id_for(idempotency_key, sender)
    text = body.decode("utf-8", "replace")
    # Plain ASCII goes as is, which even naive lead parsers read; anything else is quoted-printable,
    # which keeps the XML legible and survives relays without 8BITMIME.
    message.set_content(text, subtype="plain", charset="utf-8", cte=mail.transfer_encoding(text))
    return message


message_id_for = mail.message_id_for
