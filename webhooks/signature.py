"""X-Twilio-Signature: every provider webhook proves it came from the provider, or gets a 403."""

from __future__ import annotations

import functools
import hmac
import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, cast

from flask import request
from twilio.request_validator import RequestValidator

from gateway import runtime
from gateway.web import json_error

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

# Parameters that name the call or text, its parties and its account. The signature covers every value
# but not their order, so a repeated one could be reordered without breaking it: refused, never guessed.
IDENTITY_FIELDS = ("CallSid", "MessageSid", "SmsSid", "AccountSid", "From", "To", "ParentCallSid")

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


def repeated_identity(form: Mapping[str, Any]) -> str | None:
    """The first identity field sent more than once, if any (`form` as parsed: a MultiDict or pairs)."""
    getlist = getattr(form, "getlist", None)
    for name in IDENTITY_FIELDS:
        if getlist is not None and len(getlist(name)) > 1:
            return name
    return None


def foreign_account(account_sid: str | None) -> bool:
    """An AccountSid other than the configured account's (never in sandbox mode, where none is)."""
    settings = runtime.current().settings
    expected = None if settings.sandbox else settings.twilio_account_sid
    return expected is not None and account_sid is not None and account_sid != expected


def provider_webhook(view: F) -> F:
    """Refuse, storing nothing: a signature that does not match (403), a parameter naming the call or
    text sent twice (400), another account's request (403)."""

    @functools.wraps(view)
    def checked(*args: Any, **kwargs: Any) -> Any:
        if not is_signed():
            log.warning("webhook %s refused: missing or invalid X-Twilio-Signature", request.path)
            return json_error(403, "invalid_signature", "X-Twilio-Signature is missing or does not match")
        repeated = repeated_identity(request.form)
        if repeated is not None:
            log.warning("webhook %s refused: %s sent more than once", request.path, repeated)
            return json_error(400, "repeated_parameter", f"{repeated} was sent more than once")
        if foreign_account(request.form.get("AccountSid")):
            log.warning("webhook %s refused: AccountSid of another account", request.path)
            return json_error(403, "wrong_account", "AccountSid is not this gateway's account")
        return view(*args, **kwargs)

    return cast(F, checked)
