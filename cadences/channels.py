"""The e-mail and call steps of cadences (texts are the messaging pipeline's): how a claimed step becomes
an e-mail through the core mail sender, or a call-attempt task announced to the owner; and the signed
one-click unsubscribe link every cadence e-mail carries (RFC 8058).

An e-mail step is sent once: claimed (scheduled -> claimed) in the transaction that makes it due, then
claimed -> sending by one worker's conditional update, sent outside any transaction, and recorded.
A worker that dies while the mail server answers leaves it `sending`; the sweep marks it unknown and
it is never sent blindly again. Its Message-ID comes from the step, so a copy is recognisable.
"""

from __future__ import annotations

import html
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cadences.models import CadenceEnrolment, CadenceStep, Channel, SkipReason, StepStatus
from cadences.templates import appointment_time, first_name, render
from gateway import mail, runtime
from gateway.agents.alerts import announce_call_task
from gateway.leads import assign_owner, ensure_task, record_event
from gateway.models import Contact, Lead, Store, TaskKind
from gateway.phones import national
from gateway.settings import Settings

log = logging.getLogger(__name__)

UNSUBSCRIBE_SALT = "email-unsubscribe"
UNSUBSCRIBE_PATH = "/unsubscribe/"
SMTP_TIMEOUT = 20.0
MAX_EMAIL_ATTEMPTS = 5
# E-mail steps one job claims and sends over one connection at most.
BATCH = 100
# A claimed e-mail step the sweep sends (again) when its job has not taken it this long after.
EMAIL_RETRY_AFTER = timedelta(seconds=60)
# A step `sending` for this long: its worker died mid-conversation; unknown, never resent blindly.
SENDING_TIMEOUT = timedelta(minutes=5)


def template_values(lead: Lead, enrolment: CadenceEnrolment) -> dict[str, str | None]:
    owner = lead.owner
    return {
        "first_name": lead.contact.first_name,
        "store": lead.store.name,
        "agent": first_name(owner.name) if owner is not None else None,
        "source": lead.source,
        "tracked_number": national(enrolment.from_number) if enrolment.from_number else None,
        "appointment_time": appointment_time(lead.appointment_at, lead.store.timezone),
    }


# --- unsubscribe links ----------------------------------------------------------------------------------


def _serializer(settings: Settings) -> URLSafeSerializer:
    return URLSafeSerializer(settings.secret_key, salt=UNSUBSCRIBE_SALT)


def unsubscribe_url(settings: Settings, contact: Contact) -> str:
    """A link that unsubscribes this contact's address from cadence e-mail; it does not expire (the law
    asks for a link that works for at least 30 days, and people find old mail)."""
    token = _serializer(settings).dumps({"c": contact.id, "e": contact.email or ""})
    return f"{settings.public_base_url}{UNSUBSCRIBE_PATH}{token}"


@dataclass(frozen=True)
class UnsubscribeClaim:
    contact_id: int
    email: str


def read_unsubscribe_token(settings: Settings, token: str) -> UnsubscribeClaim | None:
    if len(token) > 500:
        return None
    try:
        data = _serializer(settings).loads(token)
    except BadSignature:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("c"), int) or not isinstance(data.get("e"), str):
        return None
    return UnsubscribeClaim(contact_id=data["c"], email=data["e"])


# --- e-mail steps ---------------------------------------------------------------------------------------


def prepare_email(step: CadenceStep, lead: Lead, now: datetime) -> bool:
    """A claimed e-mail step that can go: True (its send is queued by the caller); else skipped, False."""
    contact = lead.contact
    if not contact.email:
        _skip(step, SkipReason.NO_ADDRESS)
        return False
    if contact.email_opted_out:
        _skip(step, SkipReason.OPTED_OUT)
        return False
    step.enqueued_at = now
    return True


def _skip(step: CadenceStep, reason: SkipReason) -> None:
    step.status = StepStatus.SKIPPED.value
    step.skip_reason = reason.value


