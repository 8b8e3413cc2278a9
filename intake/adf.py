"""ADF/XML 1.0 leads as third-party sites send them, parsed safely into frozen dataclasses.

Autotrader, Cars.com, manufacturer sites and lead aggregators send leads as ADF (Auto-lead Data
Format) 1.0, mostly by e-mail. What arrives is looser than the specification: the `<?adf?>` processing
instruction and the DOCTYPE are often missing, the spec's own examples begin with `<?XML VERSION "1.0"?>`
(not well-formed), phone types are `home` or `mobile` rather than the DTD's `voice` or `cellphone`,
vehicles are empty, names are split or whole. `parse_adf` accepts all of that, and refuses what is
unsafe or not ADF with an `AdfError`:

- not well-formed XML (the error names the line and column);
- any entity declaration in a DTD: the "billion laughs" expansion bomb, external entities that would
  read local files or reach other hosts (`file:///etc/passwd`), parameter entities. A DOCTYPE that
  only names the ADF DTD, or declares elements and attributes, is accepted; nothing it names is loaded;
- a root element other than `<adf>`, an `<adf>` without a `<prospect>`, a document over `max_bytes`.

Nothing here touches the database or the network: the intake service stores what this returns.
It is a little over 600 lines because it is one forgiving reader of one format: each element's reading
accepts the looseness above in the place it occurs (names split or whole, phone types under any of their
names, empty vehicles), and splitting it would spread one element's rules over several files.
"""

from __future__ import annotations

import html.entities
import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Literal
from urllib.parse import quote
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden, NotSupportedError
from defusedxml.ElementTree import fromstring

from gateway.phones import DEFAULT_REGION, InvalidPhone, is_withheld, to_e164

# Real leads are a few kilobytes; a megabyte is already hundreds of prospects.
MAX_DOCUMENT_BYTES = 1024 * 1024

ProspectStatus = Literal["new", "resend"]
AdfErrorCode = Literal["malformed", "entities", "external", "not-adf", "no-prospect", "too-large"]

# Phone types in order of use for calling and texting back: a mobile can take a text.
MOBILE_TYPES = frozenset({"cellphone", "mobile", "cell", "cellular", "mobilephone", "wireless", "sms", "text"})
VOICE_TYPES = frozenset({"voice", "phone", "day", "evening", "primary"})
UNREACHABLE_TYPES = frozenset({"fax"})

