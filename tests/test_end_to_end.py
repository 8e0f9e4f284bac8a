"""End to end: gunicorn running wsgi:app, PostgreSQL, S3 over HTTP (moto) and a fake DLCS.

Everything here goes through real sockets: the tests register manifests and send
signed completions with ``requests``, the service calls the fake DLCS (named
query, queue, batch state; with HTTP Basic credentials) over loopback and stores
documents in moto's S3, and the tests read the results back from the service and
from the bucket. gunicorn's own output is
printed when a test fails (pytest shows what a fixture printed on teardown
only for failing tests).

The helpers below (plans, notifications, ServiceClient, service_environment,
running_service) are shared with ``test_exactly_once``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tests.conftest import ADMIN_TOKEN, SECRET, sample, signed_headers
from tests.fake_dlcs import FakeAsset, FakeDlcs, image_assets, image_service_id
from tests.iiif import assert_valid_iiif
from tests.servers import AWS, GunicornServer, start_gunicorn

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
BASE_URL = "https://presentation.example"
IIIF_CONTENT_TYPE = 'application/ld+json;profile="http://iiif.io/api/presentation/3/context.json"'
# Variables of the service's contract (and AWS/gunicorn ones): never inherited
# from the environment the tests run in, only set by the test.
_OWN_PREFIXES = ("AWS_", "DLCS_", "WEBHOOK_", "SNS_", "GUNICORN_")
_OWN_NAMES = {"DATABASE_URL", "STORAGE_URL", "PUBLIC_BASE_URL", "ADMIN_TOKEN",
              "PROMETHEUS_MULTIPROC_DIR"}  # each gunicorn makes its own
DLCS_CREDENTIALS = ("e2e-api-key", "e2e-api-secret")
FINISHED = {"ignored", "batch-completed", "manifest-completed", "duplicate"}


# ---------------------------------------------------------------- what a test registers

@dataclass
class Plan:
    """A manifest a test registers: its customer, id and assets per DLCS batch."""

    customer: int
    slug: str
    batches: dict[int, list[FakeAsset]]
    label: str = "A test manifest"

    @property
    def key(self) -> str:
        return f"{self.customer}/{self.slug}"

    @property
    def assets(self) -> list[FakeAsset]:
        """Every asset, in canvas order (the order of the batches, then within each)."""
        return [asset for batch_id in self.batches for asset in self.batches[batch_id]]

    def registration(self) -> dict:
        """Return the PUT body: one canvas per asset, canvas ``c{n}`` at canvasOrder n."""
        return {
            "type": "Manifest",
            "label": {"en": [self.label]},
            "summary": {"en": [f"{len(self.assets)} images in {len(self.batches)} batches"]},
            "rights": "http://creativecommons.org/licenses/by/4.0/",
            "paintedResources": [
                {"canvasPainting": {"canvasId": f"c{n}", "canvasOrder": n,
                                    "label": {"en": [f"Image {n}"]}},
                 "asset": {"id": asset.id, "space": asset.space,
                           "origin": f"https://origin.example/{asset.id}.tif",
                           "mediaType": "image/tiff"}}
                for n, asset in enumerate(self.assets)],
            "batches": list(self.batches),
        }

    def url(self, base: str) -> str:
        return f"{base}/{self.customer}/manifests/{self.slug}"


def make_plan(customer: int, slug: str, batch_sizes: dict[int, int], *, space: int = 1) -> Plan:
    """Return a plan whose batch ``id`` holds ``batch_sizes[id]`` generated image assets."""
    return Plan(customer, slug, {
        batch_id: image_assets(f"{slug}-b{batch_id}", size, space=space)
        for batch_id, size in batch_sizes.items()})


def register_with_fake(fake: FakeDlcs, plan: Plan) -> None:
    """Tell the fake DLCS which assets each of the plan's batches ingested."""
    for batch_id, assets in plan.batches.items():
        fake.add_batch(plan.customer, batch_id, assets)


def notification(batch_id: int, customer: int, count: int, *, errors: int = 0,
                 old_format: bool = False) -> bytes:
    """Return a DLCS batch-completed notification body."""
    submitted = dt.datetime(2025, 2, 20, 12, 28, 1, 517392, tzinfo=dt.timezone.utc)
    finished = submitted + dt.timedelta(minutes=2, seconds=batch_id % 60)
    stamp = lambda moment: moment.isoformat().replace("+00:00", "Z")  # noqa: E731
    if old_format:
        body = {"id": batch_id, "customerId": customer, "total": count,
                "success": count - errors, "errors": errors, "superseded": False,
                "started": stamp(submitted), "finished": stamp(finished)}
    else:
        body = {"id": batch_id, "customer": customer, "count": count,
                "completed": count - errors, "errors": errors, "superseded": False,
                "submitted": stamp(submitted), "finished": stamp(finished)}
    return json.dumps(body).encode()


