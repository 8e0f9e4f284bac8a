"""What the OpenAPI document says of each endpoint: its operations and shared answers.

``OPERATIONS`` gives, by Flask endpoint name and then HTTP method, the summary,
description, parameters, body and answers of every operation; ``RESPONSES`` are
the answers operations name by string ("Unauthorized", "NotFound"...), published
as components. Bodies and answers are the marshmallow schemas the views load
and dump with; ``webhook.openapi.build_spec`` assembles the document from these
tables. ``tests/test_openapi.py`` fails when a URL rule has no entry here.
"""

from __future__ import annotations

from webhook import answer_schemas, listing_schemas, schemas, signature

IIIF_MEDIA_TYPE = 'application/ld+json;profile="http://iiif.io/api/presentation/3/context.json"'
PROBLEM_MEDIA_TYPE = "application/problem+json"

_RETRY_AFTER = {"description": "Seconds to wait before trying again.",
                "schema": {"type": "integer", "minimum": 0}}

RESPONSES = {
    "Unauthorized": {
        "description": "Missing or wrong `Authorization: Bearer <ADMIN_TOKEN>`.",
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}, "required": True}},
        "content": {PROBLEM_MEDIA_TYPE: {"schema": answer_schemas.ProblemSchema}}},
    "Unavailable": {
        "description": "Try again later: the database, the DLCS or the storage is failing, "
                       "or the endpoint is switched off by configuration (no ADMIN_TOKEN, "
                       "WEBHOOK_SECRETS or SNS_TOPIC_ARNS).",
        "headers": {"Retry-After": _RETRY_AFTER},
        "content": {PROBLEM_MEDIA_TYPE: {"schema": answer_schemas.ProblemSchema}}},
    "UriTooLong": {
        "description": "The request line is longer than gunicorn's `limit_request_line` "
                       "(4094 bytes); gunicorn answers this itself, before the service.",
        "content": {"text/html": {"schema": {"type": "string"}}}},
    "NotFound": {
        "description": "No such manifest or delivery, or a path that matches no route "
                       "(a customer that is not a number).",
        "content": {PROBLEM_MEDIA_TYPE: {"schema": answer_schemas.ProblemSchema}}},
}


def _problem(description: str) -> dict:
    return {"description": description,
            "content": {PROBLEM_MEDIA_TYPE: {"schema": answer_schemas.ProblemSchema}}}


def _json(description: str, schema, **extra) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}},
            **extra}


_ADMIN = [{"bearerAuth": []}]
_SAME_MANIFEST = {"customer": "$request.path.customer",
                  "manifest_id": "$request.path.manifest_id"}
# Where a registration's answer leads (OpenAPI links; the fuzzer follows them).
_MANIFEST_LINKS = {
    name: {"operationId": operation_id, "parameters": _SAME_MANIFEST}
    for name, operation_id in (("published", "manifests_published"),
                               ("status", "manifests_status"),
                               ("rebuild", "manifests_rebuild"),
                               ("reconcile", "manifests_reconcile"),
                               ("requeue", "manifests_requeue"),
                               ("delete", "manifests_delete_manifest"))}
_MANIFEST_LINKS["dropBatch"] = {"operationId": "manifests_drop_batch", "parameters": {
    **_SAME_MANIFEST, "batch": "$response.body#/batches/0/id"}}
_ETAG = {"description": "The registration's ETag: name it in a PUT's `If-Match`. Not the "
                        "published document's ETag, which changes with every rebuild.",
         "schema": {"type": "string"}, "required": True}
_OUTCOME = _json("The outcome of processing the delivery (see the webhook endpoint).",
                 answer_schemas.OutcomeSchema)
_REBUILD_FAILED = {**RESPONSES["Unavailable"], "description":
                   "The completion is recorded but the manifest could not be rebuilt now "
                   "(`outcome` is `failed`), another request is rebuilding it, or the "
                   "database is unavailable. Redelivering finishes the job."}
