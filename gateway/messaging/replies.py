"""A person's reply to a customer, from the workspace or the API: written, asked of the send guard now,
and counted as the lead's human response when the guard lets it go (first response, reply task done,
cadences stopped), as the reply relay does for a text from an agent's phone."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.leads import record_event, record_human_contact
from gateway.messaging.outbound import check, queue_text, sender_for
from gateway.models import Agent, Lead, Message, MessageStatus


class ReplyError(Exception):
    """The text cannot even be written: no number to text, or none to text from."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def reply_to_customer(
    session: Session,
    lead: Lead,
    body: str,
    now: datetime,
    *,
    kind: str,
    agent: Agent | None = None,
    author: str | None = None,
    origin: str | None = None,
    media_urls: Sequence[str] = (),
) -> Message:
    """Write the reply and decide now: refused (status refused, reason in error_message), deferred
    (send_after) or pending for the worker. A reply that is not refused is a human response."""
    if origin is not None:
        earlier = session.scalar(select(Message).where(Message.origin == origin))
        if earlier is not None:
            return earlier  # the same request again: the first answer, nothing new
    phone = lead.contact.phone
    if phone is None:
        raise ReplyError("invalid_number", "The customer withheld their number, so they cannot be texted.")
    sender = sender_for(session, lead)
    if sender is None:
        raise ReplyError("no_sender", "The lead's store has no tracked number to text from.")
    message = queue_text(
        session, to=phone, from_=sender, body=body, kind=kind, now=now, lead=lead, agent=agent,
        media_urls=list(media_urls), origin=origin, answers_contact=True,  # a person wrote it
    )
    decision = check(session, message, now)
    if not decision.allowed:
        message.refusal_code = decision.code
        message.error_message = decision.reason
        if decision.send_after is not None:
            message.send_after = decision.send_after
        else:
            message.status = MessageStatus.REFUSED.value
            return message
    who = agent.name if agent is not None else (author or "Someone")
    record_event(session, lead, "reply", f"{who} texted the customer.", now, {"message_id": message.id})
    record_human_contact(session, lead, agent, "agent text", now)
    return message
