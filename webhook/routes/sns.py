"""The DLCS callback through AWS SNS: verify, confirm subscriptions, unwrap notifications.

SNS counts every 4xx as delivered and retries only 5xx and 429, so forged or
unwanted messages get a 4xx (``SnsRejected``) and every transient failure a 503.
"""

from __future__ import annotations

import logging
import time

from flask import Blueprint, request

from webhook import logs
from webhook.answer_schemas import SnsAnswerSchema
from webhook.routes.http import (answer, outcome_answer, problem, read_capped_body, services,
                                 settings, sns_confirm, sns_verifier, too_large)
from webhook.sns import (MAX_MESSAGE_BYTES, NOTIFICATION, SUBSCRIPTION_CONFIRMATION,
                         TYPE_HEADER, parse_message)

log = logging.getLogger("webhook.sns")
bp = Blueprint("sns", __name__)
_ANSWER = SnsAnswerSchema()


@bp.post("/webhooks/sns")
def sns_message():
    logs.annotate(transport="sns")
    if not settings().sns_topic_arns:
        return problem(503, "sns-disabled", "SNS endpoint disabled",
                       "No SNS_TOPIC_ARNS are configured, so no message can be accepted.",
                       headers={"Retry-After": "300"})
    body = read_capped_body(MAX_MESSAGE_BYTES)
    if body is None:
        return too_large(MAX_MESSAGE_BYTES)
    message = parse_message(body, request.headers.get(TYPE_HEADER))
    logs.annotate(delivery_id=message.message_id)
    sns_verifier().verify(message, now=time.time())
    if message.type == NOTIFICATION:
        return outcome_answer(services().intake.receive(message.message_id, "sns",
                                                        message.message.encode("utf-8")))
    if message.type == SUBSCRIPTION_CONFIRMATION:
        sns_confirm()(message.subscribe_url)
        log.info("confirmed the SNS subscription to %s", message.topic_arn)
        return answer(_ANSWER, {"type": message.type, "topic": message.topic_arn,
                                "confirmed": True})
    # An UnsubscribeConfirmation: the subscription is already gone; nothing to do.
    log.info("SNS unsubscribed this endpoint from %s", message.topic_arn)
    return answer(_ANSWER, {"type": message.type, "topic": message.topic_arn})
