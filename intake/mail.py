"""ADF leads found in a received e-mail, and the stores its recipients name.

Third-party sites send ADF by e-mail in every shape: the document as the plain-text body (often after a
line such as "New lead from Cars.com:"), as an `.xml` or `.adf` attachment of any content type, inside
a forwarded message, or escaped into an HTML body. `read_mail` looks in all of them and returns what it
found; a part that looked like ADF and failed to parse becomes an error naming that part, and the
other parts are still read. A mail with no ADF at all (a customer's reply, a newsletter) gives no
documents and no errors: the caller decides what to do with it.

`store_keys_for` reads the store from the addresses the mail was delivered to.
"""

from __future__ import annotations

import html
import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from email import policy
from email.headerregistry import BaseHeader, HeaderRegistry
from email.message import Message
from email.parser import BytesParser
from email.utils import getaddresses
from typing import Any

from intake.adf import AdfDocument, AdfError, parse_adf

# Content types senders give ADF attachments; anything named *.xml or *.adf counts too.
XML_CONTENT_TYPES = frozenset(
    {"application/xml", "text/xml", "application/x-adf+xml", "application/adf+xml", "application/x-xml"}
)
XML_SUFFIXES = (".xml", ".adf")

_ADF_START = re.compile(r"<adf(?=[\s>/])", re.IGNORECASE)
_ADF_END = re.compile(r"</adf\s*>", re.IGNORECASE)
_XML_DECLARATION_START = re.compile(r"<\?xml", re.IGNORECASE)
_LOOKS_LIKE_XML = re.compile(r"\s*(?:\ufeff)?\s*<(?:\?xml|adf[\s>/])", re.IGNORECASE)
_ESCAPED_ADF = re.compile(r"&lt;adf(?=[\s&/])", re.IGNORECASE)
_HTML_LINE_BREAK = re.compile(r"<br\s*/?>|</p\s*>|</div\s*>", re.IGNORECASE)
_HTML_TAG = re.compile(r"<[^>]*>")
_STORE_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True, slots=True)
class AdfMail:
    """What one e-mail carried: the ADF documents in it (in order, each once), the parts that looked
    like ADF but were refused, and the headers the intake records. `sender` is the From address
    without its display name; `recipients` are the addresses of To, Cc, Delivered-To and
    X-Original-To (the envelope recipients, when the transport knows them, are better)."""

    documents: tuple[AdfDocument, ...]
    errors: tuple[AdfError, ...]
    subject: str | None
    sender: str | None
    message_id: str | None
    recipients: tuple[str, ...] = ()


def read_mail(raw: bytes) -> AdfMail:
    """The ADF documents in a received e-mail (the bytes as delivered, headers included)."""
    # policy.default, with each header parsed once per mail rather than at every read (the parser and
    # the part accessors read Content-Type and Content-Disposition many times): half the time of a read.
    message = BytesParser(policy=policy.default.clone(header_factory=_ParsedOnce())).parsebytes(raw)
    found = _Found()
    html_parts: list[tuple[str, str]] = []
    for index, part in enumerate(_leaves(message), start=1):
        content_type = part.get_content_type()
        filename = _filename(part)
        name = filename or f"part {index} ({content_type})"
        if content_type in XML_CONTENT_TYPES or filename.lower().endswith(XML_SUFFIXES):
            found.parse(_payload(part), name)
        elif content_type == "text/html":
            html_parts.append((name, _text(part)))
        elif content_type.startswith("text/"):
            found.search(_text(part), name)
    if not found.documents and not found.errors:
        # Only when nothing else had ADF: a multipart/alternative mail carries the same lead in its
        # plain-text and its HTML body.
        for name, text in html_parts:
            found.search(_html_as_text(text), name)
    return AdfMail(
        documents=tuple(found.documents),
        errors=tuple(found.errors),
        subject=_header(message, "Subject"),
        sender=next(iter(_addresses(message, "From")), None),
        message_id=_header(message, "Message-ID"),
        recipients=_recipients(message),
    )


class _ParsedOnce(HeaderRegistry):
    """The default header registry, remembering what it built; headers are immutable, so sharing is safe."""

    def __init__(self) -> None:
        super().__init__()
        self._built: dict[tuple[str, str], BaseHeader] = {}

    def __call__(self, name: str, value: Any) -> BaseHeader:
        key = (name, str(value))
        header = self._built.get(key)
        if header is None:
            header = self._built[key] = super().__call__(name, value)
        return header


class _Found:
    """Documents and errors collected over the parts of one mail; a document seen twice (the body
    and an attachment with the same lead) is kept once."""

    def __init__(self) -> None:
        self.documents: list[AdfDocument] = []
        self.errors: list[AdfError] = []

    def parse(self, data: bytes | str, part: str) -> None:
        try:
            document = parse_adf(data)
        except AdfError as error:
            self.errors.append(error.located(part))
            return
        if document not in self.documents:
            self.documents.append(document)

    def search(self, text: str, part: str) -> None:
        """Each `<adf>...</adf>` in a text, with the XML declaration just before it; or the whole text
        when it starts as XML (it is then reported if it is not ADF)."""
        snippets = list(_adf_snippets(text))
        if not snippets and _LOOKS_LIKE_XML.match(text):
            snippets = [text]
        for snippet in snippets:
            self.parse(snippet, part)


