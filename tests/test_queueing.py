"""Registering without batches: the service queues the assets at the DLCS itself."""

import base64
import dataclasses
import json
import re

import pytest
import requests
import responses
from responses import matchers

from tests.conftest import ORCHESTRATOR, sample, signed_headers
from webhook import create_app, db
from webhook.models import Batch, Manifest

API = "https://api.dlcs.test"
QUEUE = f"{API}/customers/2/queue"
AUTH = "Basic " + base64.b64encode(b"the-key:the-secret").decode()


@pytest.fixture
def app(settings):
    application = create_app(dataclasses.replace(
        settings, dlcs_api_url=API, dlcs_credentials=("the-key", "the-secret"),
        dlcs_max_batch_size=2))
    yield application
    db.dispose()


def registration(assets: int = 2) -> bytes:
    body = json.loads(sample("registration-2-assets.json"))
    del body["batches"]
    body["paintedResources"] = [{
        "canvasPainting": {"canvasId": f"p{n}", "canvasOrder": n},
        "asset": {"id": f"a{n}", "space": 5, "origin": f"https://example.org/{n}.jpg",
                  "mediaType": "image/jpeg"},
    } for n in range(assets)]
    return json.dumps(body).encode()


def batch(batch_id: int, count: int) -> dict:
    answer = json.loads(sample("queue-response-201.json"))
    answer["@id"] = f"{API}/customers/2/queue/batches/{batch_id}"
    answer["count"] = count
    return answer


def members(*numbers):
    return [{"id": f"a{n}", "space": 5, "origin": f"https://example.org/{n}.jpg",
             "mediaType": "image/jpeg"} for n in numbers]


def queued(mock, batch_id, *numbers, status=201, body=None):
    mock.post(QUEUE, status=status, json=body if body is not None else batch(batch_id, len(numbers)),
              match=[matchers.header_matcher({"Authorization": AUTH}),
                     matchers.json_params_matcher({
                         "@context": "http://www.w3.org/ns/hydra/context.jsonld",
                         "@type": "Collection", "member": members(*numbers)})])


def test_assets_are_queued_in_chunks_and_batches_recorded(client, admin):
    with responses.RequestsMock() as mock:
        queued(mock, 1001, 0, 1)
        queued(mock, 1002, 2)
        answer = client.put("/2/manifests/letters", data=registration(3), headers=admin)
    assert answer.status_code == 202
    assert answer.headers["Location"] == "https://presentation.example/2/manifests/letters"
    assert [b["id"] for b in answer.json["batches"]] == [1001, 1002]
    assert {b["status"] for b in answer.json["batches"]} == {"ingesting"}


def test_an_identical_put_while_ingesting_queues_nothing(client, admin):
    with responses.RequestsMock() as mock:
        queued(mock, 1001, 0, 1)
        assert client.put("/2/manifests/letters", data=registration(), headers=admin).status_code == 202
    with responses.RequestsMock():  # any DLCS call would fail the test
        again = client.put("/2/manifests/letters", data=registration(), headers=admin)
    assert again.status_code == 202
    assert [b["id"] for b in again.json["batches"]] == [1001]


def test_a_dlcs_validation_error_is_a_422_naming_its_reason(client, admin):
    with responses.RequestsMock() as mock:
        queued(mock, 0, 0, 1, status=400,
               body={"@type": "hydra:Error", "description": "Space 5 does not exist"})
        answer = client.put("/2/manifests/letters", data=registration(), headers=admin)
    assert answer.status_code == 422
    assert answer.content_type == "application/problem+json"
    assert "Space 5 does not exist" in answer.json["detail"]
    status = client.get("/2/manifests/letters/status", headers=admin).json
    assert status["batches"] == [] and "Space 5 does not exist" in status["error"]


@pytest.mark.parametrize("batch_id", [0, 2**63], ids=["zero", "beyond-int64"])
def test_a_batch_id_no_batch_can_have_is_a_503_naming_it(client, admin, batch_id):
    # One beyond the batch table's 64-bit key was a 500 (the insert failed).
    with responses.RequestsMock() as mock:
        queued(mock, batch_id, 0, 1)
        answer = client.put("/2/manifests/letters", data=registration(), headers=admin)
    assert answer.status_code == 503
    assert answer.json["detail"] == (
        f"queue request 1/1 of customer 2: the answer is not a DLCS batch (@id "
        f"'{QUEUE}/batches/{batch_id}' does not end in a batch id)")
    assert client.get("/2/manifests/letters/status", headers=admin).json["batches"] == []


def test_a_dlcs_outage_is_a_503_with_retry_after(client, admin):
    with responses.RequestsMock() as mock:
        mock.post(QUEUE, body=requests.ConnectionError("refused"))
        answer = client.put("/2/manifests/letters", data=registration(), headers=admin)
    assert answer.status_code == 503 and answer.headers["Retry-After"]
    assert "the-secret" not in answer.get_data(as_text=True)


def test_a_partial_failure_keeps_the_batches_and_a_second_put_completes_it(client, admin):
    with responses.RequestsMock() as mock:
        queued(mock, 1001, 0, 1)
        mock.post(QUEUE, status=500, json={"description": "database is down"})
        answer = client.put("/2/manifests/letters", data=registration(3), headers=admin)
    assert answer.status_code == 503
    status = client.get("/2/manifests/letters/status", headers=admin).json
    assert [b["id"] for b in status["batches"]] == [1001]
    assert "database is down" in status["error"]

    with responses.RequestsMock() as mock:
        queued(mock, 1002, 2)  # only the asset not queued yet
        again = client.put("/2/manifests/letters", data=registration(3), headers=admin)
    assert again.status_code == 202
    assert [b["id"] for b in again.json["batches"]] == [1001, 1002]
    assert again.json["error"] is None


def test_a_changed_registration_replaces_the_batches(client, admin):
    with responses.RequestsMock() as mock:
        queued(mock, 1001, 0, 1)
        client.put("/2/manifests/letters", data=registration(2), headers=admin)
        queued(mock, 1002, 0)
        answer = client.put("/2/manifests/letters", data=registration(1), headers=admin)
    assert [b["id"] for b in answer.json["batches"]] == [1002]
    assert Batch.get_or_none(Batch.id == 1001) is None


def test_queued_batches_complete_through_the_webhook(client, admin):
    with responses.RequestsMock() as mock:
        queued(mock, 1234, 0, 1)
        client.put("/2/manifests/letters", data=registration(2), headers=admin)
    body = sample("notification-current.json")
    with responses.RequestsMock() as mock:
        mock.get(re.compile(ORCHESTRATOR + r"/iiif-resource/v3/2/batch-query/1234\?cacheBust=.+"),
                 json={"type": "Manifest", "items": []})
        answer = client.post("/webhooks/batch-completed", data=body, headers=signed_headers(body))
    assert answer.json == {"outcome": "manifest-completed", "batch": 1234, "manifest": "2/letters"}


def test_without_dlcs_api_url_batches_are_required(settings, admin):
    application = create_app(settings)
    answer = application.test_client().put("/2/manifests/letters", data=registration(),
                                           headers=admin)
    assert answer.status_code == 400
    assert "DLCS_API_URL" in answer.json["errors"]["batches"][0]
    assert Manifest.select().count() == 0
