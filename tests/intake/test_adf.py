"""intake/adf.py: ADF as real senders write it parses; unsafe, malformed and non-ADF documents are refused."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from intake.adf import (
    AdfError,
    Phone,
    Prospect,
    ProspectId,
    Vehicle,
    best_phone,
    dedupe_key,
    parse_adf,
)

SAMPLES = Path(__file__).with_name("samples")


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def only_prospect(data: bytes | str) -> Prospect:
    (prospect,) = parse_adf(data).prospects
    return prospect


def lead(customer: str = "", *, head: str = "", vehicle: str = "<vehicle/>", prospect: str = "") -> bytes:
    """A minimal ADF document around the given fragments."""
    return (
        f"{head}<adf><prospect {prospect}><requestdate>2026-11-24T10:00:00-05:00</requestdate>{vehicle}"
        f"<customer><contact>{customer}</contact></customer>"
        "<vendor><vendorname>North Honda</vendorname></vendor></prospect></adf>"
    ).encode()


# ---------------------------------------------------------------------------------- what is read


def test_a_complete_lead_is_read_field_by_field() -> None:
    prospect = only_prospect(sample("cars_com_used.xml"))

    assert prospect.status == "new"
    assert prospect.ids == (ProspectId("Cars.com", "CDC-8842117", 1),)
    assert prospect.request_date == datetime(2026, 11, 24, 14, 42, 17, tzinfo=UTC)
    assert prospect.request_date_text == "2026-11-24T09:42:17-05:00"

    customer = prospect.customer
    assert (customer.first_name, customer.last_name, customer.full_name) == ("Dana", "Whitfield", None)
    assert customer.name == "Dana Whitfield"
    assert customer.email == "dana.whitfield@example.com"
    assert customer.phones == (
        Phone("202-555-0143", type="voice", time="morning"),
        Phone("(202) 555-0187", type="cellphone", time="evening", preferred=True),
    )
    assert customer.address is not None
    assert customer.address.street == ("1420 Maple Avenue NW", "Unit 3")
    assert (customer.address.city, customer.address.region, customer.address.postal_code) == (
        "Washington",
        "DC",
        "20010",
    )
    assert customer.address.country == "US"
    assert customer.comments == (
        "Is the CR-V still available? I'd like to come in Saturday morning & trade in my 2015 Civic."
    )

    assert prospect.vehicles == (
        Vehicle(
            interest="buy",
            status="used",
            year=2022,
            make="Honda",
            model="CR-V",
            trim="EX-L AWD",
            vin="7FARS2H58NE004217",
            stock="U4217",
            price=Decimal("28995.00"),
            comments="Listed on Cars.com with 31,450 miles.",
        ),
    )

    assert prospect.vendor is not None
    assert prospect.vendor.name == "North Honda"
    assert prospect.vendor.contact is not None
    assert prospect.vendor.contact.name == "North Honda Internet Sales"
    assert prospect.provider is not None
    assert prospect.provider.name == "Cars.com"
    assert prospect.provider.service == "Vehicle Details Page - Check Availability"
    assert prospect.provider.url == "https://www.cars.com/"
    assert prospect.provider.email == "leads@cars.example.com"
    assert prospect.provider.phone == "888-555-0123"


def test_a_lead_without_xml_declaration_or_adf_instruction_is_read() -> None:
    prospect = only_prospect(sample("autotrader_no_prolog.xml"))

    assert prospect.ids == (ProspectId("AutoTrader", "AT-2026-0091-7734", 1),)
    assert prospect.request_date == datetime(2026, 11, 24, 14, 3, 55, tzinfo=UTC)
    assert prospect.provider is not None
    assert prospect.provider.name == "AutoTrader"


def test_whitespace_around_and_inside_values_is_tidied() -> None:
    prospect = only_prospect(sample("autotrader_no_prolog.xml"))

    assert prospect.ids[0].value == "AT-2026-0091-7734"
    assert prospect.customer.full_name == "Marcus Ellery"
    assert prospect.customer.name == "Marcus Ellery"
    # Comments keep their lines, trimmed.
    assert prospect.customer.comments == "Looking for a hybrid SUV.\n\nPlease text, I'm at work during the day."
    assert prospect.vehicles[1].comments == "About 98k miles.\nSmall dent on the rear bumper."


def test_home_and_mobile_phone_types_are_kept_as_sent() -> None:
    prospect = only_prospect(sample("autotrader_no_prolog.xml"))

    assert [(phone.type, phone.number) for phone in prospect.customer.phones] == [
        ("home", "301.555.0162"),
        ("mobile", "+1 (301) 555-0174"),
    ]


def test_an_empty_vehicle_is_a_vehicle_with_nothing_known() -> None:
    prospect = only_prospect(sample("autotrader_no_prolog.xml"))

    empty, trade_in = prospect.vehicles
    assert empty == Vehicle()
    assert (empty.interest, empty.status, empty.make) == ("buy", "new", None)
    assert (trade_in.interest, trade_in.status, trade_in.year, trade_in.model) == ("trade-in", "used", 2015, "Civic")


def test_several_prospects_in_one_document_come_back_in_order() -> None:
    document = parse_adf(sample("aggregator_two_prospects.xml"))

    first, second = document.prospects
    assert (first.status, first.ids[0].value, first.customer.first_name) == ("new", "LP-771203", "Zoë")
    assert (second.status, second.ids[0].value, second.customer.first_name) == ("resend", "LP-770988", "Łukasz")
    assert second.vehicles == (Vehicle(),)
    assert first.ids == (
        ProspectId("LeadPoint Auto", "LP-771203", 1),
        ProspectId("North Honda CRM", "NH-0042", 2),
    )


def test_non_ascii_names_and_comments_survive() -> None:
    first, second = parse_adf(sample("aggregator_two_prospects.xml")).prospects

    assert (first.customer.first_name, first.customer.last_name) == ("Zoë", "Brontë-Nuñez")
    assert first.customer.comments == "Quiero una prueba de manejo el sábado. ¿Tienen en color azul?"
    assert second.customer.name == "Łukasz Wiśniewski"


def test_name_parts_first_last_full_and_unmarked() -> None:
    split = only_prospect(lead('<name part="first">Ana</name><name part="last">Lima</name>'))
    whole = only_prospect(lead('<name part="full">Ana Lima</name>'))
    unmarked = only_prospect(lead("<name>Ana Lima</name>"))
    surname = only_prospect(lead('<name part="first">Ana</name><name part="surname">Lima</name>'))

    assert (split.customer.first_name, split.customer.last_name, split.customer.full_name) == ("Ana", "Lima", None)
    assert (whole.customer.first_name, whole.customer.full_name) == (None, "Ana Lima")
    assert unmarked.customer.full_name == "Ana Lima"
    assert surname.customer.last_name == "Lima"
    assert {split.customer.name, whole.customer.name, unmarked.customer.name} == {"Ana Lima"}


def test_the_adf_specifications_own_declaration_is_tolerated() -> None:
    prospect = only_prospect(sample("spec_style.xml"))

    assert prospect.customer.full_name == "John Doe"
    assert prospect.vehicles[0].make == "Chevrolet"
    assert prospect.vendor is not None
    assert prospect.vendor.contact is not None
    assert prospect.vendor.contact.full_name == "Acura of Bellevue"


def test_blank_lines_before_the_declaration_are_tolerated() -> None:
    prospect = only_prospect(b"\r\n\n   " + sample("cars_com_used.xml"))

    assert prospect.customer.last_name == "Whitfield"


def test_a_byte_order_mark_is_tolerated() -> None:
    assert only_prospect(b"\xef\xbb\xbf" + sample("cars_com_used.xml")).customer.first_name == "Dana"


def test_declared_latin_1_and_utf_16_are_read() -> None:
    name = '<name part="full">José Muñoz</name>'
    latin = lead(name, head='<?xml version="1.0" encoding="ISO-8859-1"?>').decode().encode("latin-1")
    utf16 = lead(name, head='<?xml version="1.0" encoding="UTF-16"?>').decode().encode("utf-16")

    assert only_prospect(latin).customer.full_name == "José Muñoz"
    assert only_prospect(utf16).customer.full_name == "José Muñoz"


def test_undeclared_windows_1252_is_read_rather_than_refused() -> None:
    data = lead('<name part="full">Renée D\u2019Arcy</name>').decode().encode("cp1252")

    assert only_prospect(data).customer.full_name == "Renée D\u2019Arcy"


def test_windows_1252_declared_as_utf_8_is_read_rather_than_refused() -> None:
    data = lead('<name part="full">Renée Roy</name>', head='<?xml version="1.0" encoding="UTF-8"?>')

    assert only_prospect(data.decode().encode("cp1252")).customer.full_name == "Renée Roy"


def test_a_str_declaring_another_encoding_is_read_as_the_text_it_is() -> None:
    text = lead('<name part="full">José Muñoz</name>', head="<?xml version='1.0' encoding='ISO-8859-1'?>").decode()

    assert only_prospect(text).customer.full_name == "José Muñoz"
    assert only_prospect(text.replace("ISO-8859-1", "UTF-16")).customer.full_name == "José Muñoz"


def test_html_entities_in_text_are_read_as_their_characters() -> None:
    prospect = only_prospect(lead('<name part="full">Ren&eacute;e&nbsp;Roy</name><email>r&amp;r@example.com</email>'))

    assert prospect.customer.full_name == "Renée Roy"
    assert prospect.customer.email == "r&r@example.com"


def test_a_str_already_decoded_is_read() -> None:
    first, _ = parse_adf(sample("aggregator_two_prospects.xml").decode()).prospects
    assert first.customer.last_name == "Brontë-Nuñez"


def test_element_names_in_upper_case_and_a_namespace_are_read() -> None:
    data = (
        b'<ADF xmlns="http://example.com/adf"><PROSPECT STATUS="RESEND"><REQUESTDATE>2026-11-24</REQUESTDATE>'
        b'<CUSTOMER><CONTACT><NAME PART="FIRST">Kim</NAME></CONTACT></CUSTOMER></PROSPECT></ADF>'
    )

    prospect = only_prospect(data)
    assert (prospect.status, prospect.customer.first_name) == ("resend", "Kim")


def test_a_prospect_missing_its_parts_is_still_a_prospect() -> None:
    prospect = only_prospect(b"<adf><prospect/></adf>")

    assert prospect == Prospect()
    assert prospect.customer.name is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-24T10:15:00-05:00", datetime(2026, 11, 24, 10, 15, tzinfo=timezone(timedelta(hours=-5)))),
        ("2026-11-24T15:15:00Z", datetime(2026, 11, 24, 15, 15, tzinfo=UTC)),
        ("2026-11-24T10:15:00-0500", datetime(2026, 11, 24, 10, 15, tzinfo=timezone(timedelta(hours=-5)))),
        ("2026-11-24 10:15:00", datetime(2026, 11, 24, 10, 15)),  # noqa: DTZ001 - no offset was sent
        ("11/24/2026 9:05 PM", datetime(2026, 11, 24, 21, 5)),  # noqa: DTZ001
        ("11/24/2026", datetime(2026, 11, 24)),  # noqa: DTZ001
        ("yesterday", None),
        ("13/45/2026", None),
    ],
)
def test_request_dates(text: str, expected: datetime | None) -> None:
    prospect = only_prospect(f"<adf><prospect><requestdate>{text}</requestdate></prospect></adf>".encode())

    assert prospect.request_date == expected
    assert prospect.request_date_text == text


@pytest.mark.parametrize(
    ("year", "price", "expected_year", "expected_price"),
    [
        ("2024", "25995", 2024, Decimal(25995)),
        (" 2024 ", "$25,995.50", 2024, Decimal("25995.50")),
        ("24", "Call for price", None, None),
        ("n/a", "-5", None, None),
    ],
)
def test_years_and_prices_that_are_not_numbers_are_none(
    year: str, price: str, expected_year: int | None, expected_price: Decimal | None
) -> None:
    vehicle_xml = f"<vehicle><year>{year}</year><make>Honda</make><price>{price}</price></vehicle>"

    (vehicle,) = only_prospect(lead(vehicle=vehicle_xml)).vehicles
    assert (vehicle.year, vehicle.price, vehicle.make) == (expected_year, expected_price, "Honda")


# ---------------------------------------------------------------------------------- what is refused

BILLION_LAUGHS = sample("billion_laughs.xml")

EXTERNAL_ENTITY = sample("external_entity.xml")


def test_the_billion_laughs_document_is_refused() -> None:
    with pytest.raises(AdfError, match="declares an entity") as refused:
        parse_adf(BILLION_LAUGHS)

    assert refused.value.code == "entities"
    assert "'lol'" in str(refused.value)


def test_a_single_internal_entity_is_refused_too() -> None:
    data = b'<!DOCTYPE adf [<!ENTITY dealer "North Honda">]><adf><prospect/></adf>'

    with pytest.raises(AdfError, match="declares an entity") as refused:
        parse_adf(data)
    assert refused.value.code == "entities"


def test_an_external_entity_reading_a_local_file_is_refused() -> None:
    with pytest.raises(AdfError, match="external entity") as refused:
        parse_adf(EXTERNAL_ENTITY)

    assert refused.value.code == "external"
    assert "root:" not in str(refused.value)


class _RecordingHandler(http.server.BaseHTTPRequestHandler):
    requested: list[str]

    def do_GET(self) -> None:
        self.requested.append(self.path)
        body = b'<!ENTITY % leak "x">'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def dtd_server() -> Iterator[tuple[str, list[str]]]:
    """A loopback HTTP server that records every path asked of it."""
    requested: list[str] = []
    handler = type("Handler", (_RecordingHandler,), {"requested": requested})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requested
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_doctype_naming_the_adf_dtd_parses_and_nothing_is_fetched(dtd_server: tuple[str, list[str]]) -> None:
    base, requested = dtd_server
    data = sample("cars_com_used.xml").replace(
        b"<adf>", f'<!DOCTYPE adf SYSTEM "{base}/adf-1.0.dtd">\n<adf>'.encode(), 1
    )

    assert only_prospect(data).customer.first_name == "Dana"
    assert len(parse_adf(sample("aggregator_two_prospects.xml")).prospects) == 2
    assert requested == []


def test_a_doctype_declaring_only_elements_and_attributes_parses() -> None:
    data = sample("cars_com_used.xml").replace(
        b"<adf>",
        b'<!DOCTYPE adf [\n  <!ELEMENT adf (prospect+)>\n  <!ATTLIST prospect status (new|resend) "new">\n]>\n<adf>',
        1,
    )

    assert only_prospect(data).customer.last_name == "Whitfield"


def test_an_external_parameter_entity_is_refused_and_not_fetched(dtd_server: tuple[str, list[str]]) -> None:
    base, requested = dtd_server
    data = f'<!DOCTYPE adf [<!ENTITY % remote SYSTEM "{base}/evil.dtd"> %remote;]><adf><prospect/></adf>'.encode()

    with pytest.raises(AdfError) as refused:
        parse_adf(data)
    assert refused.value.code == "external"
    assert requested == []


def test_malformed_xml_names_the_line_and_column() -> None:
    data = b"<adf>\n  <prospect>\n    <id>LP-1</idd>\n  </prospect>\n</adf>\n"

    with pytest.raises(AdfError) as refused:
        parse_adf(data)

    error = refused.value
    # Column 15 is the name in </idd>, counted from 1.
    assert (error.code, error.line, error.column) == ("malformed", 3, 15)
    assert "line 3, column 15" in str(error)
    assert "mismatched tag" in str(error)


def test_positions_count_the_blank_lines_a_sender_put_first() -> None:
    data = b"\n\n" + sample("cars_com_used.xml").replace(b"<make>Honda</make>", b"<make>Honda</mak>")

    with pytest.raises(AdfError) as refused:
        parse_adf(data)
    # <make> is on line 10 of the sample; "mak" starts at column 20 of `      <make>Honda</mak>`.
    assert (refused.value.line, refused.value.column) == (12, 20)


@pytest.mark.parametrize(
    ("data", "line", "column"),
    [
        # "adf" in the closing tag: column 20 of the line as received, spaces and byte order mark aside.
        (b"\xef\xbb\xbf  <adf><prospect></adf>", 1, 20),
        (b'<?XML VERSION "1.0"?>\n<?ADF VERSION "1.0"?>\n<adf><prospect></adf>', 3, 18),
        (b'\n <?XML VERSION "1.0"?> <adf><prospect></adf>', 2, 41),
    ],
)
def test_positions_are_in_the_document_as_received(data: bytes, line: int, column: int) -> None:
    with pytest.raises(AdfError) as refused:
        parse_adf(data)
    assert (refused.value.line, refused.value.column) == (line, column)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"   ",
        b"not xml at all",
        b"<adf><prospect>",
        b"<adf><prospect/></adf>\n-- \nSent from my phone",
        b"\x00\x01",
    ],
)
def test_what_is_not_xml_is_refused_as_malformed(data: bytes) -> None:
    with pytest.raises(AdfError) as refused:
        parse_adf(data)
    assert refused.value.code == "malformed"
    assert refused.value.line is not None


def test_an_undefined_entity_that_is_not_html_is_malformed() -> None:
    with pytest.raises(AdfError, match="undefined entity") as refused:
        parse_adf(lead("<name>&dealername;</name>"))
    assert refused.value.code == "malformed"


def test_a_root_other_than_adf_is_refused() -> None:
    with pytest.raises(AdfError, match=r"<lead>, not <adf>") as refused:
        parse_adf(b'<?xml version="1.0"?><lead><prospect/></lead>')
    assert refused.value.code == "not-adf"


def test_an_adf_without_prospects_is_refused() -> None:
    with pytest.raises(AdfError) as refused:
        parse_adf(b"<adf>\n</adf>")
    assert refused.value.code == "no-prospect"


def test_a_document_over_the_limit_is_refused_before_parsing() -> None:
    with pytest.raises(AdfError) as refused:
        parse_adf(sample("cars_com_used.xml"), max_bytes=1000)
    assert refused.value.code == "too-large"


# ---------------------------------------------------------------------------------- dedupe keys


def test_a_resend_has_the_same_dedupe_key_as_the_lead_it_repeats() -> None:
    new = only_prospect(
        lead(prospect='status="new"').replace(b"<requestdate>", b'<id source="Cars.com">CDC-1</id><requestdate>')
    )
    resend = only_prospect(
        lead(prospect='status="resend"').replace(
            b"<requestdate>", b'<id source="CARS.COM" sequence="1">CDC-1</id><requestdate>'
        )
    )

    assert (new.status, resend.status) == ("new", "resend")
    assert dedupe_key(new) == dedupe_key(resend) == "cars.com/CDC-1"


def test_dedupe_keys_differ_by_source_and_value() -> None:
    assert dedupe_key(Prospect(ids=(ProspectId("Cars.com", "1"),))) != dedupe_key(
        Prospect(ids=(ProspectId("AutoTrader", "1"),))
    )
    assert dedupe_key(Prospect(ids=(ProspectId("Cars.com", "1"),))) != dedupe_key(
        Prospect(ids=(ProspectId("Cars.com", "2"),))
    )
    # A source holding the separator cannot be confused with another source and value.
    assert dedupe_key(Prospect(ids=(ProspectId("a", "b/c"),))) != dedupe_key(Prospect(ids=(ProspectId("a/b", "c"),)))


def test_the_dedupe_key_comes_from_the_first_party_in_the_sequence() -> None:
    first, second = parse_adf(sample("aggregator_two_prospects.xml")).prospects
    reordered = Prospect(
        ids=(ProspectId("North Honda CRM", "NH-0042", 2), ProspectId("LeadPoint Auto", "LP-771203", 1))
    )

    assert dedupe_key(first) == dedupe_key(reordered) == "leadpoint%20auto/LP-771203"
    assert dedupe_key(second) == "leadpoint%20auto/LP-770988"


def test_no_dedupe_key_without_an_id() -> None:
    assert dedupe_key(only_prospect(sample("spec_style.xml"))) is None
    assert dedupe_key(Prospect(ids=(ProspectId(None, "77"),))) == "/77"


# ---------------------------------------------------------------------------------- best phone


def test_best_phone_prefers_a_mobile_then_a_voice_line_then_any() -> None:
    assert best_phone(only_prospect(sample("cars_com_used.xml"))) == "+12025550187"
    assert best_phone(only_prospect(sample("autotrader_no_prolog.xml"))) == "+13015550174"
    first, second = parse_adf(sample("aggregator_two_prospects.xml")).prospects
    assert best_phone(first) == "+12025550122"
    assert best_phone(second) == "+12405550195"

    def phones(*pairs: tuple[str, str]) -> Prospect:
        return only_prospect(lead("".join(f'<phone type="{kind}">{number}</phone>' for kind, number in pairs)))

    assert best_phone(phones(("work", "202-555-0101"), ("voice", "202-555-0102"))) == "+12025550102"
    assert best_phone(phones(("work", "202-555-0101"), ("home", "202-555-0103"))) == "+12025550101"


def test_best_phone_skips_numbers_it_cannot_dial_and_faxes() -> None:
    prospect = only_prospect(
        lead(
            '<phone type="cellphone">call me</phone><phone type="mobile">555</phone>'
            '<phone type="fax">202-555-0190</phone><phone type="voice">anonymous</phone>'
            '<phone type="home">202-555-0191 ext. 4</phone>'
        )
    )

    assert best_phone(prospect) == "+12025550191"
    assert best_phone(only_prospect(lead('<phone type="fax">202-555-0190</phone>'))) is None
    assert best_phone(only_prospect(lead("<email>x@example.com</email>"))) is None


def test_best_phone_takes_the_preferred_number_among_equals_and_a_region() -> None:
    prospect = only_prospect(
        lead(
            '<phone type="cellphone">202-555-0131</phone>'
            '<phone type="cellphone" preferredcontact="1">202-555-0132</phone>'
        )
    )
    london = only_prospect(lead('<phone type="mobile">020 7946 0958</phone>'))

    assert best_phone(prospect) == "+12025550132"
    assert best_phone(london, region="GB") == "+442079460958"
