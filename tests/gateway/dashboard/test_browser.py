"""The workspace in Debian's headless Chromium, driven by Playwright, as an agent and as a manager: sign in by
a texted code, find the missed call's lead, play its voicemail, complete the task, change the status, stop the
cadence, reply and see the text reach the provider; store scoping, CSRF, live updates, a 390 px phone, and
axe-core on every page. Screenshots land in tests/screenshots/ (ignored by git) to be looked at."""

from __future__ import annotations

import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from tests.gateway.agents.helpers import ALICE, DMITRI, SAM, missed_call, only_lead
from tests.gateway.dashboard.helpers import latest_code, voicemail_call
from tests.support.config import CUSTOMER, SOUTH

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[2] / "screenshots"
AXE = (Path(__file__).resolve().parents[2] / "support" / "axe" / "axe.min.js").read_text()
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
PAGES = ["/", "/leads", "/inbox", "/tasks", "/calls", "/kpis"]

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("configured")]


@pytest.fixture
def server(app: Any) -> Iterator[str]:
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    thread.join(timeout=5)


@pytest.fixture
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists() and shutil.which("chromium") is None:
        pytest.skip(f"headless Chromium is not installed at {CHROMIUM}")
    playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run",
                  "--autoplay-policy=no-user-gesture-required"],
        )
        try:
            yield chromium
        finally:
            chromium.close()


def sign_in(page: Any, base: str, phone: str, fake: Any, work: Any) -> None:
    page.goto(base + "/sign-in")
    page.get_by_label("Mobile number").fill(phone)
    page.get_by_role("button", name="Text me a code").click()
    page.get_by_label("Code").wait_for()
    work()
    page.get_by_label("Code").fill(latest_code(fake, phone))
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_url(base + "/")


def check_page(page: Any, name: str) -> None:
    """axe-core finds no serious or critical violation; a screenshot at this size; no sideways scroll."""
    result = page.evaluate(AXE + "\n;axe.run(document, {resultTypes: ['violations']})")
    bad = [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in result["violations"] if v["impact"] in {"serious", "critical"}
    ]
    assert not bad, f"{name}: {bad}"
    SHOTS.mkdir(exist_ok=True)
    width = page.viewport_size["width"]
    page.screenshot(path=str(SHOTS / f"{name}-{width}.png"), full_page=True)
    scroll = page.evaluate("document.documentElement.scrollWidth")
    assert scroll <= width, f"{name} scrolls sideways at {width} px: {scroll}"


def tour(page: Any, base: str, who: str, lead_id: int) -> None:
    for size in (DESKTOP, PHONE):
        page.set_viewport_size(size)
        for path in [*PAGES, f"/leads/{lead_id}", f"/inbox?lead={lead_id}", "/kpis?from=2026-11-01&to=2026-11-24"]:
            page.goto(base + path)
            slug = re.sub(r"[^a-z0-9]+", "-", path.split("&")[0]).strip("-") or "today"
            check_page(page, f"{who}-{slug}")
        # Tap targets: every button and link in the main content is at least 44 px high.
        small = page.evaluate(
            """Array.from(document.querySelectorAll('main button, main a.button, nav a, main select, main input'))
                 .filter(e => e.offsetParent !== null && e.type !== 'hidden' && e.type !== 'checkbox')
                 .filter(e => e.getBoundingClientRect().height < 43.5)
                 .map(e => e.outerHTML.slice(0, 80))"""
        )
        assert small == [], small


