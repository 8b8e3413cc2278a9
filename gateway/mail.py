"""E-mail out of the gateway through SMTP_URL: the one sender the CRM's ADF e-mail and the cadences'
e-mail steps share.

I/O and message building only: who gets what, and when, is the caller's business. Every failure is a
`MailError` that says whether trying again later can help (a server that is down or says 4xx) or not
(a 5xx refusal, a URL that names no server).
"""

from __future__ import annotations

import hashlib
import logging
import re
import smtplib
import ssl
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, formataddr

log = logging.getLogger(__name__)

DEFAULT_SENDER = "dealer-gateway@localhost"
SMTP_PORTS = {"smtp": 25, "smtp+starttls": 587, "smtps": 465}
MAX_LINE = 998
_DOT_ATOM = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


class MailError(Exception):
    """Sending failed. `retryable`: the same message may be accepted later (4xx, refused, timeout)."""

    def __init__(self, message: str, retryable: bool, status: int | None = None) -> None:
        # All three go to Exception so the error survives pickling (RQ keeps failed jobs' errors).
        super().__init__(message, retryable, status)
        self.message = message
        self.retryable = retryable
        self.status = status

    def __str__(self) -> str:
        return self.message


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

    def default_sender(self) -> str:
        """The URL's ?from=, else the SMTP user when it is an address, else a local placeholder."""
        user = self.username if self.username and "@" in self.username else None
        return self.sender or user or DEFAULT_SENDER


def parse_smtp_url(smtp_url: str) -> SmtpTarget:
    """Raises MailError (not retryable) when the URL cannot name a mail server."""
    parts = urllib.parse.urlsplit(smtp_url)
    scheme = parts.scheme.lower()
    if scheme not in SMTP_PORTS or not parts.hostname:
        raise MailError("SMTP_URL must look like smtp://host:port (or smtps://, smtp+starttls://)", False)
    try:
        port = parts.port or SMTP_PORTS[scheme]
    except ValueError:
        raise MailError("SMTP_URL has an invalid port", False) from None
    query = urllib.parse.parse_qs(parts.query)
    return SmtpTarget(
        scheme=scheme,
        host=parts.hostname,
        port=port,
        username=urllib.parse.unquote(parts.username) if parts.username else None,
        password=urllib.parse.unquote(parts.password) if parts.password else None,
        sender=query["from"][0] if query.get("from") else None,
    )


def message_id_for(idempotency_key: str, sender: str = DEFAULT_SENDER) -> str:
    """<key@sender-domain>; keys that are not a valid dot-atom are hashed first. The same key gives the
    same Message-ID, so a retried message is recognisable as the first one."""
    key = idempotency_key.strip()
    # Otherwise 128 bits of the hash: unique enough, and short enough that the header is never folded.
    valid = _DOT_ATOM.fullmatch(key) and len(key) <= 64
    local = key if valid else hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]
    domain = sender.rpartition("@")[2].strip(">").strip()
    if not _DOT_ATOM.fullmatch(domain):
        domain = "dealer-gateway"
    return f"<{local}@{domain}>"


def one_line(text: str | None, limit: int = 200) -> str:
    """A header value: control characters (CR, LF...) out, whitespace folded, at most `limit` characters."""
    return " ".join(_CONTROL.sub(" ", text or "").split())[:limit]


def is_address(value: str | None) -> bool:
    """A plain addr-spec an SMTP envelope can carry (no display name, no spaces, one @)."""
    if not value or any(c.isspace() for c in value) or _CONTROL.search(value):
        return False
    try:
        Address(addr_spec=value)
    except (ValueError, IndexError, TypeError):
        return False
    local, at, domain = value.rpartition("@")
    return bool(at and local and "." in domain)


