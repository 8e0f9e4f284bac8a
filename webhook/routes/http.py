"""What every view shares: the app's parts, capped bodies, answers, problems, the admin check.

Views import this module and never each other.
"""

from __future__ import annotations

import functools
import hmac

from flask import Response, current_app, json, jsonify, request
from marshmallow import Schema

from webhook import logs
from webhook.answer_schemas import OutcomeSchema, ProblemSchema
from webhook.config import Settings
from webhook.domain import Outcome
from webhook.service import Services
from webhook.storage import ManifestStore

# A URN, not a URL: the types name problems; there is no page to fetch.
PROBLEM_TYPE = "urn:dlcs-webhook:problem:"

_OUTCOME = OutcomeSchema()
_PROBLEM = ProblemSchema()


# ----------------------------------------------------------------- the app's parts

def settings() -> Settings:
    """The settings the app was built with."""
    return current_app.extensions["webhook.settings"]


def services() -> Services:
    """The use cases (intake, registration, rebuild, reading)."""
    return current_app.extensions["webhook.services"]


def store() -> ManifestStore:
    """The manifest store."""
    return current_app.extensions["webhook.store"]


def sns_verifier():
    """The SNS message verifier."""
    return current_app.extensions["webhook.sns.verifier"]


def sns_confirm():
    """The callable that confirms an SNS subscription."""
    return current_app.extensions["webhook.sns.confirm"]


# ----------------------------------------------------------------- requests

def read_capped_body(limit: int) -> bytes | None:
    """Read the raw body, or None when it is larger than ``limit`` bytes."""
    if request.content_length is not None and request.content_length > limit:
        return None
    body = request.stream.read(limit + 1)
    return None if len(body) > limit else body


def too_large(limit: int) -> Response:
    """Answer a body over ``limit`` bytes."""
    return problem(413, "payload-too-large", "Payload too large",
                   f"The body is larger than {limit} bytes.")


# ----------------------------------------------------------------- answers

def answer(schema: Schema, value, status: int = 200) -> Response:
    """Answer ``value`` dumped through ``schema`` (the one the OpenAPI document names)."""
    response = jsonify(schema.dump(value))
    response.status_code = status
    return response


def outcome_answer(outcome: Outcome) -> Response:
    """Answer what a delivery (or a rebuild) came to, as the webhook does."""
    logs.annotate(outcome=outcome.outcome, batch=outcome.batch, manifest=outcome.manifest)
    return answer(_OUTCOME, outcome)


def problem(status: int, slug: str, title: str, detail: str, *,
            headers: dict | None = None, **extra) -> Response:
    """Build an application/problem+json response."""
    logs.annotate(problem=slug)
    body = {"type": PROBLEM_TYPE + slug, "title": title, "status": status, "detail": detail,
            **{k: v for k, v in extra.items() if v is not None}}
    response = Response(json.dumps(_PROBLEM.dump(body)), status=status,
                        mimetype="application/problem+json")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


# ----------------------------------------------------------------- bearer tokens

def bearer_matches(token: str) -> bool:
    """Tell whether the request carries ``Authorization: Bearer <token>``."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # compare_digest on bytes: constant time whatever the given value is.
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode("utf-8", "replace"), token.encode())


def admin_required(view):
    """Let a view run only with ``Authorization: Bearer <ADMIN_TOKEN>``."""

    @functools.wraps(view)
    def guarded(*args, **kwargs):
        token = settings().admin_token
        if token is None:
            return problem(503, "admin-disabled", "Admin endpoints disabled",
                           "No ADMIN_TOKEN is configured, so admin endpoints are off.")
        if not bearer_matches(token):
            return problem(401, "unauthorized", "Unauthorized",
                           "A valid 'Authorization: Bearer <token>' header is required.",
                           headers={"WWW-Authenticate": 'Bearer realm="dlcs-webhook"'})
        return view(*args, **kwargs)

    return guarded
