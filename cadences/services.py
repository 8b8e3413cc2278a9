"""Cadences: enrol a lead, schedule its steps as rows, dispatch due steps exactly once, stop on the rules.

Every step is a row with its due time; the database, not Redis, is what remembers it. A due step is
claimed by a conditional update (scheduled -> claimed) that only one worker can win, and in the same
transaction becomes a text with origin "cadence-step:<id>" (unique), so a retried job cannot write a
second one. The text then goes through the messaging pipeline and its one send guard (opt-out, quiet
hours, caps) like every other text.

Which status changes end which cadences (decided here, written down once):

- A missed-call cadence (no trigger) lasts while the lead is `new` or `attempting_contact`: `contacted`,
  any appointment status, `no_show` or a closed status ends it (someone is talking to the customer).
- An appointment cadence (trigger `appointment_set` or `appointment_confirmed`) lasts while the lead is
  in either appointment status. Moving to another open status or clearing `appointment_at` is a
  cancellation (reason `appointment_cancelled`); `no_show` and the closed statuses end it (`status`).
- A `no_show` cadence lasts while the lead stays `no_show` (rebooked, reached or closed: it ends).

Stops besides status: a reply from the customer and an opt-out stop every active cadence of that
contact (one phone, every store). A human contact (answered call, connected click-to-call, an agent's
text) stops every cadence of the lead except appointment reminders: a customer who spoke to a person
still needs the reminder before the visit. The API stop ends them all.

Appointment reminders are relative to `lead.appointment_at`; one whose moment has passed when the lead
is enrolled (or the appointment moves) is skipped, never sent late; one still unsent when the appointment
begins is skipped too. Moving the appointment moves the reminders not yet dispatched.
Enrolment, the stop rules and dispatch share their queries and claims, so they stay in one module of
about 850 lines rather than three that would import each other.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import event, exists, select, update
from sqlalchemy.orm import Session

from cadences.channels import open_call_task, prepare_email, send_email_steps_job, template_values
from cadences.models import (
    TRIGGER_INQUIRY,
    TRIGGER_MISSED_CALL,
    CadenceEnrolment,
    CadenceStep,
    Channel,
    EnrolmentStatus,
    SkipReason,
    StepStatus,
    StopReason,
)
from cadences.templates import render
from gateway.calls.services import texts_allowed
from gateway.database import get_held, insert_returning_or_none
from gateway.jobs import enqueue_after_commit
from gateway.leads import note_written, opened_here, record_event, written_here
from gateway.messaging.outbound import queue_texts, sender_for, text_values
from gateway.models import (
    CadenceDefinition,
    Call,
    Contact,
    Lead,
    LeadEvent,
    LeadStatus,
    Message,
    MessageStatus,
    TrackedNumber,
)

log = logging.getLogger(__name__)

ORIGIN_PREFIX = "cadence-step:"
START = "start"
APPOINTMENT = "appointment"
MISSED_CALL_STATUSES = frozenset({LeadStatus.NEW.value, LeadStatus.ATTEMPTING_CONTACT.value})
APPOINTMENT_STATUSES = frozenset({LeadStatus.APPOINTMENT_SET.value, LeadStatus.APPOINTMENT_CONFIRMED.value})
# A reminder relative to the appointment that comes after it ("thanks for visiting") may still go this
# late; one before it is useless once the appointment has begun.
LATE_LIMIT = timedelta(hours=1)
# Message statuses that mean the provider took the text.
_SENT_MESSAGES = (
    MessageStatus.QUEUED.value,
    MessageStatus.SENT.value,
    MessageStatus.DELIVERED.value,
    MessageStatus.SANDBOX.value,
)
_LIVE_STEPS = (StepStatus.CLAIMED.value, StepStatus.DEFERRED.value)
# Steps whose text may still change: a text in doubt is settled against the provider's log (taken, sent
# again or not), and its step follows.
_OPEN_STEPS = (*_LIVE_STEPS, StepStatus.UNKNOWN.value)


@dataclass(frozen=True)
class Dispatched:
    """What one dispatch did: steps it won, texts it wrote (in due order), steps it skipped."""

    claimed: int
    texts: list[int]
    skipped: int
    recipients: list[str] = field(default_factory=list)  # the number each text goes to, as `texts`
    emails: list[int] = field(default_factory=list)  # e-mail steps claimed, to send once this commits

    def by_recipient(self) -> list[list[int]]:
        """The texts grouped by the number they go to, each group in due order."""
        groups: dict[str, list[int]] = {}
        for message_id, to in zip(self.texts, self.recipients, strict=True):
            groups.setdefault(to, []).append(message_id)
        return list(groups.values())


# --- templates ----------------------------------------------------------------------------------------


# --- which statuses end which cadences --------------------------------------------------------------


def lasts_while(trigger: str) -> frozenset[str]:
    """The lead statuses a cadence started by `trigger` runs in; any other status ends it."""
    if trigger in (TRIGGER_MISSED_CALL, TRIGGER_INQUIRY):
        return MISSED_CALL_STATUSES
    if trigger in APPOINTMENT_STATUSES:
        return APPOINTMENT_STATUSES
    return frozenset({trigger})


def is_appointment_cadence(enrolment: CadenceEnrolment) -> bool:
    return enrolment.trigger in APPOINTMENT_STATUSES


# --- enrolment ----------------------------------------------------------------------------------------


def active_key(lead_id: int, cadence_key: str) -> str:
    return f"{lead_id}:{cadence_key}"


def enrol(
    session: Session,
    lead: Lead,
    definition: CadenceDefinition,
    *,
    trigger: str,
    from_number: str,
    now: datetime,
) -> CadenceEnrolment | None:
    """Start `definition` for the lead; its due-now steps become texts in this transaction.

    None when the customer cannot be texted (withheld, opted out, not textable, automation paused),
    when an appointment cadence has no appointment time yet, or when it already runs for this lead.
    """
    contact = lead.contact
    specs = [spec for spec in definition.steps or [] if isinstance(spec, dict)]
    if not any(reachable(contact, channel_of(spec), trigger) for spec in specs):
        return None
    relative = any(spec.get("relative_to") == APPOINTMENT for spec in specs)
    if relative and lead.appointment_at is None:
        record_event(
            session, lead, "cadence-waiting",
            f"Cadence {definition.key} waits for an appointment time.", now, {"cadence": definition.key},
        )
        return None
    key = active_key(lead.id, definition.key)
    enrolment = insert_returning_or_none(
        session,
        CadenceEnrolment,
        {
            "lead_id": lead.id,
            "contact_id": contact.id,
            "cadence_key": definition.key,
            "trigger": trigger,
            "status": EnrolmentStatus.ACTIVE.value,
            "active_key": key,
            "from_number": from_number,
            "started_at": now,
            "anchor": lead.appointment_at if relative else None,
            "created_at": now,
        },
        ["active_key"],
    )
    if enrolment is None:
        return None
    note_written(session, lead, enrolment)
    steps = []
    for index, spec in enumerate(specs):
        relative_to = APPOINTMENT if spec.get("relative_to") == APPOINTMENT else START
        offset = int(spec.get("after", 0))
        base = enrolment.anchor if relative_to == APPOINTMENT and enrolment.anchor is not None else now
        due = base + timedelta(seconds=offset)
        step = CadenceStep(
            enrolment_id=enrolment.id,
            step_index=index,
            relative_to=relative_to,
            offset_seconds=offset,
            template=str(spec.get("text", "")),
            channel=channel_of(spec).value,
            subject=str(spec["subject"]) if spec.get("subject") is not None else None,
            due_at=due,
            status=StepStatus.SCHEDULED.value,
            created_at=now,
        )
        if relative_to == APPOINTMENT and due < now:
            step.status = StepStatus.SKIPPED.value
            step.skip_reason = SkipReason.PAST_DUE.value
        elif due <= now:
            # Due now (the missed call's first text): claimed as it is written (no second UPDATE), and
            # dispatched below in the transaction that settles the call, so its send job is queued the
            # moment it commits.
            step.status = StepStatus.CLAIMED.value
            step.claimed_at = now
        steps.append(step)
    session.add_all(steps)
    session.flush()
    record_event(
        session, lead, "cadence-started", f"Cadence {definition.key} started ({trigger.replace('_', ' ')}).",
        now, {"cadence": definition.key, "enrolment": enrolment.id, "steps": len(steps)},
    )
    emails: list[int] = []
    for step in steps:
        if step.status == StepStatus.CLAIMED.value:
            if step.channel == Channel.EMAIL.value:
                if prepare_email(step, lead, now):
                    emails.append(step.id)
            elif step.channel == Channel.CALL.value:
                open_call_task(session, step, enrolment, lead, now)
            else:
                _write_text(session, step, enrolment, lead, now)
    if emails:
        enqueue_after_commit(session, send_email_steps_job, emails)
    if not any(step.status == StepStatus.SCHEDULED.value for step in steps):
        # Every step dispatched or skipped at once (a one-text cadence); with one still scheduled the
        # UPDATE of complete_finished would find nothing to complete, so it is not sent.
        complete_finished(session, [enrolment.id], now)
    return enrolment


def channel_of(spec: dict[str, Any]) -> Channel:
    try:
        return Channel(spec.get("channel") or Channel.SMS.value)
    except ValueError:
        return Channel.SMS


def reachable(contact: Contact, channel: Channel, trigger: str) -> bool:
    """Whether a step on `channel` can reach the customer now (the send guard still checks each text)."""
    if channel == Channel.EMAIL:
        return bool(contact.email) and not contact.email_opted_out
    if channel == Channel.CALL:
        return contact.phone is not None
    if contact.phone is None or contact.opted_out or not contact.textable or contact.automation_paused:
        return False
    # A lead from a form or ADF is texted only with the SMS consent it gave; a caller is texted back.
    return trigger != TRIGGER_INQUIRY or contact.sms_consented


def enrol_after_missed_call(session: Session, lead: Lead, call: Call, now: datetime) -> CadenceEnrolment | None:
    """The tracked number's cadence, once per lead: a second missed call does not restart it."""
    if lead.contact.phone is None:
        return None  # a withheld caller gets a lead and a task, no text
    if not texts_allowed(lead.store, call):
        return None  # a caller ID that failed verification may be a stranger's number
    number_id = call.tracked_number_id or lead.tracked_number_id
    number = get_held(session, TrackedNumber, number_id) if number_id else None
    if number is None or not number.cadence_key:
        return None
    definition = session.scalar(select(CadenceDefinition).where(CadenceDefinition.key == number.cadence_key))
    if definition is None or definition.trigger:
        return None
    if _enrolled(session, lead, definition.key):
        return None
    return enrol(session, lead, definition, trigger=TRIGGER_MISSED_CALL, from_number=number.number, now=now)


