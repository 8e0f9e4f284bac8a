"""The operator console: server-rendered pages over the listing and the service.

Signed in with the admin token (see ``console_session``), an operator sees
manifests by state, a manifest's batches and last rebuild, and the delivery
log, and can rebuild, reconcile and replay. Every POST carries the session's
CSRF token; every action redirects back (303) with a message, so a failure
of the DLCS or the store is shown, never a 500. Without ADMIN_TOKEN there is
no console (404).

Refusals are pages for a browser and problem+json for anything else (what
``Accept`` prefers), with the same status either way.
"""

from __future__ import annotations

import datetime as dt
import re
from urllib.parse import urlsplit

from flask import (Blueprint, Flask, current_app, flash, redirect, render_template, request,
                   url_for)
from marshmallow import ValidationError

from webhook import listing, logs
from webhook.domain import DELIVERY_OUTCOMES, MANIFEST_STATES, MAX_INT32, PAGE_DEFAULT
from webhook.errors import PayloadError, WebhookError
from webhook.listing_schemas import (ConsoleManifestQuerySchema, DeliveryPageQuerySchema,
                                     encode_page)
from webhook.routes import console_session as auth
from webhook.routes.http import problem, services, settings
from webhook.schemas import DELIVERY_ID, MANIFEST_ID

bp = Blueprint("console", __name__, url_prefix="/console")

_MANIFEST_QUERY = ConsoleManifestQuerySchema()
_DELIVERY_QUERY = DeliveryPageQuerySchema()
_SLUG = re.compile(MANIFEST_ID)
_DELIVERY_ID = re.compile(DELIVERY_ID)
# Reachable before signing in (the sign-in form itself, its POST and the style sheet).
_OPEN = frozenset({"console.home", "console.sign_in", "console.style"})
# What a flashed message may hold: the session cookie must stay well under 4 KB.
_MESSAGE_CHARS = 400
TABS = (("ingesting", "Ingesting"), ("complete", "Complete"), ("rebuild-failed", "Failed"),
        (None, "All"))
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def init_app(app: Flask) -> None:
    """Install the console's session handling and register its pages."""
    app.session_interface = auth.ConsoleSessionInterface(
        app.extensions["webhook.settings"].admin_token)
    app.register_blueprint(bp)


def _now() -> dt.datetime:
    return services().reading.clock()


# ----------------------------------------------------------------- the guard


@bp.before_request
def _guard():
    if settings().admin_token is None:
        return problem(404, "console-disabled", "Console disabled",
                       "No ADMIN_TOKEN is configured, so the operator console is off.")
    if request.endpoint not in _OPEN and not auth.signed_in(_now()):
        # Back to the page after signing in; a POST's URL is no page to go back to.
        back = request.full_path if request.method == "GET" else None
        return _sign_in_page(401, "Sign in to see this page.", next_url=back)
    if request.method == "POST" and not auth.csrf_ok():
        return refuse(403, "csrf-refused", "Form refused",
                      "The form's CSRF token is missing or wrong (an expired page, or a "
                      "form sent from another site); nothing was changed. Reload the page "
                      "and try again.")
    return None


@bp.after_request
def _headers(response):
    response.headers.update(HEADERS)
    if request.endpoint != "console.style":
        response.headers["Cache-Control"] = "no-store"
    return response


@bp.context_processor
def _helpers():
    return {"csrf_token": auth.csrf_token, "utc": _utc, "age": _age, "now": _now(),
            "signed_in": auth.signed_in(_now())}


def _wants_html() -> bool:
    best = request.accept_mimetypes.best_match(["application/problem+json", "text/html"])
    return best == "text/html"


def refuse(status: int, slug: str, title: str, detail: str, **extra):
    """Refuse with ``status``: a page for a browser, problem+json otherwise."""
    if not _wants_html():
        return problem(status, slug, title, detail, **extra)
    logs.annotate(problem=slug)
    return render_template("console/refused.html", title=title, detail=detail,
                           errors=extra.get("errors")), status


def _sign_in_page(status: int, message: str | None, next_url: str | None = None):
    if status != 200 and not _wants_html():
        return problem(status, "unauthorized", "Unauthorized",
                       "Sign in to the console first (POST /console/sign-in).")
    return render_template("console/sign_in.html", message=message,
                           next_url=_safe_next(next_url)), status


def _safe_next(target: str | None) -> str | None:
    """Keep a redirect target only when it is a page of this console."""
    if not target:
        return None
    parts = urlsplit(target)
    if (parts.scheme or parts.netloc or "\\" in target
            or not parts.path.startswith(auth.COOKIE_PATH + "/")):
        return None
    return target.rstrip("?")


# ----------------------------------------------------------------- signing in and out


@bp.get("/")
def home():
    if auth.signed_in(_now()):
        return redirect(url_for(".manifests"), 303)
    return _sign_in_page(200, None)


@bp.post("/sign-in")
def sign_in():
    token = settings().admin_token
    if not auth.token_matches(request.form.get("token", ""), token):
        logs.annotate(outcome="refused")
        return _sign_in_page(401, "That is not the admin token.", request.form.get("next"))
    auth.sign_in(_now())
    logs.annotate(outcome="signed-in")
    return redirect(_safe_next(request.form.get("next")) or url_for(".manifests"), 303)


@bp.post("/sign-out")
def sign_out():
    auth.sign_out()
    return redirect(url_for(".home"), 303)


@bp.get("/console.css")
def style():
    response = current_app.response_class(render_template("console/console.css"),
                                          mimetype="text/css")
    response.headers["Cache-Control"] = "private, max-age=3600"
    return response