@dataclass(frozen=True)
class Email:
    """One e-mail to a person: plain text always, HTML when given (multipart/alternative).

    `key` makes the Message-ID (a retry repeats it). With `unsubscribe_url` the message carries
    List-Unsubscribe and, as RFC 8058 asks for one-click unsubscription, List-Unsubscribe-Post.
    """

    sender: str
    to: str
    subject: str
    text: str
    key: str
    sender_name: str | None = None
    html: str | None = None
    reply_to: str | None = None
    unsubscribe_url: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


def build_message(email: Email, now: datetime | None = None) -> EmailMessage:
    """The MIME message for `email`. Raises MailError (not retryable) for an address the policy refuses."""
    try:
        message = EmailMessage()
        message["From"] = formataddr((one_line(email.sender_name), email.sender)) if email.sender_name else email.sender
        message["To"] = email.to
        message["Subject"] = one_line(email.subject, 300)
        message["Date"] = format_datetime(now or datetime.now(UTC))
        message["Message-ID"] = message_id_for(email.key, email.sender)
        if email.reply_to:
            message["Reply-To"] = email.reply_to
        if email.unsubscribe_url:
            message["List-Unsubscribe"] = f"<{email.unsubscribe_url}>"
            message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        for name, value in email.headers.items():
            message[name] = one_line(value, 900)
        message.set_content(email.text, subtype="plain", charset="utf-8", cte=transfer_encoding(email.text))
        if email.html is not None:
            message.add_alternative(email.html, subtype="html", charset="utf-8", cte=transfer_encoding(email.html))
    except (ValueError, TypeError, IndexError) as error:
        raise MailError(f"cannot build the e-mail: {error}", False) from None
    return message


def transfer_encoding(text: str) -> str:
    # Plain ASCII with short lines goes as is (naive parsers read it); anything else is quoted-printable,
    # which stays legible and survives relays without 8BITMIME.
    plain = text.isascii() and all(len(line) <= MAX_LINE for line in text.splitlines())
    return "7bit" if plain else "quoted-printable"


def send_email(smtp_url: str, email: Email, timeout: float, now: datetime | None = None) -> None:
    """Build and send `email` through `smtp_url`. Raises MailError."""
    target = parse_smtp_url(smtp_url)
    if not is_address(email.to):
        raise MailError("the recipient is not an e-mail address", False)
    submit(target, build_message(email, now), email.sender, email.to, timeout)


def send_emails(
    smtp_url: str, emails: list[Email], timeout: float, now: datetime | None = None
) -> list[MailError | None]:
    """Several e-mails in one SMTP conversation (one connection, one login); for each, None when the
    server took it or the MailError that says why not. A connection that fails fails the rest alike."""
    try:
        target = parse_smtp_url(smtp_url)
    except MailError as error:
        return [error for _ in emails]
    answers: list[MailError | None] = []
    messages: list[tuple[EmailMessage, Email]] = []
    for email in emails:
        if not is_address(email.to):
            answers.append(MailError("the recipient is not an e-mail address", False))
            continue
        try:
            messages.append((build_message(email, now), email))
            answers.append(None)
        except MailError as error:
            answers.append(error)
    if not messages:
        return answers
    where = f"SMTP to {target.host}:{target.port}"
    try:
        current: smtplib.SMTP | None = _open(target, timeout)
    except MailError as error:
        return [answer if answer is not None else error for answer in answers]
    results: dict[int, MailError | None] = {}
    try:
        for message, email in messages:
            if current is None:
                break
            try:
                current.send_message(message, from_addr=email.sender, to_addrs=[email.to])
                results[id(email)] = None
            except smtplib.SMTPRecipientsRefused as error:
                code, text = next(iter(error.recipients.values()), (550, b"recipient refused"))
                results[id(email)] = _failure(where, code, text)
            except smtplib.SMTPResponseException as error:
                results[id(email)] = _failure(where, error.smtp_code, error.smtp_error)
            except (OSError, smtplib.SMTPException) as error:
                results[id(email)] = MailError(f"{where}: {describe(error)}", True)
                current = _reopen(current, target, timeout)
    finally:
        if current is not None:
            close_quietly(current)
    lost = MailError(f"{where}: the connection was lost", True)
    by_email = iter(messages)
    merged: list[MailError | None] = []
    for answer in answers:
        if answer is not None:
            merged.append(answer)
            continue
        _, email = next(by_email)
        merged.append(results.get(id(email), lost))
    return merged


