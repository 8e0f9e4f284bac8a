"""Assets that already exist in the DLCS, and the manifest projection (issue 13).

The service runs in-process (Flask's test client, on the suite's database:
SQLite or PostgreSQL) and talks to the fake DLCS over real loopback HTTP with
a real ``DlcsClient``: lookups, tagging, queueing and both named queries go
over the wire, and the tests read what the fake was sent and what it holds.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from tests.conftest import signed_headers
from tests.fake_dlcs import FIND_ASSETS, NAMED_QUERY, PATCH_ASSETS, QUEUE, FakeAsset
from tests.iiif import assert_valid_iiif
from webhook import create_app, db
from webhook.config import PROJECTIONS
from webhook.dlcs import DlcsClient, make_session

CUSTOMER = 2
URL = f"/{CUSTOMER}/manifests/letters"
PUBLIC = "https://presentation.example"


@dataclasses.dataclass
class Service:
    """The app on the suite's database, wired to the loopback fake DLCS."""

    client: object
    fake: object
    admin: dict

    def put(self, body: dict, url: str = URL):
        return self.client.put(url, data=json.dumps(body).encode(), headers=self.admin)

    def status(self, url: str = URL) -> dict:
        answer = self.client.get(f"{url}/status", headers=self.admin)
        assert answer.status_code == 200, answer.get_json()
        return answer.get_json()

    def published(self, url: str = URL) -> dict:
        answer = self.client.get(url)
        assert answer.status_code == 200, answer.get_json()
        document = json.loads(answer.data)
        assert_valid_iiif(document)
        return document

    def complete(self, batch_id: int, count: int, errors: int = 0):
        body = json.dumps({"id": batch_id, "customer": CUSTOMER, "count": count,
                           "completed": count - errors, "errors": errors, "superseded": False,
                           "submitted": "2025-02-20T12:28:01.5173920Z",
                           "finished": "2025-02-20T12:30:11.2Z"}).encode()
        return self.client.post("/webhooks/batch-completed", data=body,
                                headers=signed_headers(body))


def service_for(settings, fake, admin, projection: str) -> tuple[Service, object]:
    session = make_session(retries=0)
    session.trust_env = False  # no proxy between the service and 127.0.0.1
    dlcs = DlcsClient(orchestrator_url=fake.url, api_url=fake.url, timeout=5,
                      named_query=PROJECTIONS[projection], max_batch_size=2, session=session)
    app = create_app(dataclasses.replace(
        settings, dlcs_api_url=fake.url, dlcs_orchestrator_url=fake.url,
        dlcs_projection=projection, dlcs_named_query=PROJECTIONS[projection],
        dlcs_max_batch_size=2), dlcs=dlcs)
    return Service(app.test_client(), fake, admin), session


@pytest.fixture
def batches(settings, fake_dlcs, admin):
    service, session = service_for(settings, fake_dlcs, admin, "batches")
    yield service
    session.close()
    db.dispose()


@pytest.fixture
def by_manifest(settings, fake_dlcs, admin):
    service, session = service_for(settings, fake_dlcs, admin, "manifest")
    yield service
    session.close()
    db.dispose()


def registration(*assets: str, batches: list[int] | None = None, reingest=()) -> dict:
    """One canvas per asset (space 5), canvas ids p0, p1...; no "batches" when None."""
    body = {"type": "Manifest", "label": {"en": ["Letters"]},
            "paintedResources": [
                {"canvasPainting": {"canvasId": f"p{n}", "canvasOrder": n},
                 "asset": {"id": asset, "space": 5, "origin": f"https://example.org/{asset}.jpg",
                           "mediaType": "image/jpeg"},
                 **({"reingest": True} if asset in reingest else {})}
                for n, asset in enumerate(assets)]}
    if batches is not None:
        body["batches"] = batches
    return body


def painted_assets(document: dict) -> list[str]:
    """The DLCS assets a published manifest paints, canvas by canvas."""
    return [annotation["body"]["service"][1]["id"].split("/iiif-img/")[1]
            for canvas in document["items"] for annotation in canvas["items"][0]["items"]]


def members(call) -> list[str]:
    return [member["id"] for member in call.body["member"]]


# --- batches projection: "batches": [] --------------------------------------------------------