def assert_published(document: dict, plan: Plan, base_url: str = BASE_URL) -> None:
    """Check a published manifest is valid IIIF and paints exactly the plan's assets, in order."""
    assert_valid_iiif(document)
    assert document["id"] == plan.url(base_url)
    assert document["label"] == {"en": [plan.label]}
    assets = plan.assets
    assert len(document["items"]) == len(assets), f"{plan.key}: wrong number of canvases"
    for n, (canvas, asset) in enumerate(zip(document["items"], assets)):
        where = f"{plan.key} canvas {n}"
        canvas_id = f"{base_url}/{plan.customer}/canvases/c{n}"
        assert canvas["id"] == canvas_id, where
        assert (canvas["width"], canvas["height"]) == (asset.width, asset.height), where
        assert canvas["label"] == {"en": [f"Image {n}"]}, where
        assert "metadata" not in canvas, where
        annotation = canvas["items"][0]["items"][0]
        assert annotation["target"] == canvas_id, where
        services = {service.get("type") or service.get("@type"): service
                    for service in annotation["body"]["service"]}
        assert services["ImageService3"]["id"] == image_service_id(plan.customer, asset), where
        assert canvas["thumbnail"][0]["id"].startswith(
            f"https://dlcs.test/thumbs/{asset.asset_id(plan.customer)}/"), where


# ---------------------------------------------------------------- talking to the service

class ServiceClient:
    """The service's HTTP interface, as a sender and an operator use it."""

    def __init__(self, url: str, session: requests.Session | None = None):
        self.url = url
        self.session = session or requests.Session()
        self.admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    def close(self) -> None:
        self.session.close()

    def register(self, plan: Plan) -> requests.Response:
        return self.session.put(f"{self.url}/{plan.customer}/manifests/{plan.slug}",
                                json=plan.registration(), headers=self.admin, timeout=60)

    def deliver(self, body: bytes, msg_id: str | None = None, *,
                secret: str = SECRET) -> requests.Response:
        """POST a completion signed now (a retry re-signs with the same webhook-id)."""
        headers = signed_headers(body, msg_id=msg_id, secret=secret)
        return self.session.post(f"{self.url}/webhooks/batch-completed", data=body,
                                 headers=headers, timeout=60)

    def manifest(self, plan: Plan, **headers) -> requests.Response:
        return self.session.get(plan.url(self.url), headers=headers, timeout=30)

    def status(self, plan: Plan) -> dict:
        response = self.session.get(plan.url(self.url) + "/status", headers=self.admin,
                                    timeout=30)
        assert response.status_code == 200, response.text
        return response.json()

    def rebuild(self, plan: Plan) -> requests.Response:
        return self.session.post(plan.url(self.url) + "/rebuild", headers=self.admin, timeout=60)

    def deliveries(self, **params) -> list[dict]:
        response = self.session.get(f"{self.url}/deliveries", params={"limit": 500, **params},
                                    headers=self.admin, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()


def service_environment(*, database_url: str, storage_url: str, dlcs_url: str,
                        s3_endpoint: str | None = None, **extra: str) -> dict[str, str]:
    """Return the environment of a service under test, nothing inherited that could configure it."""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(_OWN_PREFIXES) and name not in _OWN_NAMES}
    env.update({
        "DATABASE_URL": database_url,
        "STORAGE_URL": storage_url,
        "PUBLIC_BASE_URL": BASE_URL,
        "WEBHOOK_SECRETS": SECRET,
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "DLCS_ORCHESTRATOR_URL": dlcs_url,
        "DLCS_API_URL": dlcs_url,
        "DLCS_TIMEOUT_SECONDS": "5",
        "GUNICORN_GRACEFUL_TIMEOUT": "5",
        "PYTHONUNBUFFERED": "1",
        **AWS,
    })
    if s3_endpoint:
        env["AWS_ENDPOINT_URL"] = s3_endpoint
    env.update(extra)
    return env


