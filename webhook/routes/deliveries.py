"""The delivery log and replaying a recorded delivery."""

from __future__ import annotations

import re
from urllib.parse import urlencode

from flask import Blueprint, request
from marshmallow import ValidationError

from webhook.answer_schemas import DeliverySchema
from webhook.errors import NotFound
from webhook.listing_schemas import DeliveryLogQuerySchema, encode_page
from webhook.routes.http import (admin_required, answer, outcome_answer, problem, services,
                                 settings)
from webhook.schemas import DELIVERY_ID

bp = Blueprint("deliveries", __name__)
_QUERY = DeliveryLogQuerySchema()
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
    page = services().reading.deliveries(**query)
    response = answer(_ITEMS, page.rows)
    if page.next is not None:
        # The answer stays a bare list, as before paging existed; the next page is
        # announced in a Link header (RFC 8288), carrying the same filters.
        following = {name: value for name, value in request.args.items() if name != "cursor"}
        following["cursor"] = encode_page(page.next)
        url = f"{settings().public_base_url}/deliveries?{urlencode(following)}"
        response.headers["Link"] = f'<{url}>; rel="next"'
    return response


@bp.post("/deliveries/<path:delivery_id>/replay")
@admin_required
def replay(delivery_id: str):
    # No recorded id has other characters; PostgreSQL cannot even compare one with NUL.
    if not _DELIVERY_ID.fullmatch(delivery_id):
        raise NotFound(f"No delivery {delivery_id!r} is recorded.")
    return outcome_answer(services().intake.replay(delivery_id))