def test_existing_assets_are_published_at_once_from_their_own_batches(batches):
    batches.fake.add_batch(CUSTOMER, 500, [FakeAsset(5, "foo"), FakeAsset(5, "other")])
    batches.fake.add_batch(CUSTOMER, 501, [FakeAsset(5, "bar")])

    answer = batches.put(registration("foo", "bar", batches=[]))

    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["state"] == "complete"
    assert answer.get_json()["missingAssets"] == []
    published = batches.published()
    assert [c["id"] for c in published["items"]] == [f"{PUBLIC}/2/canvases/p0",
                                                      f"{PUBLIC}/2/canvases/p1"]
    assert painted_assets(published) == ["2/5/foo", "2/5/bar"]
    # The lookup named both assets; the named query covered the batches the DLCS named.
    assert [members(call) for call in batches.fake.requests(FIND_ASSETS)] == [
        ["2/5/foo", "2/5/bar"]]
    assert batches.fake.calls(CUSTOMER, [500, 501]) == 1
    assert batches.fake.requests(QUEUE) == []


def test_an_asset_the_dlcs_lacks_is_reported_missing(batches):
    batches.fake.add_batch(CUSTOMER, 500, [FakeAsset(5, "foo")])

    answer = batches.put(registration("foo", "never-ingested", batches=[]))

    assert answer.status_code == 200
    assert answer.get_json()["missingAssets"] == ["2/5/never-ingested"]
    assert painted_assets(batches.published()) == ["2/5/foo"]


def test_a_failing_lookup_answers_503_and_a_rebuild_finishes_it(batches):
    batches.fake.add_batch(CUSTOMER, 500, [FakeAsset(5, "foo")])
    batches.fake.fail_next(endpoint=FIND_ASSETS, status=500)

    failed = batches.put(registration("foo", batches=[]))

    assert failed.status_code == 503 and failed.headers["Retry-After"]
    assert batches.status()["state"] == "rebuild-failed"
    rebuilt = batches.client.post(f"{URL}/rebuild", headers=batches.admin)
    assert rebuilt.status_code == 200, rebuilt.get_json()
    assert painted_assets(batches.published()) == ["2/5/foo"]


def test_the_batches_projection_never_tags(batches):
    batches.fake.add_assets(CUSTOMER, [FakeAsset(5, "foo")])

    answer = batches.put(registration("foo"))  # no "batches": the service queues

    assert answer.status_code == 202
    assert batches.fake.requests(PATCH_ASSETS) == []
    assert batches.fake.requests(FIND_ASSETS) == []
    assert len(batches.fake.requests(QUEUE)) == 1  # queued again, as before issue 13


# --- manifest projection ------------------------------------------------------------------------


def test_assets_the_dlcs_has_are_tagged_and_published_in_the_answer(by_manifest):
    fake = by_manifest.fake
    fake.add_assets(CUSTOMER, [FakeAsset(5, name) for name in ("foo", "bar", "baz")])

    answer = by_manifest.put(registration("foo", "bar", "baz"))

    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["state"] == "complete" and answer.get_json()["batches"] == []
    assert fake.requests(QUEUE) == []
    assert [members(call) for call in fake.requests(FIND_ASSETS)] == [
        ["2/5/foo", "2/5/bar"], ["2/5/baz"]]
    assert [members(call) for call in fake.requests(PATCH_ASSETS)] == [
        ["2/5/foo", "2/5/bar"], ["2/5/baz"]]
    assert all(call.body["value"] == ["letters"] and call.body["operation"] == "add"
               for call in fake.requests(PATCH_ASSETS))
    assert fake.assets.manifests("2/5/baz") == ["letters"]
    assert painted_assets(by_manifest.published()) == ["2/5/foo", "2/5/bar", "2/5/baz"]
    [projection] = fake.requests(NAMED_QUERY)
    assert projection.path == f"/iiif-resource/v3/{CUSTOMER}/manifest-query/letters"


