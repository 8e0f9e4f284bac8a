"""A rebuild that lost its claim never publishes: GET serves what the database records.

Real threads, the real database (SQLite or PostgreSQL, as the run selects), a
DLCS on a loopback port whose named queries are held one by one, and both
stores (a folder, and S3 through moto's server). Two interleavings lose a
rebuild its claim while it waits for the DLCS:

- the manifest is re-registered, which rebuilds the new registration at once;
- its lease runs out and the sender's retry takes the rebuild over.

The newer rebuild is let finish first, then the loser: before fencing, the loser
stored its document where GET reads it, over the winner's, while the database
kept the winner's ETag. Now each rebuild stores under a key of its own and only
a claim's owner records its key: GET must answer exactly the document whose
ETag the database records, the loser's never, and the loser's document must be
gone from the store.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import sample, signed_headers
from tests.fake_dlcs import FakeAsset, FakeDlcs
from tests.servers import AWS
from webhook import create_app, db
from webhook.config import parse_storage_url
from webhook.model_base import utcnow
from webhook.models import Manifest
from webhook.service import build_services
from webhook.storage import etag_for, manifest_key

URL = "/2/manifests/letters"
ASSETS = [FakeAsset(5, "foo", 4000, 3000), FakeAsset(5, "bar", 2000, 3000)]
# What the DLCS answers once the loser is let go: other sizes, hence another document.
CHANGED_ASSETS = [FakeAsset(5, "foo", 1000, 750), FakeAsset(5, "bar", 500, 750)]


class Clock:
    """The service's clock, which a test can move forward (to expire a lease)."""

    def __init__(self):
        self.offset = dt.timedelta()

    def __call__(self) -> dt.datetime:
        return utcnow() + self.offset


@dataclasses.dataclass
class Service:
    app: object
    fake: FakeDlcs
    clock: Clock
    keys: callable  # every key the store holds

    def client(self):
        return self.app.test_client()


@pytest.fixture(params=["file", "s3"])
def service(request, settings, tmp_path, fake_dlcs, monkeypatch, admin):
    """The app over the selected database, the given store and the loopback DLCS."""
    if request.param == "s3":
        moto = request.getfixturevalue("moto_server")
        name, s3 = request.getfixturevalue("bucket")
        for variable, value in {**AWS, "AWS_ENDPOINT_URL": moto.url}.items():
            monkeypatch.setenv(variable, value)
        storage = parse_storage_url(f"s3://{name}")

        def keys() -> list[str]:
            listing = s3.list_objects_v2(Bucket=name)
            return sorted(item["Key"] for item in listing.get("Contents", []))
    else:
        directory = tmp_path / "published"
        storage = parse_storage_url(f"file://{directory}")

        def keys() -> list[str]:
            return sorted(path.relative_to(directory).as_posix()
                          for path in Path(directory).rglob("*") if path.is_file())

    settings = dataclasses.replace(settings, storage=storage,
                                   dlcs_orchestrator_url=fake_dlcs.url)
    app = create_app(settings)
    clock = Clock()
    built = app.extensions["webhook.services"]
    app.extensions["webhook.services"] = build_services(settings, built.rebuild.dlcs,
                                                        built.rebuild.store, clock)
    fake_dlcs.add_batch(2, 1234, ASSETS)
    yield Service(app, fake_dlcs, clock, keys)
    fake_dlcs.release()
    db.dispose()


def register(service: Service, admin, label: str) -> tuple[int, dict]:
    document = json.loads(sample("registration-2-assets.json"))
    document["label"] = {"en": [label]}
    response = service.client().put(URL, json=document, headers=admin)
    return response.status_code, response.get_json()


def deliver(service: Service, msg_id: str) -> tuple[int, dict]:
    body = sample("notification-current.json")
    response = service.client().post("/webhooks/batch-completed", data=body,
                                      headers=signed_headers(body, msg_id))
    return response.status_code, response.get_json()


def recorded() -> Manifest:
    """The manifest's row as the database has it now."""
    try:
        return Manifest.find(2, "letters")
    finally:
        db.close()


