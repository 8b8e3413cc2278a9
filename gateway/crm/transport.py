"""How CRM deliveries leave the gateway: ADF by HTTP POST or e-mail, signed JSON webhooks by HTTP POST.

I/O only: the bodies come rendered from `crm_formats`, retries and bookkeeping belong to the outbox.
Every failure is a `DeliveryError` that says whether trying again later can help: a CRM that is down,
slow or overloaded gets retried; one that rejects the request outright goes to the dead letters.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import re
import smtplib
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from typing import Any

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
DEFAULT_SENDER = "dealer-gateway@localhost"
_SMTP_PORTS = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}
_DOT_ATOM = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_MAX_SMTP_LINE = 998
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


def _describe(reason: object) -> str:
    if isinstance(reason, TimeoutError):
        return "timed out"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    return str(reason) or type(reason).__name__


# -------------------------------------------------------------------------------------------- SMTP


@dataclass(frozen=True)
class SmtpTarget:
    """An SMTP_URL taken apart: smtp://[user:password@]host[:port][?from=address].

    smtp:// is plain SMTP (port 25), smtp+starttls:// upgrades with STARTTLS (port 587), smtps://
    is TLS from the first byte (port 465).
    """

    scheme: str
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    sender: str | None = None


def parse_smtp_url(smtp_url: str) -> SmtpTarget:
    """Raises DeliveryError (not retryable) when the URL cannot name a mail server."""
    parts = urllib.parse.urlsplit(smtp_url)
    scheme = parts.scheme.lower()
    if scheme not in _SMTP_PORTS or not parts.hostname:
        raise DeliveryError("SMTP_URL must look like smtp://host:port (or smtps://, smtp+starttls://)", False)
    try:
        port = parts.port or _SMTP_PORTS[scheme]
    except ValueError:
        raise DeliveryError("SMTP_URL has an invalid port", False) from None
    query = urllib.parse.parse_qs(parts.query)
    return SmtpTarget(
        scheme=scheme,
        host=parts.hostname,
        port=port,
        username=urllib.parse.unquote(parts.username) if parts.username else None,
        password=urllib.parse.unquote(parts.password) if parts.password else None,
        sender=query["from"][0] if query.get("from") else None,
    )


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
    from_address = sender or target.sender or _address_like(target.username) or DEFAULT_SENDER
    to = to.strip()
    if not to or any(c.isspace() for c in to):
        raise DeliveryError("the ADF e-mail destination is not an address", False)
    try:
        message = adf_email_message(from_address, to, store_name, body, idempotency_key)
    except ValueError as error:  # a header the e-mail policy refuses
        raise DeliveryError(f"cannot build the ADF e-mail: {error}", False) from None

    where = f"SMTP to {target.host}:{target.port}"
    try:
        client = _smtp_connect(target, timeout)
    except smtplib.SMTPResponseException as error:
        raise _smtp_failure(where, error.smtp_code, error.smtp_error) from None
    except (OSError, smtplib.SMTPException) as error:
        raise DeliveryError(f"{where}: {_describe(error)}", True) from None
    try:
        if target.scheme == "smtp+starttls":
            client.starttls(context=ssl.create_default_context())
        if target.username:
            client.login(target.username, target.password or "")
        client.send_message(message, from_addr=from_address, to_addrs=[to])
    except smtplib.SMTPRecipientsRefused as error:
        code, text = next(iter(error.recipients.values()), (550, b"recipient refused"))
        raise _smtp_failure(where, code, text) from None
    except smtplib.SMTPResponseException as error:
        raise _smtp_failure(where, error.smtp_code, error.smtp_error) from None
    except smtplib.SMTPNotSupportedError as error:
        raise DeliveryError(f"{where}: {error}", False) from None
    except (OSError, smtplib.SMTPException) as error:
        raise DeliveryError(f"{where}: {_describe(error)}", True) from None
    finally:
        _smtp_close(client)
    logger.debug("adf e-mail accepted", extra={"host": target.host})


def adf_email_message(
    sender: str, to: str, store_name: str, body: bytes, idempotency_key: str
) -> EmailMessage:
    """The e-mail carrying one ADF document: subject naming the store, body = the XML, stable Message-ID."""
    message = EmailMessage()
    message["From"] = formataddr((PROVIDER_NAME, sender))
    message["To"] = to
    store = " ".join(_CONTROL.sub(" ", store_name).split())[:200]
    message["Subject"] = f"ADF lead: {store}" if store else "ADF lead"
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = message_id_for(idempotency_key, sender)
    text = body.decode("utf-8", "replace")
    plain = text.isascii() and all(len(line) <= _MAX_SMTP_LINE for line in text.splitlines())
    # Plain ASCII goes as is, which even naive lead parsers read; anything else is quoted-printable,
    # which keeps the XML legible and survives relays without 8BITMIME.
    message.set_content(text, subtype="plain", charset="utf-8", cte="7bit" if plain else "quoted-printable")
    return message


def message_id_for(idempotency_key: str, sender: str = DEFAULT_SENDER) -> str:
    """<key@sender-domain>; keys that are not a valid dot-atom are hashed first."""
    key = idempotency_key.strip()
    # Otherwise 128 bits of the hash: unique enough, and short enough that the header is never folded.
    valid = _DOT_ATOM.fullmatch(key) and len(key) <= 64
    local = key if valid else hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]
    domain = sender.rpartition("@")[2].strip(">").strip()
    if not _DOT_ATOM.fullmatch(domain):
        domain = "dealer-gateway"
    return f"<{local}@{domain}>"


def _smtp_connect(target: SmtpTarget, timeout: float) -> smtplib.SMTP:
    if target.scheme == "smtps":
        context = ssl.create_default_context()
        return smtplib.SMTP_SSL(target.host, target.port, timeout=timeout, context=context)
    return smtplib.SMTP(target.host, target.port, timeout=timeout)


def _smtp_close(client: smtplib.SMTP) -> None:
    # The message is already accepted or refused by now: a failed QUIT must not turn into a retry.
    try:
        client.quit()
    except (OSError, smtplib.SMTPException):
        client.close()


def _smtp_failure(where: str, code: int, text: bytes | str) -> DeliveryError:
    detail = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    # 5xx is a permanent refusal (unknown mailbox, bad credentials); 4xx and odd codes may pass later.
    retryable = not 500 <= code < 600
    return DeliveryError(f"{where}: {code} {_CONTROL.sub(' ', detail).strip()}", retryable, status=code)


def _address_like(value: str | None) -> str | None:
    return value if value and "@" in value else None
