"""The dashboard: what a BDC manager watches. Leads, open tasks, calls and texts (sandbox texts too), for
the stores of the API key the person signed in with."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, Response, redirect, render_template, request, session, url_for
from sqlalchemy import Select, select

from gateway import runtime, web
from gateway.api import keys
from gateway.models import ApiKey, Call, Lead, Message, Task, TaskStatus
from gateway.phones import national

blueprint = Blueprint("dashboard", __name__, template_folder="templates")




def init_app(app: Flask) -> None:
    app.register_blueprint(blueprint)


def _signed_in_key() -> ApiKey | None:
    key_id = session.get("api_key_id")
    if not isinstance(key_id, int):
        return None
    key = web.session().get(ApiKey, key_id)
    if key is None or key.revoked_at is not None:
        session.pop("api_key_id", None)
        return None
    return key


def _scoped(query: Select[Any], column: Any, store_ids: set[int] | None) -> Select[Any]:
    return query if store_ids is None else query.where(column.in_(store_ids))


def _page(**values: Any) -> str:
    context: dict[str, Any] = {"key": None, "error": None, **values}
    return render_template(
        "dashboard.html", sandbox=runtime.current().settings.sandbox, phone=national, **context
    )


@blueprint.get("/")
def home() -> Response | str:
    key = _signed_in_key()
    if key is None:
        return _page()
    db = web.session()
    stores = keys.store_ids(db, key)
    leads = db.scalars(_scoped(select(Lead), Lead.store_id, stores).order_by(Lead.id.desc()).limit(50))
    tasks = db.scalars(
        _scoped(select(Task).join(Lead, Lead.id == Task.lead_id), Lead.store_id, stores)
        .where(Task.status == TaskStatus.OPEN.value)
        .order_by(Task.due_at)
        .limit(50)
    )
    calls = db.scalars(_scoped(select(Call), Call.store_id, stores).order_by(Call.id.desc()).limit(30))
    messages = db.scalars(
        _scoped(select(Message), Message.store_id, stores).order_by(Message.id.desc()).limit(30)
    )
    return _page(key=key, leads=list(leads), tasks=list(tasks), calls=list(calls), messages=list(messages))


@blueprint.post("/sign-in")
def sign_in() -> Response | str:
    key = keys.find_key(web.session(), (request.form.get("key") or "").strip())
    if key is None:
        return _page(error="That key is unknown or revoked.")
    session.clear()
    session["api_key_id"] = key.id
    return redirect(url_for("dashboard.home"))  # type: ignore[return-value]


@blueprint.post("/sign-out")
def sign_out() -> Response:
    session.clear()
    return redirect(url_for("dashboard.home"))  # type: ignore[return-value]