def assert_serves_what_the_database_records(service: Service) -> dict:
    """GET answers the document whose ETag and key the database records; return it."""
    response = service.client().get(URL)
    assert response.status_code == 200, response.get_json()
    row = recorded()
    assert response.headers["ETag"] == row.published_etag == etag_for(response.data)
    # Nothing else of this manifest is left in the store: the loser's document
    # and the versions it replaced are deleted.
    assert service.keys() == [row.published_key]
    return response.get_json()


def widths(document: dict) -> list[int]:
    return [canvas["width"] for canvas in document["items"]]


def test_a_rebuild_that_a_reregistration_interrupts_publishes_nothing(service, admin):
    assert register(service, admin, "First")[0] == 202
    service.fake.hold_each()
    with ThreadPoolExecutor(max_workers=2) as pool:
        # The final completion's rebuild waits in the named query ...
        first = pool.submit(deliver, service, "msg_last")
        service.fake.wait_for_named_queries(1)
        # ... while the manifest is registered again: nothing is left to ingest,
        # so the new registration is rebuilt at once, and finishes first.
        second = pool.submit(register, service, admin, "Second")
        service.fake.wait_for_named_queries(2)
        service.fake.release_call(1)
        assert second.result(timeout=30)[0] == 200
        service.fake.release_call(0)
        status, problem = first.result(timeout=30)

    published = assert_serves_what_the_database_records(service)
    assert published["label"] == {"en": ["Second"]}
    assert status == 503, problem
    assert problem["type"].endswith("rebuild-failed")
    assert "document was not published" in problem["detail"]
    status = service.client().get(f"{URL}/status", headers=admin).get_json()
    assert (status["state"], status["error"]) == ("complete", None)


def test_a_rebuild_that_outlived_its_lease_publishes_nothing(service, admin, settings):
    assert register(service, admin, "Letters")[0] == 202
    service.fake.hold_each()
    with ThreadPoolExecutor(max_workers=2) as pool:
        first = pool.submit(deliver, service, "msg_last")
        service.fake.wait_for_named_queries(1)
        # The DLCS is slow: the claim's lease runs out, and the sender's retry
        # of the same delivery takes the rebuild over and finishes it.
        service.clock.offset = dt.timedelta(seconds=settings.rebuild_lease_seconds + 1)
        second = pool.submit(deliver, service, "msg_last")
        service.fake.wait_for_named_queries(2)
        service.fake.release_call(1)
        assert second.result(timeout=30) == (200, {"outcome": "manifest-completed",
                                                   "batch": 1234, "manifest": "2/letters"})
        winner = service.client().get(URL).get_json()
        # Then the first rebuild gets its answer, which has changed meanwhile.
        service.fake.add_batch(2, 1234, CHANGED_ASSETS)
        service.fake.release_call(0)
        status, problem = first.result(timeout=30)

    published = assert_serves_what_the_database_records(service)
    assert published == winner
    assert widths(published) == [4000, 2000]
    assert status == 503, problem
    assert "document was not published" in problem["detail"]


def test_each_rebuild_replaces_and_deletes_the_document_before_it(service, admin):
    assert register(service, admin, "Letters")[0] == 202
    assert deliver(service, "msg_last")[0] == 200
    before = recorded().published_key
    assert service.keys() == [before]

    service.fake.add_batch(2, 1234, CHANGED_ASSETS)
    assert service.client().post(f"{URL}/rebuild", headers=admin).status_code == 200

    published = assert_serves_what_the_database_records(service)
    assert recorded().published_key != before
    assert widths(published) == [1000, 500]


def test_a_document_published_before_versioned_keys_is_served_then_replaced(service, admin):
    assert register(service, admin, "Letters")[0] == 202
    assert deliver(service, "msg_last")[0] == 200
    # As a manifest published before migration 0006 is: at the manifest's own
    # key, with no key recorded.
    store = service.app.extensions["webhook.store"]
    row = recorded()
    document = store.get(row.published_key).body
    store.put(manifest_key(2, "letters"), document)
    store.delete(row.published_key)
    Manifest.update(published_key=None).where(Manifest.id == row.id).execute()
    db.close()

    response = service.client().get(URL)
    assert (response.status_code, response.data) == (200, document)

    service.fake.add_batch(2, 1234, CHANGED_ASSETS)
    assert service.client().post(f"{URL}/rebuild", headers=admin).status_code == 200
    assert widths(assert_serves_what_the_database_records(service)) == [1000, 500]
