"""What tests that start `gateway` commands as processes share: their environment, and waiting with a deadline."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from gateway.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    """Whether `condition` came true within `seconds` (checked every 0.1 s, and once more at the end)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def worker_env(settings: Settings, redis_url: str, instance_dir: Path) -> dict[str, str]:
    """The environment of a `gateway worker` process working for the test's database, Redis and Twilio fake;
    none of the environment's own gateway or Twilio settings, the daily checks off, a quick sweep."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "GATEWAY_"))},
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": redis_url,
        "SECRET_KEY": settings.secret_key,
        "PUBLIC_BASE_URL": settings.public_base_url,
        "TWILIO_ACCOUNT_SID": settings.twilio_account_sid or "",
        "TWILIO_AUTH_TOKEN": settings.twilio_auth_token or "",
        "TWILIO_API_BASE_URL": settings.twilio_api_base_url,
        "GATEWAY_INSTANCE_DIR": str(instance_dir),
        "GATEWAY_SWEEP_INTERVAL": "0.2",
        "GATEWAY_RECONCILE_INTERVAL": "0",
        "GATEWAY_NUMBER_CHECK_INTERVAL": "0",
    }