@contextlib.contextmanager
def running_service(env: dict[str, str], *, workers: int = 2,
                    threads: int = 4) -> Iterator[GunicornServer]:
    """Run gunicorn with ``env`` until the block ends; print its log for a failing test."""
    server = start_gunicorn(env, cwd=ROOT, workers=workers, threads=threads)
    try:
        yield server
    finally:
        status = server.stop()
        # Captured by pytest, and shown only when the test fails.
        print(f"--- gunicorn on {server.url} exited with {status}; its log:\n{server.log()[-20000:]}")
        server.cleanup()


def assert_no_tracebacks(server: GunicornServer) -> None:
    """Fail when the app logged an unexpected error (a 500 or a failed worker)."""
    log = server.log()
    assert "Traceback" not in log and "unhandled error" not in log, log[-5000:]


def stored_versions(s3, bucket: str, manifest_key: str) -> list[str]:
    """The keys of the versions stored for a manifest: ``{manifest_key}.{version}.json``."""
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=f"{manifest_key}.")
    return [item["Key"] for item in listing.get("Contents", [])]


def published_object(s3, bucket: str, manifest_key: str) -> dict:
    """Get the one object stored for a manifest.

    Each rebuild stores a version of its own, publishes it in the database and
    deletes the one it replaced: one is left, and GET serves it.
    """
    keys = stored_versions(s3, bucket, manifest_key)
    assert len(keys) == 1, keys
    return s3.get_object(Bucket=bucket, Key=keys[0])


# ---------------------------------------------------------------- fixtures

@dataclass
class Running:
    """A service under test and what it talks to."""

    server: GunicornServer
    client: ServiceClient
    fake: FakeDlcs
    bucket: str
    s3: object
    prefix: str = "published"
    sent: dict[str, str] = field(default_factory=dict)  # webhook-id -> outcome answered

    def object(self, plan: Plan) -> dict:
        """The manifest's one stored document (each rebuild deletes the one it replaces)."""
        return published_object(self.s3, self.bucket,
                                f"{self.prefix}/{plan.customer}/manifests/{plan.slug}")

    def complete(self, plan: Plan, batch_id: int, msg_id: str | None = None,
                 **kwargs) -> requests.Response:
        msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
        body = notification(batch_id, plan.customer, len(plan.batches[batch_id]), **kwargs)
        response = self.client.deliver(body, msg_id)
        if response.status_code == 200:  # the log keeps the first outcome of an id
            self.sent.setdefault(msg_id, response.json()["outcome"])
        return response


@pytest.fixture
def service(postgres_url, bucket, fake_dlcs, moto_server) -> Iterator[Running]:
    """gunicorn with 2 workers on PostgreSQL, S3 (moto) and the fake DLCS (which wants Basic auth)."""
    name, s3 = bucket
    fake_dlcs.credentials = DLCS_CREDENTIALS
    env = service_environment(database_url=postgres_url, storage_url=f"s3://{name}/published",
                              dlcs_url=fake_dlcs.url, s3_endpoint=moto_server.url,
                              DLCS_API_KEY=DLCS_CREDENTIALS[0],
                              DLCS_API_SECRET=DLCS_CREDENTIALS[1], DLCS_MAX_BATCH_SIZE="2")
    with running_service(env, workers=2, threads=4) as server:
        client = ServiceClient(server.url)
        try:
            yield Running(server, client, fake_dlcs, name, s3)
        finally:
            client.close()


# ---------------------------------------------------------------- tests

