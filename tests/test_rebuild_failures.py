"""A rebuild that fails: "503 with Retry-After, nothing lost", then each way to finish the job.

One failure kind per parameter: the named query failing in every way the DLCS
can fail, and the manifest store refusing the write. Each is followed by each
of the three ways an operator or the DLCS finishes the job: a redelivery of
the same webhook-id, a replay of the recorded delivery, a manual rebuild.
"""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
import requests
import responses

from tests.conftest import ORCHESTRATOR, sample, signed_headers
from tests.iiif import assert_valid_iiif
from webhook import create_app, db
from webhook.config import parse_storage_url

URL = "/2/manifests/letters"
MANIFEST = "2/letters"
MSG_ID = "msg_final_completion"
NAMED_QUERY = re.compile(re.escape(f"{ORCHESTRATOR}/iiif-resource/v3/2/batch-query/1234")
                         + r"\?cacheBust=[^&]+$")
PROBLEM = "application/problem+json"


@dataclass(frozen=True)
class Failure:
    """How one kind of failure is arranged, what its error says, and how it is repaired."""

    mock: dict | None   # the failing named-query answer; None: the named query succeeds
    message: str        # a part of the error text users see
    store: str | None = None  # "s3" or "file": the store fails instead


FAILURES = {
    "named-query-500": Failure(
        {"status": 500, "json": {"description": "Asset store unavailable: try later"}},
        "Asset store unavailable: try later"),
    "named-query-404": Failure({"status": 404, "body": b""}, "404"),
    "timeout": Failure({"body": requests.Timeout("read timed out")}, "did not answer within 5 s"),
    "connection-error": Failure({"body": requests.ConnectionError("refused")},
                                "could not be reached"),
    "invalid-json": Failure({"status": 200, "body": b'{"type": "Manifest", "items": ['},
                            "not JSON"),
    "wrong-shape": Failure({"status": 200, "json": {"type": "Manifest", "items": {}}},
                           "not a manifest with a list of items"),
    "not-a-manifest": Failure({"status": 200, "json": {"type": "Collection", "items": []}},
                              "not a Manifest"),
    "s3-bucket-missing": Failure(None, "NoSuchBucket", store="s3"),
    "file-store-blocked": Failure(None, "cannot write 2/manifests/letters", store="file"),
}


class Setup:
    """An app whose store can be broken and repaired, for one failure kind."""

    def __init__(self, failure: Failure, settings, tmp_path: Path, request, monkeypatch):
        self.failure = failure
        self.repair: Callable[[], None] = lambda: None
        if failure.store == "s3":
            moto = request.getfixturevalue("moto_server")
            for name, value in {"AWS_ENDPOINT_URL": moto.url, "AWS_ACCESS_KEY_ID": "testing",
                                "AWS_SECRET_ACCESS_KEY": "testing",
                                "AWS_DEFAULT_REGION": "us-east-1"}.items():
                monkeypatch.setenv(name, value)
            bucket = f"missing-{uuid.uuid4().hex[:16]}"
            settings = dataclasses.replace(settings, storage=parse_storage_url(f"s3://{bucket}"))
            self.repair = lambda: boto3.client("s3", endpoint_url=moto.url).create_bucket(
                Bucket=bucket)
        elif failure.store == "file":
            blocked = tmp_path / "blocked"
            blocked.write_text("a file where the store's directory should be")
            settings = dataclasses.replace(settings, storage=parse_storage_url(f"file://{blocked}"))
            self.repair = blocked.unlink
        self.app = create_app(settings)
        self.client = self.app.test_client()

    def arrange_failure(self, rm: responses.RequestsMock) -> None:
        if self.failure.mock is None:
            rm.get(NAMED_QUERY, body=sample("named-query-2-assets.json"))
        else:
            rm.get(NAMED_QUERY, **self.failure.mock)


@pytest.fixture(params=list(FAILURES), ids=list(FAILURES))
def setup(request, settings, tmp_path, monkeypatch):
    yield Setup(FAILURES[request.param], settings, tmp_path, request, monkeypatch)
    db.dispose()


def notification() -> bytes:
    return sample("notification-current.json")


def deliver(client, body: bytes, msg_id: str | None = None):
    return client.post("/webhooks/batch-completed", data=body,
                       headers=signed_headers(body, msg_id))


def redeliver(client, admin):
    """The DLCS retries: the same webhook-id and body, signed again."""
    return deliver(client, notification(), MSG_ID)


def replay(client, admin):
    return client.post(f"/deliveries/{MSG_ID}/replay", headers=admin)


def rebuild(client, admin):
    return client.post(f"{URL}/rebuild", headers=admin)


FINISHES = {
    "redelivery": (redeliver, 1234),
    "replay": (replay, 1234),
    "rebuild": (rebuild, None),
}


def status_of(client, admin) -> dict:
    response = client.get(f"{URL}/status", headers=admin)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def delivery_log(client, admin) -> list[dict]:
    response = client.get("/deliveries", headers=admin)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


COMPLETED_1234 = {"id": 1234, "status": "completed", "count": 2, "completed": 2, "errors": 0,
                  "submitted": "2025-02-20T12:28:01.517392Z",
                  "finished": "2025-02-20T12:30:15.123456Z"}


