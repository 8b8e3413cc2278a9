"""Every provider webhook refuses, storing nothing: a parameter naming the call or text sent twice (400,
even when the signature holds, since it covers the values but not their order) and a request of another
account (403). In sandbox mode there is no account to compare with."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from werkzeug.datastructures import MultiDict

from gateway.calls.hotpath import hot_path
from gateway.messaging.models import MessageStatusCallback
from gateway.models import Call, Contact, Lead, Message, Task
from gateway.simulator import new_sid, sign
from tests.conftest import ACCOUNT_SID
from tests.support.config import CUSTOMER, SIMULTANEOUS, SOUTH

OTHER_ACCOUNT = "AC" + "9" * 32


def _call(sid: str) -> dict[str, str]:
    return {"CallSid": sid, "From": CUSTOMER, "To": SIMULTANEOUS, "CallStatus": "ringing", "AccountSid": ACCOUNT_SID}


def _text(sid: str) -> dict[str, str]:
    return {"MessageSid": sid, "SmsSid": sid, "From": CUSTOMER, "To": SIMULTANEOUS, "Body": "Still there?",
            "NumMedia": "0", "AccountSid": ACCOUNT_SID}


WEBHOOKS = {
    "voice incoming": ("/webhooks/voice/incoming", lambda: _call(new_sid("CA"))),
    "voice status": ("/webhooks/voice/status",
                     lambda: {**_call(new_sid("CA")), "CallStatus": "no-answer", "CallDuration": "0"}),
    "voice dial-complete": ("/webhooks/voice/dial-complete?step=0",
                            lambda: {**_call(new_sid("CA")), "DialCallStatus": "no-answer"}),
    "sms incoming": ("/webhooks/sms/incoming", lambda: _text(new_sid("SM"))),
    "sms status": ("/webhooks/sms/status", lambda: {**_text(new_sid("SM")), "MessageStatus": "delivered"}),
    "voicemail recording": ("/webhooks/voicemail/recording",
                            lambda: {**_call(new_sid("CA")), "RecordingSid": new_sid("RE"),
                                     "RecordingStatus": "completed", "RecordingUrl": "https://api.twilio.com/r",
                                     "RecordingDuration": "9"}),
    "voicemail transcription": ("/webhooks/voicemail/transcription",
                                lambda: {**_call(new_sid("CA")), "TranscriptionStatus": "completed",
                                         "TranscriptionText": "call me"}),
    "click-to-call agent": ("/webhooks/click-to-call/agent", lambda: _call(new_sid("CA"))),
    "click-to-call accept": ("/webhooks/click-to-call/accept", lambda: {**_call(new_sid("CA")), "Digits": "1"}),
    "click-to-call status": ("/webhooks/click-to-call/status",
                             lambda: {**_call(new_sid("CA")), "CallStatus": "completed"}),
}


def _stored(db) -> tuple[int, ...]:
    with db.session() as session:
        return tuple(
            session.scalar(select(func.count()).select_from(model)) or 0
            for model in (Call, Contact, Lead, Task, Message, MessageStatusCallback)
        )


def _post(app, settings, path: str, form: MultiDict):
    url = settings.public_base_url + path
    headers = {"X-Twilio-Signature": sign(settings.webhook_auth_token, url, form)}
    response = app.test_client().post(path, data=form, headers=headers)
    hot_path(app).flush()
    return response


def _repeated(params: dict[str, str], name: str, other: str) -> MultiDict:
    form = MultiDict(params)
    form.add(name, other)
    return form


SECOND_VALUE = {"CallSid": new_sid("CA"), "MessageSid": new_sid("SM"), "From": "+12025550142", "To": SOUTH,
                "AccountSid": ACCOUNT_SID}


@pytest.mark.usefixtures("configured")
@pytest.mark.parametrize("webhook", sorted(WEBHOOKS))
def test_a_parameter_naming_the_call_or_text_sent_twice_is_a_400_and_nothing_is_stored(app, settings, db, webhook):
    path, make = WEBHOOKS[webhook]
    before = _stored(db)
    for name in ("From", "To", "AccountSid", "CallSid", "MessageSid"):
        params = make()
        if name not in params:
            continue
        for form in (_repeated(params, name, SECOND_VALUE[name]), _repeated(params, name, params[name])):
            response = _post(app, settings, path, form)
            assert response.status_code == 400, (name, response.get_data(as_text=True))
            assert response.get_json()["error"]["code"] == "repeated_parameter"
    assert _stored(db) == before


@pytest.mark.usefixtures("configured")
@pytest.mark.parametrize("webhook", sorted(WEBHOOKS))
def test_another_accounts_request_is_a_403_and_nothing_is_stored(app, settings, db, webhook):
    path, make = WEBHOOKS[webhook]
    before = _stored(db)
    response = _post(app, settings, path, MultiDict({**make(), "AccountSid": OTHER_ACCOUNT}))
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "wrong_account"
    assert _stored(db) == before


@pytest.mark.usefixtures("configured")
def test_the_fast_path_hands_repeats_and_other_accounts_to_the_checks(app, settings, db):
    path = "/webhooks/voice/incoming"
    warm = _post(app, settings, path, MultiDict(_call(new_sid("CA"))))  # caches the route: the fast path is on
    assert warm.status_code == 200
    before = _stored(db)
    # The reordered To: the signature holds, the other store must not get the call.
    params = _call(new_sid("CA"))
    form = MultiDict([("To", SOUTH), *params.items()])
    assert _post(app, settings, path, form).status_code == 400
    assert _post(app, settings, path, MultiDict({**params, "AccountSid": OTHER_ACCOUNT})).status_code == 403
    assert _stored(db) == before
    assert _post(app, settings, path, MultiDict(_call(new_sid("CA")))).status_code == 200


@pytest.mark.usefixtures("configured")
def test_the_configured_account_and_no_account_at_all_are_accepted(app, settings, db):
    for params in (_text(new_sid("SM")), {k: v for k, v in _text(new_sid("SM")).items() if k != "AccountSid"}):
        response = _post(app, settings, "/webhooks/sms/incoming", MultiDict(params))
        assert response.status_code == 200


def test_sandbox_mode_has_no_account_to_compare_with(make_app, settings, configure):
    sandbox = make_app(twilio_account_sid=None, twilio_auth_token=None)
    configure()
    sandboxed = sandbox.extensions["gateway"].settings
    response = _post(sandbox, sandboxed, "/webhooks/sms/incoming",
                     MultiDict({**_text(new_sid("SM")), "AccountSid": OTHER_ACCOUNT}))
    assert response.status_code == 200
