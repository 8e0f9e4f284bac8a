"""Marshmallow schemas of what goes out: the JSON bodies the service answers with.

The views and the CLI dump their answers through these (``ProblemSchema`` for
every error; the listings' answers are in ``webhook.listing_schemas``), and the
OpenAPI document publishes them; ``PublishedManifestSchema`` only describes the
stored document. Loading what comes in is ``webhook.schemas``' job, and the two
import nothing from each other: ``UtcDateTime`` dumps and never loads, so it is here.
"""

from __future__ import annotations

import datetime as dt

from marshmallow import INCLUDE, Schema, fields, post_dump, validate

from webhook.domain import SUPERSEDED, UNFINISHED


class UtcDateTime(fields.Field):
    """Dump a stored naive-UTC datetime as ISO 8601 with a ``Z``."""

    def _serialize(self, value, attr, obj, **kwargs):
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return value.isoformat(timespec="microseconds") + "Z"


class OutcomeSchema(Schema):
    outcome = fields.String(required=True)
    batch = fields.Integer(allow_none=True)
    manifest = fields.String(allow_none=True)


class BatchStatusSchema(Schema):
    id = fields.Integer()
    status = fields.String(metadata={
        "description": "`ingesting`, `completed`, or `dropped` (by an operator: the manifest "
                       "does not wait for it, and its notification is ignored)."})
    count = fields.Integer(allow_none=True)
    completed = fields.Integer(allow_none=True)
    errors = fields.Integer(allow_none=True)
    submitted = UtcDateTime(allow_none=True)
    finished = UtcDateTime(allow_none=True)


class FailedAssetSchema(Schema):
    asset = fields.String(metadata={"description": "The DLCS asset, customer/space/id."})
    canvas = fields.String(metadata={"description": "The canvasId it is painted on."})
    error = fields.String(metadata={"description": "The DLCS's error text for its ingest."})


class StalledBatchSchema(Schema):
    """A batch still ingesting that the DLCS superseded, or that has been for too long."""

    batch = fields.Integer(required=True)
    reason = fields.String(required=True, validate=validate.OneOf([SUPERSEDED, UNFINISHED]),
                           metadata={"description": "`superseded`: the DLCS says it will never "
                                                    "finish; `unfinished`: still ingesting "
                                                    "after STALLED_BATCH_SECONDS."})
    age = fields.Integer(required=True, metadata={
        "description": "Seconds since the batch was recorded."})
    since = UtcDateTime(allow_none=True, required=True, metadata={
        "description": "When the batch was recorded."})


class StatusSchema(Schema):
    state = fields.String(metadata={"description": (
        "ingesting, complete, complete-with-errors (published; some assets failed at the "
        "DLCS), failed (every asset failed: nothing published; error says why) or "
        "rebuild-failed.")})
    batches = fields.List(fields.Nested(BatchStatusSchema))
    last_processed = UtcDateTime(data_key="lastProcessed", allow_none=True)
    error = fields.String(allow_none=True)
    missing_assets = fields.List(fields.String(), data_key="missingAssets")
    failed_assets = fields.List(fields.Nested(FailedAssetSchema), data_key="failedAssets",
                                metadata={"description": (
                                    "Painted resources whose asset the DLCS failed to ingest, "
                                    "read from the API once their batch finished with errors.")})
    stalled = fields.List(fields.Nested(StalledBatchSchema), metadata={
        "description": "Batches that need an operator: requeue the manifest, or drop them."})
    etag = fields.String(metadata={
        "description": "The registration's ETag (also the `ETag` header): what a PUT's "
                       "`If-Match` names. Not the published document's ETag."})


class DeliverySchema(Schema):
    id = fields.String(attribute="delivery_id")
    transport = fields.String()
    received_at = UtcDateTime(data_key="receivedAt")
    batch = fields.Integer(allow_none=True)
    manifest = fields.String(allow_none=True)
    outcome = fields.String()
    error = fields.String(allow_none=True)
    failed_assets = fields.Integer(data_key="failedAssets", allow_none=True, metadata={
        "description": "How many of the batch's assets failed, when the notification says any."})


