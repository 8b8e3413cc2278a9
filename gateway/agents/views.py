"""The click-to-call page an alert's link opens: the lead and a Call button; a GET never dials."""


from typing import Any

from flask import Blueprint, Response, render_template, request
from sqlalchemy.orm import Session

from gateway import runtime, web
from gateway.agents.click_to_call import LinkClaim, LinkError, call_customer, link_is_used, plan_call, read_token
from gateway.models import (
    Agent,
    Lead,
)
from gateway.phones import national

blueprint = Blueprint("click_to_call", __name__, template_folder="templates")


def _page(status: int, **context: Any) -> Response:
    response = Response(render_template("click_to_call.html", **context), status=status, mimetype="text/html")
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Robots-Tag"] = "noindex"
    return response


def _error_page(error: LinkError) -> Response:
    return _page(error.status, state="error", error=error)


def _link_subject(session: Session, claim: LinkClaim) -> tuple[Lead, Agent]:
    lead = session.get(Lead, claim.lead_id)
    agent = session.get(Agent, claim.agent_id)
    if lead is None or agent is None:
        raise LinkError(400, "invalid_link", "This call link is not valid.")
    return lead, agent


def _summary(lead: Lead) -> dict[str, Any]:
    reasons = [str(r.get("text", "")) for r in (lead.priority_reasons or []) if isinstance(r, dict)]
    return {
        "code": lead.code,
        "phone": national(lead.contact.phone),
        "source": lead.source or "unknown",
        "store": lead.store.name,
        "department": lead.department,
        "status": lead.status.replace("_", " "),
        "priority": lead.priority,
        "reasons": reasons,
    }


@blueprint.route("/c/<token>", methods=["GET", "HEAD"])
def link_page(token: str) -> Response:
    """Show the lead and a Call button. Never dials: phones and chat apps fetch links to preview them."""
    now = runtime.current().clock.now()
    session = web.session()
    try:
        claim = read_token(runtime.current().settings, token, now)
        lead, agent = _link_subject(session, claim)
        plan_call(session, lead, agent)
        if link_is_used(session, claim):
            raise LinkError(410, "used_link", "This call link was already used. Open the lead from a newer alert.")
    except LinkError as error:
        return _error_page(error)
    return _page(200, state="ready", lead=_summary(lead), agent=agent.name, action=request.path)


@blueprint.post("/c/<token>")
def link_call(token: str) -> Response:
    """The Call button: ring the agent's phone; the customer is dialled once the agent presses 1."""
    now = runtime.current().clock.now()
    session = web.session()
    try:
        claim = read_token(runtime.current().settings, token, now)
        lead, agent = _link_subject(session, claim)
        summary = _summary(lead)
        call_customer(session, lead, agent, now, claim)
    except LinkError as error:
        return _error_page(error)
    return _page(200, state="calling", lead=summary, agent=agent.name, agent_phone=national(agent.phone))