def _enrolled(session: Session, lead: Lead, cadence_key: str) -> bool:
    """Whether the lead ever ran this cadence. A lead opened in this transaction has only the enrolments
    this session wrote, so those are looked at instead of the table."""
    if opened_here(session, lead):
        return any(
            isinstance(row, CadenceEnrolment) and row.cadence_key == cadence_key for row in written_here(session, lead)
        )
    return bool(
        session.scalar(
            select(exists().where(CadenceEnrolment.lead_id == lead.id, CadenceEnrolment.cadence_key == cadence_key))
        )
    )


def _sender(lead: Lead, session: Session | None = None) -> str:
    if lead.tracked_number:
        return lead.tracked_number
    found = sender_for(session, lead) if session is not None else None
    return found or lead.store.main_line


def active_enrolments(session: Session, lead_id: int) -> list[CadenceEnrolment]:
    return list(
        session.scalars(
            select(CadenceEnrolment)
            .where(CadenceEnrolment.lead_id == lead_id, CadenceEnrolment.status == EnrolmentStatus.ACTIVE.value)
            .order_by(CadenceEnrolment.id)
        )
    )


def lead_changed(
    session: Session, lead: Lead, changes: dict[str, Any], now: datetime, as_of: datetime | None = None
) -> None:
    """Status and appointment changes: stop what the new status ends, start what it triggers, move
    appointment reminders with the appointment. `as_of`: the change stands for something that happened
    then (a conversation recorded late); cadences started after it stand."""
    started: set[str] = set()
    if "status" in changes:
        status = lead.status
        for enrolment in active_enrolments(session, lead.id):
            if status in lasts_while(enrolment.trigger):
                continue
            if as_of is not None and enrolment.started_at > as_of:
                continue
            closed = status in {LeadStatus.CLOSED_WON.value, LeadStatus.CLOSED_LOST.value}
            cancelled = is_appointment_cadence(enrolment) and status != LeadStatus.NO_SHOW.value and not closed
            reason = StopReason.APPOINTMENT_CANCELLED if cancelled else StopReason.STATUS
            stop(session, enrolment, reason, now, detail=f"lead status {status}", lead=lead)
        for definition in _triggered_by(session, status):
            if enrol(session, lead, definition, trigger=status, from_number=_sender(lead, session), now=now):
                started.add(definition.key)
    if "appointment_at" in changes:
        appointment_moved(session, lead, now, skip=started)


