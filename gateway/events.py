"""Domain events: the core announces them; feature packages subscribe when `create_app` wires them.

Every signal is sent with the SQLAlchemy session as sender, inside the transaction that made the change,
so what a subscriber writes (cadence enrolments, alert texts, CRM deliveries) commits with it or not at all.
Keyword arguments are ORM objects of that session plus `now`.

The subscribers of each event (blinker promises no order among them, so none may rely on another having
run; a test keeps this list true):

- contact_unanswered: cadences.on_contact_unanswered, gateway.agents.alerts.on_contact_unanswered
- call_completed: voicemail.on_call_completed, gateway.agents.alerts.on_call_completed,
  gateway.crm.outbox.on_call_completed
- human_contact: cadences.on_human_contact
- lead_created: gateway.crm.outbox.on_lead_created
- lead_updated: cadences.on_lead_updated, gateway.crm.outbox.on_lead_updated
- task_created: gateway.crm.outbox.on_task_created
- task_completed: gateway.crm.outbox.on_task_completed
- message_received: cadences.on_message_received, gateway.agents.alerts.on_message_received,
  gateway.crm.outbox.on_message_received
- message_sent: cadences.on_message_sent, gateway.crm.outbox.on_message_sent
- contact_opted_out: cadences.on_contact_opted_out
- voicemail_transcribed: gateway.agents.alerts.on_voicemail_transcribed,
  gateway.crm.outbox.on_voicemail_transcribed
- agent_texted: gateway.agents.relay.on_agent_texted
- lead_received: cadences.on_lead_received, gateway.agents.alerts.on_lead_received,
  gateway.crm.outbox.on_lead_received
- email_received: cadences.on_email_received
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

# A contact nobody answered ended (missed, abandoned, after-hours call): lead=, call=, now=
contact_unanswered = _signals.signal("contact-unanswered")
# Any customer call ended, answered or not, after its lead was settled: lead=, call=, now=
call_completed = _signals.signal("call-completed")
# A person reached the customer (answered call, connected click-to-call, an agent's text):
# lead=, reason=, now=, at= (when they spoke, if before now; None: now)
human_contact = _signals.signal("human-contact")
# A lead was opened: lead=, now=
lead_created = _signals.signal("lead-created")
# A lead changed: lead=, changes= (dict field -> (old, new)), now=, and at= when it stands for
# something that happened before now (a conversation recorded as its call ended)
lead_updated = _signals.signal("lead-updated")
# A task was opened or completed: task=, now=
task_created = _signals.signal("task-created")
task_completed = _signals.signal("task-completed")
# The customer texted in: lead=, message=, now=
message_received = _signals.signal("message-received")
# A text went out to a customer (the provider took it): message=, now=
message_sent = _signals.signal("message-sent")
# The customer opted out of texts (keyword, provider error 21610, plain-language request): contact=, now=
contact_opted_out = _signals.signal("contact-opted-out")
# A voicemail's transcript arrived: lead=, call=, transcript=, now=
voicemail_transcribed = _signals.signal("voicemail-transcribed")
# One of our agents texted a gateway number (a reply to an alert, to relay): agent=, message=, now=
agent_texted = _signals.signal("agent-texted")
# A lead came in writing: a website form or an ADF prospect (gateway.leads.Inquiry), with its owner
# and task already set. created= says whether it opened the lead or joined an open one:
# lead=, inquiry=, intake_id= (the intake's record), created=, now=
lead_received = _signals.signal("lead-received")
# The customer e-mailed the store (a reply reaching an intake address): lead=, contact=, subject=, now=
email_received = _signals.signal("email-received")

SIGNALS = {
    "contact_unanswered": contact_unanswered,
    "call_completed": call_completed,
    "human_contact": human_contact,
    "lead_created": lead_created,
    "lead_updated": lead_updated,
    "task_created": task_created,
    "task_completed": task_completed,
    "message_received": message_received,
    "message_sent": message_sent,
    "contact_opted_out": contact_opted_out,
    "voicemail_transcribed": voicemail_transcribed,
    "agent_texted": agent_texted,
    "lead_received": lead_received,
    "email_received": email_received,
}