def _fail_the_last_completion(setup: Setup, admin) -> None:
    """Register, then deliver the completion whose rebuild fails; check nothing is lost."""
    client = setup.client
    assert client.put(URL, data=sample("registration-2-assets.json"),
                      headers=admin).status_code == 202

    with responses.RequestsMock() as rm:
        setup.arrange_failure(rm)
        response = deliver(client, notification(), MSG_ID)

    assert response.status_code == 503
    assert response.mimetype == PROBLEM
    assert int(response.headers["Retry-After"]) > 0
    problem = response.get_json()
    assert problem["status"] == 503
    assert (problem["outcome"], problem["batch"], problem["manifest"]) == (
        "failed", 1234, MANIFEST)
    assert setup.failure.message in problem["detail"]

    status = status_of(client, admin)
    assert status["state"] == "rebuild-failed"
    assert status["batches"] == [COMPLETED_1234]
    assert setup.failure.message in status["error"]
    assert status["lastProcessed"] is None

    [item] = delivery_log(client, admin)
    assert (item["id"], item["transport"], item["batch"], item["manifest"], item["outcome"]) == (
        MSG_ID, "webhook", 1234, MANIFEST, "failed")
    assert setup.failure.message in item["error"]

    # The public answer tells a viewer it is stuck, not still ingesting.
    stuck = client.get(URL)
    assert stuck.status_code == 202
    assert stuck.headers["Retry-After"] == "30"
    assert "Retry-After" in stuck.headers["Access-Control-Expose-Headers"]
    summary = stuck.get_json()["ingesting"]
    assert summary == {"state": "rebuild-failed", "total": 2, "finished": 2, "errors": 0,
                       "reason": status["error"]}
    assert setup.failure.message in summary["reason"]


@pytest.mark.parametrize("finish", list(FINISHES))
def test_a_failed_rebuild_is_kept_and_finished_later(setup, admin, finish):
    client = setup.client
    _fail_the_last_completion(setup, admin)
    setup.repair()
    how, batch = FINISHES[finish]

    with responses.RequestsMock() as rm:
        query = rm.get(NAMED_QUERY, body=sample("named-query-2-assets.json"))
        response = how(client, admin)
        assert query.call_count == 1

    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {"outcome": "manifest-completed", "batch": batch,
                                   "manifest": MANIFEST}
    status = status_of(client, admin)
    assert (status["state"], status["error"], status["missingAssets"]) == (
        "complete", None, [])
    assert status["batches"] == [COMPLETED_1234]
    assert status["lastProcessed"] is not None
    [item] = delivery_log(client, admin)
    assert (item["id"], item["outcome"], item["error"]) == (MSG_ID, "manifest-completed", None)
    published = client.get(URL)
    assert published.status_code == 200
    document = json.loads(published.data)
    assert_valid_iiif(document)
    assert document == json.loads(sample("published-2-assets.json"))

    # Done: the DLCS retrying once more changes nothing and calls nothing.
    with responses.RequestsMock() as rm:
        again = redeliver(client, admin)
        assert len(rm.calls) == 0
    assert again.status_code == 200
    assert again.get_json() == {"outcome": "duplicate", "batch": 1234, "manifest": MANIFEST}
    assert client.get(URL).data == published.data
    [item] = delivery_log(client, admin)
    assert (item["outcome"], item["error"]) == ("manifest-completed", None)


def test_a_retry_before_the_cause_is_fixed_fails_again_and_loses_nothing(setup, admin):
    client = setup.client
    _fail_the_last_completion(setup, admin)

    with responses.RequestsMock() as rm:
        setup.arrange_failure(rm)
        response = redeliver(client, admin)

    assert response.status_code == 503
    assert "Retry-After" in response.headers
    assert response.get_json()["outcome"] == "failed"
    assert status_of(client, admin)["state"] == "rebuild-failed"
    [item] = delivery_log(client, admin)
    assert item["outcome"] == "failed"
    assert setup.failure.message in item["error"]
    assert client.get(URL).status_code == 202



def test_a_reregistration_whose_rebuild_fails_is_kept_and_finished_later(client, admin):
    registration = json.loads(sample("registration-2-assets.json"))
    assert client.put(URL, json=registration, headers=admin).status_code == 202
    with responses.RequestsMock() as rm:
        rm.get(NAMED_QUERY, body=sample("named-query-2-assets.json"))
        assert deliver(client, notification()).status_code == 200
    first = client.get(URL)

    revised = {**registration, "label": {"en": ["Letters, revised"]}}
    with responses.RequestsMock() as rm:
        rm.get(NAMED_QUERY, status=500, json={"description": "Orchestrator restarting"})
        response = client.put(URL, json=revised, headers=admin)

    assert response.status_code == 503
    assert response.mimetype == PROBLEM
    assert "Retry-After" in response.headers
    assert (response.get_json()["outcome"], response.get_json()["manifest"]) == (
        "failed", MANIFEST)
    assert "Orchestrator restarting" in response.get_json()["detail"]
    status = status_of(client, admin)
    assert status["state"] == "rebuild-failed"
    assert "Orchestrator restarting" in status["error"]
    # The document published before stays served until the rebuild succeeds.
    assert client.get(URL).data == first.data

    with responses.RequestsMock() as rm:
        query = rm.get(NAMED_QUERY, body=sample("named-query-2-assets.json"))
        finished = client.post(f"{URL}/rebuild", headers=admin)
        assert query.call_count == 1

    assert finished.status_code == 200
    assert (status_of(client, admin)["state"], status_of(client, admin)["error"]) == (
        "complete", None)
    document = json.loads(client.get(URL).data)
    assert_valid_iiif(document)
    assert document == {**json.loads(sample("published-2-assets.json")),
                        "label": {"en": ["Letters, revised"]}}
