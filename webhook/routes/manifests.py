"""Manifest endpoints: register, publish, status, rebuild."""

from __future__ import annotations

import re

from flask import Blueprint, Response, current_app, jsonify, request
from marshmallow import ValidationError

from webhook import listing
from webhook.errors import NotFound, PayloadError, QueueRejected
from webhook.listing_schemas import ManifestListQuerySchema, ManifestListSchema
from webhook.routes.auth import admin_required
from webhook.routes.problems import invalid_body, problem
from webhook.routes.webhooks import outcome_response
from webhook.schemas import MANIFEST_ID, StatusSchema

bp = Blueprint("manifests", __name__)

IIIF_CONTENT_TYPE = 'application/ld+json;profile="http://iiif.io/api/presentation/3/context.json"'
MAX_REGISTRATION_BYTES = 64 * 1024 * 1024
_ID = re.compile(MANIFEST_ID)
_STATUS = StatusSchema()
_LIST_QUERY = ManifestListQuerySchema()
_LIST = ManifestListSchema()


def _service():
    return current_app.extensions["webhook.service"]


def _check_id(customer: int, manifest_id: str) -> None:
    # A customer past the 32-bit column cannot be registered; SQLite cannot even
    # compare one past 64 bits (OverflowError).
    if not 1 <= customer <= 2**31 - 1:
        raise NotFound("Customers are numbers from 1 to 2147483647.")
    if not _ID.fullmatch(manifest_id):
        raise NotFound("Manifest ids match ^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$.")


@bp.put("/<int:customer>/manifests/<manifest_id>")
@admin_required
def register(customer: int, manifest_id: str):
    # The customer column is a 32-bit integer: a larger number would fail the insert.
    if not 1 <= customer <= 2**31 - 1 or not _ID.fullmatch(manifest_id):
        return problem(400, "invalid-path", "Invalid path",
                       "The customer must be a positive number and the id match "
                       "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$.")
    if request.content_length is not None and request.content_length > MAX_REGISTRATION_BYTES:
        return problem(413, "payload-too-large", "Payload too large",
                       f"The body is larger than {MAX_REGISTRATION_BYTES} bytes.")
    try:
        status_code, status = _service().register(customer, manifest_id, request.get_data())
    except QueueRejected as exc:
        return problem(422, "dlcs-rejected", "The DLCS rejected the assets", exc.detail)
    except PayloadError as exc:
        return invalid_body(exc, 400)
    response = jsonify(_STATUS.dump(status))
    response.status_code = status_code
    response.headers["Location"] = _public_url(customer, manifest_id)
    return response


@bp.get("/<int:customer>/manifests")
@admin_required
def collection(customer: int):
    if not 1 <= customer <= 2**31 - 1:
        raise NotFound("Customers are numbers from 1 to 2147483647.")
    try:
        query = _LIST_QUERY.load(request.args.to_dict())
    except ValidationError as exc:
        return problem(400, "invalid-query", "Invalid query", "The query parameters are invalid.",
                       errors=exc.messages)
    after = query["page"]
    if after is not None and after.customer != customer:
        return problem(400, "invalid-query", "Invalid query", "The query parameters are invalid.",
                       errors={"page": ["This page token belongs to another customer's list."]})
    page = listing.list_manifests(
        now=_service().clock(), customer=customer, limit=query["limit"], after=after,
        states=None if query["state"] is None else (query["state"],))
    return jsonify(_LIST.dump(page))


@bp.get("/<int:customer>/manifests/<manifest_id>")
def published(customer: int, manifest_id: str):
    _check_id(customer, manifest_id)
    result = _service().published(customer, manifest_id, _if_none_match())
    if result.status == 304:
        return _cors(Response(status=304, headers={"ETag": result.etag}))
    if result.status == 200:
        response = Response(result.body, status=200, content_type=IIIF_CONTENT_TYPE)
        response.headers["ETag"] = result.etag
        response.headers["Cache-Control"] = "no-cache"
        return _cors(response)
    response = jsonify(result.body)
    response.status_code = 202
    return _cors(response)


@bp.get("/<int:customer>/manifests/<manifest_id>/status")
@admin_required
def status(customer: int, manifest_id: str):
    _check_id(customer, manifest_id)
    return jsonify(_STATUS.dump(_service().status(customer, manifest_id)))


@bp.post("/<int:customer>/manifests/<manifest_id>/rebuild")
@admin_required
def rebuild(customer: int, manifest_id: str):
    _check_id(customer, manifest_id)
    return outcome_response(_service().rebuild_now(customer, manifest_id))


@bp.post("/<int:customer>/manifests/<manifest_id>/reconcile")
@admin_required
def reconcile(customer: int, manifest_id: str):
    _check_id(customer, manifest_id)
    outcome, completed = _service().reconcile(customer, manifest_id)
    return jsonify({"outcome": outcome.outcome, "batch": outcome.batch,
                    "manifest": outcome.manifest, "completed": completed})


def _if_none_match() -> frozenset[str]:
    header = request.headers.get("If-None-Match", "")
    return frozenset(tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip())


def _public_url(customer: int, manifest_id: str) -> str:
    base = current_app.extensions["webhook.settings"].public_base_url
    return f"{base}/{customer}/manifests/{manifest_id}"


def _cors(response: Response) -> Response:
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Access-Control-Expose-Headers"] = "ETag"
    return response
