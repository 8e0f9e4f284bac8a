"""The DLCS callback: verify, then hand the raw body to the service."""

from __future__ import annotations

import time

from flask import Blueprint, current_app, jsonify, request

from webhook import logs
from webhook.routes.problems import problem
from webhook.signature import ID_HEADER, MAX_ID_LENGTH, verify

bp = Blueprint("webhooks", __name__)

MAX_BODY_BYTES = 64 * 1024


def read_limited_body(limit: int = MAX_BODY_BYTES) -> bytes | None:
    """Read the raw body, or None when it is larger than ``limit``."""
    if request.content_length is not None and request.content_length > limit:
        return None
    body = request.stream.read(limit + 1)
    return None if len(body) > limit else body


def outcome_response(outcome):
    """Shape a service Outcome as the webhook's 200 answer."""
    logs.annotate(outcome=outcome.outcome, batch=outcome.batch, manifest=outcome.manifest)
    return jsonify({"outcome": outcome.outcome, "batch": outcome.batch,
                    "manifest": outcome.manifest})


@bp.post("/webhooks/batch-completed")
def batch_completed():
    settings = current_app.extensions["webhook.settings"]
    # As sent, so a refused delivery can be traced too (it is no secret).
    logs.annotate(transport="webhook",
                  delivery_id=request.headers.get(ID_HEADER, "")[:MAX_ID_LENGTH] or None)
    if not settings.webhook_keys:
        return problem(503, "webhook-disabled", "Webhook disabled",
                       "No WEBHOOK_SECRETS are configured, so no delivery can be verified.",
                       headers={"Retry-After": "300"})
    body = read_limited_body()
    if body is None:
        return problem(413, "payload-too-large", "Payload too large",
                       f"The body is larger than {MAX_BODY_BYTES} bytes.")
    verified = verify(settings.webhook_keys, request.headers, body, now=time.time(),
                      tolerance=settings.webhook_tolerance_seconds)
    service = current_app.extensions["webhook.service"]
    return outcome_response(service.receive(verified.msg_id, "webhook", body))