_SIGNATURE_HEADERS = [
    {"in": "header", "name": signature.ID_HEADER, "required": True,
     "description": "The delivery's unique id (printable ASCII, no '.'); redeliveries "
                    "repeat it.",
     "schema": {"type": "string",
                "pattern": rf"^[\x21-\x2d\x2f-\x7e]{{1,{signature.MAX_ID_LENGTH}}}$"}},
    {"in": "header", "name": signature.TIMESTAMP_HEADER, "required": True,
     "description": "Unix seconds when the delivery was signed; at most "
                    "WEBHOOK_TOLERANCE_SECONDS away from the server's clock.",
     "schema": {"type": "string", "pattern": "^(0|[1-9][0-9]{0,17})$"}},
    {"in": "header", "name": signature.SIGNATURE_HEADER, "required": True,
     "description": "Space-separated `v1,<base64 HMAC-SHA256 of \"{id}.{timestamp}.{body}\">` "
                    "entries (Standard Webhooks).",
     "schema": {"type": "string", "minLength": 1,
                "maxLength": signature.MAX_SIGNATURE_HEADER_LENGTH}},
]
# Every endpoint that reads a body (BODY_TIMEOUT_SECONDS, webhook/body_deadline.py).
_BODY_TIMEOUT = _problem("The body did not fully arrive within BODY_TIMEOUT_SECONDS; "
                         "nothing is recorded.")
_WEBHOOK_RESPONSES = {
    "200": _OUTCOME,
    "401": _problem("Missing, malformed, wrong or expired signature; nothing is recorded."),
    "408": _BODY_TIMEOUT,
    "413": _problem("The body is over 64 KiB; nothing is recorded."),
    "422": _problem("Authentic but unprocessable (not JSON, wrong shape); the delivery is "
                    "kept for inspection."),
    "503": _REBUILD_FAILED,
}

