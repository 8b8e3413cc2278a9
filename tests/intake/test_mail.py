"""intake/mail.py: ADF found in e-mail bodies, attachments and forwards; the stores recipients name."""

from __future__ import annotations

import html
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from intake.adf import AdfDocument, parse_adf
from intake.mail import read_mail, store_keys_for

SAMPLES = Path(__file__).with_name("samples")
CARS_COM = (SAMPLES / "cars_com_used.xml").read_bytes()
AUTOTRADER = (SAMPLES / "autotrader_no_prolog.xml").read_bytes()
TWO_PROSPECTS = (SAMPLES / "aggregator_two_prospects.xml").read_bytes()


def mail(subject: str = "New lead", body: str = "You have a new lead.") -> EmailMessage:
    message = EmailMessage(policy=policy.SMTP)
    message["From"] = "Lead Delivery <leads@cars.example.com>"
    message["To"] = "north-honda@leads.gateway.example.com"
    message["Subject"] = subject
    message["Message-ID"] = "<lead-1@cars.example.com>"
    message.set_content(body)
    return message


def first_names(documents: tuple[AdfDocument, ...]) -> list[str | None]:
    return [prospect.customer.first_name for document in documents for prospect in document.prospects]


# ---------------------------------------------------------------------------------- bodies


def test_adf_as_the_plain_text_body() -> None:
    found = read_mail((SAMPLES / "cars_com_body.eml").read_bytes())

    assert found.documents == (parse_adf(CARS_COM),)
    assert found.errors == ()
    assert found.subject == "New Lead from Cars.com - 2022 Honda CR-V EX-L AWD (U4217)"
    assert found.sender == "leads@cars.example.com"
    assert found.message_id == "<20261124144220.8842117@mail.cars.example.com>"
    assert found.recipients == ("north-honda@leads.gateway.example.com",)


def test_adf_after_a_line_of_prose_and_before_a_signature() -> None:
    body = "New lead from Cars.com:\n\n" + CARS_COM.decode() + "\n--\nCars.com Lead Services\n"

    found = read_mail(mail(body=body).as_bytes())

    assert first_names(found.documents) == ["Dana"]
    assert found.errors == ()


def test_a_quoted_printable_body_with_non_ascii_names() -> None:
    message = mail()
    message.set_content(TWO_PROSPECTS.decode(), cte="quoted-printable")
    assert b"quoted-printable" in message.as_bytes()

    found = read_mail(message.as_bytes())

    assert first_names(found.documents) == ["Zoë", "Łukasz"]


def test_a_body_declaring_the_encoding_the_lead_was_written_in() -> None:
    latin = CARS_COM.decode().replace('encoding="UTF-8"', 'encoding="ISO-8859-1"').replace("Dana", "Dána")

    found = read_mail(mail(body=latin).as_bytes())

    assert first_names(found.documents) == ["Dána"]


def test_several_documents_in_one_body() -> None:
    body = f"Lead 1:\n{CARS_COM.decode()}\n\nLead 2:\n{AUTOTRADER.decode()}\n"

    found = read_mail(mail(body=body).as_bytes())

    assert first_names(found.documents) == ["Dana", None]
    assert found.documents[1].prospects[0].customer.full_name == "Marcus Ellery"


def test_a_text_xml_body() -> None:
    message = mail()
    message.set_content(CARS_COM, maintype="text", subtype="xml")

    assert first_names(read_mail(message.as_bytes()).documents) == ["Dana"]


def test_escaped_adf_in_an_html_body() -> None:
    # As mail programs paste it: escaped, line breaks as <br>, indentation as &nbsp;.
    escaped = html.escape(CARS_COM.decode()).replace("\n", "<br>\n&nbsp;").replace("  ", "&nbsp; ")
    message = mail()
    message.set_content(
        f"<html><body><p>New lead:</p><div style='font-family:monospace'>{escaped}</div></body></html>", subtype="html"
    )

    found = read_mail(message.as_bytes())

    assert first_names(found.documents) == ["Dana"]
    assert found.documents[0].prospects[0].customer.comments is not None
    assert "& trade in" in found.documents[0].prospects[0].customer.comments