def test_manifests_are_published_when_their_last_batch_completes(service):
    plans = [make_plan(7, "one-batch", {501: 3}),
             make_plan(7, "two-batches", {511: 2, 512: 4}, space=2),
             make_plan(8, "three-batches", {521: 1, 522: 2, 523: 3})]
    client = service.client
    ready = client.session.get(f"{client.url}/readyz", timeout=10)
    assert ready.json() == {"status": "ok", "checks": {"database": "ok", "storage": "ok"},
                            "disabled": {"sns": "SNS_TOPIC_ARNS"}, "defaulted": []}

    for plan in plans:
        register_with_fake(service.fake, plan)
        response = client.register(plan)
        assert response.status_code == 202, response.text
        assert response.headers["Location"] == plan.url(BASE_URL)
        assert client.status(plan)["state"] == "ingesting"
        pending = client.manifest(plan)
        assert pending.status_code == 202
        assert pending.json()["ingesting"] == {"state": "ingesting", "total": len(plan.assets), "finished": 0,
                                               "errors": 0}

    # Interleave the manifests' completions; the last of each completes its manifest.
    order = [(plans[2], 521), (plans[1], 511), (plans[0], 501), (plans[2], 523),
             (plans[1], 512), (plans[2], 522)]
    last = {(plan.key, max(plan.batches, key=lambda b: order.index((plan, b))))
            for plan in plans}
    for number, (plan, batch_id) in enumerate(order):
        response = service.complete(plan, batch_id, f"msg_{batch_id}",
                                    old_format=number % 2 == 1)
        assert response.status_code == 200, response.text
        expected = ("manifest-completed" if (plan.key, batch_id) in last
                    else "batch-completed")
        assert response.json() == {"outcome": expected, "batch": batch_id,
                                   "manifest": plan.key}
        if expected == "batch-completed":
            assert client.manifest(plan).status_code == 202

    for plan in plans:
        published = client.manifest(plan)
        assert published.status_code == 200
        assert published.headers["Content-Type"] == IIIF_CONTENT_TYPE
        assert published.headers["Access-Control-Allow-Origin"] == "*"
        assert_published(published.json(), plan)
        stored = service.object(plan)
        assert stored["ContentType"] == "application/ld+json"
        assert stored["Body"].read() == published.content
        etag = published.headers["ETag"]
        assert client.manifest(plan, **{"If-None-Match": etag}).status_code == 304

        status = client.status(plan)
        assert status["state"] == "complete"
        assert status["error"] is None and status["missingAssets"] == []
        assert status["lastProcessed"] is not None
        assert [(b["id"], b["status"], b["count"], b["completed"], b["errors"])
                for b in status["batches"]] == [
            (b, "completed", len(assets), len(assets), 0) for b, assets in plan.batches.items()]
        assert all(b["finished"] and b["submitted"] for b in status["batches"])

        # One named query per manifest, over all of its batches, cache-busted.
        assert service.fake.calls(plan.customer, plan.batches) == 1
    calls = service.fake.requests("named-query")
    assert len({call.query["cacheBust"][0] for call in calls}) == len(calls) == len(plans)
    assert all(call.status == 200 and call.authorization.startswith("Basic ") for call in calls)

    # A redelivery changes nothing and says so.
    for plan, batch_id in (order[0], order[-1]):
        again = service.complete(plan, batch_id, f"msg_{batch_id}")
        assert again.json() == {"outcome": "duplicate", "batch": batch_id, "manifest": plan.key}
    assert service.fake.total_named_queries == len(plans)

    log = client.deliveries()
    assert {item["id"]: item["outcome"] for item in log} == service.sent
    assert all(item["transport"] == "webhook" and item["error"] is None for item in log)
    received = [item["receivedAt"] for item in log]
    assert received == sorted(received, reverse=True)
    assert [item["batch"] for item in client.deliveries(batch=512)] == [512]
    completed = client.deliveries(outcome="manifest-completed")
    assert sorted(item["manifest"] for item in completed) == sorted(p.key for p in plans)
    assert_no_tracebacks(service.server)


def test_the_worked_example_is_published(service):
    """registration-2-assets + named-query-2-assets publish published-2-assets (dlcs.md)."""
    named_query = json.loads(sample("named-query-2-assets.json"))
    service.fake.serve_document(2, [1234], named_query)
    client = service.client
    response = client.session.put(f"{client.url}/2/manifests/letters", headers=client.admin,
                                  data=sample("registration-2-assets.json"), timeout=30)
    assert response.status_code == 202, response.text

    body = sample("notification-current.json")
    answer = client.deliver(body, "msg_worked_example")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"outcome": "manifest-completed", "batch": 1234,
                             "manifest": "2/letters"}

    published = client.session.get(f"{client.url}/2/manifests/letters", timeout=30)
    assert published.status_code == 200
    document = published.json()
    assert document == json.loads(sample("published-2-assets.json"))
    assert_valid_iiif(document)
    stored = published_object(service.s3, service.bucket, "published/2/manifests/letters")
    assert stored["ContentType"] == "application/ld+json"
    assert stored["Body"].read() == published.content
    assert_no_tracebacks(service.server)