def _open(target: SmtpTarget, timeout: float) -> smtplib.SMTP:
    where = f"SMTP to {target.host}:{target.port}"
    try:
        client = connect(target, timeout)
    except smtplib.SMTPResponseException as error:
        raise _failure(where, error.smtp_code, error.smtp_error) from None
    except (OSError, smtplib.SMTPException) as error:
        raise MailError(f"{where}: {describe(error)}", True) from None
    try:
        if target.scheme == "smtp+starttls":
            client.starttls(context=ssl.create_default_context())
        if target.username:
            client.login(target.username, target.password or "")
    except smtplib.SMTPResponseException as error:
        close_quietly(client)
        raise _failure(where, error.smtp_code, error.smtp_error) from None
    except (OSError, smtplib.SMTPException) as error:
        close_quietly(client)
        raise MailError(f"{where}: {describe(error)}", True) from None
    return client


def _reopen(client: smtplib.SMTP, target: SmtpTarget, timeout: float) -> smtplib.SMTP | None:
    close_quietly(client)
    try:
        return _open(target, timeout)
    except MailError:
        return None


def submit(target: SmtpTarget, message: EmailMessage, from_address: str, to: str, timeout: float) -> None:
    """One SMTP conversation handing `message` to the server for `to`. Raises MailError."""
    where = f"SMTP to {target.host}:{target.port}"
    try:
        client = connect(target, timeout)
    except smtplib.SMTPResponseException as error:
        raise _failure(where, error.smtp_code, error.smtp_error) from None
    except (OSError, smtplib.SMTPException) as error:
        raise MailError(f"{where}: {describe(error)}", True) from None
    try:
        if target.scheme == "smtp+starttls":
            client.starttls(context=ssl.create_default_context())
        if target.username:
            client.login(target.username, target.password or "")
        client.send_message(message, from_addr=from_address, to_addrs=[to])
    except smtplib.SMTPRecipientsRefused as error:
        code, text = next(iter(error.recipients.values()), (550, b"recipient refused"))
        raise _failure(where, code, text) from None
    except smtplib.SMTPResponseException as error:
        raise _failure(where, error.smtp_code, error.smtp_error) from None
    except smtplib.SMTPNotSupportedError as error:
        raise MailError(f"{where}: {error}", False) from None
    except (OSError, smtplib.SMTPException) as error:
        raise MailError(f"{where}: {describe(error)}", True) from None
    finally:
        close_quietly(client)
    log.debug("e-mail accepted", extra={"host": target.host})


def describe(reason: object) -> str:
    if isinstance(reason, TimeoutError):
        return "timed out"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    return str(reason) or type(reason).__name__


def connect(target: SmtpTarget, timeout: float) -> smtplib.SMTP:
    if target.scheme == "smtps":
        context = ssl.create_default_context()
        return smtplib.SMTP_SSL(target.host, target.port, timeout=timeout, context=context)
    return smtplib.SMTP(target.host, target.port, timeout=timeout)


def close_quietly(client: smtplib.SMTP) -> None:
    # The message is already accepted or refused by now: a failed QUIT must not turn into a retry.
    try:
        client.quit()
    except (OSError, smtplib.SMTPException):
        client.close()


def _failure(where: str, code: int, text: bytes | str) -> MailError:
    detail = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    # 5xx is a permanent refusal (unknown mailbox, bad credentials); 4xx and odd codes may pass later.
    retryable = not 500 <= code < 600
    return MailError(f"{where}: {code} {_CONTROL.sub(' ', detail).strip()}", retryable, status=code)
