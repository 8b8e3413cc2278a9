"""An opt-out in the customer's own words ("please stop texting me", "alto"): the phone is opted out for
every store, as STOP does.

The provider answers only its own keywords, so for these the gateway owes the one confirmation the
FCC's revocation rule allows; `OptedOut.confirm` says whether this text owes it. Only the text that
turned the opt-out on does: the flag is claimed with a conditional UPDATE, so a replayed webhook (its
SID is logged once, and the reply's origin is unique), a second request, or a customer who had already
sent STOP gets no second one. The inbound-text service queues the confirmation (kind "keyword": it
passes the send guard at once, whatever the hour, even to an opted-out contact).

This module imports only the core (no messaging), so the inbound service can call it without a circle.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from gateway import events
from gateway.leads import Origin, record_event
from gateway.messaging.revocation import Revocation
from gateway.models import Contact, Lead, Message
from gateway.phones import mask

log = logging.getLogger(__name__)

SOURCE_PREFIX = "own-words:"


@dataclass(frozen=True)
class OptedOut:
    lead: Lead | None  # the open lead at this store, which the text joined
    confirm: bool  # this text turned the opt-out on: the gateway owes the customer one confirmation


def opt_out(
    session: Session, contact: Contact, message: Message, found: Revocation, origin: Origin, now: datetime
) -> OptedOut:
    """Opt the phone out for every store, as STOP does, and note it in the lead's timeline."""
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
    return OptedOut(lead, turned_on)