def test_a_failed_rebuild_is_recorded_and_finished_later(service):
    plan = make_plan(9, "flaky", {601: 2, 602: 2})
    register_with_fake(service.fake, plan)
    client = service.client
    assert client.register(plan).status_code == 202
    assert service.complete(plan, 601).json()["outcome"] == "batch-completed"

    # The DLCS fails: the completion is recorded, the sender told to come back.
    service.fake.fail_next(1, status=500)
    failed = service.complete(plan, 602, msg_id="msg_last_batch")
    assert failed.status_code == 503
    assert failed.headers["Content-Type"] == "application/problem+json"
    assert int(failed.headers["Retry-After"]) > 0
    problem = failed.json()
    assert problem["outcome"] == "failed" and problem["manifest"] == plan.key
    assert problem["type"].endswith("rebuild-failed")
    assert "500" in problem["detail"]
    status = client.status(plan)
    assert status["state"] == "rebuild-failed" and "500" in status["error"]
    assert [b["status"] for b in status["batches"]] == ["completed", "completed"]
    assert client.manifest(plan).status_code == 202
    [pending] = client.deliveries(outcome="failed")
    assert pending["id"] == "msg_last_batch" and "500" in pending["error"]

    # The sender's redelivery (same webhook-id) finishes the job.
    retried = service.complete(plan, 602, msg_id="msg_last_batch")
    assert retried.status_code == 200, retried.text
    assert retried.json()["outcome"] == "manifest-completed"
    assert_published(client.manifest(plan).json(), plan)
    assert client.status(plan)["state"] == "complete"
    assert client.deliveries(outcome="failed") == []
    assert service.fake.calls(plan.customer, plan.batches) == 2

    # A manual rebuild that gets garbage from the DLCS fails, and leaves the
    # published document alone; the next one succeeds.
    before = client.manifest(plan).content
    service.fake.fail_next(1, invalid_json=True)
    broken = client.rebuild(plan)
    assert broken.status_code == 503 and "not JSON" in broken.json()["detail"]
    assert client.manifest(plan).content == before
    assert client.status(plan)["state"] == "rebuild-failed"
    rebuilt = client.rebuild(plan)
    assert rebuilt.status_code == 200, rebuilt.text
    assert rebuilt.json() == {"outcome": "manifest-completed", "batch": None,
                              "manifest": plan.key}
    assert client.manifest(plan).content == before  # same inputs, same bytes
    assert client.status(plan)["state"] == "complete"
    assert service.fake.calls(plan.customer, plan.batches) == 4
    assert_no_tracebacks(service.server)


def test_rejected_deliveries_are_not_recorded_and_others_are(service):
    client = service.client
    body = notification(777, 3, 1)
    unsigned = client.session.post(f"{client.url}/webhooks/batch-completed", data=body,
                                   timeout=30)
    assert unsigned.status_code == 401
    assert unsigned.headers["Content-Type"] == "application/problem+json"
    forged = client.deliver(body, "msg_forged",
                            secret="whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo=")
    assert forged.status_code == 401
    assert client.deliveries() == []

    ignored = client.deliver(body, "msg_unknown_batch")
    assert ignored.json() == {"outcome": "ignored", "batch": 777, "manifest": None}
    garbage = client.deliver(b'{"id": "not a batch"}', "msg_garbage")
    assert garbage.status_code == 422
    assert garbage.headers["Content-Type"] == "application/problem+json"
    log = {item["id"]: item for item in client.deliveries()}
    assert set(log) == {"msg_unknown_batch", "msg_garbage"}
    assert log["msg_unknown_batch"]["outcome"] == "ignored"
    assert log["msg_garbage"]["outcome"] == "unprocessable"
    assert service.fake.total_named_queries == 0
    assert_no_tracebacks(service.server)


