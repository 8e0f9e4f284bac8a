"""The delivery log and replaying a recorded delivery."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request
from marshmallow import ValidationError

from webhook.routes.auth import admin_required
from webhook.routes.problems import problem
from webhook.routes.webhooks import outcome_response
from webhook.schemas import DeliveryQuerySchema, DeliverySchema

bp = Blueprint("deliveries", __name__)
_QUERY = DeliveryQuerySchema()
_ITEMS = DeliverySchema(many=True)


@bp.get("/deliveries")
@admin_required
def deliveries():
    try:
        query = _QUERY.load(request.args.to_dict())
    except ValidationError as exc:
        return problem(400, "invalid-query", "Invalid query", "The query parameters are invalid.",
                       errors=exc.messages)
    service = current_app.extensions["webhook.service"]
    return jsonify(_ITEMS.dump(service.deliveries(**query)))


@bp.post("/deliveries/<path:delivery_id>/replay")
@admin_required
def replay(delivery_id: str):
    service = current_app.extensions["webhook.service"]
    return outcome_response(service.replay(delivery_id))