def test_plain_and_html_alternatives_of_one_lead_give_one_document() -> None:
    message = mail(body=CARS_COM.decode())
    message.add_alternative(f"<html><body><pre>{html.escape(CARS_COM.decode())}</pre></body></html>", subtype="html")

    found = read_mail(message.as_bytes())

    assert first_names(found.documents) == ["Dana"]


# ---------------------------------------------------------------------------------- attachments


def test_an_xml_attachment_sent_as_octet_stream() -> None:
    found = read_mail((SAMPLES / "autotrader_attachment.eml").read_bytes())

    assert found.documents == (parse_adf(AUTOTRADER),)
    assert found.errors == ()
    assert found.subject == "AutoTrader lead: Marcus Ellery \u2013 trade-in"
    assert found.sender == "noreply@autotrader.example.com"
    assert found.message_id == "<at-lead-7734.20261124140402@autotrader.example.com>"
    assert found.recipients == ("intake@north-honda.example.com", "manager@north-honda.example.com")


@pytest.mark.parametrize(
    ("maintype", "subtype", "filename"),
    [
        ("application", "xml", None),
        ("text", "xml", "lead.xml"),
        ("application", "x-adf+xml", None),
        ("application", "octet-stream", "LEAD-8842117.ADF"),
        ("text", "plain", "lead.txt"),
    ],
)
def test_attachments_by_content_type_or_name(maintype: str, subtype: str, filename: str | None) -> None:
    message = mail()
    message.add_attachment(TWO_PROSPECTS, maintype=maintype, subtype=subtype, filename=filename)

    found = read_mail(message.as_bytes())

    assert first_names(found.documents) == ["Zoë", "Łukasz"]
    assert found.errors == ()


def test_a_body_and_an_attachment_with_the_same_lead_give_one_document() -> None:
    message = mail(body=CARS_COM.decode())
    message.add_attachment(CARS_COM, maintype="application", subtype="xml", filename="lead.xml")

    assert len(read_mail(message.as_bytes()).documents) == 1


def test_a_broken_attachment_is_an_error_naming_it_and_the_others_are_read() -> None:
    message = mail()
    message.add_attachment(
        CARS_COM.replace(b"</vin>", b"</vn>"), maintype="application", subtype="xml", filename="a.xml"
    )
    message.add_attachment(AUTOTRADER, maintype="application", subtype="xml", filename="b.xml")

    found = read_mail(message.as_bytes())

    assert [document.prospects[0].customer.full_name for document in found.documents] == ["Marcus Ellery"]
    (error,) = found.errors
    assert (error.part, error.code, error.line) == ("a.xml", "malformed", 12)
    assert str(error).startswith("a.xml: not well-formed XML")
    assert "line 12, column" in str(error)


def test_a_billion_laughs_attachment_is_refused() -> None:
    message = mail()
    message.add_attachment(
        (SAMPLES / "billion_laughs.xml").read_bytes(), maintype="application", subtype="xml", filename="lead.xml"
    )

    found = read_mail(message.as_bytes())

    assert found.documents == ()
    assert [(error.part, error.code) for error in found.errors] == [("lead.xml", "entities")]


def test_an_xml_attachment_that_is_not_adf_is_an_error() -> None:
    message = mail()
    message.add_attachment(
        b"<?xml version='1.0'?><invoice/>", maintype="application", subtype="xml", filename="inv.xml"
    )

    (error,) = read_mail(message.as_bytes()).errors
    assert (error.part, error.code) == ("inv.xml", "not-adf")


def test_a_forwarded_lead_is_found_inside_the_attached_message() -> None:
    original = mail(subject="New lead", body=CARS_COM.decode())
    forward = mail(subject="Fwd: New lead", body="See the lead below, can someone call her?")
    forward.add_attachment(original)

    found = read_mail(forward.as_bytes())

    assert first_names(found.documents) == ["Dana"]
    assert found.subject == "Fwd: New lead"


# ---------------------------------------------------------------------------------- not ADF


