"""The workspace without a browser: sign-in by code and by key, sessions ended server-side, CSRF, roles and
store scoping, the pages and their actions, error pages, security headers."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from gateway.dashboard.models import SignInCode
from gateway.models import Lead, Message, Task
from gateway.simulator import play_call
from tests.gateway.agents.helpers import ALICE, SAM, api_key, missed_call, only_lead
from tests.gateway.dashboard.helpers import (
    csrf_of,
    latest_code,
    post_form,
    sign_in_by_code,
    sign_in_by_key,
    voicemail_call,
)
from tests.support.config import CUSTOMER, SIMULTANEOUS, SOUTH

pytestmark = pytest.mark.usefixtures("configured")


def test_signed_out_pages_send_people_to_sign_in_and_show_no_lead_data(client, poster):
    missed_call(poster)
    for path in ("/", "/leads", "/inbox", "/tasks", "/calls", "/kpis", "/leads/1"):
        response = client.get(path)
        assert response.status_code == 302
        assert response.headers["Location"].startswith("/sign-in?next=")
    page = client.get("/sign-in").get_data(as_text=True)
    assert "Mobile number" in page
    assert "API key" in page
    assert "(202) 555-0199" not in page


def test_an_agent_signs_in_with_a_code_texted_from_the_store_number(client, fake_twilio, work, db):
    response = sign_in_by_code(client, fake_twilio, work, ALICE)
    assert response.status_code == 302
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Secure" in cookie  # PUBLIC_BASE_URL is https in the tests
    [text] = [m for m in fake_twilio.messages if m["To"] == ALICE]
    assert text["From"] == SIMULTANEOUS  # the store's first tracked number
    assert "Alice Ng" in client.get("/").get_data(as_text=True)


def test_a_code_works_once_and_only_five_wrong_tries(client, fake_twilio, work, db):
    page = client.get("/sign-in").get_data(as_text=True)
    response = client.post("/sign-in", data={"csrf_token": csrf_of(page), "phone": "(202) 555-0111"})
    work()
    code = latest_code(fake_twilio, ALICE)
    token = csrf_of(response.get_data(as_text=True))
    wrong = "000000" if code != "000000" else "111111"
    for _ in range(5):
        response = client.post("/sign-in", data={"csrf_token": token, "phone": ALICE, "code": wrong})
        assert response.status_code == 400
        assert "wrong or has expired" in response.get_data(as_text=True)
    response = client.post("/sign-in", data={"csrf_token": token, "phone": ALICE, "code": code})
    assert response.status_code == 400  # five wrong tries used the code up
    with db.session() as session:
        assert session.scalars(select(SignInCode)).one().attempts == 5


def test_a_code_expires_after_ten_minutes(client, fake_twilio, work, clock):
    page = client.get("/sign-in").get_data(as_text=True)
    response = client.post("/sign-in", data={"csrf_token": csrf_of(page), "phone": ALICE})
    work()
    code = latest_code(fake_twilio, ALICE)
    clock.advance(timedelta(seconds=601))
    response = client.post(
        "/sign-in", data={"csrf_token": csrf_of(response.get_data(as_text=True)), "phone": ALICE, "code": code}
    )
    assert response.status_code == 400


def test_an_unknown_number_gets_no_code_and_failures_are_limited_per_address(client, fake_twilio, work):
    token = csrf_of(client.get("/sign-in").get_data(as_text=True))
    for _ in range(10):
        response = client.post("/sign-in", data={"csrf_token": token, "phone": "+12025550999"})
        assert response.status_code == 400
    response = client.post("/sign-in", data={"csrf_token": token, "phone": ALICE})
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0
    work()
    assert fake_twilio.messages == []


def test_codes_per_person_are_rate_limited(client, fake_twilio, work):
    token = csrf_of(client.get("/sign-in").get_data(as_text=True))
    for _ in range(4):
        client.post("/sign-in", data={"csrf_token": token, "phone": ALICE})
    work()
    assert len([m for m in fake_twilio.messages if m["To"] == ALICE]) == 3


def test_wrong_keys_are_limited_per_address(client):
    token = csrf_of(client.get("/sign-in").get_data(as_text=True))
    for _ in range(10):
        assert client.post("/sign-in", data={"csrf_token": token, "key": "gw_nope"}).status_code == 400
    response = client.post("/sign-in", data={"csrf_token": token, "key": "gw_nope"})
    assert response.status_code == 429
    assert "Retry-After" in response.headers


def test_a_form_without_its_csrf_token_is_refused(client, db, clock, fake_twilio, work):
    key = api_key(db, clock, None)
    response = client.post("/sign-in", data={"key": key})
    assert response.status_code == 403
    assert "text/html" in response.headers["Content-Type"]
    assert "gw_session" not in response.headers.get("Set-Cookie", "")
    sign_in_by_key(client, key)
    assert client.post("/sign-out").status_code == 403
    assert client.post("/sign-out", data={"csrf_token": "0" * 64}).status_code == 403


def test_sign_out_ends_the_session_even_for_a_copied_cookie(client, app, db, clock):
    key = api_key(db, clock, ["north-honda"])
    response = sign_in_by_key(client, key)
    assert response.status_code == 302
    copied = client.get_cookie("gw_session").value
    page = client.get("/").get_data(as_text=True)
    assert client.post("/sign-out", data={"csrf_token": csrf_of(page)}).status_code == 302
    other = app.test_client()
    other.set_cookie("gw_session", copied)
    assert other.get("/").status_code == 302  # back to sign-in: the session is over


def test_pages_carry_the_security_headers(client, db, clock):
    sign_in_by_key(client, api_key(db, clock, None))
    for path in ("/", "/sign-in", "/leads", "/nowhere"):
        response = client.get(path)
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"]
        policy = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy
        assert "unsafe-inline" not in policy
        assert "frame-ancestors 'none'" in policy


def test_error_pages_are_pages_and_the_api_stays_json(client, db, clock):
    sign_in_by_key(client, api_key(db, clock, None))
    response = client.get("/no-such-page")
    assert response.status_code == 404
    assert "text/html" in response.headers["Content-Type"]
    assert "Not found" in response.get_data(as_text=True)
    assert client.get("/api/v1/nothing").get_json()["error"]["code"] == "not_found"


def test_an_agent_sees_their_store_and_another_store_lead_is_a_404_page(client, poster, fake_twilio, work, db):
    missed_call(poster, to=SOUTH, caller="+13125550177")
    with db.session() as session:
        south = session.scalars(select(Lead)).one()
    missed_call(poster)
    sign_in_by_code(client, fake_twilio, work, ALICE)
    page = client.get("/leads").get_data(as_text=True)
    assert "(202) 555-0199" in page
    assert "(312) 555-0177" not in page
    response = client.get(f"/leads/{south.id}")
    assert response.status_code == 404
    assert "text/html" in response.headers["Content-Type"]
    assert client.get("/leads/99999999999").status_code == 404


def test_today_lists_the_missed_call_with_counts_in_the_store_zone(client, poster, fake_twilio, work, db):
    missed_call(poster)
    sign_in_by_code(client, fake_twilio, work, ALICE)
    page = client.get("/").get_data(as_text=True)
    assert "(202) 555-0199" in page
    assert "Call back" in page
    assert "today 10:" in page  # 15:00 UTC is 10:00 in New York, no seconds
    assert "+1202" not in page


def test_a_reply_from_the_workspace_is_the_first_response(client, poster, fake_twilio, work, db):
    missed_call(poster)
    lead = only_lead(db)
    sign_in_by_code(client, fake_twilio, work, ALICE)
    response = post_form(client, f"/leads/{lead.id}", f"/leads/{lead.id}/reply", {"body": "Hi, Alice here!"})
    assert response.status_code == 302
    work()
    assert any(m["Body"] == "Hi, Alice here!" and m["To"] == CUSTOMER for m in fake_twilio.messages)
    with db.session() as session:
        fresh = session.get(Lead, lead.id)
        assert fresh.first_response_at is not None
        assert fresh.status == "contacted"
        assert all(t.status != "open" for t in session.scalars(select(Task).where(Task.lead_id == lead.id)))
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Sent to the customer" in page


def test_a_refused_reply_says_why_in_words(client, poster, fake_twilio, work, db, twilio):
    missed_call(poster)
    lead = only_lead(db)
    with db.session() as session:
        session.get(Lead, lead.id).contact.opted_out = True
    sign_in_by_code(client, fake_twilio, work, ALICE)
    response = post_form(
        client, "/inbox", f"/leads/{lead.id}/reply", {"body": "Hello?", "next": f"/inbox?lead={lead.id}"}
    )
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Not sent" in page or "opted out" in page
    with db.session() as session:
        assert session.get(Lead, lead.id).first_response_at is None


def test_api_text_with_an_agent_is_the_first_response(client, poster, db, clock, work):
    missed_call(poster)
    lead = only_lead(db)
    key = api_key(db, clock, None)
    response = client.post(
        f"/api/v1/leads/{lead.id}/messages", json={"body": "Hi from the CRM", "agent": "alice"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 201
    with db.session() as session:
        fresh = session.get(Lead, lead.id)
        assert fresh.first_response_at is not None
        assert [t.status for t in session.scalars(select(Task).where(Task.lead_id == lead.id))] == ["done"]
        assert session.get(Message, response.get_json()["id"]).agent_id is not None
    bad = client.post(
        f"/api/v1/leads/{lead.id}/messages", json={"body": "x", "agent": "sam"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert bad.status_code == 404


def test_complete_a_task_change_status_owner_and_appointment(client, poster, fake_twilio, work, db):
    missed_call(poster)
    lead = only_lead(db)
    sign_in_by_code(client, fake_twilio, work, ALICE)
    with db.session() as session:
        task = session.scalars(select(Task)).one()
    response = post_form(client, "/tasks", f"/tasks/{task.id}/complete", {"next": "/tasks"})
    assert response.status_code == 302
    response = post_form(client, f"/leads/{lead.id}", f"/leads/{lead.id}",
                         {"status": "appointment_set", "owner": "ben", "appointment_at": "2026-11-25T15:30"})
    assert response.status_code == 302
    with db.session() as session:
        fresh = session.get(Lead, lead.id)
        assert fresh.status == "appointment_set"
        assert fresh.owner.key == "ben"
        assert fresh.appointment_at.isoformat() == "2026-11-25T20:30:00+00:00"  # 3:30 pm in New York
        assert session.get(Task, task.id).status == "done"
    page = client.get(f"/leads/{lead.id}").get_data(as_text=True)
    assert "appointment set" in page
    assert "Wed 25 Nov 2026, 3:30 pm EST" in page


def test_stop_the_cadence_from_the_lead_page(client, poster, fake_twilio, work, db):
    missed_call(poster)
    lead = only_lead(db)
    sign_in_by_code(client, fake_twilio, work, ALICE)
    page = client.get(f"/leads/{lead.id}").get_data(as_text=True)
    assert "Stop automatic texts" in page
    response = post_form(client, f"/leads/{lead.id}", f"/leads/{lead.id}/cadence/stop")
    assert response.status_code == 302
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "automatic texts are stopped" in page
    assert "stopped by hand" in page


def test_the_voicemail_plays_through_a_session_authorised_route(client, app, twilio, fake_twilio, work, db, clock):
    voicemail_call(twilio, fake_twilio)
    lead = only_lead(db)
    assert app.test_client().get("/calls/1/recording").status_code == 403
    sign_in_by_code(client, fake_twilio, work, ALICE)
    page = client.get(f"/leads/{lead.id}").get_data(as_text=True)
    assert "<audio" in page
    assert "call me back about the CR-V" in page
    with db.session() as session:
        from gateway.models import Call

        call_id = session.scalars(select(Call.id)).one()
    audio = client.get(f"/calls/{call_id}/recording")
    assert audio.status_code == 200
    assert audio.headers["Content-Type"] == "audio/mpeg"


def test_another_store_recording_is_not_found(client, twilio, fake_twilio, work, db):
    voicemail_call(twilio, fake_twilio, to=SOUTH, caller="+13125550177")
    sign_in_by_code(client, fake_twilio, work, ALICE)
    assert client.get("/calls/1/recording").status_code == 404


def test_a_manager_sees_every_department_and_kpis_agree_with_the_api(client, poster, fake_twilio, work, db, clock):
    list(play_call(poster, to=SIMULTANEOUS, caller=CUSTOMER, outcome="no-answer"))
    list(play_call(poster, to=SIMULTANEOUS, caller="+12025550177", outcome="answer"))
    sign_in_by_code(client, fake_twilio, work, "+12025550114")
    page = client.get("/kpis?from=2026-11-20&to=2026-11-24").get_data(as_text=True)
    key = api_key(db, clock, ["north-honda"])
    api = client.get(
        "/api/v1/metrics?since=2026-11-20T00:00:00-05:00&until=2026-11-25T00:00:00-05:00",
        headers={"Authorization": f"Bearer {key}"},
    ).get_json()
    assert api["calls"]["total"] == 2
    assert f'id="kpi-leads">{api["leads"]["total"]}<' in page
    missed = api["calls"]["missed_rate"]
    assert f'id="kpi-missed">{missed * 100:.0f}%<' in page
    assert "By source" in page
    assert "<svg" in page


def test_other_pages_render_for_each_role(client, poster, fake_twilio, work, db, clock):
    missed_call(poster)
    for who in (ALICE, "+12025550114"):
        sign_in_by_code(client, fake_twilio, work, who)
        for path in ("/", "/leads", "/leads?q=5550199", "/leads?q=Maria", "/inbox", "/tasks", "/calls",
                     "/calls?outcome=unanswered", "/kpis?from=2026-11-01&to=2026-11-24", "/leads?status=open"):
            response = client.get(path)
            assert response.status_code == 200, path
        client.post("/sign-out", data={"csrf_token": csrf_of(client.get("/").get_data(as_text=True))})
    sign_in_by_key(client, api_key(db, clock, None))
    assert client.get("/kpis?from=bogus&to=2020-01-01").status_code == 200
    assert client.get(f"/leads/{only_lead(db).id}").status_code == 200


def test_live_state_changes_when_a_call_comes_in(client, poster, fake_twilio, work):
    assert client.get("/live").status_code == 401
    sign_in_by_code(client, fake_twilio, work, ALICE)
    before = client.get("/live").get_json()["state"]
    missed_call(poster)
    assert client.get("/live").get_json()["state"] != before


def test_sam_of_the_other_store_cannot_see_north_leads(client, poster, fake_twilio, work, db):
    missed_call(poster)
    lead = only_lead(db)
    sign_in_by_code(client, fake_twilio, work, SAM)
    assert client.get(f"/leads/{lead.id}").status_code == 404
    assert "(202) 555-0199" not in client.get("/").get_data(as_text=True)


def test_unknown_api_keys_are_limited_per_address(client, db, clock):
    for _ in range(30):
        assert client.get("/api/v1/leads", headers={"Authorization": "Bearer gw_nope_x"}).status_code == 401
    response = client.get("/api/v1/leads", headers={"Authorization": "Bearer gw_nope_x"})
    assert response.status_code == 429
    assert response.get_json()["error"]["code"] == "too_many_failed_keys"
    assert int(response.headers["Retry-After"]) > 0


def test_in_sandbox_mode_the_code_is_logged_for_the_console(make_app, configure, caplog):
    app = make_app(twilio_account_sid=None, twilio_auth_token=None)
    client = app.test_client()
    token = csrf_of(client.get("/sign-in").get_data(as_text=True))
    with caplog.at_level("WARNING", logger="gateway.dashboard.auth"):
        response = client.post("/sign-in", data={"csrf_token": token, "phone": ALICE})
    assert response.status_code == 200
    [line] = [r.getMessage() for r in caplog.records if "sign-in code" in r.getMessage()]
    code = line.rsplit(" ", 1)[1]
    assert len(code) == 6
    assert "+12025550111" not in line  # the number is masked
    response = client.post("/sign-in", data={"csrf_token": token, "phone": ALICE, "code": code})
    assert response.status_code == 302
