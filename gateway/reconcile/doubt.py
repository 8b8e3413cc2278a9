"""Texts in doubt, looked up in the provider's log: did the provider take the text, or is it sent again?

A worker that stops between handing texts to the provider and hearing back leaves them `sending`; once
the claim is older than the claim timeout the sweep marks them `unknown` (gateway/messaging/outbound.py).
A pass lists, for each sender and recipient with texts in doubt, what the provider's log has from that
sender to that recipient, and settles each text:

- **Taken.** The log has a text with the same body whose SID no row of the gateway has, created from
  CLOCK_SKEW before the claim to the claim timeout (and CLOCK_SKEW) after it. It is recorded as the
  provider's answer would have recorded it, with the status the log shows now (`settle_taken`: the CRM's
  record of the text and the cadence step follow).
- **Never taken.** The window holds no text the gateway did not log. It goes again through the send guard
  (`send_again`: an opt-out, a person's reply or quiet hours since still hold it back), except:
  - a text written more than RESEND_WITHIN ago: a missed call's first text an hour late reads as a mistake;
  - a sign-in code: good for minutes, and the agent can ask for another;
  - a text after which a later one to the same recipient (to an agent: about the same lead) has gone:
    sent now, it would arrive out of order;
  - an alert to an agent about a lead whose tasks are all done since: nobody needs it any more.
  These fail with the reason and a review task for the lead (`give_up`).
- **Unsure.** The window holds a text the gateway never logged, with another body: it is not sent again.
- **Not yet.** Another text to the recipient is on its way (`sending`): its record at the provider has no
  row's SID yet and would look like this one's, so the text waits for the next pass.

The provider is asked outside any transaction; each sender and recipient's texts settle in one
transaction; leaving `unknown` is a conditional update, so two passes at once settle each text once. The
provider unreachable: the pass stops and the texts stay in doubt for the next one; a refusal (4xx) for one
recipient does not stop the others.

One case is left to people: a worker that was not dead but frozen for longer than the claim timeout, and
then sends the text it held, after the pass sent it again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from gateway.database import required
from gateway.messaging.outbound import AGENT_KINDS, give_up, later_text_gone, send_again, settle_taken
from gateway.metrics import TEXTS_IN_DOUBT, Backlog
from gateway.models import Direction, Message, MessageStatus, Task, TaskStatus
from gateway.phones import mask
from gateway.provider import Provider, ProviderError, ProviderMessage

log = logging.getLogger(__name__)

# How far the provider's clock and the gateway's may disagree about when a text was created.
CLOCK_SKEW = timedelta(seconds=60)
RESEND_WITHIN = timedelta(minutes=30)
# Texts in doubt looked at in one pass, oldest claim first, and how far back.
DOUBT_BATCH = 500
DOUBT_LOOKBACK = timedelta(days=2)
SIGN_IN_CODE = "sign_in_code"


@dataclass
class Doubts:
    """What one pass did with texts in doubt."""

    taken: int = 0
    sent_again: int = 0
    not_sent: int = 0
    waiting: int = 0

    def add(self, committed: Doubts) -> None:
        """Count what one transaction settled (and committed) into the pass's figures and /metrics."""
        self.taken += committed.taken
        self.sent_again += committed.sent_again
        self.not_sent += committed.not_sent
        self.waiting += committed.waiting
        for outcome, count in (("taken", committed.taken), ("sent_again", committed.sent_again),
                               ("not_sent", committed.not_sent)):
            if count:
                TEXTS_IN_DOUBT.labels(outcome=outcome).inc(count)


def settle_texts_in_doubt(
    sessions: sessionmaker[Session],
    provider: Provider,
    now: datetime,
    claim_timeout: timedelta,
    errors: list[str],
) -> tuple[Doubts, bool]:
    """Settle the texts in doubt against the provider's log. What was done, and False when the provider
    could not be reached (the pass stops there)."""
    done = Doubts()
    with sessions() as session:
        rows = session.execute(
            select(Message.id, Message.from_number, Message.to_number, Message.claimed_at)
            .where(
                Message.status == MessageStatus.UNKNOWN.value,
                Message.direction == Direction.OUTBOUND.value,
                Message.claimed_at >= now - DOUBT_LOOKBACK,
            )
            .order_by(Message.claimed_at, Message.id)
            .limit(DOUBT_BATCH)
        ).all()
    pairs: dict[tuple[str, str], list[tuple[int, datetime]]] = {}
    for message_id, sender, recipient, claimed_at in rows:
        pairs.setdefault((sender, recipient), []).append((message_id, required(claimed_at, "claimed_at")))
    for (sender, recipient), doubts in pairs.items():
        since = min(claimed_at for _, claimed_at in doubts) - CLOCK_SKEW
        try:
            found = provider.list_outbound_messages(recipient, sender, since)
        except ProviderError as error:
            errors.append(f"texts to {mask(recipient)}: {error}")
            log.warning("reconciliation: could not list texts to %s (they stay in doubt): %s", mask(recipient), error)
            if error.retryable:
                return done, False
            continue
        try:
            with sessions() as session:
                settled = _settle(session, [message_id for message_id, _ in doubts], found, now, claim_timeout)
                session.commit()
        except Exception as error:
            log.exception("reconciliation: settling texts to %s failed; the next pass tries again", mask(recipient))
            errors.append(f"texts to {mask(recipient)}: {type(error).__name__}: {error}")
            continue
        done.add(settled)
    return done, True