def _triggered_by(session: Session, status: str) -> list[CadenceDefinition]:
    return [
        definition
        for definition in session.scalars(select(CadenceDefinition).order_by(CadenceDefinition.id))
        if isinstance(definition.trigger, dict) and definition.trigger.get("status") == status
    ]


def appointment_moved(session: Session, lead: Lead, now: datetime, skip: Iterable[str] = ()) -> None:
    """The appointment moved, was set late or was cancelled."""
    skip = set(skip)
    enrolments = [e for e in active_enrolments(session, lead.id) if e.cadence_key not in skip]
    if lead.appointment_at is None:
        for enrolment in enrolments:
            if is_appointment_cadence(enrolment):
                stop(session, enrolment, StopReason.APPOINTMENT_CANCELLED, now, "appointment time cleared", lead)
        return
    running = {e.cadence_key for e in enrolments}
    for enrolment in enrolments:
        if enrolment.anchor is not None and enrolment.anchor != lead.appointment_at:
            reschedule(session, enrolment, lead, lead.appointment_at, now)
    # A cadence that waited for the appointment time (status set first, time later) starts now.
    for definition in _triggered_by(session, lead.status):
        if definition.key not in running and definition.key not in skip:
            enrol(session, lead, definition, trigger=lead.status, from_number=_sender(lead, session), now=now)


