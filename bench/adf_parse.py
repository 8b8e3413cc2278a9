"""ADF intake throughput: documents/s parsed, found in e-mail, and parsed and stored, one process.

    .venv/bin/python bench/adf_parse.py [--seconds 3] [--document tests/intake/samples/aggregator_two_prospects.xml]

The document is a realistic two-prospect ADF lead (the test sample from a lead aggregator, with a
DOCTYPE, non-ASCII names, a resend and an empty vehicle). Three loops, each for `--seconds`:
- `parse_adf` on the bytes;
- `read_mail` on an e-mail carrying the document as an `.xml` attachment (base64), as sites send it;
- `parse_adf`, then one transaction per document on an SQLite file in a temporary folder (WAL, the
  gateway's engine settings): each prospect inserted by its dedupe key, a resend ignored on conflict.
  The table is a stand-in for the lead intake service, which this layer does not have yet: it shows
  the margin left for storing, not the final figure.

Target (the brief of the intake work): >= 200 documents/s parsed and stored; parsing alone far above.
Prints figures only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

from harness import ROOT

sys.path.insert(0, str(ROOT))

from sqlalchemy import Column, Integer, MetaData, String, Table, Text, UniqueConstraint
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Engine

from gateway.database import make_engine
from intake.adf import AdfDocument, best_phone, dedupe_key, parse_adf
from intake.mail import read_mail

DEFAULT_DOCUMENT = ROOT / "tests" / "intake" / "samples" / "aggregator_two_prospects.xml"

metadata = MetaData()
prospects = Table(
    "bench_adf_prospects",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("store", String(64), nullable=False),
    Column("dedupe_key", String(255), nullable=True),
    Column("name", String(255)),
    Column("phone", String(32)),
    Column("email", String(255)),
    Column("vehicle", String(255)),
    Column("comments", Text),
    UniqueConstraint("store", "dedupe_key"),
)


def rate(label: str, seconds: float, step: Callable[[int], object]) -> float:
    """Runs step(i) for about `seconds`; prints documents/s by the wall clock and the CPU time each
    took (the steadier figure on a shared machine)."""
    step(-1)  # warm caches and imports outside the measurement
    count = 0
    started, cpu_started = time.perf_counter(), time.process_time()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        for _ in range(50):
            step(count)
            count += 1
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    per_second = count / elapsed
    print(
        f"{label:<34} {per_second:>8,.0f} documents/s  {1e6 * cpu / count:>7,.0f} us CPU each"
        f"  ({count:,} in {elapsed:.2f} s)"
    )
    return per_second


def attachment_mail(document: bytes) -> bytes:
    message = EmailMessage()
    message["From"] = "LeadPoint Auto <leads@leadpoint.example.com>"
    message["To"] = "north-honda@leads.gateway.example.com"
    message["Subject"] = "New leads"
    message["Message-ID"] = "<bench@leadpoint.example.com>"
    message.set_content("Two new leads are attached in ADF format.\n")
    message.add_attachment(document, maintype="application", subtype="xml", filename="leads.xml")
    return message.as_bytes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--document", type=Path, default=DEFAULT_DOCUMENT)
    args = parser.parse_args()

    document = args.document.read_bytes()
    parsed = parse_adf(document)
    print(f"document: {args.document.name}, {len(document):,} bytes, {len(parsed.prospects)} prospects")
    mail = attachment_mail(document)

    rate("parse_adf", args.seconds, lambda _: parse_adf(document))
    rate("read_mail (.xml attachment)", args.seconds, lambda _: read_mail(mail))

    with tempfile.TemporaryDirectory(prefix="adf-bench-") as folder:
        engine = make_engine(f"sqlite:///{folder}/intake.sqlite3")
        metadata.create_all(engine)

        def parse_and_store(index: int) -> None:
            # Each iteration is a fresh lead (new ids), so every insert writes; the bytes still parse.
            store(engine, parse_adf(document.replace(b"LP-77", f"LP-{index}-77".encode())))

        rate("parse_adf + store (SQLite, WAL)", args.seconds, parse_and_store)
        engine.dispose()


def store(engine: Engine, document: AdfDocument) -> None:
    """One transaction per document, as the intake job will commit it."""
    rows = []
    for prospect in document.prospects:
        vehicle = next((v for v in prospect.vehicles if v.make or v.model), None)
        rows.append(
            {
                "store": "north-honda",
                "dedupe_key": dedupe_key(prospect),
                "name": prospect.customer.name,
                "phone": best_phone(prospect),
                "email": prospect.customer.email,
                "vehicle": " ".join(str(part) for part in (vehicle.year, vehicle.make, vehicle.model) if part)
                if vehicle
                else None,
                "comments": prospect.customer.comments,
            }
        )
    with engine.begin() as connection:
        connection.execute(
            sqlite.insert(prospects).on_conflict_do_nothing(index_elements=["store", "dedupe_key"]), rows
        )


if __name__ == "__main__":
    main()
