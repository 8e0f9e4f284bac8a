"""The DLCS callback: verify, then hand the raw body to the intake."""

from __future__ import annotations

import time

from flask import Blueprint, request

from webhook import logs
from webhook.domain import MAX_NOTIFICATION_BYTES
from webhook.routes.http import outcome_answer, problem, read_capped_body, services, settings, \
    too_large
from webhook.signature import ID_HEADER, MAX_ID_LENGTH, verify

bp = Blueprint("webhooks", __name__)


@bp.post("/webhooks/batch-completed")
def batch_completed():
    # As sent, so a refused delivery can be traced too (it is no secret).
    logs.annotate(transport="webhook",
                  delivery_id=request.headers.get(ID_HEADER, "")[:MAX_ID_LENGTH] or None)
    keys = settings().webhook_keys
    if not keys:
        return problem(503, "webhook-disabled", "Webhook disabled",
                       "No WEBHOOK_SECRETS are configured, so no delivery can be verified.",
                       headers={"Retry-After": "300"})
    body = read_capped_body(MAX_NOTIFICATION_BYTES)
    if body is None:
        return too_large(MAX_NOTIFICATION_BYTES)
    verified = verify(keys, request.headers, body, now=time.time(),
                      tolerance=settings().webhook_tolerance_seconds)
    return outcome_answer(services().intake.receive(verified.msg_id, "webhook", body))