def _settle(
    session: Session,
    message_ids: list[int],
    found: list[ProviderMessage],
    now: datetime,
    claim_timeout: timedelta,
) -> Doubts:
    """One sender and recipient's texts in doubt, against what the provider's log has between them."""
    done = Doubts()
    messages = list(
        session.scalars(
            select(Message)
            .where(Message.id.in_(message_ids), Message.status == MessageStatus.UNKNOWN.value)
            .order_by(Message.claimed_at, Message.id)
        )
    )
    if not messages:
        return done  # settled by another pass meanwhile
    on_its_way = session.scalar(
        select(Message.id)
        .where(
            Message.to_number == messages[0].to_number,
            Message.direction == Direction.OUTBOUND.value,
            Message.status == MessageStatus.SENDING.value,
        )
        .limit(1)
    )
    if on_its_way is not None:
        done.waiting += len(messages)
        return done
    sids = [record.sid for record in found]
    logged = set(session.scalars(select(Message.sid).where(Message.sid.in_(sids)))) if sids else set()
    unlogged = [record for record in found if record.sid not in logged]

    windows = {message.id: _window(message, claim_timeout) for message in messages}
    undecided: list[Message] = []
    for message in messages:
        record = next((r for r in unlogged if _within(r, windows[message.id]) and _same_text(r, message)), None)
        if record is None:
            undecided.append(message)
            continue
        unlogged.remove(record)
        if settle_taken(session, message, record.sid, record.status, record.error_code,
                        required(record.date_created, "date_created"), now):
            done.taken += 1
    for message in undecided:
        reason: str | None = None
        if any(_within(record, windows[message.id]) for record in unlogged):
            reason = ("the provider's log has a text to them from this number at that time that does not match "
                      "it; check the conversation before writing again")
        else:
            reason = _why_not_again(session, message, now)
        if reason is None:
            if send_again(session, message, now):
                done.sent_again += 1
        elif give_up(session, message, reason, now):
            done.not_sent += 1
    return done


def _window(message: Message, claim_timeout: timedelta) -> tuple[datetime, datetime]:
    """When the provider may have created this text: from its claim until the claim timed out."""
    claimed_at = required(message.claimed_at, "claimed_at")
    return claimed_at - CLOCK_SKEW, claimed_at + claim_timeout + CLOCK_SKEW


def _within(record: ProviderMessage, window: tuple[datetime, datetime]) -> bool:
    return record.date_created is not None and window[0] <= record.date_created <= window[1]


def _same_text(record: ProviderMessage, message: Message) -> bool:
    """The provider's text is this one: the same body (on a trial account, after the provider's prefix)."""
    if not message.body:
        return not record.body and record.num_media > 0
    return record.body == message.body or record.body.endswith(message.body)


def _why_not_again(session: Session, message: Message, now: datetime) -> str | None:
    """Why a text the provider never took is not sent again now; None when it is."""
    if message.kind == SIGN_IN_CODE:
        return "a sign-in code is good for minutes; the agent can ask for a new one"
    if message.created_at < now - RESEND_WITHIN:
        minutes = int((now - message.created_at).total_seconds() // 60)
        return f"it was written {minutes} minutes ago, too long ago to send it now"
    if later_text_gone(session, message):
        return "a later text to them has gone since; sent now, it would arrive after it"
    if message.kind in AGENT_KINDS and message.lead_id is not None and not _open_task(session, message.lead_id):
        return "the lead's tasks were done since: the alert is not needed any more"
    return None


def _open_task(session: Session, lead_id: int) -> bool:
    found = session.scalar(
        select(Task.id).where(Task.lead_id == lead_id, Task.status == TaskStatus.OPEN.value).limit(1)
    )
    return found is not None


def backlog(session: Session, now: datetime) -> Backlog:
    """Texts whose send is not confirmed: claimed and waiting on the provider (`sending`: a claim older
    than the claim timeout means a dead worker), or in doubt and not settled yet (`unknown`, within the
    DOUBT_LOOKBACK a pass still settles), with the oldest claim's age."""
    rows = session.execute(
        select(Message.status, func.count(), func.min(Message.claimed_at))
        .where(
            Message.status.in_([MessageStatus.SENDING.value, MessageStatus.UNKNOWN.value]),
            Message.direction == Direction.OUTBOUND.value,
            Message.claimed_at >= now - DOUBT_LOOKBACK,
        )
        .group_by(Message.status)
    ).all()
    counts = {MessageStatus.SENDING.value: 0, MessageStatus.UNKNOWN.value: 0}
    oldest: datetime | None = None
    for status, count, first in rows:
        counts[str(status)] = int(count)
        if first is not None and (oldest is None or first < oldest):
            oldest = first
    return Backlog(counts, max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0)
