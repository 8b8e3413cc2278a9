"""How CRM deliveries leave the gateway: ADF by HTTP POST or e-mail, signed JSON webhooks by HTTP POST.

I/O only: the bodies come rendered from `crm_formats`, retries and bookkeeping belong to the outbox.
Every failure is a `DeliveryError` that says whether trying again later can help: a CRM that is down,
slow or overloaded gets retried; one that rejects the request outright goes to the dead letters.
"""

from __future__ import annotations

import logging
import re
import smtplib
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr

import urllib3
from requests.utils import get_environ_proxies

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


class _Pools:
    """Keep-alive connection pools, per proxy (from the environment, as urllib would use) and host."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._direct = urllib3.PoolManager(num_pools=64, maxsize=32, block=False, retries=False)
        self._proxies: dict[str, urllib3.ProxyManager] = {}

    def for_url(self, url: str) -> urllib3.PoolManager:
        proxy = get_environ_proxies(url).get(urllib.parse.urlsplit(url).scheme)
        if not proxy:
            return self._direct
        with self._lock:
            manager = self._proxies.get(proxy)
            if manager is None:
                manager = self._proxies[proxy] = urllib3.ProxyManager(proxy, maxsize=32, retries=False)
            return manager


_POOLS = _Pools()


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise DeliveryError(f"not an http(s) URL: {parts.scheme or '?'}://{parts.hostname or '?'}", False)
    # Errors name the host only: a CRM URL may carry a token in its path or query.
    where = f"POST to {parts.hostname}"
    try:
        response = _POOLS.for_url(url).request(
            "POST",
            url,
            body=body,
            headers={"User-Agent": USER_AGENT, "Accept": "*/*", **headers},
            timeout=urllib3.Timeout(connect=timeout, read=timeout),
            redirect=False,
            retries=False,
            preload_content=False,
        )
    except urllib3.exceptions.HTTPError as error:
        # Timeouts, refusals, resets and garbled answers: the CRM may be fine on the next attempt.
        raise DeliveryError(f"{where}: {_describe(error)}", True) from None
    try:
        status = response.status
        if status < 300:
            response.read(_SNIPPET)
            logger.debug("crm delivery accepted", extra={"host": parts.hostname, "status": status})
            return
        detail = _error_snippet(response)
        if 300 <= status < 400:
            detail = f"; redirected to {response.headers.get('Location', '?')}; update the destination URL"
        retryable = status >= 500 or status in RETRYABLE_STATUSES
        raise DeliveryError(f"{where}: HTTP {status} {response.reason or ''}".rstrip() + detail, retryable, status)
    except urllib3.exceptions.HTTPError as error:
        raise DeliveryError(f"{where}: {_describe(error)}", True) from None
    finally:
        response.release_conn()


def _error_snippet(response: urllib3.BaseHTTPResponse) -> str:
    try:
        text = response.read(_SNIPPET).decode("utf-8", "replace")
    except (OSError, urllib3.exceptions.HTTPError):
        return ""
    text = _CONTROL.sub(" ", text).strip()
    return f": {text}" if text else ""


def _describe(reason: object) -> str:
    # urllib3's NewConnectionError is a ConnectTimeoutError too: ask about the refusal first.
    if isinstance(reason, urllib3.exceptions.NewConnectionError | ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, TimeoutError | urllib3.exceptions.TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(reason, urllib3.exceptions.ProtocolError):
        return "the connection broke off"
    return str(reason) or type(reason).__name__


# -------------------------------------------------------------------------------------------- SMTP


# The SMTP parts (the URL, the connection, the Message-ID) are the core mail sender's (gateway/mail.py),
# shared with the cadences' e-mail steps; here its errors become DeliveryErrors the outbox understands.
SmtpTarget = mail.SmtpTarget


def parse_smtp_url(smtp_url: str) -> SmtpTarget:
    """Raises DeliveryError (not retryable) when the URL cannot name a mail server."""
    try:
        return mail.parse_smtp_url(smtp_url)
    except mail.MailError as error:
        raise DeliveryError(error.message, error.retryable, error.status) from None


@dataclass(frozen=True)
class AdfEmail:
    """One ADF document to e-mail: to whom, for which store, the XML and its idempotency key."""

    to: str
    store_name: str
    body: bytes
    idempotency_key: str


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
    """E-mail one ADF document to a CRM's lead address. Raises DeliveryError."""
    [error] = send_adf_emails(smtp_url, [AdfEmail(to, store_name, body, idempotency_key)], timeout, sender=sender)
    if error is not None:
        raise error


