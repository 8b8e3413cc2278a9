"""An opt-out in the customer's own words ("please stop texting me", "alto"): handled as STOP is, and
confirmed once by the gateway.

The provider answers only its own keywords, so for these the gateway sends the one confirmation the
FCC's revocation rule allows (no marketing, at once, whatever the hour: kind "keyword" passes the send
guard even to an opted-out contact). It is sent only by the text that turned the opt-out on: the flag
is claimed with a conditional UPDATE, so a replayed webhook (its SID is logged once, and the reply's
origin is unique), a second request, or a customer who had already sent STOP gets no second one.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from gateway import compliance, events, messaging
from gateway.database import required
from gateway.leads import Origin, record_event
from gateway.models import Contact, Lead, Message, Store
from gateway.phones import mask
from gateway.revocation import Language, Revocation

log = logging.getLogger(__name__)

SOURCE_PREFIX = "own-words:"


def opt_out_confirmation(store_name: str, language: Language) -> str:
    """The one text after an opt-out in the customer's words, in their language. No marketing."""
    if language == "es":
        name = " ".join(store_name.split())
        return f"{name}: Listo, ya no le enviaremos mensajes. Responda START para volver a recibirlos."
    return compliance.opt_out_confirmation(store_name)


def opt_out(
    session: Session, contact: Contact, message: Message, found: Revocation, origin: Origin, now: datetime
) -> Lead | None:
    """Opt the phone out for every store, as STOP does; confirm it if this text is what opted it out."""
    lead = session.scalar(select(Lead).where(Lead.open_key == f"{contact.id}:{origin.store_id}"))
    if lead is not None:
        message.lead_id = lead.id
        lead.last_contact_at = now
    result = session.execute(
        update(Contact)
        .where(Contact.id == contact.id, Contact.opted_out.is_(False))
        .values(
            opted_out=True,
            opted_out_at=now,
            opt_out_number=message.to_number,
            opt_out_source=(SOURCE_PREFIX + found.phrase)[:64],
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    session.refresh(contact)
    turned_on = bool(getattr(result, "rowcount", 0))
    if turned_on:
        events.contact_opted_out.send(session, contact=contact, now=now)
    if lead is not None:
        record_event(
            session,
            lead,
            "keyword",
            f'The customer wrote "{message.body[:160]}": opted out of texts from every store.',
            now,
            {"keyword": "opt_out", "phrase": found.phrase, "message_id": message.id},
        )
    log.info("text %s from %s: opt-out in own words (%s)", message.sid, mask(contact.phone), found.language)
    if turned_on:
        store = required(session.get(Store, origin.store_id), f"store {origin.store_id}")
        messaging.queue_text(
            session,
            to=message.from_number,
            from_=message.to_number,
            body=opt_out_confirmation(store.name, found.language),
            kind="keyword",
            now=now,
            lead=lead,
            contact=contact,
            store_id=origin.store_id,
            origin=f"keyword-reply:{message.id}",
        )
    return lead