def reschedule(session: Session, enrolment: CadenceEnrolment, lead: Lead, anchor: datetime, now: datetime) -> None:
    """Move the reminders not yet dispatched; a past-due one is skipped, one back in the future returns."""
    old = enrolment.anchor
    enrolment.anchor = anchor
    steps = session.scalars(
        select(CadenceStep).where(
            CadenceStep.enrolment_id == enrolment.id,
            CadenceStep.relative_to == APPOINTMENT,
            (CadenceStep.status == StepStatus.SCHEDULED.value)
            | (
                (CadenceStep.status == StepStatus.SKIPPED.value)
                & (CadenceStep.skip_reason == SkipReason.PAST_DUE.value)
            ),
        )
    )
    for step in steps:
        step.due_at = anchor + timedelta(seconds=step.offset_seconds)
        step.enqueued_at = None
        if step.due_at < now:
            step.status = StepStatus.SKIPPED.value
            step.skip_reason = SkipReason.PAST_DUE.value
        else:
            step.status = StepStatus.SCHEDULED.value
            step.skip_reason = None
    record_event(
        session, lead, "cadence-rescheduled",
        f"Cadence {enrolment.cadence_key} moved with the appointment.", now,
        {"cadence": enrolment.cadence_key, "from": old.isoformat() if old else None, "to": anchor.isoformat()},
    )


# --- stops --------------------------------------------------------------------------------------------


def stop(
    session: Session,
    enrolment: CadenceEnrolment,
    reason: StopReason,
    now: datetime,
    detail: str | None = None,
    lead: Lead | None = None,
) -> bool:
    """Stop an active enrolment: its scheduled steps are skipped and its texts not yet taken by a sender
    are withdrawn. Recorded on the enrolment and in the lead's timeline. False if it was not active."""
    # The row as the update left it comes back with it (and refreshes `enrolment`, read no second time).
    stopped = session.scalars(
        update(CadenceEnrolment)
        .where(CadenceEnrolment.id == enrolment.id, CadenceEnrolment.status == EnrolmentStatus.ACTIVE.value)
        .values(
            status=EnrolmentStatus.STOPPED.value,
            active_key=None,
            stop_reason=reason.value,
            stop_detail=detail,
            stopped_at=now,
        )
        .returning(CadenceEnrolment),
        execution_options={"populate_existing": True},
    ).first()
    if stopped is None:
        return False
    # Scheduled steps, and e-mail steps claimed but not yet taken by a sender, are skipped.
    session.execute(
        update(CadenceStep)
        .where(
            CadenceStep.enrolment_id == enrolment.id,
            (CadenceStep.status == StepStatus.SCHEDULED.value)
            | ((CadenceStep.status == StepStatus.CLAIMED.value) & (CadenceStep.channel == Channel.EMAIL.value)),
        )
        .values(status=StepStatus.SKIPPED.value, skip_reason=SkipReason.STOPPED.value)
        .execution_options(synchronize_session=False)
    )
    # A text written but not yet claimed by a sender (waiting for the morning, or in the queue) is
    # withdrawn; one a sender already holds is past the point of no return. A reply leaves the answer to
    # the missed contact itself (the first step's text, due and not held for the morning) on its way: the
    # customer who texts a moment after hanging up is still owed that text, and gets it once.
    rows = session.execute(
        select(CadenceStep.message_id, CadenceStep.step_index).where(
            CadenceStep.enrolment_id == enrolment.id,
            CadenceStep.status.in_(_LIVE_STEPS),
            CadenceStep.message_id.is_not(None),
        )
    ).all()
    message_ids = [message_id for message_id, _ in rows]
    kept = [message_id for message_id, index in rows if index == 0] if reason is StopReason.REPLY else []
    if message_ids:
        owed = Message.id.in_(kept) & (Message.send_after.is_(None) | (Message.send_after <= now))
        withdrawn = list(
            session.scalars(
                update(Message)
                .where(Message.id.in_(message_ids), Message.status == MessageStatus.PENDING.value, ~owed)
                .values(
                    status=MessageStatus.REFUSED.value,
                    refusal_code="cadence_stopped",
                    error_message=f"The cadence stopped ({reason.value}) before this text was sent.",
                    updated_at=now,
                )
                .returning(Message.id)
                .execution_options(synchronize_session=False)
            )
        )
        if withdrawn:
            session.execute(
                update(CadenceStep)
                .where(CadenceStep.message_id.in_(withdrawn))
                .values(status=StepStatus.SKIPPED.value, skip_reason=SkipReason.STOPPED.value)
                .execution_options(synchronize_session=False)
            )
    lead = lead if lead is not None else session.get(Lead, enrolment.lead_id)
    if lead is not None:
        text = f"Cadence {enrolment.cadence_key} stopped: {reason.value.replace('_', ' ')}"
        record_event(
            session, lead, "cadence-stopped", text + (f" ({detail})" if detail else "") + ".", now,
            {"cadence": enrolment.cadence_key, "enrolment": enrolment.id, "reason": reason.value, "detail": detail},
        )
    log.info("cadence %s of lead %s stopped: %s", enrolment.cadence_key, enrolment.lead_id, reason.value)
    return True


