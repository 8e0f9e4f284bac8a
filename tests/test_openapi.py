"""The OpenAPI document: valid, complete against the URL map, and true to real answers."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
import responses
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate as validate_spec

from tests.conftest import ORCHESTRATOR, sample, signed_headers
from webhook.listing_schemas import DeliveryLogQuerySchema
from webhook.openapi import IMPLICIT_METHODS, openapi_path
from webhook.openapi_operations import OPERATIONS
from webhook.schemas import CurrentNotificationSchema, RegistrationSchema

URL = "/2/manifests/letters"
MANIFEST_PATH = "/{customer}/manifests/{manifest_id}"
WEBHOOK = "/webhooks/batch-completed"


@pytest.fixture
def spec(client) -> dict:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    return response.get_json()


def _operations(spec: dict) -> set[tuple[str, str]]:
    return {(path, method.upper()) for path, item in spec["paths"].items()
            for method in item if method != "parameters"}


def _api_rules(app) -> list:
    # The operator console is pages for people (tests/test_console.py), not the API.
    return [rule for rule in app.url_map.iter_rules()
            if rule.endpoint != "static" and not rule.endpoint.startswith("console.")]


def _routes(app) -> set[tuple[str, str]]:
    return {(openapi_path(rule.rule), method) for rule in _api_rules(app)
            for method in (rule.methods or set()) - IMPLICIT_METHODS}


def _resolve(spec: dict, item: dict) -> dict:
    while "$ref" in item:
        kind, name = item["$ref"].split("/")[-2:]
        item = spec["components"][kind][name]
    return item


def _validator(spec: dict, schema: dict) -> OAS30Validator:
    # The components travel with the schema, so "#/components/..." references resolve.
    return OAS30Validator({**schema, "components": spec["components"]})


def check_response(spec: dict, method: str, path: str, response) -> dict:
    """Assert that ``response`` is documented for the operation, headers, type and body."""
    operation = spec["paths"][path][method.lower()]
    documented = operation["responses"].get(str(response.status_code))
    assert documented is not None, (
        f"{method} {path}: {response.status_code} is not documented: {response.data[:300]!r}")
    documented = _resolve(spec, documented)
    for name, header in documented.get("headers", {}).items():
        if _resolve(spec, header).get("required"):
            assert name in response.headers, f"{method} {path}: no {name} header"
    content = documented.get("content")
    if not content:
        assert response.data == b""
        return {}
    types = {key.split(";")[0].strip(): media for key, media in content.items()}
    assert response.mimetype in types, f"{response.mimetype} is not one of {sorted(types)}"
    is_json = response.mimetype.endswith(("/json", "+json"))
    body = json.loads(response.data) if is_json else response.get_data(as_text=True)
    _validator(spec, types[response.mimetype]["schema"]).validate(body)
    return body


# ----------------------------------------------------------------- the document


def test_the_document_is_valid_openapi(spec):
    validate_spec(spec)
    assert spec["openapi"].startswith("3.")


def test_every_url_rule_is_described(app, spec):
    # A new endpoint without an entry in webhook.openapi_operations.OPERATIONS fails here.
    missing = _routes(app) - _operations(spec)
    assert not missing, ("URL rules with no description in webhook/openapi_operations.py: "
                         f"{sorted(missing)}")
    stale = _operations(spec) - _routes(app)
    assert not stale, f"described operations the app does not serve: {sorted(stale)}"
    assert {rule.endpoint for rule in _api_rules(app)} <= set(OPERATIONS)


def test_every_path_parameter_is_described(app, spec):
    for rule in _api_rules(app):
        item = spec["paths"][openapi_path(rule.rule)]
        described = {p["name"] for p in item.get("parameters", []) if p["in"] == "path"}
        assert described == set(rule.arguments), rule.rule


def test_every_operation_documents_problems_and_a_success(spec):
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            statuses = operation["responses"]
            assert any(code.startswith("2") for code in statuses), (method, path)
            for code, answer in statuses.items():
                if code.startswith(("4", "5")) and code not in ("414",) \
                        and not (path == "/readyz" and code == "503"):
                    media = _resolve(spec, answer)["content"]
                    assert list(media) == ["application/problem+json"], (method, path, code)


def test_admin_operations_need_the_bearer_token(spec):
    assert spec["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "description": "The ADMIN_TOKEN."}
    admin = {(path, method) for path, item in spec["paths"].items()
             for method, operation in item.items()
             if method != "parameters" and {"bearerAuth": []} in operation.get("security", [])}
    assert admin == {(MANIFEST_PATH, "put"), (MANIFEST_PATH, "delete"),
                     (MANIFEST_PATH + "/status", "get"),
                     ("/{customer}/manifests", "get"),
                     (MANIFEST_PATH + "/rebuild", "post"), (MANIFEST_PATH + "/reconcile", "post"),
                     (MANIFEST_PATH + "/requeue", "post"),
                     (MANIFEST_PATH + "/batches/{batch}", "delete"),
                     ("/deliveries", "get"), ("/deliveries/{delivery_id}/replay", "post")}
    for path, method in admin:
        assert "401" in spec["paths"][path][method]["responses"]


def test_the_schemas_are_generated_from_the_marshmallow_schemas(spec):
    schemas = spec["components"]["schemas"]
    notification = CurrentNotificationSchema()
    assert set(schemas["Notification"]["required"]) == {
        field.data_key or name for name, field in notification.fields.items() if field.required}
    assert set(schemas["Registration"]["properties"]) == {
        field.data_key or name for name, field in RegistrationSchema().fields.items()}
    assert schemas["Registration"]["additionalProperties"] is True  # kept verbatim
    query = {p["name"]: p for p in spec["paths"]["/deliveries"]["get"]["parameters"]}
    assert set(query) == set(DeliveryLogQuerySchema().fields)
    assert query["limit"]["schema"] == {"type": "integer", "default": 50,
                                        "minimum": 1, "maximum": 500}


def test_the_webhook_documents_its_signature_headers(spec):
    operation = spec["paths"][WEBHOOK]["post"]
    headers = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
    assert headers == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert set(operation["responses"]) == {"200", "401", "408", "413", "422", "503"}


def test_the_document_names_the_public_base_url(spec):
    assert spec["servers"] == [{"url": "https://presentation.example"}]


def test_the_response_check_rejects_a_body_that_does_not_conform(spec):
    # The checker below is only worth something if it can fail.
    with pytest.raises(jsonschema.ValidationError):
        _validator(spec, {"$ref": "#/components/schemas/Outcome"}).validate({"outcome": 1})
    with pytest.raises(jsonschema.ValidationError):
        _validator(spec, {"$ref": "#/components/schemas/Problem"}).validate(
            {"type": "x", "title": "x", "status": 400, "detail": "x", "surprise": True})


# ----------------------------------------------------------------- real answers


def _deliver(client, body: bytes, msg_id: str | None = None):
    return client.post(WEBHOOK, data=body, headers=signed_headers(body, msg_id))


def _notification(batch: int) -> bytes:
    document = json.loads(sample("notification-current.json"))
    document["id"] = batch
    return json.dumps(document).encode()


def test_public_answers_match_the_document(client, spec):
    check_response(spec, "GET", "/healthz", client.get("/healthz"))
    if "/metrics" in spec["paths"]:
        check_response(spec, "GET", "/metrics", client.get("/metrics"))
    check_response(spec, "GET", "/readyz", client.get("/readyz"))
    check_response(spec, "GET", "/openapi.json", client.get("/openapi.json"))
    check_response(spec, "GET", MANIFEST_PATH, client.get("/2/manifests/unknown"))
    check_response(spec, "GET", MANIFEST_PATH, client.get("/2/manifests/not.an.id"))


def test_webhook_answers_match_the_document(client, spec):
    body = sample("notification-current.json")
    outcome = check_response(spec, "POST", WEBHOOK, _deliver(client, body))
    assert outcome == {"outcome": "ignored", "batch": 1234, "manifest": None}
    unsigned = client.post(WEBHOOK, data=body)
    assert check_response(spec, "POST", WEBHOOK, unsigned)["reason"] == "missing-header"
    check_response(spec, "POST", WEBHOOK, _deliver(client, b'{"id": "x"}'))  # 422
    check_response(spec, "POST", WEBHOOK, _deliver(client, b" " * (64 * 1024 + 1)))  # 413


def test_the_manifest_lifecycle_matches_the_document(client, admin, spec):
    registered = client.put(URL, data=sample("registration-2-assets.json"), headers=admin)
    assert registered.status_code == 202
    check_response(spec, "PUT", MANIFEST_PATH, registered)
    check_response(spec, "PUT", MANIFEST_PATH, client.put(URL, data=b"[]", headers=admin))
    check_response(spec, "PUT", MANIFEST_PATH, client.put(URL, data=b"{}"))  # 401

    ingesting = client.get(URL)
    assert check_response(spec, "GET", MANIFEST_PATH, ingesting)["ingesting"]["total"] == 2
    check_response(spec, "GET", MANIFEST_PATH + "/status",
                   client.get(URL + "/status", headers=admin))
    check_response(spec, "POST", MANIFEST_PATH + "/rebuild",
                   client.post(URL + "/rebuild", headers=admin))  # 409: still ingesting
    # No DLCS_API_URL in the test settings: the DLCS cannot be asked, 503.
    check_response(spec, "POST", MANIFEST_PATH + "/reconcile",
                   client.post(URL + "/reconcile", headers=admin))

    with responses.RequestsMock() as rm:
        rm.get(re.compile(re.escape(f"{ORCHESTRATOR}/iiif-resource/v3/2/batch-query/1234?")),
               body=sample("named-query-2-assets.json"), content_type="application/json")
        completed = _deliver(client, _notification(1234), "msg_last")
    assert check_response(spec, "POST", WEBHOOK, completed)["outcome"] == "manifest-completed"

    published = client.get(URL)
    assert published.status_code == 200
    check_response(spec, "GET", MANIFEST_PATH, published)
    revalidated = client.get(URL, headers={"If-None-Match": published.headers["ETag"]})
    assert revalidated.status_code == 304
    check_response(spec, "GET", MANIFEST_PATH, revalidated)
    check_response(spec, "POST", MANIFEST_PATH + "/reconcile",
                   client.post(URL + "/reconcile", headers=admin))


def test_the_operators_answers_match_the_document(client, admin, spec):
    batches = MANIFEST_PATH + "/batches/{batch}"
    registered = client.put(URL, data=sample("registration-2-assets.json"), headers=admin)
    check_response(spec, "PUT", MANIFEST_PATH, registered)
    stale = client.put(URL, data=sample("registration-2-assets.json"),
                       headers={**admin, "If-Match": '"stale"'})
    assert stale.status_code == 412
    check_response(spec, "PUT", MANIFEST_PATH, stale)
    status = client.get(URL + "/status", headers=admin)
    assert check_response(spec, "GET", MANIFEST_PATH + "/status", status)["etag"] == \
        registered.headers["ETag"]
    # No DLCS_API_URL in the test settings: nothing can be queued, 503.
    check_response(spec, "POST", MANIFEST_PATH + "/requeue",
                   client.post(URL + "/requeue", headers=admin))
    check_response(spec, "POST", MANIFEST_PATH + "/requeue",
                   client.post("/2/manifests/unknown/requeue", headers=admin))  # 404
    check_response(spec, "DELETE", batches, client.delete(URL + "/batches/999", headers=admin))

    with responses.RequestsMock():  # its only batch dropped, it is built from nothing
        dropped = client.delete(URL + "/batches/1234", headers=admin)
    assert check_response(spec, "DELETE", batches, dropped)["outcome"] == "manifest-completed"
    check_response(spec, "DELETE", batches, client.delete(URL + "/batches/1234", headers=admin))
    nothing = client.post(URL + "/requeue", headers=admin)
    assert nothing.status_code == 409
    check_response(spec, "POST", MANIFEST_PATH + "/requeue", nothing)

    deleted = client.delete(URL, headers=admin)
    assert deleted.status_code == 204
    check_response(spec, "DELETE", MANIFEST_PATH, deleted)
    check_response(spec, "DELETE", MANIFEST_PATH, client.delete(URL, headers=admin))  # 404


def test_delivery_log_answers_match_the_document(client, admin, spec):
    _deliver(client, sample("notification-current.json"), "msg_one")
    listed = client.get("/deliveries?outcome=ignored&limit=5", headers=admin)
    assert [item["id"] for item in check_response(spec, "GET", "/deliveries", listed)] == [
        "msg_one"]
    _deliver(client, sample("notification-current.json"), "msg_two")
    paged = client.get("/deliveries?limit=1", headers=admin)
    assert paged.headers["Link"].endswith('; rel="next"')
    check_response(spec, "GET", "/deliveries", paged)
    check_response(spec, "GET", "/deliveries",
                   client.get("/deliveries?limit=0", headers=admin))  # 400
    check_response(spec, "GET", "/deliveries",
                   client.get("/deliveries?cursor=nope", headers=admin))  # 400
    replayed = client.post("/deliveries/msg_one/replay", headers=admin)
    assert check_response(spec, "POST", "/deliveries/{delivery_id}/replay",
                          replayed)["outcome"] == "ignored"
    check_response(spec, "POST", "/deliveries/{delivery_id}/replay",
                   client.post("/deliveries/unknown/replay", headers=admin))  # 404


def test_manifest_list_answers_match_the_document(client, admin, spec):
    client.put(URL, data=sample("registration-2-assets.json"), headers=admin)
    client.put(URL + "-2", data=sample("registration-2-assets.json").replace(
        b"1234", b"1235"), headers=admin)
    first = check_response(spec, "GET", "/{customer}/manifests",
                           client.get("/2/manifests?state=ingesting&limit=1", headers=admin))
    assert [item["id"] for item in first["items"]] == ["letters"]
    last = check_response(spec, "GET", "/{customer}/manifests",
                          client.get(f"/2/manifests?page={first['next']}", headers=admin))
    assert [item["id"] for item in last["items"]] == ["letters-2"] and last["next"] is None
    refused = [(f"/2/manifests?{query}", admin, 400)
               for query in ("state=lost", "limit=201", "page=bm90IGEgdG9rZW4", "surprise=1")]
    refused += [("/2/manifests", {}, 401), (f"/{2**31}/manifests", admin, 404)]
    for url, headers, status in refused:
        response = client.get(url, headers=headers)
        assert response.status_code == status, url
        check_response(spec, "GET", "/{customer}/manifests", response)


def test_the_sns_endpoint_answers_match_the_document(client, spec):
    # No SNS_TOPIC_ARNS in the test settings: the endpoint is off.
    check_response(spec, "POST", "/webhooks/sns",
                   client.post("/webhooks/sns", data=sample("sns-envelope.json")))


# ----------------------------------------------------------------- what fuzzing found


@pytest.mark.parametrize("delivery_id", ["a%00b", "%C3%A9t%C3%A9", "a" * 257, "tab%09id"])
def test_replay_of_an_id_no_delivery_can_have_is_404(client, admin, spec, delivery_id):
    # A NUL in the id made PostgreSQL refuse the lookup: a 500.
    response = client.post(f"/deliveries/{delivery_id}/replay", headers=admin)
    assert response.status_code == 404
    check_response(spec, "POST", "/deliveries/{delivery_id}/replay", response)


@pytest.mark.parametrize("method, suffix", [("GET", ""), ("GET", "/status"),
                                            ("POST", "/rebuild"), ("POST", "/reconcile"),
                                            ("POST", "/requeue"), ("DELETE", "")])
@pytest.mark.parametrize("customer", ["0", str(2**31), "16632797579774640783360"])
def test_a_customer_no_manifest_can_have_is_404(client, admin, spec, method, suffix, customer):
    # A customer past 64 bits made SQLite raise OverflowError: a 500.
    response = client.open(f"/{customer}/manifests/letters{suffix}", method=method,
                           headers=admin)
    assert response.status_code == 404
    check_response(spec, method, MANIFEST_PATH + suffix, response)