@dataclass(frozen=True)
class _Outgoing:
    step_id: int
    lead_id: int
    email: mail.Email


def send_email_steps(step_ids: list[int]) -> dict[int, str]:
    """Claim (claimed -> sending), send and record the e-mail steps among `step_ids`; step id -> status."""
    current = runtime.current()
    settings = current.settings
    now = current.clock.now()
    outgoing: list[_Outgoing] = []
    results: dict[int, str] = {}
    with current.database.session() as session:
        # The job's own steps and, in the same claim, others waiting (a backlog goes in one conversation).
        waiting = (
            select(CadenceStep.id)
            .where(CadenceStep.channel == Channel.EMAIL.value, CadenceStep.status == StepStatus.CLAIMED.value)
            .order_by(CadenceStep.id)
            .limit(BATCH)
            .scalar_subquery()
        )
        won = list(
            session.scalars(
                update(CadenceStep)
                .where(
                    CadenceStep.id.in_(step_ids) | CadenceStep.id.in_(waiting),
                    CadenceStep.channel == Channel.EMAIL.value,
                    CadenceStep.status == StepStatus.CLAIMED.value,
                )
                .values(status=StepStatus.SENDING.value, claimed_at=now, attempts=CadenceStep.attempts + 1)
                .returning(CadenceStep.id)
                .execution_options(synchronize_session=False)
            )
        )
        if not won:
            return results
        rows = session.execute(
            select(CadenceStep, CadenceEnrolment, Lead)
            .join(CadenceEnrolment, CadenceEnrolment.id == CadenceStep.enrolment_id)
            .join(Lead, Lead.id == CadenceEnrolment.lead_id)
            .where(CadenceStep.id.in_(won))
            .order_by(CadenceStep.due_at, CadenceStep.id)
        ).all()
        for step, enrolment, lead in rows:
            if not lead.contact.email or lead.contact.email_opted_out:
                _skip(step, SkipReason.OPTED_OUT if lead.contact.email_opted_out else SkipReason.NO_ADDRESS)
                results[step.id] = step.status
                continue
            outgoing.append(_Outgoing(step.id, lead.id, build_email(settings, step, enrolment, lead)))
    if settings.smtp_url:
        sent = mail.send_emails(settings.smtp_url, [item.email for item in outgoing], SMTP_TIMEOUT, now)
    else:
        sent = [mail.MailError("SMTP_URL is not set: cadence e-mail cannot be sent", False) for _ in outgoing]
    answers = {item.step_id: answer for item, answer in zip(outgoing, sent, strict=True)}
    done = current.clock.now()
    with current.database.session() as session:
        for item in outgoing:
            sent_step = session.get(CadenceStep, item.step_id)
            sent_lead = session.get(Lead, item.lead_id)
            if sent_step is None or sent_lead is None:
                continue
            answer = answers[item.step_id]
            results[item.step_id] = _record_answer(session, sent_step, sent_lead, item.email, answer, done)
    return results


def _record_answer(
    session: Session, step: CadenceStep, lead: Lead, email: mail.Email, error: mail.MailError | None, now: datetime
) -> str:
    if error is None:
        step.status = StepStatus.SENT.value
        step.sent_at = now
        step.last_error = None
        record_event(
            session, lead, "email-sent", f"E-mail sent: {email.subject}", now,
            {"step": step.id, "to": email.to, "subject": email.subject},
        )
        return step.status
    step.last_error = error.message[:2000]
    if error.retryable and step.attempts < MAX_EMAIL_ATTEMPTS:
        step.status = StepStatus.CLAIMED.value  # the e-mail sweep sends it again
        step.enqueued_at = now
        log.warning("cadence e-mail %s not sent yet (attempt %d): %s", step.id, step.attempts, error.message)
        return step.status
    _skip(step, SkipReason.FAILED)
    record_event(
        session, lead, "email-failed", f"E-mail not sent: {email.subject} ({error.message})", now,
        {"step": step.id, "error": error.message},
    )
    return step.status