def test_only_missing_and_reingested_assets_are_queued(by_manifest):
    fake = by_manifest.fake
    fake.add_assets(CUSTOMER, [FakeAsset(5, "old"), FakeAsset(5, "redo")])

    answer = by_manifest.put(registration("old", "new", "redo", reingest={"redo"}))

    assert answer.status_code == 202, answer.get_json()
    # The lookup skips the asset to reingest; the queue gets what is new, and it.
    assert [members(call) for call in fake.requests(FIND_ASSETS)] == [["2/5/old", "2/5/new"]]
    [queued] = fake.requests(QUEUE)
    assert [(m["space"], m["id"]) for m in queued.body["member"]] == [(5, "new"), (5, "redo")]
    assert [members(call) for call in fake.requests(PATCH_ASSETS)] == [
        ["2/5/old", "2/5/new"], ["2/5/redo"]]
    [batch] = by_manifest.status()["batches"]
    fake.finish_batch(CUSTOMER, batch["id"])
    completed = by_manifest.complete(batch["id"], 2)
    assert completed.get_json()["outcome"] == "manifest-completed", completed.get_json()
    assert painted_assets(by_manifest.published()) == ["2/5/old", "2/5/new", "2/5/redo"]


def test_explicit_batches_are_tagged_and_projected_by_manifest(by_manifest):
    fake = by_manifest.fake
    fake.add_batch(CUSTOMER, 700, [FakeAsset(5, "foo"), FakeAsset(5, "bar")])

    answer = by_manifest.put(registration("foo", "bar", batches=[700]))

    assert answer.status_code == 202
    assert [members(call) for call in fake.requests(PATCH_ASSETS)] == [["2/5/foo", "2/5/bar"]]
    assert fake.requests(FIND_ASSETS) == [] and fake.requests(QUEUE) == []
    assert by_manifest.complete(700, 2).get_json()["outcome"] == "manifest-completed"
    assert painted_assets(by_manifest.published()) == ["2/5/foo", "2/5/bar"]
    assert fake.calls(CUSTOMER, [700]) == 0  # the manifest query, not the batch query


def test_a_reregistration_untags_the_assets_it_drops(by_manifest):
    fake = by_manifest.fake
    fake.add_assets(CUSTOMER, [FakeAsset(5, name) for name in ("foo", "bar", "baz")])
    assert by_manifest.put(registration("foo", "bar", "baz")).status_code == 200

    answer = by_manifest.put(registration("bar", "foo"))

    assert answer.status_code == 200
    untagged = [call for call in fake.requests(PATCH_ASSETS)
                if call.body["operation"] == "remove"]
    assert [members(call) for call in untagged] == [["2/5/baz"]]
    assert fake.assets.manifests("2/5/baz") == []
    assert fake.assets.manifests("2/5/foo") == ["letters"]
    assert painted_assets(by_manifest.published()) == ["2/5/bar", "2/5/foo"]


def test_a_failed_tagging_is_shown_and_an_identical_put_finishes_it(by_manifest):
    fake = by_manifest.fake
    fake.add_assets(CUSTOMER, [FakeAsset(5, "foo"), FakeAsset(5, "bar")])
    fake.fail_next(endpoint=PATCH_ASSETS, status=500)

    failed = by_manifest.put(registration("foo", "bar"))

    assert failed.status_code == 503 and failed.headers["Retry-After"]
    status = by_manifest.status()
    assert status["state"] == "ingesting" and "Tagging the assets" in status["error"]
    assert by_manifest.client.get(URL).status_code == 202  # never published
    again = by_manifest.put(registration("foo", "bar"))
    assert again.status_code == 200, again.get_json()
    assert again.get_json()["error"] is None
    assert painted_assets(by_manifest.published()) == ["2/5/foo", "2/5/bar"]
    assert len(fake.requests(FIND_ASSETS)) == 1  # the plan was decided once


def test_a_failed_untagging_changes_nothing(by_manifest):
    fake = by_manifest.fake
    fake.add_assets(CUSTOMER, [FakeAsset(5, "foo"), FakeAsset(5, "bar")])
    assert by_manifest.put(registration("foo", "bar")).status_code == 200
    before = by_manifest.client.get(URL).data
    fake.fail_next(endpoint=PATCH_ASSETS, status=503)

    failed = by_manifest.put(registration("foo"))

    assert failed.status_code == 503
    assert by_manifest.client.get(URL).data == before
    assert by_manifest.status()["state"] == "complete"
    assert fake.assets.manifests("2/5/bar") == ["letters"]


def test_a_manifest_without_assets_asks_the_dlcs_nothing(by_manifest):
    answer = by_manifest.put(registration(batches=[]))

    assert answer.status_code == 200
    assert by_manifest.published()["items"] == []
    assert by_manifest.fake.requests() == []