class ReconcileSchema(OutcomeSchema):
    completed = fields.List(fields.Integer(), required=True, metadata={
        "description": "The batches this request completed from the DLCS's answer."})
    stalled = fields.List(fields.Nested(StalledBatchSchema), required=True, metadata={
        "description": "Batches still ingesting that the DLCS superseded or that are older "
                       "than STALLED_BATCH_SECONDS."})


class RequeueSchema(Schema):
    """What requeueing a manifest's unfinished assets came to."""

    outcome = fields.String(required=True, metadata={
        "description": "`requeued`, or `manifest-completed` when nothing was left to ingest "
                       "and the manifest was rebuilt."})
    manifest = fields.String(required=True)
    assets = fields.Integer(required=True, metadata={"description": "Assets queued again."})
    batches = fields.List(fields.Integer(), required=True, metadata={
        "description": "The batches the DLCS created for them, now ingesting."})
    dropped = fields.List(fields.Integer(), required=True, metadata={
        "description": "The unfinished batches they replace, now `dropped`."})


class ProblemSchema(Schema):
    """Every error answer: RFC 9457 Problem Details (``application/problem+json``)."""

    type = fields.String(required=True, metadata={"example": "urn:dlcs-webhook:problem:not-found"})
    title = fields.String(required=True)
    status = fields.Integer(required=True)
    detail = fields.String(required=True)
    errors = fields.Dict(metadata={
        "description": "Field messages, shaped like the payload that failed validation."})
    reason = fields.String(metadata={
        "description": "A short stable code for a rejected signature or SNS message."})
    # A failed rebuild also says which delivery outcome was recorded.
    outcome = fields.String()
    batch = fields.Integer(allow_none=True)
    manifest = fields.String(allow_none=True)


class HealthSchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(["ok"]))


class ReadyChecksSchema(Schema):
    database = fields.String(required=True, metadata={"description": "ok, or failed: <why>"})
    storage = fields.String(required=True, metadata={"description": "ok, or failed: <why>"})


class ReadySchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(["ok", "unavailable"]))
    checks = fields.Nested(ReadyChecksSchema, required=True)
    disabled = fields.Dict(keys=fields.String(), values=fields.String(), required=True, metadata={
        "description": "Features the configuration leaves off (webhook, sns, admin, "
                       "dlcs-orchestrator, dlcs-api, metrics), each with the variable that "
                       "turns it on."})
    defaulted = fields.List(fields.String(), required=True, metadata={
        "description": "PUBLIC_BASE_URL, DATABASE_URL or STORAGE_URL when left to their "
                       "single-host defaults."})


class SnsAnswerSchema(Schema):
    """The answer to a SubscriptionConfirmation or an UnsubscribeConfirmation."""

    type = fields.String(required=True)
    topic = fields.String(required=True)
    confirmed = fields.Boolean()


class IngestingSummarySchema(Schema):
    state = fields.String(required=True, validate=validate.OneOf(["ingesting", "rebuild-failed"]),
                          metadata={"description": "rebuild-failed: the batches completed but "
                                    "the manifest could not be built or stored yet (see "
                                    "`reason`); it is retried on a redelivery, a replay or a "
                                    "rebuild."})
    reason = fields.String(metadata={"description": "Why the rebuild failed."})
    total = fields.Integer(required=True)
    finished = fields.Integer(required=True)
    errors = fields.Integer(required=True)


class IngestingManifestSchema(Schema):
    """A manifest not yet published: the registration as it stands, with progress."""

    class Meta:
        unknown = INCLUDE  # the registration's own properties are kept verbatim

    context = fields.String(data_key="@context", attribute="@context", required=True)
    id = fields.String(required=True)
    type = fields.String(required=True)
    ingesting = fields.Nested(IngestingSummarySchema, required=True)

    @post_dump(pass_original=True)
    def _keep_registered_properties(self, dumped: dict, original: dict, **kwargs) -> dict:
        # The registration's own properties pass through verbatim, in their order.
        return {**original, **dumped}


class PublishedManifestSchema(Schema):
    """The published IIIF Presentation 3 manifest (its full shape is IIIF's schema)."""

    class Meta:
        unknown = INCLUDE

    context = fields.Raw(data_key="@context", required=True)
    id = fields.String(required=True)
    type = fields.String(required=True, validate=validate.Equal("Manifest"))
    items = fields.List(fields.Dict(), required=True)