def build_email(settings: Settings, step: CadenceStep, enrolment: CadenceEnrolment, lead: Lead) -> mail.Email:
    store: Store = lead.store
    values = template_values(lead, enrolment)
    subject = mail.one_line(render(step.subject or f"A note from {store.name}", values), 300)
    body = render(step.template, values)
    link = unsubscribe_url(settings, lead.contact)
    footer = f"You get this because you asked {store.name} about a vehicle. Unsubscribe from these e-mails: {link}"
    text = f"{body}\n\n--\n{footer}\n"
    paragraphs = "".join(
        f"<p>{html.escape(part).replace(chr(10), '<br>')}</p>" for part in body.split("\n\n") if part.strip()
    )
    page = (
        '<!DOCTYPE html><html><body style="font-family: sans-serif">'
        f"{paragraphs}"
        f'<hr><p style="font-size: small; color: #555">You get this because you asked {html.escape(store.name)} '
        f'about a vehicle. <a href="{html.escape(link, quote=True)}">Unsubscribe from these e-mails</a>.</p>'
        "</body></html>"
    )
    default_sender = (
        mail.parse_smtp_url(settings.smtp_url).default_sender() if settings.smtp_url else mail.DEFAULT_SENDER
    )
    intake = [str(address) for address in store.intake_emails or []]
    return mail.Email(
        sender=store.email_from or default_sender,
        sender_name=store.name,
        to=lead.contact.email or "",
        subject=subject,
        text=text,
        html=page,
        key=f"cadence-step-{step.id}",
        reply_to=intake[0] if intake and not store.email_from else None,
        unsubscribe_url=link,
    )


# --- call steps -----------------------------------------------------------------------------------------


def open_call_task(
    session: Session, step: CadenceStep, enrolment: CadenceEnrolment, lead: Lead, now: datetime
) -> None:
    """The owner's call-attempt task, due now, and the alert that announces it with the click-to-call link."""
    owner = assign_owner(session, lead, now)
    task = ensure_task(session, lead, TaskKind.CALL, owner, step.due_at, now)
    note = render(step.template, template_values(lead, enrolment)) if step.template else ""
    task.note = note[:2000] or f"Cadence {enrolment.cadence_key}: call the customer."
    announce_call_task(session, lead, task, f"cadence-call:{step.id}", now)
    step.status = StepStatus.SENT.value
    step.sent_at = now
    record_event(
        session, lead, "call-step", f"Call attempt due for {owner.name if owner else 'the owner'}.", now,
        {"step": step.id, "task": task.id, "cadence": enrolment.cadence_key},
    )


def stuck_sending(session: Session, now: datetime) -> None:
    """E-mail steps whose worker died mid-send: unknown (maybe sent), never resent blindly."""
    session.execute(
        update(CadenceStep)
        .where(
            CadenceStep.channel == Channel.EMAIL.value,
            CadenceStep.status == StepStatus.SENDING.value,
            CadenceStep.claimed_at <= now - SENDING_TIMEOUT,
        )
        .values(status=StepStatus.UNKNOWN.value, last_error="the worker stopped while the mail server answered")
        .execution_options(synchronize_session=False)
    )


def due_email_ids(session: Session, now: datetime, limit: int) -> list[int]:
    """Claimed e-mail steps no job has taken lately (Redis lost the job, or a retry is due)."""
    return list(
        session.scalars(
            select(CadenceStep.id)
            .where(
                CadenceStep.channel == Channel.EMAIL.value,
                CadenceStep.status == StepStatus.CLAIMED.value,
                (CadenceStep.enqueued_at.is_(None)) | (CadenceStep.enqueued_at <= now - EMAIL_RETRY_AFTER),
            )
            .order_by(CadenceStep.id)
            .limit(limit)
        )
    )




def send_email_steps_job(step_ids: list[int]) -> None:
    """RQ entry point: e-mail step ids in."""
    send_email_steps(step_ids)
