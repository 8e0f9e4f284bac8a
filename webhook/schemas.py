"""Marshmallow schemas for what comes in: every payload the service loads.

Loading happens at the edge and hands typed values inward
(``parse_notification`` -> ``BatchCompletion``, ``parse_registration`` ->
``Registration``); the delivery log's query string loads here too, and the SNS
envelope is described here for the API document. What goes out, the answers,
is described in ``webhook.answer_schemas``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from dataclasses import dataclass

from marshmallow import (EXCLUDE, INCLUDE, RAISE, Schema, ValidationError, fields, post_load,
                         validate, validates_schema)

from webhook.domain import (DELIVERY_OUTCOMES, MAX_INT32, MAX_INT64, MAX_JSON_DEPTH,
                            BatchCompletion, PaintedResource)
from webhook.errors import InvalidRequest, PayloadError
from webhook.json_limits import JsonTooDeep, NonFiniteNumber, loads_bounded

MANIFEST_ID = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
# Every recorded delivery id (webhook-id, SNS MessageId, reconcile-...) is printable ASCII.
DELIVERY_ID = r"^[!-~]{1,256}$"
# Properties of a registration that the service owns; the rest is kept verbatim.
SERVICE_OWNED = ("id", "@context", "items", "paintedResources", "batches")


class FullMatch(validate.Regexp):
    """A pattern the whole value must match.

    marshmallow's ``Regexp`` uses ``re.match``, where ``$`` also matches before a
    final newline: ``"p1\\n"`` would pass ``^[A-Za-z0-9]+$``. The pattern text is
    kept as written, since the OpenAPI document publishes it as an ECMA pattern.
    """

    def __call__(self, value: str) -> str:
        if self.regex.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


class StrictBoolean(fields.Boolean):
    """A JSON boolean and nothing else (marshmallow's accepts 1, "yes"...)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


def _count() -> fields.Integer:
    return fields.Integer(strict=True, required=True, validate=validate.Range(0, MAX_INT32))


def _batch_id(**kwargs) -> fields.Integer:
    return fields.Integer(strict=True, validate=validate.Range(1, MAX_INT64), **kwargs)


class CurrentNotificationSchema(Schema):
    """The batch-completed notification as the DLCS sends it today."""

    class Meta:
        unknown = EXCLUDE  # the DLCS may add fields; they must not break delivery

    id = _batch_id(required=True)
    customer = _batch_id(required=True)
    count = _count()
    completed = _count()
    errors = _count()
    superseded = StrictBoolean(required=True)
    submitted = fields.AwareDateTime(required=True)
    finished = fields.AwareDateTime(required=True)

    @post_load
    def to_completion(self, data, **kwargs) -> BatchCompletion:
        return BatchCompletion(
            batch_id=data["id"], customer=data["customer"], count=data["count"],
            completed=data["completed"], errors=data["errors"], superseded=data["superseded"],
            submitted=self._utc(data, "submitted"), finished=self._utc(data, "finished"))

    def _utc(self, data, name: str) -> dt.datetime:
        try:
            return data[name].astimezone(dt.timezone.utc)
        except OverflowError:  # e.g. 9999-12-31T23:59:59-01:00 has no UTC datetime
            raise ValidationError("Out of range once converted to UTC.",
                                  self.fields[name].data_key or name) from None


class OldNotificationSchema(CurrentNotificationSchema):
    """The older field names, still seen from some DLCS deployments."""

    customer = _batch_id(required=True, data_key="customerId")
    count = fields.Integer(strict=True, required=True, data_key="total",
                           validate=validate.Range(0, MAX_INT32))
    completed = fields.Integer(strict=True, required=True, data_key="success",
                               validate=validate.Range(0, MAX_INT32))
    submitted = fields.AwareDateTime(required=True, data_key="started")


_CURRENT = CurrentNotificationSchema()
_OLD = OldNotificationSchema()


def parse_json_object(raw: bytes, error: type[PayloadError] = PayloadError) -> dict:
    """Decode a JSON object from raw bytes or raise ``error`` (a PayloadError).

    Only what can be stored and published again is accepted: no ``NaN`` or
    ``Infinity`` (not JSON, though Python reads them), no number beyond a
    double's range (read as infinity), and no nesting deeper than
    ``MAX_JSON_DEPTH`` levels (deeper values make later steps recurse too deeply).
    """
    try:
        value = loads_bounded(raw, MAX_JSON_DEPTH)
    except NonFiniteNumber as exc:
        raise error(f"The body contains {exc.constant}, {exc.why}.") from None
    except JsonTooDeep:
        raise error(f"The body is nested deeper than {MAX_JSON_DEPTH} levels.") from None
    except ValueError as exc:
        raise error("The body is not valid JSON.") from exc
    if not isinstance(value, dict):
        raise error("The body must be a JSON object.")
    return value


def parse_notification(raw: bytes) -> BatchCompletion:
    """Load a batch-completed notification in the current or the old format."""
    data = parse_json_object(raw)
    try:
        return _CURRENT.load(data)
    except ValidationError as current_error:
        if not any(k in data for k in ("customerId", "total", "success", "started")):
            raise PayloadError("The notification does not fit the batch-completed shape.",
                               current_error.messages) from None
        try:
            return _OLD.load(data)
        except ValidationError as old_error:
            raise PayloadError("The notification does not fit the batch-completed shape "
                               "(old format).", old_error.messages) from None


def notification_body(completion: BatchCompletion) -> bytes:
    """Write a completion as a current-format notification (what ``parse_notification`` reads)."""
    def stamp(moment):
        return moment.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")
    return json.dumps({
        "id": completion.batch_id, "customer": completion.customer, "count": completion.count,
        "completed": completion.completed, "errors": completion.errors,
        "superseded": completion.superseded, "submitted": stamp(completion.submitted),
        "finished": stamp(completion.finished),
    }, separators=(",", ":")).encode()


# ----------------------------------------------------------------- registration


class LanguageMap(fields.Dict):
    """A IIIF language map: {"en": ["a", "b"]}."""

    def __init__(self, **kwargs):
        super().__init__(keys=fields.String(validate=FullMatch(r"^[A-Za-z][A-Za-z0-9-]*$")),
                         values=fields.List(fields.String()), **kwargs)


class CanvasPaintingSchema(Schema):
    class Meta:
        # The Presentation API carries more canvasPainting fields than we use;
        # ignoring them lets its payloads be registered unchanged.
        unknown = EXCLUDE

    canvas_id = fields.String(data_key="canvasId", load_default=None,
                              validate=FullMatch(MANIFEST_ID, error="Must match {regex}."))
    canvas_order = fields.Integer(data_key="canvasOrder", strict=True, required=True,
                                  validate=validate.Range(0, MAX_INT32))
    choice_order = fields.Integer(data_key="choiceOrder", strict=True, load_default=None,
                                  allow_none=True, validate=validate.Range(1, MAX_INT32))
    label = LanguageMap(load_default=None, allow_none=True)
    canvas_label = LanguageMap(data_key="canvasLabel", load_default=None, allow_none=True)
    # No control characters: PostgreSQL text cannot hold NUL, and a fragment has none.
    target = fields.String(load_default=None, allow_none=True, validate=[
        validate.Length(1, 1000),
        FullMatch(r"^[^\x00-\x1f\x7f]*$", error="Must not contain control characters.")])
    static_width = fields.Integer(data_key="staticWidth", strict=True, load_default=None,
                                  allow_none=True, validate=validate.Range(1, MAX_INT32))
    static_height = fields.Integer(data_key="staticHeight", strict=True, load_default=None,
                                   allow_none=True, validate=validate.Range(1, MAX_INT32))


class AssetSchema(Schema):
    class Meta:
        # origin, mediaType... are the DLCS's business; they are kept to queue the asset.
        unknown = INCLUDE

    id = fields.String(required=True, validate=FullMatch(
        r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$", error="Must be a DLCS asset id (no '/')."))
    space = fields.Integer(strict=True, required=True, validate=validate.Range(0, MAX_INT32))


class PaintedResourceSchema(Schema):
    class Meta:
        unknown = RAISE

    canvas_painting = fields.Nested(CanvasPaintingSchema, data_key="canvasPainting",
                                    required=True)
    asset = fields.Nested(AssetSchema, required=True)
    # With DLCS_PROJECTION=manifest an asset the DLCS has already is tagged, not
    # queued again, unless this says so (the DLCS presentation API's field).
    reingest = StrictBoolean(load_default=False, metadata={"description": (
        "With DLCS_PROJECTION=manifest: queue the asset even if the DLCS has it.")})


@dataclass(frozen=True)
class Registration:
    """A validated registration: the manifest to keep, its rows and its batches."""

    document: dict
    painted: tuple[PaintedResource, ...]
    assets: tuple[dict, ...]           # aligned with painted
    batches: tuple[int, ...] | None    # None: the service should queue the assets
    reingest: tuple[bool, ...] = ()    # aligned with painted: queue even if it exists


class RegistrationSchema(Schema):
    class Meta:
        unknown = INCLUDE  # every other manifest property is kept verbatim

    type = fields.String(load_default="Manifest", validate=validate.Equal("Manifest"))
    # IIIF Presentation 3 requires it (section 3.1): without one nothing valid can be published.
    label = LanguageMap(required=True)
    painted_resources = fields.List(fields.Nested(PaintedResourceSchema),
                                    data_key="paintedResources", load_default=list)
    batches = fields.List(_batch_id(), load_default=None, validate=validate.Length(max=10_000))

    @validates_schema
    def check_consistency(self, data, **kwargs):
        batches = data.get("batches")
        if batches is not None and len(set(batches)) != len(batches):
            raise ValidationError("Batch ids must be unique.", "batches")
        _check_canvas_rows(data["painted_resources"])


def _check_canvas_rows(rows: list[dict]) -> None:
    seen: dict[int, dict] = {}
    errors: dict[int, dict] = {}
    for index, row in enumerate(rows):
        painting = row["canvas_painting"]
        key = (painting["canvas_order"], painting["choice_order"])
        if key in seen:
            errors[index] = {"canvasPainting": {"choiceOrder": [
                "Rows sharing a canvasOrder need distinct choiceOrder values."]}}
        seen[key] = painting
    if errors:
        raise ValidationError(errors, "paintedResources")


def _default_canvas_id(customer: int, manifest_id: str, canvas_order: int) -> str:
    # Deterministic, so registering the same manifest twice keeps canvas ids stable.
    digest = hashlib.sha256(f"{customer}/{manifest_id}/{canvas_order}".encode()).digest()
    return "c" + base64.b32encode(digest[:10]).decode().lower()


def parse_registration(raw: bytes, customer: int, manifest_id: str) -> Registration:
    """Load a manifest registration, raising InvalidRequest with field messages."""
    data = parse_json_object(raw, InvalidRequest)
    try:
        # "\ud800" is a valid JSON escape but no text: nothing could store or publish it.
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest("The body contains a \\u escape that is not valid Unicode "
                           "(a lone surrogate).") from None
    try:
        loaded = RegistrationSchema().load(data)
    except ValidationError as exc:
        raise InvalidRequest("The manifest registration is invalid.", exc.messages) from None
    rows = loaded["painted_resources"]
    canvas_ids = _canvas_ids(rows, customer, manifest_id)
    painted, assets = [], []
    for row, canvas_id in zip(rows, canvas_ids):
        painting, asset = row["canvas_painting"], row["asset"]
        painted.append(PaintedResource(
            canvas_id=canvas_id, canvas_order=painting["canvas_order"],
            asset_id=f"{customer}/{asset['space']}/{asset['id']}",
            choice_order=painting["choice_order"], label=painting["label"],
            canvas_label=painting["canvas_label"], target=painting["target"],
            static_width=painting["static_width"], static_height=painting["static_height"]))
        assets.append(dict(asset))
    document = {k: v for k, v in data.items() if k not in SERVICE_OWNED}
    document.setdefault("type", "Manifest")
    lent = _lent_canvases(data.get("items"))
    if lent:
        document["items"] = lent
    batches = loaded["batches"]
    return Registration(document=document, painted=tuple(painted), assets=tuple(assets),
                        batches=None if batches is None else tuple(batches),
                        reingest=tuple(row["reingest"] for row in rows))


def _lent_canvases(items: object) -> list[dict]:
    """Keep of the registered ``items`` what build rule 9 reads: id, rendering, behavior."""
    if not isinstance(items, list):
        return []
    return [{key: canvas[key] for key in ("id", "rendering", "behavior") if key in canvas}
            for canvas in items
            if isinstance(canvas, dict) and isinstance(canvas.get("id"), str)
            and ("rendering" in canvas or "behavior" in canvas)]


def _canvas_ids(rows: list[dict], customer: int, manifest_id: str) -> list[str]:
    """Give every row its canvas id; rows sharing a canvasOrder share one."""
    by_order: dict[int, str] = {}
    for index, row in enumerate(rows):
        painting = row["canvas_painting"]
        given, order = painting["canvas_id"], painting["canvas_order"]
        if given is None:
            continue
        if by_order.setdefault(order, given) != given:
            raise InvalidRequest("The manifest registration is invalid.", {"paintedResources": {
                index: {"canvasPainting": {"canvasId": [
                    "Rows sharing a canvasOrder must share their canvasId."]}}}})
    return [row["canvas_painting"]["canvas_id"]
            or by_order.get(row["canvas_painting"]["canvas_order"])
            or _default_canvas_id(customer, manifest_id, row["canvas_painting"]["canvas_order"])
            for row in rows]


# ----------------------------------------------------------------- query and envelope


class DeliveryQuerySchema(Schema):
    class Meta:
        unknown = RAISE

    # Not strict: query parameters are always strings.
    batch = fields.Integer(load_default=None, validate=validate.Range(1, MAX_INT64))
    outcome = fields.String(load_default=None, validate=validate.OneOf(
        DELIVERY_OUTCOMES))
    limit = fields.Integer(load_default=50, validate=validate.Range(1, 500))


class SnsEnvelopeSchema(Schema):
    """The SNS HTTP(S) message envelope, for the API description.

    ``webhook.sns.parse_message`` checks it (its signed text depends on the raw
    strings, so it is not loaded through marshmallow); a Notification's
    ``Message`` is the batch-completed notification as a JSON string.
    """

    class Meta:
        unknown = INCLUDE

    Type = fields.String(required=True, validate=validate.OneOf(
        ["Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"]))
    MessageId = fields.String(required=True, validate=validate.Length(1, 256))
    TopicArn = fields.String(required=True)
    Message = fields.String(required=True)
    Timestamp = fields.String(required=True)
    SignatureVersion = fields.String(required=True, validate=validate.OneOf(["1", "2"]))
    Signature = fields.String(required=True)
    SigningCertURL = fields.String(required=True)
    Subject = fields.String(allow_none=True)
    SubscribeURL = fields.String()
    Token = fields.String()
