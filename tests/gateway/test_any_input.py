"""Property: whatever a client or the provider sends to any API endpoint or webhook, the answer is a 2xx,
a 4xx with the JSON error body, TwiML, or (for a person's link) an HTML page. Never a 5xx.

Every route is taken from the app's URL map, so a new endpoint is covered the day it is added. Webhooks
are signed with the provider's algorithm, so the input reaches past the signature check."""

from __future__ import annotations

import base64
import json
import re
from typing import Any
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.datastructures import MultiDict

from gateway.simulator import sign
from tests.support.api import bearer, make_key

TEXT = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)
NUMBERISH = st.sampled_from(["", "0", "1", "-1", "²", "١٢", "1e400", "9" * 30, str(2**63), "2147483648",
                             "+12025550199", "%2B1202", "NaN", "null", "0001-01-01T00:00:00+05:00"])
VALUE = st.one_of(NUMBERISH, NUMBERISH, NUMBERISH, TEXT, st.deferred(lambda: CURSORS))
NAMES = st.one_of(
    st.sampled_from(["limit", "cursor", "since", "until", "lead", "status", "phone", "store", "agent", "owner",
                     "direction", "kind", "CallSid", "MessageSid", "From", "To", "AccountSid", "CallStatus",
                     "CallDuration", "DialCallStatus", "Digits", "RecordingUrl", "RecordingDuration",
                     "TranscriptionText", "Body", "NumMedia", "MediaUrl0", "ErrorCode", "MessageStatus",
                     "step", "call", "agent"]),
    TEXT,
)
PAIRS = st.lists(st.tuples(NAMES, VALUE), max_size=8)
def _nested(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4))


JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), TEXT), _nested, max_leaves=12
)
# Cursors as the API once gave them out (base64 JSON), holding anything.
CURSORS = JSON.map(lambda value: base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("="))
BODY = st.one_of(
    st.fixed_dictionaries({}, optional={"body": JSON, "media_urls": JSON, "agent": JSON, "status": JSON,
                                        "owner": JSON, "appointment_at": JSON, "cadence": JSON, "note": JSON}),
    JSON,
)


def _routes(app, prefixes: tuple[str, ...]) -> list[tuple[str, str, tuple[str, ...]]]:
    found = []
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(prefixes):
            for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
                found.append((rule.rule, method, tuple(rule.arguments)))
    return sorted(found)


def _path(rule: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        rule = rule.replace(f"<int:{name}>", value).replace(f"<{name}>", value)
    return rule


def _acceptable(response, rule: str) -> None:
    assert response.status_code < 500, (rule, response.status_code, response.get_data(as_text=True)[:500])
    if response.status_code < 400:
        return
    if response.mimetype in {"text/xml", "application/xml"}:
        assert response.get_data(as_text=True).lstrip().startswith(("<?xml", "<Response"))
    elif response.mimetype == "text/html":
        assert rule.startswith("/c/")  # a person's page
    else:
        error = response.get_json()["error"]
        assert isinstance(error["code"], str)
        assert isinstance(error["message"], str)


PATH_VALUE = st.one_of(st.integers(min_value=0, max_value=5).map(str), NUMBERISH.filter(bool),
                       TEXT.filter(lambda t: t and "/" not in t and "?" not in t and "#" not in t))


def _documented(app) -> dict[tuple[str, str], list[str]]:
    """The query parameters the OpenAPI document names, by (werkzeug rule, method)."""
    document = app.test_client().get("/api/v1/openapi.json").get_json()
    names: dict[tuple[str, str], list[str]] = {}
    for rule, method, _ in _routes(app, ("/api/",)):
        path = re.sub(r"<[^>]+>", "{id}", rule.removeprefix("/api/v1"))
        operation = document["paths"].get(path, {}).get(method.lower(), {})
        names[(rule, method)] = [p["name"] for p in operation.get("parameters", []) if p["in"] == "query"]
    return names


@pytest.mark.usefixtures("configured")
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_request_to_any_api_endpoint_gets_no_server_error(app, db, clock, data):
    key = make_key(db, clock.now())
    routes = _routes(app, ("/api/", "/c/"))
    rule, method, arguments = data.draw(st.sampled_from(routes))
    path = _path(rule, {name: data.draw(PATH_VALUE) for name in arguments})
    documented = _documented(app).get((rule, method)) or ["limit"]
    names = st.one_of(st.sampled_from(documented), st.sampled_from(documented), NAMES)
    query = urlencode(data.draw(st.lists(st.tuples(names, VALUE), max_size=2)))  # one bad value is enough
    headers = bearer(key) if data.draw(st.integers(0, 9)) or rule.startswith("/c/") else {}
    kwargs: dict[str, Any] = {"query_string": query, "headers": headers}
    if method in {"POST", "PATCH", "PUT"}:
        kind = data.draw(st.sampled_from(["json", "raw", "form", "none"]))
        if kind == "json":
            kwargs.update(data=json.dumps(data.draw(BODY)), content_type="application/json")
        elif kind == "raw":
            kwargs.update(data=data.draw(st.binary(max_size=200)), content_type="application/json")
        elif kind == "form":
            kwargs.update(data=MultiDict(data.draw(PAIRS)))
    response = app.test_client().open(path, method=method, **kwargs)
    _acceptable(response, rule)


@pytest.mark.usefixtures("configured")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_signed_webhook_gets_no_server_error(app, settings, data):
    from gateway.calls.hotpath import hot_path

    routes = [r for r in _routes(app, ("/webhooks/",)) if r[1] == "POST"]
    rule, _, arguments = data.draw(st.sampled_from(routes))
    path = _path(rule, {name: data.draw(PATH_VALUE) for name in arguments})
    query = urlencode(data.draw(PAIRS))
    base = {"CallSid": "CA" + "a" * 32, "MessageSid": "SM" + "b" * 32, "From": "+12025550199",
            "To": "+12025550123", "AccountSid": settings.twilio_account_sid or ""}
    kept = {k: v for k, v in base.items() if data.draw(st.booleans())}
    form = MultiDict(list(kept.items()) + data.draw(PAIRS))
    url = settings.public_base_url + path + ("?" + query if query else "")
    headers = {"X-Twilio-Signature": sign(settings.webhook_auth_token, url, form)}
    response = app.test_client().post(path, query_string=query, data=form, headers=headers)
    hot_path(app).flush()
    _acceptable(response, rule)
