"""Manifest endpoints: list, register, publish, status, rebuild, reconcile, requeue, drop,
delete."""

from __future__ import annotations

import dataclasses
import re

from flask import Blueprint, Response, request
from marshmallow import ValidationError

from webhook import listing
from webhook.answer_schemas import (IngestingManifestSchema, ReconcileSchema, RequeueSchema,
                                    StatusSchema)
from webhook.domain import MANIFEST_COMPLETED, MAX_INT32, MAX_INT64, MAX_REGISTRATION_BYTES
from webhook.errors import NotFound
from webhook.listing_schemas import ManifestListQuerySchema, ManifestListSchema
from webhook.reading import NotModified, PublishedDocument
from webhook.registration import NOTHING_TO_INGEST
from webhook.routes.http import (admin_required, answer, outcome_answer, problem, services,
                                 settings, too_large)
from webhook.schemas import MANIFEST_ID

bp = Blueprint("manifests", __name__)

IIIF_CONTENT_TYPE = 'application/ld+json;profile="http://iiif.io/api/presentation/3/context.json"'
_ID = re.compile(MANIFEST_ID)
_STATUS = StatusSchema()
_INGESTING = IngestingManifestSchema()
_RECONCILED = ReconcileSchema()
_REQUEUED = RequeueSchema()
_LIST_QUERY = ManifestListQuerySchema()
_LIST = ManifestListSchema()


def _check_id(customer: int, manifest_id: str) -> None:
    # A customer past the 32-bit column cannot be registered; SQLite cannot even
    # compare one past 64 bits (OverflowError).
    if not 1 <= customer <= MAX_INT32:
        raise NotFound(f"Customers are numbers from 1 to {MAX_INT32}.")
    if not _ID.fullmatch(manifest_id):
        raise NotFound(f"Manifest ids match {MANIFEST_ID}.")


@bp.get("/<int:customer>/manifests")
@admin_required
def collection(customer: int):
    if not 1 <= customer <= MAX_INT32:
        raise NotFound(f"Customers are numbers from 1 to {MAX_INT32}.")
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
        now=services().reading.clock(), customer=customer, limit=query["limit"], after=after,
        states=None if query["state"] is None else (query["state"],))
    return answer(_LIST, page)


@bp.put("/<int:customer>/manifests/<manifest_id>")
@admin_required
def register(customer: int, manifest_id: str):
    # The customer column is a 32-bit integer: a larger number would fail the insert.
    if not 1 <= customer <= MAX_INT32 or not _ID.fullmatch(manifest_id):
        return problem(400, "invalid-path", "Invalid path",
                       f"The customer must be a positive number and the id match {MANIFEST_ID}.")
    if request.content_length is not None and request.content_length > MAX_REGISTRATION_BYTES:
        return too_large(MAX_REGISTRATION_BYTES)
    registered = services().registration.register(customer, manifest_id, request.get_data(),
                                                  _if_match())
    # The ETag this registration was given, even if another one has followed it since.
    status = dataclasses.replace(services().reading.status(customer, manifest_id),
                                 etag=registered.etag)
    response = answer(_STATUS, status, 200 if registered.what == NOTHING_TO_INGEST else 202)
    response.headers["Location"] = _public_url(customer, manifest_id)
    response.headers["ETag"] = registered.etag
    return response


@bp.delete("/<int:customer>/manifests/<manifest_id>")
@admin_required
def delete_manifest(customer: int, manifest_id: str):
    _check_id(customer, manifest_id)
    services().maintenance.delete(customer, manifest_id)
    return Response(status=204)


@bp.get("/<int:customer>/manifests/<manifest_id>")
def published(customer: int, manifest_id: str):
    _check_id(customer, manifest_id)
    result = services().reading.published(customer, manifest_id, _if_none_match())
    if isinstance(result, NotModified):
        return _cors(Response(status=304, headers={"ETag": result.etag}))
    if isinstance(result, PublishedDocument):
        # Streamed a block at a time: a large manifest is never whole in memory.
        # The response closes the stored stream when it is sent (or abandoned).
        response = Response(result.body, status=200, content_type=IIIF_CONTENT_TYPE,
                            direct_passthrough=True)
        response.headers["Content-Length"] = str(result.body.length)
        response.headers["ETag"] = result.etag
        response.headers["Cache-Control"] = "no-cache"
        return _cors(response)
    response = answer(_INGESTING, result.summary, 202)
    if result.retry_after is not None:
        response.headers["Retry-After"] = str(result.retry_after)
    return _cors(response)


@bp.get("/<int:customer>/manifests/<manifest_id>/status")
@admin_required
def status(customer: int, manifest_id: str):
    _check_id(customer, manifest_id)
    status = services().reading.status(customer, manifest_id)
    response = answer(_STATUS, status)
    response.headers["ETag"] = status.etag
    return response


@bp.post("/<int:customer>/manifests/<manifest_id>/rebuild")
@admin_required
def rebuild(customer: int, manifest_id: str):
    _check_id(customer, manifest_id)
    return outcome_answer(services().rebuild.rebuild_now(customer, manifest_id))


@bp.post("/<int:customer>/manifests/<manifest_id>/reconcile")
@admin_required
def reconcile(customer: int, manifest_id: str):
    _check_id(customer, manifest_id)
    reconciled = services().intake.reconcile(customer, manifest_id)
    outcome = reconciled.outcome
    return answer(_RECONCILED, {"outcome": outcome.outcome, "batch": outcome.batch,
                                "manifest": outcome.manifest, "completed": reconciled.completed,
                                "stalled": reconciled.stalled})


@bp.post("/<int:customer>/manifests/<manifest_id>/requeue")
@admin_required
def requeue(customer: int, manifest_id: str):
    _check_id(customer, manifest_id)
    requeued = services().maintenance.requeue(customer, manifest_id)
    return answer(_REQUEUED, requeued, 200 if requeued.outcome == MANIFEST_COMPLETED else 202)


@bp.delete("/<int:customer>/manifests/<manifest_id>/batches/<int:batch>")
@admin_required
def drop_batch(customer: int, manifest_id: str, batch: int):
    _check_id(customer, manifest_id)
    if not 1 <= batch <= MAX_INT64:
        raise NotFound(f"Batch ids are numbers from 1 to {MAX_INT64}.")
    return outcome_answer(services().maintenance.drop_batch(customer, manifest_id, batch))


def _if_match() -> frozenset[str] | None:
    """The entity tags of ``If-Match`` as sent (``W/`` kept: a weak tag never matches)."""
    header = request.headers.get("If-Match")
    if header is None:
        return None
    return frozenset(tag.strip() for tag in header.split(",") if tag.strip())


def _if_none_match() -> frozenset[str]:
    header = request.headers.get("If-None-Match", "")
    return frozenset(tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip())


def _public_url(customer: int, manifest_id: str) -> str:
    return f"{settings().public_base_url}/{customer}/manifests/{manifest_id}"


def _cors(response: Response) -> Response:
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Access-Control-Expose-Headers"] = "ETag, Retry-After"
    return response