def stop_for_lead(
    session: Session,
    lead: Lead,
    reason: StopReason,
    now: datetime,
    detail: str | None = None,
    *,
    keep_appointments: bool = False,
    cadence_key: str | None = None,
    started_by: datetime | None = None,
) -> list[CadenceEnrolment]:
    """The lead's active cadences (those started by `started_by`, when given) stopped."""
    stopped = []
    for enrolment in active_enrolments(session, lead.id):
        if keep_appointments and is_appointment_cadence(enrolment):
            continue
        if started_by is not None and enrolment.started_at > started_by:
            continue
        if cadence_key is not None and enrolment.cadence_key != cadence_key:
            continue
        if stop(session, enrolment, reason, now, detail, lead):
            stopped.append(enrolment)
    return stopped


def stop_for_contact(
    session: Session, contact_id: int, reason: StopReason, now: datetime, detail: str | None = None
) -> list[CadenceEnrolment]:
    """Every active cadence of the customer's phone, at every store."""
    enrolments = list(
        session.scalars(
            select(CadenceEnrolment)
            .where(
                CadenceEnrolment.contact_id == contact_id,
                CadenceEnrolment.status == EnrolmentStatus.ACTIVE.value,
            )
            .order_by(CadenceEnrolment.id)
        )
    )
    return [e for e in enrolments if stop(session, e, reason, now, detail)]


def opt_out_channel(
    session: Session, contact_id: int, channel: Channel, now: datetime, detail: str | None = None
) -> list[CadenceEnrolment]:
    """The customer opted out of one channel: that channel's steps of every active cadence of theirs are
    skipped; a cadence with nothing left on another channel stops (reason opt_out). Returns those stopped."""
    enrolments = list(
        session.scalars(
            select(CadenceEnrolment)
            .where(CadenceEnrolment.contact_id == contact_id, CadenceEnrolment.status == EnrolmentStatus.ACTIVE.value)
            .order_by(CadenceEnrolment.id)
        )
    )
    stopped = []
    waiting = (StepStatus.SCHEDULED.value, StepStatus.CLAIMED.value)
    for enrolment in enrolments:
        others = session.scalar(
            select(
                exists().where(
                    CadenceStep.enrolment_id == enrolment.id,
                    CadenceStep.status == StepStatus.SCHEDULED.value,
                    CadenceStep.channel != channel.value,
                )
            )
        )
        if not others:
            if stop(session, enrolment, StopReason.OPT_OUT, now, detail):
                stopped.append(enrolment)
            continue
        skipped = session.execute(
            update(CadenceStep)
            .where(
                CadenceStep.enrolment_id == enrolment.id,
                CadenceStep.channel == channel.value,
                CadenceStep.status.in_(waiting if channel == Channel.EMAIL else waiting[:1]),
            )
            .values(status=StepStatus.SKIPPED.value, skip_reason=SkipReason.OPTED_OUT.value)
            .execution_options(synchronize_session=False)
        )
        lead = session.get(Lead, enrolment.lead_id)
        if lead is not None and int(getattr(skipped, "rowcount", 0) or 0):
            record_event(
                session, lead, "cadence-channel-stopped",
                f"Cadence {enrolment.cadence_key}: no more {channel.value} steps (the customer opted out of "
                f"{'e-mail' if channel == Channel.EMAIL else 'texts'}); the other steps go on.", now,
                {"cadence": enrolment.cadence_key, "enrolment": enrolment.id, "channel": channel.value},
            )
    return stopped


