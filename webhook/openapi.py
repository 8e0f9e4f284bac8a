"""The OpenAPI 3 description of the service, generated from its marshmallow schemas.

``build_spec(app)`` walks ``app.url_map`` and describes every rule whose endpoint
has an entry in ``OPERATIONS`` (``webhook.openapi_operations``, what each operation
says); this module is the assembly: the schema components, the path parameters and
the walk. Bodies, answers and query parameters are the schemas the views load and
dump with (``webhook.schemas``, ``webhook.answer_schemas``,
``webhook.listing_schemas``), converted by apispec's MarshmallowPlugin, so the
document cannot drift from the validation.
"""

from __future__ import annotations

import re

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask

from webhook import answer_schemas, listing_schemas, schemas
from webhook.openapi_operations import OPERATIONS, RESPONSES

OPENAPI_VERSION = "3.0.3"
API_VERSION = "1"
# Flask answers HEAD and OPTIONS for every GET rule by itself; they are not described.
IMPLICIT_METHODS = frozenset({"HEAD", "OPTIONS"})

_RULE_ARGUMENT = re.compile(r"<(?:[A-Za-z_]+(?:\([^)]*\))?:)?([A-Za-z_][A-Za-z0-9_]*)>")

# The components, under the names the document gives them; nested ones first,
# since registering a schema registers its nested schemas under default names.
SCHEMAS = {
    "Problem": answer_schemas.ProblemSchema,
    "Outcome": answer_schemas.OutcomeSchema,
    "StalledBatch": answer_schemas.StalledBatchSchema,
    "Reconcile": answer_schemas.ReconcileSchema,
    "Requeue": answer_schemas.RequeueSchema,
    "Notification": schemas.CurrentNotificationSchema,
    "OldNotification": schemas.OldNotificationSchema,
    "SnsEnvelope": schemas.SnsEnvelopeSchema,
    "SnsAnswer": answer_schemas.SnsAnswerSchema,
    "CanvasPainting": schemas.CanvasPaintingSchema,
    "Asset": schemas.AssetSchema,
    "PaintedResource": schemas.PaintedResourceSchema,
    "Registration": schemas.RegistrationSchema,
    "BatchStatus": answer_schemas.BatchStatusSchema,
    "FailedAsset": answer_schemas.FailedAssetSchema,
    "Status": answer_schemas.StatusSchema,
    "BatchCounts": listing_schemas.BatchCountsSchema,
    "AssetCounts": listing_schemas.AssetCountsSchema,
    "ManifestSummary": listing_schemas.ManifestSummarySchema,
    "ManifestList": listing_schemas.ManifestListSchema,
    "Delivery": answer_schemas.DeliverySchema,
    "PublishedManifest": answer_schemas.PublishedManifestSchema,
    "IngestingSummary": answer_schemas.IngestingSummarySchema,
    "IngestingManifest": answer_schemas.IngestingManifestSchema,
    "Health": answer_schemas.HealthSchema,
    "ReadyChecks": answer_schemas.ReadyChecksSchema,
    "Ready": answer_schemas.ReadySchema,
}

# Path parameters by name, as the views check them.
PATH_PARAMETERS = {
    "customer": {"description": "The DLCS customer number.",
                 "schema": {"type": "integer", "minimum": 1, "maximum": schemas.MAX_INT32}},
    "manifest_id": {"description": "The manifest's id within the customer.",
                    "schema": {"type": "string", "pattern": schemas.MANIFEST_ID}},
    "delivery_id": {"description": "A recorded delivery: its webhook-id or SNS MessageId.",
                    "schema": {"type": "string", "pattern": schemas.DELIVERY_ID}},
    "batch": {"description": "A DLCS batch id of the manifest.",
              "schema": {"type": "integer", "minimum": 1, "maximum": schemas.MAX_INT64}},
}


def openapi_path(rule: str) -> str:
    """Turn a Flask rule (``/<int:customer>/manifests/<manifest_id>``) into an OpenAPI path."""
    return _RULE_ARGUMENT.sub(r"{\1}", rule)


def build_spec(app: Flask, server_url: str | None = None) -> dict:
    """Describe every URL rule of ``app`` that has an entry in OPERATIONS."""
    marshmallow = MarshmallowPlugin()
    spec = APISpec(
        title="dlcs-webhook", version=API_VERSION, openapi_version=OPENAPI_VERSION,
        plugins=[marshmallow],
        info={"description": "Receives signed DLCS batch-completed webhooks and publishes "
                             "IIIF manifests. Every error is `application/problem+json`."},
        servers=[{"url": server_url}] if server_url else [])
    marshmallow.map_to_openapi_type(answer_schemas.UtcDateTime, "string", "date-time")
    for name, schema in SCHEMAS.items():
        spec.components.schema(name, schema=schema)
    for name, response in RESPONSES.items():
        spec.components.response(name, _copy(response))
    spec.components.security_scheme("bearerAuth", {
        "type": "http", "scheme": "bearer", "description": "The ADMIN_TOKEN."})
    spec.components.security_scheme("metricsAuth", {
        "type": "http", "scheme": "bearer", "description": "The METRICS_TOKEN, when set."})

    paths: dict[str, dict[str, dict]] = {}
    for rule in app.url_map.iter_rules():
        described = OPERATIONS.get(rule.endpoint)
        if described is None:
            continue
        operations = paths.setdefault(openapi_path(rule.rule), {})
        for method in sorted((rule.methods or set()) - IMPLICIT_METHODS):
            operation = described.get(method.lower())
            if operation is not None:
                operations[method.lower()] = {"operationId": rule.endpoint.replace(".", "_"),
                                              **_copy(operation)}
    for path, operations in sorted(paths.items()):
        names = _RULE_ARGUMENT.findall(_flask_rule(app, path))
        for operation in operations.values():
            queried = any(p.get("in") == "query" for p in operation.get("parameters", ()))
            if names or queried:
                operation["responses"].setdefault("414", "UriTooLong")
        parameters = [{"in": "path", "name": name, "required": True, **PATH_PARAMETERS[name]}
                      for name in names]
        spec.path(path=path, operations=operations, parameters=parameters)
    document = spec.to_dict()
    for path_item in document["paths"].values():
        for method, operation in path_item.items():
            if method == "parameters":
                continue
            for parameter in operation.get("parameters", ()):
                if parameter["in"] == "query":
                    _omit_null(parameter["schema"])
    return document


def _omit_null(schema: dict) -> None:
    # A query parameter left out loads as None (load_default=None, which makes the
    # marshmallow field nullable); on the wire there is no null to send.
    schema.pop("nullable", None)
    if "default" in schema and schema["default"] is None:
        del schema["default"]
    if "enum" in schema:
        schema["enum"] = [value for value in schema["enum"] if value is not None]


def _flask_rule(app: Flask, path: str) -> str:
    return next(rule.rule for rule in app.url_map.iter_rules()
                if openapi_path(rule.rule) == path)


def _copy(value):
    # apispec resolves schemas in place; the module-level tables must stay intact.
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return value