def test_a_mail_without_adf_gives_no_documents_and_no_errors() -> None:
    message = mail(subject="Re: your Honda CR-V", body="Thanks, I'll come by Saturday at 10.\n\n> On Tue...\n")
    message.add_alternative(
        "<html><body><p>Thanks, I'll come by <b>Saturday</b> at 10.</p></body></html>", subtype="html"
    )
    message.add_attachment(b"\x89PNG\r\n\x1a\n....", maintype="image", subtype="png", filename="car.png")

    found = read_mail(message.as_bytes())

    assert (found.documents, found.errors) == ((), ())
    assert found.subject == "Re: your Honda CR-V"


def test_encoded_display_names_with_commas_do_not_confuse_the_addresses() -> None:
    message = mail()
    message.replace_header("From", '"M\u00fcller, Hans" <hans@leads.example.com>')
    message.replace_header("To", '"North, Honda" <north-honda@gateway.example.com>, other@example.com')
    raw = message.as_bytes()
    assert b"=?utf-8?" in raw

    found = read_mail(raw)

    assert found.sender == "hans@leads.example.com"
    assert found.recipients == ("north-honda@gateway.example.com", "other@example.com")


def test_garbage_gives_no_documents_and_no_errors() -> None:
    found = read_mail(b"\x00\xff not a mail at all \r\n\r\n<<<>>>")

    assert (found.documents, found.errors) == ((), ())
    assert (found.subject, found.sender, found.message_id) == (None, None, None)


def test_an_unknown_charset_is_read_as_utf_8() -> None:
    raw = mail(body=CARS_COM.decode()).as_bytes().replace(b'charset="utf-8"', b'charset="x-unknown-42"')
    assert b"x-unknown-42" in raw

    assert first_names(read_mail(raw).documents) == ["Dana"]


# ---------------------------------------------------------------------------------- recipients

INTAKE_EMAILS = {"Internet@North-Honda.example.com": "north-honda", "leads@south-kia.example.com": "south-kia"}


def test_a_store_key_at_any_domain_names_the_store() -> None:
    assert store_keys_for(["north-honda@leads.gateway.example.com"], {}) == ("north-honda",)
    assert store_keys_for(["North-Honda@Other.Example"], {}) == ("north-honda",)


def test_an_intake_email_names_its_store_case_insensitively() -> None:
    assert store_keys_for(["internet@north-honda.EXAMPLE.com"], INTAKE_EMAILS) == ("north-honda",)
    assert store_keys_for(["South Kia Leads <LEADS@south-kia.example.com>"], INTAKE_EMAILS) == ("south-kia",)


def test_several_recipients_name_several_stores_once_each_in_order() -> None:
    recipients = [
        "leads@south-kia.example.com",
        "north-honda@leads.gateway.example.com, NORTH-HONDA@x.example",
        "internet@north-honda.example.com",
    ]

    assert store_keys_for(recipients, INTAKE_EMAILS) == ("south-kia", "north-honda")


def test_known_stores_filter_local_parts_and_give_their_spelling() -> None:
    known = ["North-Honda", "south-kia"]

    assert store_keys_for(
        ["north-honda@x.example", "leads@crm.example", "sales@x.example"], {}, known_stores=known
    ) == ("North-Honda",)
    assert store_keys_for(["leads+south-kia@gateway.example"], {}, known_stores=known) == ("south-kia",)
    assert store_keys_for(["leads@south-kia.example.com"], INTAKE_EMAILS, known_stores=[]) == ("south-kia",)


def test_recipients_naming_no_store() -> None:
    assert store_keys_for([], INTAKE_EMAILS) == ()
    assert store_keys_for(["not an address", "@example.com"], INTAKE_EMAILS) == ()
    assert store_keys_for(["sales@north-honda.example.com"], INTAKE_EMAILS, known_stores=["north-honda"]) == ()


def test_recipients_read_from_a_mail_name_its_store() -> None:
    found = read_mail((SAMPLES / "cars_com_body.eml").read_bytes())

    assert store_keys_for(found.recipients, INTAKE_EMAILS, known_stores=["north-honda"]) == ("north-honda",)