# ----------------------------------------------------------------- manifests


def _query(schema, args):
    """Load a query string (empty fields are absent ones: a form sends them empty)."""
    return schema.load({key: value for key, value in args.items() if value != ""})


@bp.get("/manifests")
def manifests():
    try:
        query = _query(_MANIFEST_QUERY, request.args)
    except ValidationError as exc:
        return refuse(400, "invalid-query", "Invalid query",
                      "The page's query parameters are invalid.", errors=exc.messages)
    state = query["state"]
    page = listing.list_manifests(now=_now(), customer=query["customer"], limit=query["limit"],
                                  states=None if state is None else (state,),
                                  after=query["page"])
    filters = {"state": state, "customer": query["customer"], "limit": _limit(query)}
    return render_template(
        "console/manifests.html", section="manifests", page=page, filters=filters, tabs=TABS,
        states=MANIFEST_STATES, paged=query["page"] is not None,
        next_token=encode_page(page.next) if page.next else None)


def _limit(query: dict) -> int | None:
    """The page size to keep in the page's links: None for the default."""
    return None if query["limit"] == PAGE_DEFAULT else query["limit"]


def _check_manifest(customer: int, slug: str):
    if not 1 <= customer <= MAX_INT32 or not _SLUG.fullmatch(slug):
        return refuse(404, "not-found", "Not found", "No such manifest can exist.")
    return None


@bp.get("/manifests/<int:customer>/<slug>")
def manifest(customer: int, slug: str):
    refused = _check_manifest(customer, slug)
    if refused:
        return refused
    row = listing.manifest_row(customer, slug, now=_now())
    if row is None:
        return refuse(404, "not-found", "Not found", f"No manifest {customer}/{slug} is registered.")
    status = services().reading.status(customer, slug)
    base = settings().public_base_url
    return render_template("console/manifest.html", section="manifests", row=row,
                           status=status, public_url=f"{base}/{customer}/manifests/{slug}")


@bp.post("/manifests/<int:customer>/<slug>/rebuild")
def rebuild(customer: int, slug: str):
    refused = _check_manifest(customer, slug)
    if refused:
        return refused
    try:
        outcome = services().rebuild.rebuild_now(customer, slug)
    except WebhookError as exc:
        _failed("Rebuild failed", exc)
    else:
        logs.annotate(outcome=outcome.outcome, manifest=outcome.manifest)
        flash(f"Rebuilt and published {outcome.manifest}.", "ok")
    return redirect(url_for(".manifest", customer=customer, slug=slug), 303)


@bp.post("/manifests/<int:customer>/<slug>/reconcile")
def reconcile(customer: int, slug: str):
    refused = _check_manifest(customer, slug)
    if refused:
        return refused
    try:
        reconciled = services().intake.reconcile(customer, slug)
    except WebhookError as exc:
        _failed("Reconcile failed", exc)
    else:
        outcome, completed = reconciled.outcome, reconciled.completed
        logs.annotate(outcome=outcome.outcome, manifest=outcome.manifest)
        done = (f"completed batches {', '.join(map(str, completed))}" if completed
                else "the DLCS reports no other batch finished")
        flash(f"Reconciled {customer}/{slug}: {outcome.outcome}; {done}.", "ok")
    return redirect(url_for(".manifest", customer=customer, slug=slug), 303)


def _failed(what: str, exc: WebhookError) -> None:
    """Show a failed action's reason as the page's message."""
    reason = exc.detail if isinstance(exc, PayloadError) else str(exc)
    logs.annotate(outcome="failed")
    flash(f"{what}: {reason}"[:_MESSAGE_CHARS], "error")


# ----------------------------------------------------------------- deliveries


@bp.get("/deliveries")
def deliveries():
    try:
        query = _query(_DELIVERY_QUERY, request.args)
    except ValidationError as exc:
        return refuse(400, "invalid-query", "Invalid query",
                      "The page's query parameters are invalid.", errors=exc.messages)
    page = listing.list_deliveries(batch=query["batch"], outcome=query["outcome"],
                                   limit=query["limit"], after=query["page"])
    filters = {"batch": query["batch"], "outcome": query["outcome"], "limit": _limit(query)}
    return render_template(
        "console/deliveries.html", section="deliveries", page=page, filters=filters,
        outcomes=DELIVERY_OUTCOMES, paged=query["page"] is not None, here=request.full_path.rstrip("?"),
        next_token=encode_page(page.next) if page.next else None)


@bp.post("/deliveries/<path:delivery_id>/replay")
def replay(delivery_id: str):
    back = _safe_next(request.form.get("back")) or url_for(".deliveries")
    if not _DELIVERY_ID.fullmatch(delivery_id):
        return refuse(404, "not-found", "Not found", "No such delivery can exist.")
    try:
        outcome = services().intake.replay(delivery_id)
    except WebhookError as exc:
        _failed(f"Replay of {delivery_id} failed", exc)
    else:
        logs.annotate(outcome=outcome.outcome, batch=outcome.batch, manifest=outcome.manifest)
        flash(f"Replayed {delivery_id}: {outcome.outcome}.", "ok")
    return redirect(back, 303)


# ----------------------------------------------------------------- formatting


def _utc(moment: dt.datetime | None) -> str:
    """Show a stored naive-UTC time to the second."""
    return "" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _age(moment: dt.datetime | None) -> str:
    """Say how long ago a stored time was, roughly."""
    if moment is None:
        return ""
    seconds = max(0, int((_now() - moment).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"
