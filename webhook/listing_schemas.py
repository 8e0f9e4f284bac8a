"""Marshmallow schemas of the listings: their query strings, page tokens and answers.

A page token is opaque to clients: the base64url text of the last row's sort
key (``ManifestKey`` or ``DeliveryKey``), checked field by field when it
comes back, so a forged or damaged token is a 400 and never reaches SQL as
anything but typed values.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re

from marshmallow import RAISE, Schema, ValidationError, fields, validate

from webhook.answer_schemas import UtcDateTime
from webhook.domain import (MANIFEST_STATES, MAX_INT32, PAGE_DEFAULT, PAGE_MOST, DeliveryKey,
                            ManifestKey)
from webhook.schemas import MANIFEST_ID, MAX_INT64, DeliveryQuerySchema

MAX_TOKEN_LENGTH = 400
_SLUG = re.compile(MANIFEST_ID)
_KINDS = {ManifestKey: "m", DeliveryKey: "d"}


def encode_page(key: ManifestKey | DeliveryKey) -> str:
    """Write a page's sort key as an opaque token."""
    if isinstance(key, ManifestKey):
        parts = [_KINDS[ManifestKey], key.customer, key.slug]
    else:
        parts = [_KINDS[DeliveryKey], key.received_at.isoformat(), key.id]
    text = json.dumps(parts, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(text).decode().rstrip("=")


def decode_page(token: str, kind: type) -> ManifestKey | DeliveryKey:
    """Read a token written by ``encode_page`` for ``kind``; ValueError when it is not one."""
    if len(token) > MAX_TOKEN_LENGTH or not re.fullmatch(r"[A-Za-z0-9_-]+", token):
        raise ValueError("not a page token")
    try:
        parts = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError("not a page token") from exc
    if not isinstance(parts, list) or len(parts) != 3 or parts[0] != _KINDS[kind]:
        raise ValueError("not a page token of this listing")
    if kind is ManifestKey:
        customer, slug = parts[1:]
        if (type(customer) is int and 1 <= customer <= MAX_INT32
                and isinstance(slug, str) and _SLUG.fullmatch(slug)):
            return ManifestKey(customer, slug)
        raise ValueError("not a page token of this listing")
    stamp, row_id = parts[1:]
    if type(row_id) is int and 1 <= row_id <= MAX_INT64 and isinstance(stamp, str):
        try:
            received_at = dt.datetime.fromisoformat(stamp)
        except ValueError as exc:
            raise ValueError("not a page token of this listing") from exc
        if received_at.tzinfo is None:
            return DeliveryKey(received_at, row_id)
    raise ValueError("not a page token of this listing")


class PageToken(fields.String):
    """A page token on the wire, a ``ManifestKey`` or ``DeliveryKey`` inside."""

    def __init__(self, kind: type, *, metadata: dict | None = None, **kwargs):
        # For the API description only: decode_page checks the same.
        shape = {"pattern": "^[A-Za-z0-9_-]+$", "maxLength": MAX_TOKEN_LENGTH}
        super().__init__(metadata={**shape, **(metadata or {})}, **kwargs)
        self.kind = kind

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else encode_page(value)

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            return decode_page(text, self.kind)
        except ValueError:
            raise ValidationError("Not a page token of this listing: pass the `next` of "
                                  "a previous answer unchanged.") from None


def _limit() -> fields.Integer:
    return fields.Integer(load_default=PAGE_DEFAULT, validate=validate.Range(1, PAGE_MOST),
                          metadata={"description": f"Rows per page, at most {PAGE_MOST}."})


class ManifestListQuerySchema(Schema):
    """``GET /{customer}/manifests``: which manifests, and where the page starts."""

    class Meta:
        unknown = RAISE

    state = fields.String(load_default=None, validate=validate.OneOf(MANIFEST_STATES),
                          metadata={"description": "Only manifests in this state."})
    page = PageToken(ManifestKey, load_default=None, metadata={
        "description": "The `next` token of the previous page; absent for the first."})
    limit = _limit()


class ConsoleManifestQuerySchema(ManifestListQuerySchema):
    """The console's manifest list: the same, over every customer or one."""

    customer = fields.Integer(load_default=None, validate=validate.Range(1, MAX_INT32))


class DeliveryPageQuerySchema(DeliveryQuerySchema):
    """The console's delivery log: the API's filters, paged by a token."""

    page = PageToken(DeliveryKey, load_default=None)
    limit = _limit()


class DeliveryLogQuerySchema(DeliveryQuerySchema):
    """``GET /deliveries``: the filters and limit as before, and where the page starts."""

    cursor = PageToken(DeliveryKey, load_default=None, metadata={
        "description": "Where the page starts: the `cursor` of the URL in the previous "
                       "answer's `Link: <...>; rel=\"next\"` header. Absent: the most "
                       "recent."})


class BatchCountsSchema(Schema):
    total = fields.Integer(required=True)
    complete = fields.Integer(required=True)


class AssetCountsSchema(Schema):
    total = fields.Integer(required=True, metadata={"description": "Painted assets."})
    finished = fields.Integer(required=True, metadata={
        "description": "Assets the completed batches report finished (with or without error)."})
    errors = fields.Integer(required=True, metadata={
        "description": "Assets the completed batches report failed."})
    missing = fields.Integer(required=True, metadata={
        "description": "Assets the last published build did not find at the DLCS."})


class ManifestSummarySchema(Schema):
    """One manifest of the listing."""

    id = fields.String(attribute="slug", required=True)
    customer = fields.Integer(required=True)
    label = fields.String(allow_none=True, required=True, metadata={
        "description": "The first text of the registration's label."})
    state = fields.String(required=True, validate=validate.OneOf(MANIFEST_STATES))
    error = fields.String(allow_none=True, required=True, metadata={
        "description": "Why it is failed or stuck, as `status` says."})
    batches = fields.Nested(BatchCountsSchema, required=True)
    assets = fields.Nested(AssetCountsSchema, required=True)
    last_processed = UtcDateTime(data_key="lastProcessed", allow_none=True, required=True,
                                 metadata={"description": "The last successful rebuild."})
    published = fields.Boolean(required=True)
    updated_at = UtcDateTime(data_key="updatedAt", required=True)


class ManifestListSchema(Schema):
    """A page of manifests, sorted by id, and the token of the next page (null: the last)."""

    items = fields.List(fields.Nested(ManifestSummarySchema), attribute="rows", required=True)
    next = PageToken(ManifestKey, allow_none=True, required=True)
