"""Number health: what would make a call or a text to a tracked number go nowhere, found before a
customer finds it. `gateway numbers check`, `gateway config apply` and the daily check run these.

The problems, each about one active tracked number, agent or department:

- drift: a number's VoiceUrl, VoiceFallbackUrl, SmsUrl, SmsFallbackUrl or StatusCallback on the provider
  is not this gateway's (`gateway numbers sync` sets them);
- missing: the provider account has no such number;
- ring: a number's ring list names no active agent (every call would go to voicemail);
- agent: an active agent's phone cannot take the alert texts: the gateway has marked it not textable or
  it opted out of texts, or phonenumbers says it is a fixed line or another kind that is never a mobile
  (a US number is usually "fixed line or mobile", which passes);
- department: a department that active numbers route to is closed every day of the week and has no
  active agent (its calls never ring anyone, and the after-hours path, a voicemail and a callback task,
  has nobody of the department to own the task).

Drift and missing numbers need the provider; the others need only the database (the configuration).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum

import phonenumbers
from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.models import Agent, Contact, Store, TrackedNumber
from gateway.phones import national
from gateway.provider import Provider
from tracked_numbers.provisioning import drifted, urls_for


class Kind(StrEnum):
    DRIFT = "drift"
    MISSING = "missing"
    RING = "ring"
    AGENT = "agent"
    DEPARTMENT = "department"


PROVIDER_KINDS = frozenset({Kind.DRIFT, Kind.MISSING})
CONFIGURATION_KINDS = frozenset(Kind) - PROVIDER_KINDS

# Number types that can never receive a text; "fixed line or mobile" and unknown ones pass.
_NEVER_MOBILE = {
    phonenumbers.PhoneNumberType.FIXED_LINE: "a fixed line",
    phonenumbers.PhoneNumberType.PAGER: "a pager",
    phonenumbers.PhoneNumberType.PREMIUM_RATE: "a premium-rate number",
    phonenumbers.PhoneNumberType.SHARED_COST: "a shared-cost number",
    phonenumbers.PhoneNumberType.UAN: "a universal access number",
    phonenumbers.PhoneNumberType.VOICEMAIL: "a voicemail access number",
}


@dataclass(frozen=True)
class Problem:
    kind: Kind
    key: str  # the same problem has the same key on every run: what the daily check remembers
    store_id: int
    text: str  # one line, naming the store and what to fix

    def __str__(self) -> str:
        return self.text


def configuration_problems(session: Session, store_ids: Collection[int] | None = None) -> list[Problem]:
    """The problems the database alone shows: ring lists, agents' phones, departments."""
    stores = _stores(session, store_ids)
    numbers = _numbers(session, stores)
    agents = list(
        session.scalars(
            select(Agent).where(Agent.active.is_(True), Agent.store_id.in_(stores)).order_by(Agent.key)
        )
    )
    problems = _ring_problems(numbers, agents, stores)
    problems += _agent_problems(session, agents, stores)
    problems += _department_problems(numbers, agents, stores)
    return problems


def provider_problems(
    session: Session, provider: Provider, base_url: str, store_ids: Collection[int] | None = None
) -> list[Problem]:
    """Drift and missing numbers, from the provider's list of the account's numbers (ProviderError
    when the provider cannot be asked)."""
    stores = _stores(session, store_ids)
    numbers = _numbers(session, stores)
    if not numbers:
        return []
    on_account = {n.phone_number: n for n in provider.list_numbers()}
    urls = urls_for(base_url)
    problems = []
    for number in numbers:
        store = stores[number.store_id]
        found = on_account.get(number.number)
        if found is None:
            problems.append(Problem(
                Kind.MISSING, f"missing:{number.number}", store.id,
                f"{store.key}: number {number.number} is not on the provider account",
            ))
            continue
        fields = drifted(found, urls)
        if fields:
            problems.append(Problem(
                Kind.DRIFT, f"drift:{number.number}", store.id,
                f"{store.key}: number {number.number}: not pointing at this gateway: {', '.join(fields)} "
                "(gateway numbers sync fixes it)",
            ))
    return problems