def unsubscribe_email(session: Session, contact_id: int, email: str, now: datetime) -> Contact | None:
    """The one-click unsubscribe: the address gets no more cadence e-mail; texts are not touched.
    None when the link names a contact or address we no longer have (nothing to do)."""
    contact = session.get(Contact, contact_id)
    if contact is None or not contact.email or contact.email.lower() != email.lower():
        return None
    if not contact.email_opted_out:
        contact.email_opted_out = True
        contact.email_opted_out_at = now
        open_leads = select(Lead).where(Lead.contact_id == contact.id, Lead.open_key.is_not(None))
        for lead in session.scalars(open_leads):
            record_event(session, lead, "email-opt-out", "The customer unsubscribed from e-mail.", now)
    opt_out_channel(session, contact.id, Channel.EMAIL, now, "unsubscribed from e-mail")
    return contact


# --- leads from forms and ADF -------------------------------------------------------------------------

BUILTIN_INQUIRY_KEY = "built-in-web-lead"
BUILTIN_TEXT = (
    "Hi {first_name}, thanks for contacting {store}! {agent} has your request and will be in touch shortly. "
    "Reply here with any questions."
)
BUILTIN_SUBJECT = "Thanks for contacting {store}"
BUILTIN_EMAIL = (
    "Hi {first_name},\n\n"
    "Thank you for your request to {store}. {agent} has it and will contact you shortly, usually within "
    "minutes during opening hours.\n\n"
    "What happens next: {agent} will call you to answer your questions and, if you like, set up a time "
    "to see the vehicle. If you would rather we e-mail, just reply to this message.\n\n"
    "{store}"
)


def builtin_inquiry_cadence() -> CadenceDefinition:
    """What a store that names no lead cadence still sends: a first text (with consent) and an e-mail
    acknowledgement, both at once. Not stored: built each time."""
    return CadenceDefinition(
        key=BUILTIN_INQUIRY_KEY,
        steps=[
            {"after": 0, "text": BUILTIN_TEXT, "channel": Channel.SMS.value},
            {"after": 0, "text": BUILTIN_EMAIL, "subject": BUILTIN_SUBJECT, "channel": Channel.EMAIL.value},
        ],
        trigger=None,
    )


def inquiry_cadence(session: Session, lead: Lead, source: str | None) -> CadenceDefinition:
    """The store's cadence for this source (its `lead_cadences`, then `default`), else the built-in one."""
    chosen = dict(lead.store.lead_cadences or {})
    by_source = {str(name).casefold(): key for name, key in chosen.items()}
    key = by_source.get((source or "").casefold()) or chosen.get("default")
    if key:
        definition = session.scalar(select(CadenceDefinition).where(CadenceDefinition.key == str(key)))
        if definition is not None and not definition.trigger:
            return definition
        log.warning("lead cadence %s of store %s is missing or has a trigger; built-in used", key, lead.store.key)
    return builtin_inquiry_cadence()


def enrol_after_inquiry(session: Session, lead: Lead, source: str | None, now: datetime) -> CadenceEnrolment | None:
    """A form or ADF lead starts its source's cadence; what already ran for the lead (a missed call's
    texts, an earlier form's cadence) stops first, so the customer hears one voice."""
    definition = inquiry_cadence(session, lead, source)
    specs = [spec for spec in definition.steps or [] if isinstance(spec, dict)]
    if not any(reachable(lead.contact, channel_of(spec), TRIGGER_INQUIRY) for spec in specs):
        return None  # nothing it could send: what runs (a missed call's texts) goes on
    detail = f"a new request started {definition.key}"
    stop_for_lead(session, lead, StopReason.REPLACED, now, detail, keep_appointments=True)
    return enrol(session, lead, definition, trigger=TRIGGER_INQUIRY, from_number=_sender(lead, session), now=now)


# --- dispatch -----------------------------------------------------------------------------------------


def due_step_ids(session: Session, now: datetime, limit: int, requeue_after: timedelta) -> list[int]:
    """Scheduled steps whose time has come and that no sweep handed to the queue recently."""
    return list(
        session.scalars(
            select(CadenceStep.id)
            .where(
                CadenceStep.status == StepStatus.SCHEDULED.value,
                CadenceStep.due_at <= now,
                (CadenceStep.enqueued_at.is_(None)) | (CadenceStep.enqueued_at <= now - requeue_after),
            )
            .order_by(CadenceStep.due_at, CadenceStep.id)
            .limit(limit)
        )
    )


def mark_enqueued(session: Session, step_ids: Sequence[int], now: datetime) -> None:
    for start in range(0, len(step_ids), 1000):
        session.execute(
            update(CadenceStep)
            .where(CadenceStep.id.in_(step_ids[start : start + 1000]))
            .values(enqueued_at=now)
            .execution_options(synchronize_session=False)
        )


