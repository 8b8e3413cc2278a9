"""X-Twilio-Signature: every provider webhook proves it came from the provider, or gets a 403."""

from __future__ import annotations

import functools
import hmac
import logging
from collections.abc import Callable
from typing import Any, TypeVar, cast

from flask import request
from twilio.request_validator import RequestValidator

from gateway import runtime
from gateway.web import json_error

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

_validators: dict[str, RequestValidator] = {}


def _validator(token: str) -> RequestValidator:
    validator = _validators.get(token)
    if validator is None:
        validator = _validators[token] = RequestValidator(token)
    return validator


def signed_url() -> str:
    """The URL the provider requested, as it knows it: PUBLIC_BASE_URL plus path and query."""
    base = runtime.current().settings.public_base_url
    query = request.query_string.decode("latin-1")
    return base + request.path + ("?" + query if query else "")


def is_signed() -> bool:
    signature = request.headers.get("X-Twilio-Signature", "")
    if not signature:
        return False
    validator = _validator(runtime.current().settings.webhook_auth_token)
    url = signed_url()
    # The exact URL first (one HMAC); the SDK's validate also tries the URL with and without a port.
    if hmac.compare_digest(validator.compute_signature(url, request.form), signature):
        return True
    return bool(validator.validate(url, request.form, signature))


def provider_webhook(view: F) -> F:
    """Refuse with 403, storing nothing, any request whose signature does not match."""

    @functools.wraps(view)
    def checked(*args: Any, **kwargs: Any) -> Any:
        if not is_signed():
            log.warning("webhook %s refused: missing or invalid X-Twilio-Signature", request.path)
            return json_error(403, "invalid_signature", "X-Twilio-Signature is missing or does not match")
        return view(*args, **kwargs)

    return cast(F, checked)
