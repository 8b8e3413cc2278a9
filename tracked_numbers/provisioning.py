"""`gateway numbers sync`: tell the provider where each tracked number's calls and texts go."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.models import TrackedNumber
from gateway.provider import NumberUrls, Provider, ProviderNumber


@dataclass
class SyncReport:
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"updated {n}" for n in self.updated]
        out += [f"unchanged {n}" for n in self.unchanged]
        out += [f"missing {n}: the provider account has no such number" for n in self.missing]
        out.append(
            f"{len(self.updated)} updated, {len(self.unchanged)} unchanged, {len(self.missing)} missing"
        )
        return out


def urls_for(base_url: str) -> NumberUrls:
    return NumberUrls(
        voice_url=f"{base_url}/webhooks/voice/incoming",
        voice_fallback_url=f"{base_url}/webhooks/voice/fallback",
        sms_url=f"{base_url}/webhooks/sms/incoming",
        sms_fallback_url=f"{base_url}/webhooks/sms/fallback",
        status_callback=f"{base_url}/webhooks/voice/status",
    )


# The provider's name for each URL a tracked number must have, with the field that holds it.
URL_FIELDS = (
    ("VoiceUrl", "voice_url"),
    ("VoiceFallbackUrl", "voice_fallback_url"),
    ("SmsUrl", "sms_url"),
    ("SmsFallbackUrl", "sms_fallback_url"),
    ("StatusCallback", "status_callback"),
)


def drifted(found: ProviderNumber, urls: NumberUrls) -> list[str]:
    """The provider's names of the URLs that no longer point at this gateway (empty: none)."""
    return [name for name, attribute in URL_FIELDS if getattr(found, attribute) != getattr(urls, attribute)]


def sync_numbers(session: Session, provider: Provider, base_url: str) -> SyncReport:
    """Find each active tracked number among the account's numbers and set its URLs."""
    urls = urls_for(base_url)
    on_account = {n.phone_number: n for n in provider.list_numbers()}
    report = SyncReport()
    for tracked in session.scalars(
        select(TrackedNumber).where(TrackedNumber.active.is_(True)).order_by(TrackedNumber.number)
    ):
        found = on_account.get(tracked.number)
        if found is None:
            report.missing.append(tracked.number)
            continue
        tracked.provider_sid = found.sid
        if not drifted(found, urls):
            report.unchanged.append(tracked.number)
            continue
        provider.update_number(found.sid, urls)
        report.updated.append(tracked.number)
    return report
