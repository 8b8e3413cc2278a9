"""Schema-driven: every operation of /api/v1/openapi.json, called with generated input and a valid key,
never answers 500 and answers what the document says (status codes, content types, bodies)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from gateway import api
from gateway.simulator import play_call
from tests.support.api import bearer, make_key
from tests.support.config import CUSTOMER, SIMULTANEOUS, SOUTH


@pytest.fixture
def api_key(db, clock, configured, poster):
    # Some rows to find: leads, calls and tasks in both stores.
    list(play_call(poster, to=SIMULTANEOUS, caller=CUSTOMER, outcome="no-answer"))
    list(play_call(poster, to=SOUTH, caller="+13125550177", outcome="voicemail"))
    return make_key(db, clock.now())


OPERATION_SETTINGS = settings(
    max_examples=6,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def test_every_operation_conforms_to_the_document(app, api_key, monkeypatch):
    # After each call with the key, the same call with a wrong key must be a 401: from one address, more
    # than the 30 unknown keys a quarter hour the API takes before it answers 429 instead.
    monkeypatch.setattr(api, "FAILED_KEYS_PER_ADDRESS", 1_000_000)
    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    for operation in operations:

        @OPERATION_SETTINGS
        @given(case=operation.as_strategy())
        def conforms(case):
            # Cursors are opaque and phones free-form: a string the schema allows may still be a 400.
            case.call_and_validate(headers=bearer(api_key), excluded_checks=[positive_data_acceptance])

        try:
            conforms()
        except Exception as error:
            raise AssertionError(f"{operation.method.upper()} {operation.path}: {error}") from error


def test_the_document_describes_every_route(app, client):
    document = client.get("/api/v1/openapi.json").get_json()
    assert document["openapi"].startswith("3.1")
    described = {
        (path, method.upper()) for path, operations in document["paths"].items() for method in operations
    }
    served = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/"):
            continue
        path = rule.rule.removeprefix("/api/v1")
        for name in rule.arguments:
            path = path.replace(f"<int:{name}>", "{id}").replace(f"<{name}>", "{id}")
        served |= {(path, method) for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert served <= described, served - described
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            assert any(code.startswith("2") for code in responses), (path, method)
            if path != "/openapi.json":
                assert {"401", "429"} <= set(responses), (path, method)
            if (method in {"post", "patch"} and path.endswith("messages")) or method == "patch":
                assert "requestBody" in operation, (path, method)
