"""The delivery log and replaying a recorded delivery."""

from __future__ import annotations

import re

from flask import Blueprint, request
from marshmallow import ValidationError

from webhook.errors import NotFound
from webhook.routes.http import admin_required, answer, outcome_answer, problem, services
from webhook.schemas import DELIVERY_ID, DeliveryQuerySchema, DeliverySchema

bp = Blueprint("deliveries", __name__)
_QUERY = DeliveryQuerySchema()
_ITEMS = DeliverySchema(many=True)
_DELIVERY_ID = re.compile(DELIVERY_ID)


@bp.get("/deliveries")
@admin_required
def deliveries():
    try:
        query = _QUERY.load(request.args.to_dict())
    except ValidationError as exc:
        return problem(400, "invalid-query", "Invalid query", "The query parameters are invalid.",
                       errors=exc.messages)
    return answer(_ITEMS, services().reading.deliveries(**query))


@bp.post("/deliveries/<path:delivery_id>/replay")
@admin_required
def replay(delivery_id: str):
    # No recorded id has other characters; PostgreSQL cannot even compare one with NUL.
    if not _DELIVERY_ID.fullmatch(delivery_id):
        raise NotFound(f"No delivery {delivery_id!r} is recorded.")
    return outcome_answer(services().intake.replay(delivery_id))