def _adf_snippets(text: str) -> Iterator[str]:
    position = 0
    while start := _ADF_START.search(text, position):
        begin = start.start()
        declarations = list(_XML_DECLARATION_START.finditer(text, position, begin))
        if declarations:
            begin = declarations[-1].start()
        end = _ADF_END.search(text, start.end())
        # No closing tag: hand the rest to the parser, whose error then says where it broke off.
        position = end.end() if end else len(text)
        yield text[begin:position]


def _leaves(message: Message) -> Iterator[Message]:
    # walk() also descends into attached messages (message/rfc822): a forwarded lead is found.
    return (part for part in message.walk() if not part.is_multipart())


def _filename(part: Message) -> str:
    try:
        return (part.get_filename() or "").strip()
    except (ValueError, LookupError):  # a filename header the stdlib cannot decode
        return ""


def _payload(part: Message) -> bytes:
    payload = part.get_payload(decode=True)
    return payload if isinstance(payload, bytes) else b""


def _text(part: Message) -> str:
    """A text part decoded with its charset, UTF-8 when it names none or one Python does not know."""
    data = _payload(part)
    charset = part.get_content_charset() or "utf-8"
    try:
        return data.decode(charset, errors="replace")
    except LookupError:
        return data.decode("utf-8", errors="replace")


def _html_as_text(text: str) -> str:
    """An HTML body as the text a reader sees, so ADF pasted into it escaped (`&lt;adf&gt;`) becomes
    XML again; an HTML body with the ADF markup left raw in it is read as it is."""
    if not _ESCAPED_ADF.search(text):
        return text
    # &nbsp; indents the markup in such bodies; unescaped it is no whitespace to XML.
    return html.unescape(_HTML_TAG.sub("", _HTML_LINE_BREAK.sub("\n", text))).replace("\xa0", " ")


def _header(message: Message, name: str) -> str | None:
    try:
        value = message.get(name)
    except (ValueError, IndexError, TypeError):  # the header parser is known to trip on hostile input
        return None
    text = " ".join(str(value).split()) if value is not None else ""
    return text or None


def _recipients(message: Message) -> tuple[str, ...]:
    addresses: list[str] = []
    for name in ("To", "Cc", "Delivered-To", "X-Original-To"):
        addresses.extend(address for address in _addresses(message, name) if address not in addresses)
    return tuple(addresses)


def _addresses(message: Message, name: str) -> list[str]:
    """The addresses in every `name` header, without display names (which may hold commas once decoded)."""
    try:
        headers = message.get_all(name, [])
        found: list[str] = []
        for header in headers:
            parsed = getattr(header, "addresses", None)  # To, From, Cc: parsed by policy.default
            if parsed is not None:
                found.extend(address.addr_spec for address in parsed)
            else:  # Delivered-To and X-Original-To are plain text to the standard library
                found.extend(address for _, address in getaddresses([str(header)]))
    except (ValueError, IndexError, TypeError):  # the header parser is known to trip on hostile input
        return []
    return [address for address in found if address and "@" in address]


def store_keys_for(
    recipients: Collection[str],
    intake_emails: Mapping[str, str],
    *,
    known_stores: Collection[str] | None = None,
) -> tuple[str, ...]:
    """The stores a mail's recipients name, in recipient order, each once.

    A recipient names a store when its address is one of the stores' `intake_emails` (given here as
    address -> store key), or when its local part is a store key at any domain (`north-honda@...`, or
    the tag of a plus address, `leads+north-honda@...`). Addresses and keys compare case-insensitively;
    a recipient may be written with a display name (`North Honda <north-honda@example.com>`).

    With `known_stores`, only those keys count as local parts and come back spelled as given there;
    without it, any local part shaped like a store key comes back lower-cased for the caller to look up.
    """
    by_address = {address.strip().lower(): key for address, key in intake_emails.items()}
    known = {key.lower(): key for key in known_stores} if known_stores is not None else None
    keys: list[str] = []
    for _, address in getaddresses(list(recipients)):
        address = address.strip().lower()
        local, at, _domain = address.rpartition("@")
        if not at or not local:
            continue
        if address in by_address:
            candidates = [by_address[address]]
        else:
            candidates = [local, *([local.rpartition("+")[2]] if "+" in local else [])]
            if known is not None:
                candidates = [known[name] for name in candidates if name in known]
            else:
                candidates = [name for name in candidates if _STORE_KEY.fullmatch(name)]
        keys.extend(key for key in candidates if key not in keys)
    return tuple(keys)