def claim_steps(session: Session, step_ids: Sequence[int], now: datetime) -> list[int]:
    """scheduled -> claimed for the due steps of active enrolments; the ids this transaction won.

    One conditional UPDATE: of two workers holding the same ids, the second finds them claimed (SQLite
    serialises writers; PostgreSQL re-checks the condition on the row the first one locked). A stop
    committed before the claim has already skipped the step, so the stop wins.
    """
    if not step_ids:
        return []
    active = select(CadenceEnrolment.id).where(CadenceEnrolment.status == EnrolmentStatus.ACTIVE.value)
    return list(
        session.scalars(
            update(CadenceStep)
            .where(
                CadenceStep.id.in_(list(step_ids)),
                CadenceStep.status == StepStatus.SCHEDULED.value,
                CadenceStep.due_at <= now,
                CadenceStep.enrolment_id.in_(active),
            )
            .values(status=StepStatus.CLAIMED.value, claimed_at=now)
            .returning(CadenceStep.id)
            .execution_options(synchronize_session=False)
        )
    )


def dispatch_steps(session: Session, step_ids: Sequence[int], now: datetime, *, enqueue: bool = True) -> Dispatched:
    """Claim the due steps among `step_ids` and turn each into a text (in this transaction).

    enqueue=False: no send job per text; the caller sends `texts` once this transaction commits.
    """
    claimed = claim_steps(session, step_ids, now)
    if not claimed:
        return Dispatched(0, [], 0)
    rows = session.execute(
        select(CadenceStep, CadenceEnrolment, Lead)
        .join(CadenceEnrolment, CadenceEnrolment.id == CadenceStep.enrolment_id)
        .join(Lead, Lead.id == CadenceEnrolment.lead_id)
        .where(CadenceStep.id.in_(claimed))
        .order_by(CadenceStep.due_at, CadenceStep.id)
    ).all()
    skipped = 0
    writing: list[tuple[CadenceStep, dict[str, Any]]] = []
    emails: list[int] = []
    for step, enrolment, lead in rows:
        if step.channel == Channel.EMAIL.value:
            if prepare_email(step, lead, now):
                emails.append(step.id)
            else:
                skipped += 1
            continue
        if step.channel == Channel.CALL.value:
            open_call_task(session, step, enrolment, lead, now)
            continue
        values = _text_for(step, enrolment, lead, now)
        if values is None:
            skipped += 1
        else:
            writing.append((step, values))
    if emails and enqueue:
        enqueue_after_commit(session, send_email_steps_job, emails)
    written = queue_texts(session, [values for _, values in writing], now, enqueue=enqueue)
    texts: list[int] = []
    recipients: list[str] = []
    for step, values in writing:
        message = written[values["origin"]]
        step.message_id = message.id
        texts.append(message.id)
        recipients.append(message.to_number)
    complete_finished(session, sorted({enrolment.id for _, enrolment, _ in rows}), now)
    return Dispatched(len(claimed), texts, skipped, recipients, emails)


def _stale(step: CadenceStep, enrolment: CadenceEnrolment, now: datetime) -> bool:
    if step.relative_to != APPOINTMENT or enrolment.anchor is None:
        return False
    limit = enrolment.anchor if step.offset_seconds <= 0 else step.due_at + LATE_LIMIT
    return now >= limit


def _write_text(session: Session, step: CadenceStep, enrolment: CadenceEnrolment, lead: Lead, now: datetime) -> None:
    """One claimed step's text, written and its send queued for when the transaction commits."""
    values = _text_for(step, enrolment, lead, now)
    if values is not None:
        step.message_id = queue_texts(session, [values], now)[values["origin"]].id


def _text_for(
    step: CadenceStep, enrolment: CadenceEnrolment, lead: Lead, now: datetime
) -> dict[str, Any] | None:
    """The claimed step's text (origin unique: a retry finds the first one instead), or None with the
    step skipped."""
    contact: Contact = lead.contact
    if _stale(step, enrolment, now):
        step.status = StepStatus.SKIPPED.value
        step.skip_reason = SkipReason.PAST_DUE.value
        return None
    if contact.phone is None:
        step.status = StepStatus.SKIPPED.value
        step.skip_reason = SkipReason.REFUSED.value
        return None
    if enrolment.trigger == TRIGGER_INQUIRY and not contact.sms_consented:
        step.status = StepStatus.SKIPPED.value
        step.skip_reason = SkipReason.NO_CONSENT.value
        return None
    return text_values(
        to=contact.phone,
        from_=enrolment.from_number,
        body=render(step.template, template_values(lead, enrolment)),
        kind="cadence",
        now=now,
        automated=True,
        # The first step answers the missed call or text; the later ones are follow-ups.
        answers_contact=step.step_index == 0,
        lead=lead,
        contact=contact,
        origin=f"{ORIGIN_PREFIX}{step.id}",
    )


