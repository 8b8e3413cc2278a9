"""The reply relay: an agent's text to a gateway number goes on to the customer.

It reaches the customer of the agent's latest alert, or of the lead named by a leading `#CODE`, from the
lead's tracked number, through the send guard, and counts as the lead's first human response.
"""


import logging
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import has_app_context
from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.agents.alerts import send_alert
from gateway.leads import (
    record_event,
    record_human_contact,
)
from gateway.messaging.outbound import queue_text, sender_for
from gateway.models import (
    Agent,
    Contact,
    Lead,
    Message,
)
from gateway.phones import mask, national

log = logging.getLogger(__name__)

_CODE = re.compile(r"^\s*#([A-Za-z0-9]{3,16})\b[\s:,.-]*(.*)$", re.DOTALL)



@dataclass(frozen=True)
class RelayTarget:
    lead: Lead | None
    body: str
    by_code: bool
    code: str | None = None


def relay_target(session: Session, agent: Agent, body: str) -> RelayTarget:
    """`#CODE text` names the lead; otherwise the lead of the agent's latest alert."""
    match = _CODE.match(body)
    if match is not None:
        code = match.group(1).upper()
        lead = session.scalar(select(Lead).where(Lead.code == code, Lead.store_id == agent.store_id))
        return RelayTarget(lead, match.group(2).strip(), True, code)
    lead_id = session.scalar(
        select(Message.lead_id)
        .where(Message.agent_id == agent.id, Message.kind == "alert", Message.lead_id.is_not(None))
        .order_by(Message.created_at.desc(), Message.id.desc())
        .limit(1)
    )
    lead = session.get(Lead, lead_id) if lead_id is not None else None
    return RelayTarget(lead, body.strip(), False)


HELP_TO_AGENT = (
    "To text a customer, reply to one of their alerts, or start with the lead code, e.g. "
    "#K7Q2M Thanks for calling, are you free at 3?"
)


def relay(session: Session, agent: Agent, message: Message, now: datetime) -> Message | None:
    """Send an agent's text on to the customer. Returns the relayed text, None when not relayed."""
    target = relay_target(session, agent, message.body or "")
    origin = f"relay:{message.id}"
    notice_from = message.to_number
    if target.lead is None:
        body = (
            f"No lead #{target.code} at your store. {HELP_TO_AGENT}" if target.by_code else HELP_TO_AGENT
        )
        send_alert(session, lead=None, agent=agent, body=body, origin=f"relay-help:{message.id}", now=now,
                   from_=notice_from)
        return None
    lead = target.lead
    if not target.body and not message.media_urls:
        send_alert(session, lead=lead, agent=agent, body=f"Nothing to send to lead #{lead.code}. {HELP_TO_AGENT}",
                   origin=f"relay-help:{message.id}", now=now, from_=notice_from)
        return None
    contact: Contact = lead.contact
    if contact.phone is None:
        send_alert(session, lead=lead, agent=agent, body=f"Lead #{lead.code} withheld their number; no texts.",
                   origin=f"relay-notice:{message.id}", now=now, from_=notice_from)
        return None
    sender = sender_for(session, lead) or message.to_number
    relayed = queue_text(
        session,
        to=contact.phone,
        from_=sender,
        body=target.body,
        kind="relay",
        answers_contact=True,  # a person wrote it
        now=now,
        lead=lead,
        agent=agent,
        origin=origin,
        media_urls=list(message.media_urls or []),
    )
    if contact.opted_out or not contact.textable:
        # The send guard will refuse it (and log why); the agent hears now, not never.
        why = "opted out of texts" if contact.opted_out else "cannot receive texts"
        send_alert(
            session,
            lead=lead,
            agent=agent,
            body=f"Not sent: lead #{lead.code} ({national(contact.phone)}) {why}. Call them instead.",
            origin=f"relay-notice:{message.id}",
            now=now,
            from_=notice_from,
        )
        return relayed
    record_event(
        session, lead, "relay", f"{agent.name} texted the customer.", now, {"message_id": relayed.id}
    )
    record_human_contact(session, lead, agent, "agent text", now)
    log.info("relayed text of agent %s to %s (lead %s)", agent.key, mask(contact.phone), lead.code)
    return relayed


def on_agent_texted(sender: Session, *, agent: Agent, message: Message, now: datetime, **_: Any) -> None:
    if not has_app_context():
        return
    relay(sender, agent, message, now)