def check(
    session: Session, provider: Provider | None, base_url: str, store_ids: Collection[int] | None = None
) -> list[Problem]:
    """Every problem: the provider's (unless `provider` is None) and the configuration's."""
    problems = provider_problems(session, provider, base_url, store_ids) if provider is not None else []
    return problems + configuration_problems(session, store_ids)


def _stores(session: Session, store_ids: Collection[int] | None) -> dict[int, Store]:
    query = select(Store).order_by(Store.key)
    if store_ids is not None:
        query = query.where(Store.id.in_(list(store_ids)))
    return {store.id: store for store in session.scalars(query)}


def _numbers(session: Session, stores: dict[int, Store]) -> list[TrackedNumber]:
    return list(
        session.scalars(
            select(TrackedNumber)
            .where(TrackedNumber.active.is_(True), TrackedNumber.store_id.in_(stores))
            .order_by(TrackedNumber.number)
        )
    )


def _ring_problems(numbers: list[TrackedNumber], agents: list[Agent], stores: dict[int, Store]) -> list[Problem]:
    active = {agent.key for agent in agents}
    problems = []
    for number in numbers:
        if any(str(key) in active for key in number.ring or []):
            continue
        store = stores[number.store_id]
        named = ", ".join(str(key) for key in number.ring or []) or "nobody"
        problems.append(Problem(
            Kind.RING, f"ring:{number.number}", store.id,
            f"{store.key}: number {number.number} rings no active agent (ring list: {named}); "
            "every call goes to voicemail",
        ))
    return problems


def _agent_problems(session: Session, agents: list[Agent], stores: dict[int, Store]) -> list[Problem]:
    phones = [agent.phone for agent in agents if agent.phone]
    contacts = {
        contact.phone: contact
        for contact in session.scalars(select(Contact).where(Contact.phone.in_(phones)))
    } if phones else {}
    problems = []
    for agent in agents:
        reason = _why_not_textable(agent.phone, contacts.get(agent.phone))
        if reason is None:
            continue
        store = stores[agent.store_id]
        problems.append(Problem(
            Kind.AGENT, f"agent:{agent.key}", store.id,
            f"{store.key}: agent {agent.key} gets no alert texts: {national(agent.phone)} {reason}",
        ))
    return problems


def _why_not_textable(phone: str | None, contact: Contact | None) -> str | None:
    if not phone:
        return "is missing"
    if contact is not None and contact.opted_out:
        return "opted out of texts (texting START opts back in)"
    if contact is not None and not contact.textable:
        return f"is marked not textable ({contact.not_textable_reason or 'the provider refused it'})"
    try:
        parsed = phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException:
        return "is not a phone number"
    if not phonenumbers.is_valid_number(parsed):
        return "is not a valid phone number"
    kind = _NEVER_MOBILE.get(phonenumbers.number_type(parsed))
    return f"is {kind}, not a mobile" if kind else None


def _department_problems(
    numbers: list[TrackedNumber], agents: list[Agent], stores: dict[int, Store]
) -> list[Problem]:
    problems = []
    seen: set[tuple[int, str]] = set()
    for number in numbers:
        place = (number.store_id, number.department)
        if place in seen:
            continue
        seen.add(place)
        store = stores[number.store_id]
        week = (store.hours or {}).get(number.department) or {}
        if any(week.get(day) for day in week):
            continue
        if any(agent.store_id == store.id and number.department in (agent.departments or []) for agent in agents):
            continue
        problems.append(Problem(
            Kind.DEPARTMENT, f"department:{store.key}:{number.department}", store.id,
            f"{store.key}: department {number.department} has no opening hours and no active agent to "
            "call its callers back",
        ))
    return problems
