"""POST /api/v1/leads/{id}/call: ring an agent, then the customer once the agent presses 1."""

from __future__ import annotations

from flask import Response, jsonify
from sqlalchemy import select

from gateway import serialize as out
from gateway import web
from gateway.agents import click_to_call
from gateway.api import blueprint, json_body, now
from gateway.api.leads import load_lead
from gateway.models import Agent
from gateway.web import ApiError


@blueprint.post("/leads/<int:lead_id>/call")
def call_lead(lead_id: int) -> Response:
    lead = load_lead(lead_id)
    body = json_body(optional=True)
    unknown = sorted(set(body) - {"agent"})
    if unknown:
        raise ApiError(400, "unknown_field", f"Unknown field(s): {', '.join(unknown)}; the one field is agent.")
    session = web.session()
    key = body.get("agent")
    if key is None:
        agent = lead.owner
        if agent is None:
            raise ApiError(409, "no_owner", "The lead has no owner; name an agent.")
    else:
        if not isinstance(key, str) or not key.strip():
            raise ApiError(400, "invalid_agent", "agent must be an agent key.")
        agent = session.scalar(select(Agent).where(Agent.key == key.strip()))
        if agent is None or agent.store_id != lead.store_id:
            raise ApiError(404, "unknown_agent", f"No agent {key!r} at the lead's store.")
    try:
        call = click_to_call.call_customer(session, lead, agent, now())
    except click_to_call.LinkError as error:
        raise ApiError(error.status, error.code, error.message) from None
    response = jsonify({**out.call(call), "agent": agent.key})
    response.status_code = 201
    return response
