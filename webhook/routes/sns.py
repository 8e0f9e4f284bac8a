"""The DLCS callback through AWS SNS: verify, confirm subscriptions, unwrap notifications.

SNS counts every 4xx as delivered and retries only 5xx and 429, so forged or
unwanted messages get a 4xx and every transient failure a 503.
"""

from __future__ import annotations

import logging
import time

from flask import Blueprint, current_app, jsonify, request

from webhook import logs, metrics
from webhook.routes.problems import problem
from webhook.routes.webhooks import outcome_response, read_limited_body
from webhook.sns import (MAX_MESSAGE_BYTES, NOTIFICATION, SUBSCRIPTION_CONFIRMATION,
                         TYPE_HEADER, SnsRejected, parse_message)

log = logging.getLogger("webhook.sns")
bp = Blueprint("sns", __name__)

_PROBLEMS = {
    400: ("invalid-sns-message", "Invalid SNS message"),
    401: ("invalid-sns-signature", "Invalid SNS message signature"),
    403: ("sns-message-refused", "SNS message refused"),
}


@bp.errorhandler(SnsRejected)
def _rejected(exc: SnsRejected):
    slug, title = _PROBLEMS[exc.status]
    metrics.signature_failure("sns", exc.reason)
    logs.annotate(outcome="rejected", reason=exc.reason)
    return problem(exc.status, slug, title, exc.detail, reason=exc.reason)


@bp.post("/webhooks/sns")
def sns_message():
    settings = current_app.extensions["webhook.settings"]
    logs.annotate(transport="sns")
    if not settings.sns_topic_arns:
        return problem(503, "sns-disabled", "SNS endpoint disabled",
                       "No SNS_TOPIC_ARNS are configured, so no message can be accepted.",
                       headers={"Retry-After": "300"})
    body = read_limited_body(MAX_MESSAGE_BYTES)
    if body is None:
        return problem(413, "payload-too-large", "Payload too large",
                       f"The body is larger than {MAX_MESSAGE_BYTES} bytes.")
    message = parse_message(body, request.headers.get(TYPE_HEADER))
    logs.annotate(delivery_id=message.message_id)
    current_app.extensions["webhook.sns.verifier"].verify(message, now=time.time())
    if message.type == NOTIFICATION:
        service = current_app.extensions["webhook.service"]
        return outcome_response(service.receive(message.message_id, "sns",
                                                message.message.encode("utf-8")))
    if message.type == SUBSCRIPTION_CONFIRMATION:
        current_app.extensions["webhook.sns.confirm"](message.subscribe_url)
        log.info("confirmed the SNS subscription to %s", message.topic_arn)
        return jsonify({"type": message.type, "topic": message.topic_arn, "confirmed": True})
    # An UnsubscribeConfirmation: the subscription is already gone; nothing to do.
    log.info("SNS unsubscribed this endpoint from %s", message.topic_arn)
    return jsonify({"type": message.type, "topic": message.topic_arn})