def test_queued_assets_are_published_after_a_webhook_and_a_reconcile(service):
    """A registration without batches is queued at the DLCS; lost notifications are reconciled."""
    assets = image_assets("queued", 5, space=4, sizes=((4000, 3000),))
    registration = Plan(10, "queued", {0: assets}).registration()
    del registration["batches"]
    client = service.client
    response = client.session.put(f"{client.url}/10/manifests/queued", json=registration,
                                  headers=client.admin, timeout=30)
    assert response.status_code == 202, response.text

    # DLCS_MAX_BATCH_SIZE=2: three queue requests, with the API credentials.
    queued = service.fake.requests("queue")
    assert [call.status for call in queued] == [201, 201, 201]
    assert all(call.authorization.startswith("Basic ") for call in queued)
    status = client.status(Plan(10, "queued", {}))
    batch_ids = [batch["id"] for batch in status["batches"]]
    assert len(batch_ids) == 3 and status["state"] == "ingesting"
    plan = Plan(10, "queued", {batch_id: assets[n * 2:n * 2 + 2]
                               for n, batch_id in enumerate(batch_ids)})

    # One notification arrives; the other two are lost, and the DLCS says they finished.
    assert service.complete(plan, batch_ids[0]).json()["outcome"] == "batch-completed"
    for batch_id in batch_ids[1:]:
        service.fake.finish_batch(10, batch_id)
    reconciled = client.session.post(plan.url(client.url) + "/reconcile", headers=client.admin,
                                     timeout=30)
    assert reconciled.status_code == 200, reconciled.text
    assert reconciled.json()["outcome"] == "manifest-completed"
    assert reconciled.json()["completed"] == batch_ids[1:]

    assert_published(client.manifest(plan).json(), plan)
    assert client.status(plan)["state"] == "complete"
    assert service.fake.calls(10, batch_ids) == 1
    transports = sorted(item["transport"] for item in client.deliveries())
    assert transports == ["reconcile", "reconcile", "webhook"]
    again = client.session.post(plan.url(client.url) + "/reconcile", headers=client.admin,
                                timeout=30)
    assert again.json()["completed"] == [] and again.json()["outcome"] == "unchanged"
    assert service.fake.calls(10, batch_ids) == 1
    assert_no_tracebacks(service.server)


def test_stalled_batches_are_requeued_or_dropped_and_a_manifest_deleted(service):
    """A superseded batch is reported and requeued, another dropped, then a manifest deleted."""
    client, fake = service.client, service.fake
    admin = {"headers": client.admin, "timeout": 30}
    # The fake DLCS ingests what is queued at 4000 x 3000: so are these, to compare.
    plan = Plan(12, "stalled", {batch: image_assets(f"stalled-{batch}", 2,
                                                    sizes=((4000, 3000),))
                                for batch in (701, 702)})
    register_with_fake(fake, plan)
    assert client.register(plan).status_code == 202
    assert service.complete(plan, 701).json()["outcome"] == "batch-completed"
    fake.supersede_batch(12, 702)

    reconciled = client.session.post(plan.url(client.url) + "/reconcile", **admin)
    assert reconciled.status_code == 200, reconciled.text
    assert [(s["batch"], s["reason"]) for s in reconciled.json()["stalled"]] == [
        (702, "superseded")]
    assert [(s["batch"], s["reason"]) for s in client.status(plan)["stalled"]] == [
        (702, "superseded")]

    requeued = client.session.post(plan.url(client.url) + "/requeue", **admin)
    assert requeued.status_code == 202, requeued.text
    [fresh] = requeued.json()["batches"]  # DLCS_MAX_BATCH_SIZE=2: one batch for both
    assert requeued.json()["dropped"] == [702] and requeued.json()["assets"] == 2
    assert fake.calls(12, [701]) == 1  # what the completed batch holds
    assert [call.authorization.startswith("Basic ") for call in fake.requests("queue")] == [
        True]
    assert service.complete(plan, 702).json()["outcome"] == "ignored"
    requeued_plan = Plan(12, "stalled", {701: plan.batches[701], fresh: plan.batches[702]})
    completed = service.complete(requeued_plan, fresh)
    assert completed.json() == {"outcome": "manifest-completed", "batch": fresh,
                                "manifest": plan.key}
    assert_published(client.manifest(plan).json(), plan)
    assert fake.calls(12, [701, fresh]) == 1

    dropping = make_plan(12, "dropping", {711: 1, 712: 1})
    register_with_fake(fake, dropping)
    assert client.register(dropping).status_code == 202
    assert service.complete(dropping, 711).json()["outcome"] == "batch-completed"
    dropped = client.session.delete(dropping.url(client.url) + "/batches/712", **admin)
    assert dropped.status_code == 200, dropped.text
    assert dropped.json() == {"outcome": "manifest-completed", "batch": 712,
                              "manifest": dropping.key}
    assert_published(client.manifest(dropping).json(),
                     Plan(12, "dropping", {711: dropping.batches[711]}))
    assert client.status(dropping)["missingAssets"] == [dropping.batches[712][0].asset_id(12)]

    deleted = client.session.delete(plan.url(client.url), **admin)
    assert deleted.status_code == 204, deleted.text
    assert stored_versions(service.s3, service.bucket,
                           f"{service.prefix}/{plan.customer}/manifests/{plan.slug}") == []
    assert client.manifest(plan).status_code == 404
    assert service.object(dropping)["Body"].read() == client.manifest(dropping).content
    assert service.complete(requeued_plan, fresh).json()["outcome"] == "ignored"
    assert_no_tracebacks(service.server)