def complete_finished(session: Session, enrolment_ids: Sequence[int], now: datetime) -> None:
    """Active enrolments with no step left to dispatch are complete."""
    if not enrolment_ids:
        return
    waiting = (
        select(CadenceStep.id)
        .where(CadenceStep.enrolment_id == CadenceEnrolment.id, CadenceStep.status == StepStatus.SCHEDULED.value)
        .exists()
    )
    done = session.execute(
        update(CadenceEnrolment)
        .where(
            CadenceEnrolment.id.in_(list(enrolment_ids)),
            CadenceEnrolment.status == EnrolmentStatus.ACTIVE.value,
            ~waiting,
        )
        .values(status=EnrolmentStatus.COMPLETED.value, active_key=None, completed_at=now)
        .returning(CadenceEnrolment.id, CadenceEnrolment.lead_id, CadenceEnrolment.cadence_key)
        .execution_options(synchronize_session=False)
    ).all()
    for enrolment_id, lead_id, key in done:
        session.add(
            LeadEvent(
                lead_id=lead_id,
                kind="cadence-completed",
                text=f"Cadence {key}: every step dispatched.",
                data={"cadence": key, "enrolment": enrolment_id},
                at=now,
            )
        )


# --- what became of the texts -------------------------------------------------------------------------


def step_id_of(message: Message) -> int | None:
    origin = message.origin or ""
    if not origin.startswith(ORIGIN_PREFIX):
        return None
    raw = origin.removeprefix(ORIGIN_PREFIX)
    return int(raw) if raw.isdigit() else None


_SENT_STEPS = "cadences.sent_steps"


def mark_sent(session: Session, message: Message) -> None:
    """The text's step is sent: noted now, written with one UPDATE for all of them when the session commits
    (a batch of texts is recorded in one transaction)."""
    step_id = step_id_of(message)
    if step_id is None:
        return
    sent: set[int] | None = session.info.get(_SENT_STEPS)
    if sent is None:
        sent = session.info[_SENT_STEPS] = set()
        event.listen(session, "before_commit", _write_sent_steps)
        event.listen(session, "after_rollback", lambda rolled_back: rolled_back.info[_SENT_STEPS].clear())
    sent.add(step_id)


def _write_sent_steps(session: Session) -> None:
    sent: set[int] = session.info.get(_SENT_STEPS) or set()
    if not sent:
        return
    ids = sorted(sent)
    sent.clear()
    session.execute(
        update(CadenceStep)
        .where(CadenceStep.id.in_(ids), CadenceStep.status.in_(_OPEN_STEPS))
        .values(status=StepStatus.SENT.value)
        .execution_options(synchronize_session=False)
    )


def sync_outcomes(session: Session, now: datetime) -> None:
    """Steps whose text was sent, deferred by the guard, refused, failed or left unknown say so."""

    def settle(condition: Any, values: dict[str, Any], statuses: Sequence[str] = _LIVE_STEPS) -> None:
        matched = exists().where(Message.id == CadenceStep.message_id, condition)
        session.execute(
            update(CadenceStep)
            .where(CadenceStep.status.in_(statuses), matched)
            .values(**values)
            .execution_options(synchronize_session=False)
        )

    settle(Message.status.in_(_SENT_MESSAGES), {"status": StepStatus.SENT.value}, _OPEN_STEPS)
    settle(Message.status == MessageStatus.UNKNOWN.value, {"status": StepStatus.UNKNOWN.value})
    settle(
        Message.status == MessageStatus.REFUSED.value,
        {"status": StepStatus.SKIPPED.value, "skip_reason": SkipReason.REFUSED.value},
        _OPEN_STEPS,
    )
    settle(
        Message.status.in_([MessageStatus.FAILED.value, MessageStatus.UNDELIVERED.value]),
        {"status": StepStatus.SKIPPED.value, "skip_reason": SkipReason.FAILED.value},
        _OPEN_STEPS,
    )
    # A text in doubt that goes again: its step is claimed again, as when the text was first written.
    settle(
        Message.status.in_([MessageStatus.PENDING.value, MessageStatus.SENDING.value]),
        {"status": StepStatus.CLAIMED.value},
        (StepStatus.UNKNOWN.value,),
    )
    settle(
        (Message.status == MessageStatus.PENDING.value) & (Message.send_after > now),
        {"status": StepStatus.DEFERRED.value},
        (StepStatus.CLAIMED.value,),
    )