# Operation metadata by Flask endpoint name, then HTTP method.
OPERATIONS: dict[str, dict[str, dict]] = {
    "webhooks.batch_completed": {"post": {
        "tags": ["webhooks"],
        "summary": "Receive a signed DLCS batch-completed notification.",
        "description": "Verified on the raw bytes before any parsing; `Content-Type` is not "
                       "required. Outcomes: `ignored`, `batch-completed`, "
                       "`manifest-completed` (rebuilt and stored before the answer), "
                       "`manifest-failed` (every asset of the manifest failed at the DLCS: "
                       "nothing to publish, nothing a redelivery would change), "
                       "`duplicate`. A batch that finished with errors is completed at once; "
                       "its failed assets are then read from the DLCS API (best effort: "
                       "a reconcile reads what an outage kept).",
        "parameters": _SIGNATURE_HEADERS,
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "anyOf": [schemas.CurrentNotificationSchema, schemas.OldNotificationSchema]}}}},
        "responses": _WEBHOOK_RESPONSES,
    }},
    "sns.sns_message": {"post": {
        "tags": ["webhooks"],
        "summary": "Receive the notification through an AWS SNS HTTP(S) subscription.",
        "description": "Verifies the SNS signature, confirms subscriptions for topics in "
                       "`SNS_TOPIC_ARNS`, and processes a Notification's `Message` like the "
                       "webhook, deduplicated on `MessageId`. SNS sends the JSON envelope "
                       "as `text/plain`.",
        "parameters": [{"in": "header", "name": "x-amz-sns-message-type", "required": True,
                        "description": "Must equal the envelope's `Type`.",
                        "schema": {"type": "string"}}],
        "requestBody": {"required": True, "content": {
            "text/plain": {"schema": schemas.SnsEnvelopeSchema},
            "application/json": {"schema": schemas.SnsEnvelopeSchema}}},
        "responses": {
            "200": {"description": "A Notification's outcome, or a (un)subscription "
                                   "confirmation.",
                    "content": {"application/json": {"schema": {"anyOf": [
                        answer_schemas.OutcomeSchema, answer_schemas.SnsAnswerSchema]}}}},
            "400": _problem("Not an SNS message of a known type, or a malformed field."),
            "401": _problem("The SNS signature does not verify, or the message is too old."),
            "403": _problem("The topic is not in `SNS_TOPIC_ARNS`, or a URL is not SNS's."),
            "408": _BODY_TIMEOUT,
            "413": _problem("The body is over 256 KiB."),
            "422": _problem("Authentic, but the Message is not a batch-completed "
                            "notification; the delivery is kept for inspection."),
            "503": _REBUILD_FAILED,
        },
    }},
    "manifests.register": {"put": {
        "tags": ["manifests"], "security": _ADMIN,
        "summary": "Register or replace a manifest.",
        "description": "Every property other than `id`, `@context`, `items`, "
                       "`paintedResources` and `batches` is kept verbatim in the published "
                       "manifest; of `items`, each canvas lends its `rendering` and "
                       "`behavior` to the published canvas of the same id. Without "
                       "`batches`, the service queues the assets at the DLCS itself (needs "
                       "`DLCS_API_URL`). `\"batches\": []` says the assets are in the DLCS "
                       "already: the manifest is built from it at once (`200`). With "
                       "`DLCS_PROJECTION=manifest` the assets are tagged with the manifest's "
                       "id, those the DLCS has are not queued again unless their painted "
                       "resource says `\"reingest\": true`, and those a re-registration "
                       "drops are untagged. With `If-Match`, the registration happens only "
                       "if the manifest's current ETag (the `ETag` of this answer and of "
                       "`status`) is among the tags, or the tag is `*` and the manifest "
                       "exists: of two PUTs naming the same ETag, one succeeds and the other "
                       "gets 412.",
        "parameters": [{"in": "header", "name": "If-Match", "required": False,
                        "description": "`*`, or the manifest's ETag(s) from `status` or an "
                                       "earlier PUT; weak tags never match.",
                        "schema": {"type": "string"}}],
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": schemas.RegistrationSchema}}},
        "responses": {
            "200": _json("Registered; nothing to ingest, so the manifest was built at once.",
                         answer_schemas.StatusSchema, links=_MANIFEST_LINKS,
                         headers={"Location": {"schema": {"type": "string"}, "required": True},
                                  "ETag": _ETAG}),
            "202": _json("Registered; batches are ingesting.", answer_schemas.StatusSchema,
                         links=_MANIFEST_LINKS,
                         headers={"Location": {"schema": {"type": "string"}, "required": True},
                                  "ETag": _ETAG}),
            "400": _problem("Invalid path or body; `errors` holds the field messages."),
            "401": "Unauthorized",
            "404": "NotFound",
            "409": _problem("A batch already belongs to another manifest."),
            "408": _BODY_TIMEOUT,
            "412": _problem("`If-Match` names no current ETag of the manifest, or the "
                            "manifest is not registered; nothing changed."),
            "413": _problem("The body is over 64 MiB."),
            "422": _problem("The DLCS rejected the assets."),
            "503": "Unavailable",
        },
    }},
    "manifests.delete_manifest": {"delete": {
        "tags": ["manifests"], "security": _ADMIN,
        "summary": "Remove the registration, its batches and the published document.",
        "description": "With `DLCS_PROJECTION=manifest` its assets are untagged at the DLCS "
                       "first. Later notifications of its batches are answered `ignored`, "
                       "and deliveries waiting for its rebuild are settled as `ignored`.",
        "responses": {"204": {"description": "Deleted."},
                      "401": "Unauthorized", "404": "NotFound",
                      "503": {**RESPONSES["Unavailable"], "description":
                              "The DLCS or the store failed (the registration stays: delete "
                              "again), or another request is rebuilding or changing the "
                              "manifest; retry later."}},
    }},
    "manifests.collection": {"get": {
        "tags": ["manifests"], "security": _ADMIN,
        "summary": "A customer's manifests with their state, batch progress and last rebuild.",
        "description": "Sorted by id, a page at a time: pass the answer's `next` as `page` "
                       "for the next page (`next` is null on the last). `state` is what "
                       "`status` reports.",
        "parameters": [{"in": "query", "schema": listing_schemas.ManifestListQuerySchema}],
        "responses": {"200": _json("A page of manifests.", listing_schemas.ManifestListSchema),
                      "400": _problem("Invalid `state`, `page` or `limit`; `errors` says "
                                      "which."),
                      "401": "Unauthorized", "404": "NotFound", "503": "Unavailable"},
    }},
    "manifests.published": {"get": {
        "tags": ["manifests"],
        "summary": "The IIIF Presentation 3 manifest (public).",
        "parameters": [{"in": "header", "name": "If-None-Match", "required": False,
                        "schema": {"type": "string"}}],
        "responses": {
            "200": {"description": "The published manifest.",
                    "headers": {"ETag": {"schema": {"type": "string"}, "required": True},
                                "Access-Control-Allow-Origin": {"schema": {"type": "string"}}},
                    "content": {IIIF_MEDIA_TYPE: {
                        "schema": answer_schemas.PublishedManifestSchema}}},
            "202": {**_json("Never completed yet: the registered manifest with an `ingesting` "
                            "summary whose `state` is `ingesting`, or `rebuild-failed` (with "
                            "`reason` and a `Retry-After` header) when its first rebuild "
                            "failed.", answer_schemas.IngestingManifestSchema),
                    "headers": {"Retry-After": _RETRY_AFTER}},
            "304": {"description": "The `If-None-Match` ETag is current.",
                    "headers": {"ETag": {"schema": {"type": "string"}}}},
            "404": "NotFound",
            "503": "Unavailable",
        },
    }},
    "manifests.status": {"get": {
        "tags": ["manifests"], "security": _ADMIN,
        "summary": "A manifest's state, batches and last rebuild.",
        "responses": {"200": _json("The state.", answer_schemas.StatusSchema,
                                   headers={"ETag": _ETAG}),
                      "401": "Unauthorized", "404": "NotFound", "503": "Unavailable"},
    }},
    "manifests.rebuild": {"post": {
        "tags": ["manifests"], "security": _ADMIN,
        "summary": "Rebuild and store the manifest now from what the DLCS returns.",
        "responses": {"200": _OUTCOME, "401": "Unauthorized", "404": "NotFound",
                      "409": _problem("Batches of the manifest are still ingesting."),
                      "503": _REBUILD_FAILED},
    }},
    "manifests.reconcile": {"post": {
        "tags": ["manifests"], "security": _ADMIN,
        "summary": "Complete the batches the DLCS reports finished (lost notifications).",
        "description": "`outcome` is `unchanged` when nothing was completed or rebuilt. "
                       "Batches the DLCS reports superseded are recorded so; with those "
                       "ingesting for longer than STALLED_BATCH_SECONDS they are listed in "
                       "`stalled`.",
        "responses": {"200": _json("The outcome, the batches completed and those stalled.",
                                   answer_schemas.ReconcileSchema),
                      "401": "Unauthorized", "404": "NotFound", "503": _REBUILD_FAILED},
    }},
    "manifests.requeue": {"post": {
        "tags": ["manifests"], "security": _ADMIN,
        "summary": "Queue the manifest's unfinished assets again, replacing the batches "
                   "still ingesting.",
        "description": "Unfinished assets are the registered ones that no completed batch "
                       "holds (with `DLCS_PROJECTION=manifest`: that the DLCS lacks or has "
                       "not finished ingesting; they are tagged once queued). They are "
                       "queued at the DLCS (needs `DLCS_API_URL`) in new batches; the batches still ingesting become `dropped`, and their "
                       "later notifications are answered `ignored`. With nothing to queue, "
                       "they are only dropped and the manifest is rebuilt (200).",
        "responses": {
            "200": _json("Nothing was left to ingest: the manifest was rebuilt.",
                         answer_schemas.RequeueSchema),
            "202": _json("Queued; the new batches are ingesting.", answer_schemas.RequeueSchema),
            "401": "Unauthorized", "404": "NotFound",
            "409": _problem("No batch is ingesting, the registration's own queueing stopped "
                            "short (send the PUT again), or the manifest was registered "
                            "again meanwhile."),
            "422": _problem("The DLCS rejected the assets."),
            "503": {**RESPONSES["Unavailable"], "description":
                    "The DLCS failed or is not configured (nothing was recorded: requeue "
                    "again), another request is rebuilding or changing the manifest, or the "
                    "rebuild failed."}},
    }},
    "manifests.drop_batch": {"delete": {
        "tags": ["manifests"], "security": _ADMIN,
        "summary": "Stop waiting for a batch still ingesting (a stalled one).",
        "description": "The batch becomes `dropped`: the manifest is built without it and its "
                       "later notifications are answered `ignored`. When it was the last "
                       "batch ingesting, the manifest is rebuilt before the answer "
                       "(`manifest-completed`); otherwise the outcome is `batch-dropped`. "
                       "Repeating the request is harmless, and finishes a rebuild that "
                       "failed.",
        "responses": {"200": _OUTCOME, "401": "Unauthorized",
                      "404": "NotFound",
                      "409": _problem("The batch has completed: its assets are part of the "
                                      "manifest."),
                      "503": {**_REBUILD_FAILED, "description":
                              "The batch is dropped but the manifest could not be rebuilt "
                              "now, or another request is rebuilding it; repeat the request "
                              "or rebuild."}},
    }},
    "deliveries.deliveries": {"get": {
        "tags": ["deliveries"], "security": _ADMIN,
        "summary": "The delivery log, most recent first.",
        "description": "A page at a time: when more deliveries follow, the answer has a "
                       "`Link: <...>; rel=\"next\"` header whose URL (the same filters "
                       "and `cursor`) gives the next page.",
        "parameters": [{"in": "query", "schema": listing_schemas.DeliveryLogQuerySchema}],
        "responses": {"200": {"description": "The deliveries.",
                              "headers": {"Link": {
                                  "description": "`<URL>; rel=\"next\"` while more "
                                                 "deliveries follow this page.",
                                  "schema": {"type": "string"}}},
                              "content": {
                          "application/json": {"schema": {
                              "type": "array", "items": answer_schemas.DeliverySchema}}},
                          "links": {"replay": {"operationId": "deliveries_replay", "parameters": {
                              "delivery_id": "$response.body#/0/id"}}}},
                      "400": _problem("Invalid query parameters."),
                      "401": "Unauthorized", "503": "Unavailable"},
    }},
    "deliveries.replay": {"post": {
        "tags": ["deliveries"], "security": _ADMIN,
        "summary": "Run a recorded delivery through the same processing again.",
        "responses": {**_WEBHOOK_RESPONSES, "401": "Unauthorized", "404": "NotFound"},
    }},
    "health.healthz": {"get": {
        "tags": ["operations"], "summary": "Liveness: 200 while the process serves.",
        "responses": {"200": _json("Alive.", answer_schemas.HealthSchema)},
    }},
    "health.readyz": {"get": {
        "tags": ["operations"],
        "summary": "Readiness: the database and the manifest storage answer.",
        "responses": {"200": _json("Ready.", answer_schemas.ReadySchema),
                      "503": _json("Not ready; `checks` names what failed.",
                                   answer_schemas.ReadySchema)},
    }},
    "metrics.scrape": {"get": {
        "tags": ["operations"], "security": [{}, {"metricsAuth": []}],
        "summary": "Prometheus metrics of every worker (absent with METRICS=off).",
        "description": "Needs `Authorization: Bearer <METRICS_TOKEN>` only when "
                       "METRICS_TOKEN is set.",
        "responses": {
            "200": {"description": "The Prometheus text exposition format.",
                    "content": {"text/plain": {"schema": {"type": "string"}}}},
            "401": _problem("METRICS_TOKEN is set and the bearer token is missing or wrong."),
        },
    }},
    "docs.openapi": {"get": {
        "tags": ["operations"], "summary": "This document.",
        "responses": {"200": _json("The OpenAPI 3 description.", {"type": "object"})},
    }},
}