def send_adf_emails(
    smtp_url: str, emails: Sequence[AdfEmail], timeout: float, *, sender: str | None = None
) -> list[DeliveryError | None]:
    """E-mail ADF documents over one SMTP session; for each, None (accepted) or why not.

    Each message is plain text holding only the XML (what CRM lead parsers read); its Message-ID is
    derived from the idempotency key, so a retried delivery repeats it and the receiver can drop the copy.
    The sender is `sender`, else the URL's ?from=, else the SMTP user when it is an address. A refused
    recipient fails that message only; a session that breaks fails the messages not yet accepted.
    """
    try:
        target = parse_smtp_url(smtp_url)
    except DeliveryError as error:
        return [error for _ in emails]
    from_address = sender or target.sender or _address_like(target.username) or DEFAULT_SENDER
    results: list[DeliveryError | None] = [None] * len(emails)
    messages: list[tuple[int, EmailMessage, str]] = []
    for index, email in enumerate(emails):
        to = email.to.strip()
        if not to or any(c.isspace() for c in to):
            results[index] = DeliveryError("the ADF e-mail destination is not an address", False)
            continue
        try:
            messages.append(
                (index, adf_email_message(from_address, to, email.store_name, email.body, email.idempotency_key), to)
            )
        except ValueError as error:  # a header the e-mail policy refuses
            results[index] = DeliveryError(f"cannot build the ADF e-mail: {error}", False)
    if not messages:
        return results
    where = f"SMTP to {target.host}:{target.port}"
    try:
        client = _smtp_connect(target, timeout)
    except smtplib.SMTPResponseException as error:
        failure = _smtp_failure(where, error.smtp_code, error.smtp_error)
        return _fail_rest(results, messages, failure)
    except (OSError, smtplib.SMTPException) as error:
        return _fail_rest(results, messages, DeliveryError(f"{where}: {_describe(error)}", True))
    try:
        if target.scheme == "smtp+starttls":
            client.starttls(context=ssl.create_default_context())
        if target.username:
            client.login(target.username, target.password or "")
    except smtplib.SMTPResponseException as error:
        _smtp_close(client)
        return _fail_rest(results, messages, _smtp_failure(where, error.smtp_code, error.smtp_error))
    except smtplib.SMTPNotSupportedError as error:
        _smtp_close(client)
        return _fail_rest(results, messages, DeliveryError(f"{where}: {error}", False))
    except (OSError, smtplib.SMTPException) as error:
        _smtp_close(client)
        return _fail_rest(results, messages, DeliveryError(f"{where}: {_describe(error)}", True))
    try:
        for position, (index, message, to) in enumerate(messages):
            try:
                client.send_message(message, from_addr=from_address, to_addrs=[to])
            except smtplib.SMTPRecipientsRefused as error:
                code, text = next(iter(error.recipients.values()), (550, b"recipient refused"))
                results[index] = _smtp_failure(where, code, text)
            except smtplib.SMTPResponseException as error:
                results[index] = _smtp_failure(where, error.smtp_code, error.smtp_error)
                if error.smtp_code in {421, 554}:  # the server is closing the session
                    closing = DeliveryError(f"{where}: the server closed the session", True)
                    return _fail_rest(results, messages[position + 1 :], closing)
            except (OSError, smtplib.SMTPException) as error:
                return _fail_rest(results, messages[position:], DeliveryError(f"{where}: {_describe(error)}", True))
            else:
                continue
            try:
                client.rset()
            except (OSError, smtplib.SMTPException) as error:
                broken = DeliveryError(f"{where}: {_describe(error)}", True)
                return _fail_rest(results, messages[position + 1 :], broken)
    finally:
        _smtp_close(client)
    logger.debug("adf e-mails sent", extra={"host": target.host, "count": len(messages)})
    return results


def _fail_rest(
    results: list[DeliveryError | None], messages: Sequence[tuple[int, EmailMessage, str]], failure: DeliveryError
) -> list[DeliveryError | None]:
    for index, _message, _to in messages:
        if results[index] is None:
            results[index] = failure
    return results


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


message_id_for = mail.message_id_for
_smtp_connect = mail.connect
_smtp_close = mail.close_quietly


def _smtp_failure(where: str, code: int, text: bytes | str) -> DeliveryError:
    detail = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    # 5xx is a permanent refusal (unknown mailbox, bad credentials); 4xx and odd codes may pass later.
    retryable = not 500 <= code < 600
    return DeliveryError(f"{where}: {code} {_CONTROL.sub(' ', detail).strip()}", retryable, status=code)


def _address_like(value: str | None) -> str | None:
    return value if value and "@" in value else None