@pytest.mark.parametrize(("who", "phone"), [("agent", ALICE), ("manager", DMITRI)])
def test_a_person_works_a_missed_call_from_sign_in_to_reply(
    who, phone, server, browser, app, db, twilio, fake_twilio, work
):
    voicemail_call(twilio, fake_twilio)
    work()
    lead = only_lead(db)
    page = browser.new_page(viewport=DESKTOP)
    page.goto(server + "/sign-in")
    check_page(page, f"{who}-sign-in")
    sign_in(page, server, phone, fake_twilio, work)

    # Today: the missed call's customer, overdue-first list; open the lead.
    page.get_by_role("link", name=re.compile(r"\(202\) 555-0199")).first.click()
    page.wait_for_url(f"{server}/leads/{lead.id}")
    assert "Voicemail" in page.locator("#timeline").inner_text()
    assert "call me back about the CR-V" in page.locator("#timeline").inner_text()

    # The voicemail plays through the workspace's authorised route.
    audio = page.locator("audio").first
    audio.evaluate("a => a.play()")
    page.wait_for_function("() => { const a = document.querySelector('audio'); return a.currentTime > 0 || a.ended; }")
    assert audio.evaluate("a => a.error") is None

    # Complete the task.
    page.locator("section[aria-labelledby=tasks-title]").get_by_role("button", name=re.compile("^Done")).click()
    page.get_by_text("Task done.").wait_for()
    assert "No open task" in page.locator("section[aria-labelledby=tasks-title]").inner_text()

    # Stop the cadence.
    page.get_by_role("button", name="Stop automatic texts").first.click()
    page.get_by_text("The automatic texts are stopped.").wait_for()

    # Change the status.
    page.get_by_label("Status").select_option("appointment_set")
    page.get_by_label(re.compile("^Appointment")).fill("2026-11-25T15:30")
    page.get_by_role("button", name="Save changes").click()
    page.get_by_text("Saved.").wait_for()
    assert page.locator("#status").inner_text() == "appointment set"

    # Reply, and the text reaches the provider.
    page.get_by_label("Reply").fill(f"Hi Maria, {who} here. Tomorrow at 3:30 works!")
    page.get_by_role("button", name="Send text").click()
    page.locator("#sent-notice").wait_for()
    assert "Sent to the customer" in page.locator("#sent-notice").inner_text()
    work()
    bodies = [m["Body"] for m in fake_twilio.messages if m["To"] == CUSTOMER]
    assert f"Hi Maria, {who} here. Tomorrow at 3:30 works!" in bodies

    tour(page, server, who, lead.id)


def test_an_agent_of_one_store_gets_a_404_page_for_another_store_lead(server, browser, db, poster, fake_twilio, work):
    missed_call(poster)
    lead = only_lead(db)
    page = browser.new_page(viewport=PHONE)
    sign_in(page, server, SAM, fake_twilio, work)
    response = page.goto(f"{server}/leads/{lead.id}")
    assert response.status == 404
    assert page.get_by_role("heading", name="Not found").is_visible()
    check_page(page, "agent-404")
    missed_call(poster, to=SOUTH, caller="+13125550177")


def test_a_form_posted_without_its_csrf_token_is_refused(server, browser, fake_twilio, work, poster, db):
    missed_call(poster)
    lead = only_lead(db)
    page = browser.new_page(viewport=DESKTOP)
    sign_in(page, server, ALICE, fake_twilio, work)
    page.goto(f"{server}/leads/{lead.id}")
    page.evaluate("document.querySelectorAll('input[name=csrf_token]').forEach(e => e.remove())")
    page.get_by_label("Reply").fill("This must not go out")
    page.get_by_role("button", name="Send text").click()
    page.get_by_role("heading", name="Not allowed").wait_for()
    check_page(page, "csrf-refused")
    work()
    assert all(m["Body"] != "This must not go out" for m in fake_twilio.messages)


def test_a_new_missed_call_appears_on_an_open_today_page_without_a_reload(server, browser, fake_twilio, work, poster):
    page = browser.new_page(viewport=PHONE)
    sign_in(page, server, ALICE, fake_twilio, work)
    page.evaluate("window.__same_page = true")
    assert "(202) 555-0177" not in page.content()
    missed_call(poster, caller="+12025550177")
    page.get_by_text("(202) 555-0177").first.wait_for(timeout=3000)
    assert page.evaluate("window.__same_page") is True  # no reload happened
    check_page(page, "agent-today-live")