# expat's codes for the two failures a retry can repair (see _parse_root).
_XML_ERROR_INVALID_TOKEN = 4
_XML_ERROR_UNDEFINED_ENTITY = 11
_XML_PREDEFINED_ENTITIES = frozenset({"lt", "gt", "amp", "quot", "apos"})
_ENTITY_REFERENCE = re.compile(r"&([A-Za-z][A-Za-z0-9]{1,31});")
# A conforming XML declaration: lower-case `xml`, then `version=`.
_XML_DECLARATION = re.compile(rb"<\?xml\s+version\s*=[^>]*\?>")
# What the ADF 1.0 specification prints instead: `<?XML VERSION "1.0"?>`, and variations of it.
_LOOSE_XML_DECLARATION = re.compile(rb"<\?xml(?=[\s?])[^>]*\?>", re.IGNORECASE)
_DECLARED_ENCODING = re.compile(rb"""encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
_DECLARED_ENCODING_IN_TEXT = re.compile(r"""(\A\s*<\?xml\b[^>]*?\bencoding\s*=\s*["'])[A-Za-z0-9._-]+(["'])""")
_UTF8_NAMES = frozenset({b"utf-8", b"utf8"})
_POSITION_SUFFIX = re.compile(r":\s*line \d+, column \d+$")
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_UTF8_BOM = b"\xef\xbb\xbf"
_US_DATE = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})(?:[ T]+(\d{1,2}):(\d{2})(?::(\d{2}))?\s*([AaPp][Mm])?)?")


class AdfError(ValueError):
    """An ADF document refused: not well-formed, unsafe, or not ADF.

    `code` says which (see AdfErrorCode); `line` and `column` (both counted from 1) point into the
    document as received when the XML is not well-formed; `part` names where a document came from
    when it was found inside something larger (an e-mail attachment).
    """

    def __init__(
        self,
        reason: str,
        *,
        code: AdfErrorCode = "malformed",
        line: int | None = None,
        column: int | None = None,
        part: str | None = None,
    ) -> None:
        self.reason = reason
        self.code: AdfErrorCode = code
        self.line = line
        self.column = column
        self.part = part
        super().__init__(self.describe())

    def describe(self) -> str:
        text = self.reason
        if self.line is not None:
            text = f"{text} at line {self.line}, column {self.column}"
        return f"{self.part}: {text}" if self.part else text

    def located(self, part: str) -> AdfError:
        """The same refusal, saying which part of a larger message it concerns."""
        return AdfError(self.reason, code=self.code, line=self.line, column=self.column, part=part)


@dataclass(frozen=True, slots=True)
class ProspectId:
    """An `<id>`: a lead's identifier at one party that handled it (`sequence` orders the parties)."""

    source: str | None
    value: str
    sequence: int | None = None


@dataclass(frozen=True, slots=True)
class Phone:
    """A `<phone>` as sent: the raw number, its type lower-cased (voice, cellphone, fax, pager, and in
    the wild home, mobile, work, cell...), the time to call (morning, afternoon, evening, nopreference,
    day) and whether the customer marked it preferred."""

    number: str
    type: str = "voice"
    time: str = "nopreference"
    preferred: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Address:
    """A postal `<address>`; `street` holds its lines in order."""

    street: tuple[str, ...] = ()
    apartment: str | None = None
    city: str | None = None
    region: str | None = None  # <regioncode>: a state or province
    postal_code: str | None = None
    country: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Contact:
    """A `<contact>`: the names as given (`full_name` only from `part="full"` or an unmarked name),
    phones in document order, the first e-mail address, the first postal address."""

    first_name: str | None = None
    middle_name: str | None = None
    last_name: str | None = None
    full_name: str | None = None
    phones: tuple[Phone, ...] = ()
    email: str | None = None
    address: Address | None = None

    @property
    def name(self) -> str | None:
        """The name to show: the full name as sent, or the parts joined."""
        if self.full_name:
            return self.full_name
        parts = [part for part in (self.first_name, self.middle_name, self.last_name) if part]
        return " ".join(parts) or None


@dataclass(frozen=True, slots=True, kw_only=True)
class Customer(Contact):
    """The `<customer>`: their contact details and what they wrote (`<comments>`)."""

    comments: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Vehicle:
    """A `<vehicle>` the customer asked about (or offers as a trade-in: `interest`).

    Every field may be missing (an empty `<vehicle/>` is common); `year` and `price` are None when
    they are not numbers. `interest` and `status` default as the ADF DTD does.
    """

    interest: str = "buy"
    status: str = "new"
    year: int | None = None
    make: str | None = None
    model: str | None = None
    trim: str | None = None
    vin: str | None = None
    stock: str | None = None
    price: Decimal | None = None
    comments: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Vendor:
    """The `<vendor>`: the dealership the lead is for, as the sender knows it."""

    name: str | None = None
    contact: Contact | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Provider:
    """The `<provider>`: the site or service that produced the lead (Cars.com, Autotrader...)."""

    name: str | None = None
    service: str | None = None
    url: str | None = None
    email: str | None = None
    phone: str | None = None
    contact: Contact | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Prospect:
    """One lead (`<prospect>`).

    `request_date` is the `<requestdate>` parsed, None when it is missing or unreadable, and naive when
    the sender gave no UTC offset (the store's timezone is the best guess then); `request_date_text`
    keeps what was sent. `status` is "resend" for a lead the sender has sent before.
    """

    status: ProspectStatus = "new"
    ids: tuple[ProspectId, ...] = ()
    request_date: datetime | None = None
    request_date_text: str | None = None
    customer: Customer = field(default_factory=Customer)
    vehicles: tuple[Vehicle, ...] = ()
    vendor: Vendor | None = None
    provider: Provider | None = None


@dataclass(frozen=True, slots=True)
class AdfDocument:
    """An `<adf>` document: one or more prospects, in document order."""

    prospects: tuple[Prospect, ...]


# ------------------------------------------------------------------------------------------ parsing


def parse_adf(data: bytes | str, *, max_bytes: int = MAX_DOCUMENT_BYTES) -> AdfDocument:
    """The ADF document in `data` (bytes as received; str when a transport already decoded it).

    Raises AdfError (see the module docstring for what is refused).
    """
    raw = _utf8(data) if isinstance(data, str) else bytes(data)
    if len(raw) > max_bytes:
        raise AdfError(f"document of {len(raw)} bytes is over the limit of {max_bytes}", code="too-large")
    root = _parse_root(raw)
    _normalise_names(root)
    if root.tag != "adf":
        raise AdfError(f"the root element is <{root.tag}>, not <adf>", code="not-adf")
    prospects = tuple(_prospect(element) for element in _children(root, "prospect"))
    if not prospects:
        raise AdfError("the <adf> document holds no <prospect>", code="no-prospect")
    return AdfDocument(prospects=prospects)


def _utf8(text: str) -> bytes:
    """A decoded document as the bytes expat reads: UTF-8, with its declaration saying so (a mail
    body decoded from UTF-8 often still declares the ISO-8859-1 the document was written in)."""
    return _DECLARED_ENCODING_IN_TEXT.sub(r"\1UTF-8\2", text, count=1).encode("utf-8")


def _parse_root(raw: bytes) -> Element:
    if raw.startswith(_UTF16_BOMS):
        # expat reads UTF-16 from its byte order mark; the repairs below work on ASCII-compatible bytes.
        return _defused_parse(raw, _Offset())
    text, offset = _tidy_prolog(raw)
    # Each repair fixes one habit and keeps every line and column in place, so an error still points
    # into the document as received; two rounds cover a document with both habits.
    for _ in range(2):
        try:
            return _defused_parse(text, offset)
        except AdfError as error:
            repaired = _repair(text, error) if error.code == "malformed" else None
            if repaired is None:
                raise
            text = repaired
    return _defused_parse(text, offset)


@dataclass(frozen=True, slots=True)
class _Offset:
    """What _tidy_prolog cut from the front, to report positions in the document as received."""

    lines: int = 0
    columns: int = 0  # on the first remaining line

    def position(self, line: int, column: int) -> tuple[int, int]:
        if line == 1:
            return line + self.lines, column + self.columns + 1
        return line + self.lines, column + 1


def _tidy_prolog(raw: bytes) -> tuple[bytes, _Offset]:
    """Drop what real senders put before the document that XML forbids there: leading blank lines or
    spaces (common in e-mail bodies) and a non-conforming XML declaration (the ADF specification's
    examples print `<?XML VERSION "1.0"?>`)."""
    unmarked = raw.removeprefix(_UTF8_BOM)  # a byte order mark takes no column
    body = unmarked.lstrip()
    cut = unmarked[: len(unmarked) - len(body)]
    loose = _LOOSE_XML_DECLARATION.match(body)
    if loose and not _XML_DECLARATION.match(body):
        cut += body[: loose.end()]
        body = body[loose.end() :]
    if not cut:
        return raw, _Offset()
    lines = cut.count(b"\n")
    columns = len(cut) - cut.rfind(b"\n") - 1 if lines else len(cut)
    return body, _Offset(lines=lines, columns=columns)


def _repair(text: bytes, error: AdfError) -> bytes | None:
    """A second chance for two habits of real senders; None when neither applies.

    - Windows-1252 text (accented names) in a document that declares no encoding or UTF-8, and so
      is read as UTF-8: decoded as Windows-1252 and re-encoded.
    - HTML entities (`&nbsp;`, `&eacute;`) that XML does not define: replaced by the character
      reference of the same character, so nothing is expanded beyond one character.
    """
    code = getattr(error.__cause__, "code", None)
    if code == _XML_ERROR_INVALID_TOKEN and _declared_encoding(text) in _UTF8_NAMES:
        try:
            text.decode("utf-8")
        except UnicodeDecodeError:
            return text.decode("cp1252", errors="replace").encode("utf-8")
        return None
    if code == _XML_ERROR_UNDEFINED_ENTITY:
        decoded = text.decode("utf-8", errors="surrogateescape")
        replaced = _ENTITY_REFERENCE.sub(_html_entity_as_reference, decoded)
        return replaced.encode("utf-8", errors="surrogateescape") if replaced != decoded else None
    return None


def _declared_encoding(text: bytes) -> bytes:
    """The encoding the XML declaration names, lower-cased; UTF-8, XML's default, when none is named."""
    declaration = _XML_DECLARATION.match(text)
    named = _DECLARED_ENCODING.search(declaration.group()) if declaration else None
    return named.group(1).lower() if named else b"utf-8"


def _html_entity_as_reference(match: re.Match[str]) -> str:
    name = match.group(1)
    codepoint = html.entities.name2codepoint.get(name)
    if codepoint is None or name in _XML_PREDEFINED_ENTITIES:
        return match.group()
    return f"&#{codepoint};"


def _defused_parse(text: bytes, offset: _Offset) -> Element:
    # forbid_dtd=False: senders put `<!DOCTYPE adf SYSTEM "adf.dtd">` on leads and that is harmless,
    # since expat loads no external DTD subset. forbid_entities=True refuses every entity declaration
    # (internal ones are the expansion bomb, external ones read files or reach hosts, and ADF needs
    # none); forbid_external=True refuses any external reference that would otherwise be resolved.
    try:
        return fromstring(text, forbid_dtd=False, forbid_entities=True, forbid_external=True)
    except ParseError as error:
        line, column = offset.position(*error.position)
        reason = _POSITION_SUFFIX.sub("", str(error))
        raise AdfError(f"not well-formed XML ({reason})", line=line, column=column) from error
    except EntitiesForbidden as error:
        kind = "an external entity" if error.sysid or error.pubid else "an entity"
        raise AdfError(
            f"refused: the document declares {kind} ({error.name!r}); ADF needs none and they are how "
            "XML expansion bombs and external-entity reads work",
            code="external" if error.sysid or error.pubid else "entities",
        ) from error
    except ExternalReferenceForbidden as error:
        raise AdfError(
            f"refused: the document refers to an external resource ({error.sysid!r})", code="external"
        ) from error
    except (DTDForbidden, NotSupportedError) as error:  # neither is raised with these settings
        raise AdfError(f"refused: {error}", code="entities") from error


# ------------------------------------------------------------------------------------- the elements


def _prospect(element: Element) -> Prospect:
    status: ProspectStatus = "resend" if _attr(element, "status", "new").lower() == "resend" else "new"
    date_text = _text(_child(element, "requestdate"))
    customer = _child(element, "customer")
    vendor = _child(element, "vendor")
    provider = _child(element, "provider")
    return Prospect(
        status=status,
        ids=_ids(element),
        request_date=_request_date(date_text),
        request_date_text=date_text,
        customer=_customer(customer) if customer is not None else Customer(),
        vehicles=tuple(_vehicle(vehicle) for vehicle in _children(element, "vehicle")),
        vendor=_vendor(vendor) if vendor is not None else None,
        provider=_provider(provider) if provider is not None else None,
    )


def _ids(element: Element) -> tuple[ProspectId, ...]:
    ids = []
    for child in _children(element, "id"):
        value = _text(child)
        if value:
            ids.append(ProspectId(_attr(child, "source") or None, value, _integer(_attr(child, "sequence"))))
    return tuple(ids)


def _customer(element: Element) -> Customer:
    contact = _contact(_child(element, "contact")) or Contact()
    return Customer(
        first_name=contact.first_name,
        middle_name=contact.middle_name,
        last_name=contact.last_name,
        full_name=contact.full_name,
        phones=contact.phones,
        email=contact.email,
        address=contact.address,
        comments=_text(_child(element, "comments"), multiline=True),
    )


def _contact(element: Element | None) -> Contact | None:
    if element is None:
        return None
    names: dict[str, str] = {}
    for child in _children(element, "name"):
        name = _text(child)
        key = _NAME_PARTS.get(_attr(child, "part", "full").lower(), "full_name")
        if name and key not in names:
            names[key] = name
    phones = []
    for child in _children(element, "phone"):
        number = _text(child)
        if number:
            phones.append(
                Phone(
                    number,
                    type=_attr(child, "type", "voice").lower() or "voice",
                    time=_attr(child, "time", "nopreference").lower() or "nopreference",
                    preferred=_attr(child, "preferredcontact") == "1",
                )
            )
    address = _child(element, "address")
    return Contact(
        first_name=names.get("first_name"),
        middle_name=names.get("middle_name"),
        last_name=names.get("last_name"),
        full_name=names.get("full_name"),
        phones=tuple(phones),
        email=_first_text(element, "email"),
        address=_address(address) if address is not None else None,
    )


# `part` values of <name>: the DTD's, and "surname" from an earlier version of the specification.
_NAME_PARTS = {
    "first": "first_name",
    "middle": "middle_name",
    "last": "last_name",
    "surname": "last_name",
    "full": "full_name",
}


def _address(element: Element) -> Address:
    return Address(
        street=tuple(line for child in _children(element, "street") if (line := _text(child))),
        apartment=_first_text(element, "apartment"),
        city=_first_text(element, "city"),
        region=_first_text(element, "regioncode"),
        postal_code=_first_text(element, "postalcode"),
        country=_first_text(element, "country"),
    )


def _vehicle(element: Element) -> Vehicle:
    vin = _first_text(element, "vin")
    return Vehicle(
        interest=_attr(element, "interest", "buy").lower() or "buy",
        status=_attr(element, "status", "new").lower() or "new",
        year=_year(_first_text(element, "year")),
        make=_first_text(element, "make"),
        model=_first_text(element, "model"),
        trim=_first_text(element, "trim"),
        vin=vin.replace(" ", "").upper() if vin else None,
        stock=_first_text(element, "stock"),
        price=_price(_first_text(element, "price")),
        comments=_text(_child(element, "comments"), multiline=True),
    )


def _vendor(element: Element) -> Vendor:
    return Vendor(name=_first_text(element, "vendorname"), contact=_contact(_child(element, "contact")))


def _provider(element: Element) -> Provider:
    return Provider(
        name=_first_text(element, "name"),
        service=_first_text(element, "service"),
        url=_first_text(element, "url"),
        email=_first_text(element, "email"),
        phone=_first_text(element, "phone"),
        contact=_contact(_child(element, "contact")),
    )


# -------------------------------------------------------------------------------------- the values


def _normalise_names(root: Element) -> None:
    """Element and attribute names without a namespace and in lower case, once for the whole tree:
    `<ADF>`, `<Prospect>` and `xmlns`-qualified names are seen, and lookups after this are plain."""
    for element in root.iter():
        if not element.tag.islower() or "}" in element.tag:
            element.tag = _local(element.tag)
        if any(not key.islower() or "}" in key for key in element.attrib):
            element.attrib = {_local(key): value for key, value in element.attrib.items()}


def _local(name: str) -> str:
    return name.rpartition("}")[2].lower()


def _children(element: Element, name: str) -> list[Element]:
    return element.findall(name)


def _child(element: Element, name: str) -> Element | None:
    return element.find(name)


def _first_text(element: Element, name: str) -> str | None:
    return _text(_child(element, name))


def _text(element: Element | None, *, multiline: bool = False) -> str | None:
    """The element's text, None when empty; runs of whitespace become one space, or, for comments,
    each line is trimmed and blank lines at either end dropped."""
    if element is None:
        return None
    text = "".join(element.itertext())
    if multiline:
        text = "\n".join(" ".join(line.split()) for line in text.splitlines()).strip("\n")
    else:
        text = " ".join(text.split())
    return text or None


def _attr(element: Element, name: str, default: str = "") -> str:
    value = element.get(name)
    return value.strip() if value is not None else default


def _integer(text: str | None) -> int | None:
    return int(text) if text and text.isascii() and text.isdigit() else None


def _year(text: str | None) -> int | None:
    year = _integer(text)
    return year if year is not None and 1886 <= year <= 2200 else None


def _price(text: str | None) -> Decimal | None:
    if not text:
        return None
    cleaned = text.replace("$", "").replace(",", "").replace("USD", "").strip()
    try:
        price = Decimal(cleaned)
    except InvalidOperation:
        return None
    return price if price.is_finite() and price >= 0 else None


def _request_date(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    match = _US_DATE.fullmatch(text)
    if match is None:
        return None
    month, day, year, hour, minute, second, meridiem = match.groups()
    hours = int(hour or 0)
    if meridiem:
        hours = hours % 12 + (12 if meridiem.lower() == "pm" else 0)
    try:
        return datetime(int(year), int(month), int(day), hours, int(minute or 0), int(second or 0))  # noqa: DTZ001
    except ValueError:
        return None


# --------------------------------------------------------------------------------------- using them


def dedupe_key(prospect: Prospect) -> str | None:
    """What makes a resend of this prospect recognisable: the source and value of its first `<id>`
    (lowest `sequence`, then document order), as "source/value" with the source lower-cased and
    percent-quoted so the first "/" separates the two. None when the prospect carries no `<id>`.

    The key is only unique at one store (two dealers may get the same id from one site): store it
    beside the store.
    """
    first = first_id(prospect)
    if first is None:
        return None
    source = quote((first.source or "").strip().casefold(), safe="")
    return f"{source}/{first.value}"


def first_id(prospect: Prospect) -> ProspectId | None:
    """The prospect's first `<id>` (lowest `sequence`, then document order): the lead's own id at the
    party that sent it first. None when it carries none."""
    if not prospect.ids:
        return None
    return min(
        enumerate(prospect.ids),
        key=lambda item: (item[1].sequence is None, item[1].sequence or 0, item[0]),
    )[1]


def best_phone(prospect: Prospect, region: str = DEFAULT_REGION) -> str | None:
    """The customer's number to call or text back, as E.164: a mobile first (cellphone, mobile,
    cell...), then a voice line, then any other but a fax; a number marked preferred first within each.
    None when no phone is a dialable number."""
    phones = sorted(
        enumerate(prospect.customer.phones),
        key=lambda item: (_phone_rank(item[1]), not item[1].preferred, item[0]),
    )
    for _, phone in phones:
        if phone.type in UNREACHABLE_TYPES or is_withheld(phone.number):
            continue
        try:
            return to_e164(phone.number, region)
        except InvalidPhone:
            continue
    return None


def _phone_rank(phone: Phone) -> int:
    if phone.type in MOBILE_TYPES:
        return 0
    if phone.type in VOICE_TYPES:
        return 1
    return 2
