"""Batches that never finish, and removing manifests: stalled, requeue, drop, delete over HTTP.

The service talks to the fake DLCS on a loopback port (named query, batch
states, queue), so every DLCS call here crosses a real socket; the database is
the one the run selects (SQLite or PostgreSQL).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pytest

from tests.conftest import sample, signed_headers
from tests.fake_dlcs import PATCH_ASSETS, QUEUE, FakeAsset, image_service_id
from webhook import create_app, db
from webhook.config import PROJECTIONS
from webhook.domain import DlcsAsset
from webhook.maintenance import finished as maintenance_finished
from webhook.model_base import utcnow
from webhook.models import Batch, Manifest

URL = "/2/manifests/letters"
PROBLEM = "application/problem+json"
FOO, BAR = FakeAsset(5, "foo"), FakeAsset(5, "bar")


@pytest.fixture
def app(settings, fake_dlcs, tmp_path):
    application = create_app(dataclasses.replace(
        settings, dlcs_api_url=fake_dlcs.url, dlcs_orchestrator_url=fake_dlcs.url))
    yield application
    db.dispose()


def register(client, admin, batches: list[int] | None) -> dict:
    """Register the sample manifest (foo on p1, bar on p2) naming ``batches``."""
    document = json.loads(sample("registration-2-assets.json"))
    if batches is None:
        del document["batches"]
    else:
        document["batches"] = batches
    response = client.put(URL, json=document, headers=admin)
    assert response.status_code in (200, 202), response.get_json()
    return response.get_json()


def notify(client, batch: int, msg_id: str | None = None, count: int = 1):
    document = json.loads(sample("notification-current.json"))
    document.update(id=batch, count=count, completed=count)
    body = json.dumps(document).encode()
    return client.post("/webhooks/batch-completed", data=body,
                       headers=signed_headers(body, msg_id))


def status_of(client, admin) -> dict:
    response = client.get(URL + "/status", headers=admin)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def age_batch(batch_id: int, **ago) -> dt.datetime:
    """Make a batch look recorded ``ago`` (hours=7...) ago; return when."""
    when = utcnow() - dt.timedelta(**ago)
    Batch.update(created_at=when).where(Batch.id == batch_id).execute()
    return when


def batch_states(client, admin) -> dict[int, str]:
    return {b["id"]: b["status"] for b in status_of(client, admin)["batches"]}


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.get_json()
    assert response.mimetype == PROBLEM
    return response.get_json()


def painted_services(client) -> list[str]:
    """The image service ids the published manifest paints, in canvas order."""
    response = client.get(URL)
    assert response.status_code == 200, response.get_json()
    return [annotation["body"]["service"][1]["id"]
            for canvas in response.get_json()["items"]
            for annotation in canvas["items"][0]["items"]]


# ----------------------------------------------------------------- stalled


def test_a_batch_ingesting_for_too_long_is_reported_stalled(client, admin, settings):
    register(client, admin, [1234, 1235, 1236])
    since = age_batch(1235, seconds=settings.stalled_batch_seconds + 3600)
    age_batch(1236, seconds=settings.stalled_batch_seconds - 60)  # not yet

    status = status_of(client, admin)

    [stalled] = status["stalled"]
    assert stalled["batch"] == 1235 and stalled["reason"] == "unfinished"
    assert settings.stalled_batch_seconds + 3600 <= stalled["age"] < \
        settings.stalled_batch_seconds + 3700
    assert stalled["since"] == since.isoformat(timespec="microseconds") + "Z"
    assert status["state"] == "ingesting"


def test_reconcile_records_and_reports_a_batch_the_dlcs_superseded(client, admin, app,
                                                                   fake_dlcs):
    fake_dlcs.add_batch(2, 1234, [FOO])
    fake_dlcs.add_batch(2, 1235, [BAR])
    register(client, admin, [1234, 1235])
    fake_dlcs.finish_batch(2, 1234)
    fake_dlcs.supersede_batch(2, 1235)

    reconciled = client.post(URL + "/reconcile", headers=admin)

    assert reconciled.status_code == 200
    body = reconciled.get_json()
    assert (body["outcome"], body["completed"]) == ("batch-completed", [1234])
    assert [(s["batch"], s["reason"]) for s in body["stalled"]] == [(1235, "superseded")]
    assert [(s["batch"], s["reason"]) for s in status_of(client, admin)["stalled"]] == [
        (1235, "superseded")]
    # Recorded: the command says so too, with the batch's age.
    result = app.test_cli_runner().invoke(args=["reconcile", "--older-than", "0s"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "2/letters: completed none -> unchanged; stalled 1235 (superseded, 0m00s)"]


def test_the_command_gives_each_stalled_batch_its_age(client, admin, app, fake_dlcs):
    fake_dlcs.add_batch(2, 1234, [FOO])
    fake_dlcs.add_batch(2, 1235, [BAR])
    register(client, admin, [1234, 1235])
    age_batch(1234, days=2, hours=3, minutes=10)
    age_batch(1235, hours=7, minutes=5, seconds=30)

    result = app.test_cli_runner().invoke(args=["reconcile", "--older-than", "30m"])

    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "2/letters: completed none -> unchanged; stalled 1234 (unfinished, 2d3h), "
        "1235 (unfinished, 7h05m)"]


# ----------------------------------------------------------------- drop a batch


def test_dropping_the_last_ingesting_batch_publishes_without_it(client, admin, fake_dlcs):
    fake_dlcs.add_batch(2, 1234, [FOO])
    fake_dlcs.add_batch(2, 1235, [BAR])
    register(client, admin, [1234, 1235])
    assert notify(client, 1234).get_json()["outcome"] == "batch-completed"

    dropped = client.delete(URL + "/batches/1235", headers=admin)

    assert dropped.status_code == 200
    assert dropped.get_json() == {"outcome": "manifest-completed", "batch": 1235,
                                  "manifest": "2/letters"}
    assert painted_services(client) == [image_service_id(2, FOO)]
    assert fake_dlcs.calls(2, [1234]) == 1 and fake_dlcs.total_named_queries == 1
    status = status_of(client, admin)
    assert status["state"] == "complete" and status["stalled"] == []
    assert batch_states(client, admin) == {1234: "completed", 1235: "dropped"}
    assert status["missingAssets"] == ["2/5/bar"]

    # Its notification comes after all: ignored, and the log says why.
    late = notify(client, 1235, "msg_late")
    assert late.status_code == 200
    assert late.get_json() == {"outcome": "ignored", "batch": 1235, "manifest": None}
    [logged] = client.get("/deliveries?batch=1235", headers=admin).get_json()
    assert logged["outcome"] == "ignored"
    assert logged["error"] == "the batch was dropped from manifest 2/letters"

    # Dropping it again changes nothing and rebuilds nothing.
    again = client.delete(URL + "/batches/1235", headers=admin)
    assert again.get_json() == {"outcome": "batch-dropped", "batch": 1235,
                                "manifest": "2/letters"}
    assert fake_dlcs.total_named_queries == 1


def test_dropping_one_of_several_ingesting_batches_waits_for_the_others(client, admin,
                                                                       fake_dlcs):
    fake_dlcs.add_batch(2, 1234, [FOO])
    fake_dlcs.add_batch(2, 1235, [BAR])
    register(client, admin, [1234, 1235, 1236])

    dropped = client.delete(URL + "/batches/1236", headers=admin)

    assert dropped.status_code == 200
    assert dropped.get_json() == {"outcome": "batch-dropped", "batch": 1236,
                                  "manifest": "2/letters"}
    assert status_of(client, admin)["state"] == "ingesting"
    assert client.get(URL).status_code == 202
    assert notify(client, 1234).get_json()["outcome"] == "batch-completed"
    assert notify(client, 1235).get_json()["outcome"] == "manifest-completed"
    assert painted_services(client) == [image_service_id(2, FOO), image_service_id(2, BAR)]
    assert fake_dlcs.calls(2, [1234, 1235]) == 1 and fake_dlcs.total_named_queries == 1


def test_a_registration_naming_a_dropped_batch_again_waits_for_it(client, admin, fake_dlcs):
    fake_dlcs.add_batch(2, 1234, [FOO, BAR])
    register(client, admin, [1234, 1235])
    client.delete(URL + "/batches/1235", headers=admin)
    assert notify(client, 1235, "msg_while_dropped").get_json()["outcome"] == "ignored"

    register(client, admin, [1234, 1235])

    # The completion ignored while it was dropped now counts, as an early one does.
    assert batch_states(client, admin) == {1234: "ingesting", 1235: "completed"}
    assert notify(client, 1234).get_json()["outcome"] == "manifest-completed"


def test_a_completed_batch_cannot_be_dropped(client, admin, fake_dlcs):
    register(client, admin, [1234, 1235])
    notify(client, 1234)
    body = assert_problem(client.delete(URL + "/batches/1234", headers=admin), 409)
    assert "has completed" in body["detail"]
    assert batch_states(client, admin) == {1234: "completed", 1235: "ingesting"}


@pytest.mark.parametrize("url", [URL + "/batches/999", "/2/manifests/unknown/batches/1234",
                                 URL + f"/batches/{2**63}", URL + "/batches/0",
                                 URL + "/batches/-1", URL + "/batches/x"])
def test_dropping_a_batch_the_manifest_does_not_have_is_404(client, admin, url):
    register(client, admin, [1234])
    assert_problem(client.delete(url, headers=admin), 404)
    assert batch_states(client, admin) == {1234: "ingesting"}


def test_a_failed_rebuild_after_a_drop_is_finished_by_dropping_again(client, admin, fake_dlcs):
    fake_dlcs.add_batch(2, 1234, [FOO, BAR])
    register(client, admin, [1234, 1235])
    notify(client, 1234)
    fake_dlcs.fail_next(1, status=500)

    failed = client.delete(URL + "/batches/1235", headers=admin)

    body = assert_problem(failed, 503)
    assert body["type"].endswith("rebuild-failed") and "500" in body["detail"]
    assert status_of(client, admin)["state"] == "rebuild-failed"
    again = client.delete(URL + "/batches/1235", headers=admin)
    assert again.get_json()["outcome"] == "manifest-completed"
    assert status_of(client, admin)["state"] == "complete"


# ----------------------------------------------------------------- requeue


def test_requeue_queues_the_unfinished_assets_in_place_of_the_stalled_batch(client, admin,
                                                                            fake_dlcs):
    fake_dlcs.add_batch(2, 1234, [FOO])
    fake_dlcs.add_batch(2, 1235, [BAR])
    register(client, admin, [1234, 1235])
    assert notify(client, 1234).get_json()["outcome"] == "batch-completed"
    fake_dlcs.supersede_batch(2, 1235)

    requeued = client.post(URL + "/requeue", headers=admin)

    assert requeued.status_code == 202, requeued.get_json()
    [fresh] = requeued.get_json()["batches"]
    assert requeued.get_json() == {"outcome": "requeued", "manifest": "2/letters",
                                   "assets": 1, "batches": [fresh], "dropped": [1235]}
    # The named query over the completed batch told what was finished: foo only.
    assert fake_dlcs.calls(2, [1234]) == 1
    [queued] = fake_dlcs.requests(QUEUE)
    assert queued.status == 201
    assert batch_states(client, admin) == {1234: "completed", 1235: "dropped",
                                           fresh: "ingesting"}
    assert notify(client, 1235).get_json()["outcome"] == "ignored"

    completed = notify(client, fresh)
    assert completed.get_json() == {"outcome": "manifest-completed", "batch": fresh,
                                    "manifest": "2/letters"}
    assert painted_services(client) == [image_service_id(2, FOO), image_service_id(2, BAR)]
    assert fake_dlcs.calls(2, [1234, fresh]) == 1


def test_requeue_with_no_completed_batch_queues_every_asset(client, admin, fake_dlcs):
    register(client, admin, [1234])
    age_batch(1234, hours=9)

    requeued = client.post(URL + "/requeue", headers=admin)

    assert requeued.status_code == 202
    body = requeued.get_json()
    assert (body["assets"], body["dropped"], len(body["batches"])) == (2, [1234], 1)
    assert fake_dlcs.total_named_queries == 0
    assert status_of(client, admin)["stalled"] == []


def test_requeue_of_a_manifest_the_service_queued_replaces_its_batches(client, admin,
                                                                      fake_dlcs):
    register(client, admin, None)
    [first] = [c for c in fake_dlcs.requests(QUEUE)]
    [original] = status_of(client, admin)["batches"]

    requeued = client.post(URL + "/requeue", headers=admin)

    assert requeued.status_code == 202
    [fresh] = requeued.get_json()["batches"]
    assert requeued.get_json()["dropped"] == [original["id"]] and fresh != original["id"]
    assert len(fake_dlcs.requests(QUEUE)) == 2 and first.status == 201
    # The same PUT again does not queue a third time: the registration is queued.
    register(client, admin, None)
    assert len(fake_dlcs.requests(QUEUE)) == 2
    assert notify(client, fresh, count=2).get_json()["outcome"] == "manifest-completed"


def test_requeue_with_nothing_left_to_queue_drops_and_publishes(client, admin, fake_dlcs):
    # Both assets were ingested again in batch 1234, leaving 1235 superseded.
    fake_dlcs.add_batch(2, 1234, [FOO, BAR])
    register(client, admin, [1234, 1235])
    notify(client, 1234)

    requeued = client.post(URL + "/requeue", headers=admin)

    assert requeued.status_code == 200
    assert requeued.get_json() == {"outcome": "manifest-completed", "manifest": "2/letters",
                                   "assets": 0, "batches": [], "dropped": [1235]}
    assert fake_dlcs.requests(QUEUE) == []
    assert painted_services(client) == [image_service_id(2, FOO), image_service_id(2, BAR)]


def test_requeue_with_nothing_ingesting_is_409(client, admin, fake_dlcs):
    fake_dlcs.add_batch(2, 1234, [FOO, BAR])
    register(client, admin, [1234])
    notify(client, 1234)
    body = assert_problem(client.post(URL + "/requeue", headers=admin), 409)
    assert "nothing to requeue" in body["detail"]
    assert fake_dlcs.requests(QUEUE) == []


def test_requeue_of_an_unknown_manifest_is_404(client, admin):
    assert_problem(client.post("/2/manifests/unknown/requeue", headers=admin), 404)


def test_a_failed_queue_request_records_nothing_and_can_be_repeated(client, admin, fake_dlcs):
    register(client, admin, [1234])
    fake_dlcs.fail_next(1, status=500, endpoint=QUEUE)

    failed = client.post(URL + "/requeue", headers=admin)

    body = assert_problem(failed, 503)
    assert "500" in body["detail"]
    assert batch_states(client, admin) == {1234: "ingesting"}
    # The claim it held is released: a second try goes through at once.
    retried = client.post(URL + "/requeue", headers=admin)
    assert retried.status_code == 202 and retried.get_json()["dropped"] == [1234]


def test_a_rejection_by_the_dlcs_is_422(client, admin, fake_dlcs):
    register(client, admin, [1234])
    fake_dlcs.fail_next(1, status=400, endpoint=QUEUE)
    body = assert_problem(client.post(URL + "/requeue", headers=admin), 422)
    assert body["type"].endswith("dlcs-rejected")
    assert batch_states(client, admin) == {1234: "ingesting"}


def test_requeue_without_the_dlcs_api_is_503(settings, admin):
    application = create_app(settings)  # DLCS_API_URL unset
    try:
        client = application.test_client()
        register(client, admin, [1234])
        body = assert_problem(client.post(URL + "/requeue", headers=admin), 503)
        assert "DLCS_API_URL is not configured" in body["detail"]
        assert batch_states(client, admin) == {1234: "ingesting"}
    finally:
        db.dispose()


def test_requeue_and_delete_wait_for_a_rebuild_in_progress(client, admin, fake_dlcs):
    register(client, admin, [1234])
    manifest = Manifest.get(Manifest.slug == "letters")
    assert Manifest.claim_rebuild(manifest.id, utcnow(), dt.timedelta(minutes=5))

    for response in (client.post(URL + "/requeue", headers=admin),
                     client.delete(URL, headers=admin)):
        body = assert_problem(response, 503)
        assert body["type"].endswith("rebuild-in-progress")
        assert int(response.headers["Retry-After"]) > 0
    assert fake_dlcs.requests(QUEUE) == []
    assert batch_states(client, admin) == {1234: "ingesting"}


# ----------------------------------------------------------------- delete


def test_delete_removes_the_registration_and_its_document(client, admin, fake_dlcs, settings):
    fake_dlcs.add_batch(2, 1234, [FOO, BAR])
    register(client, admin, [1234])
    assert notify(client, 1234, "msg_first").get_json()["outcome"] == "manifest-completed"
    def stored() -> list:
        # Each rebuild stores a version of its own (letters.{version}.json).
        return list((settings.storage.directory / "2" / "manifests").glob("letters*"))

    assert len(stored()) == 1

    deleted = client.delete(URL, headers=admin)

    assert deleted.status_code == 204 and deleted.data == b""
    assert stored() == []
    assert_problem(client.get(URL), 404)
    assert_problem(client.get(URL + "/status", headers=admin), 404)
    assert notify(client, 1234, "msg_after").get_json() == {
        "outcome": "ignored", "batch": 1234, "manifest": None}
    assert_problem(client.delete(URL, headers=admin), 404)
    # A new registration under the same id starts afresh, and takes the completion
    # that was ignored meanwhile as any completion that comes before a registration.
    again = register(client, admin, [1234])
    assert again["state"] == "complete" and again["batches"][0]["status"] == "completed"
    assert len(stored()) == 1


def test_delete_settles_deliveries_that_waited_for_its_rebuild(client, admin, fake_dlcs):
    fake_dlcs.add_batch(2, 1234, [FOO, BAR])
    register(client, admin, [1234])
    fake_dlcs.fail_next(1, status=500)
    assert notify(client, 1234, "msg_pending").status_code == 503

    assert client.delete(URL, headers=admin).status_code == 204

    assert client.get("/deliveries?outcome=failed", headers=admin).get_json() == []
    [settled] = client.get("/deliveries?batch=1234", headers=admin).get_json()
    assert (settled["id"], settled["outcome"], settled["error"]) == (
        "msg_pending", "ignored", "the manifest was deleted")


def test_delete_keeps_the_registration_when_the_store_fails(client, admin, settings):
    register(client, admin, [1234])
    # A directory where the document would be: the store cannot delete it.
    blocked = settings.storage.directory / "2" / "manifests" / "letters"
    blocked.mkdir(parents=True)

    body = assert_problem(client.delete(URL, headers=admin), 503)

    assert "cannot delete" in body["detail"]
    assert status_of(client, admin)["batches"][0]["id"] == 1234
    blocked.rmdir()
    assert client.delete(URL, headers=admin).status_code == 204


def test_delete_of_an_unknown_manifest_is_404(client, admin):
    assert_problem(client.delete("/2/manifests/unknown", headers=admin), 404)
    assert_problem(client.delete("/2/manifests/not.an.id", headers=admin), 404)


# ----------------------------------------------------------------- manifest projection


@pytest.fixture
def by_manifest(settings, fake_dlcs):
    application = create_app(dataclasses.replace(
        settings, dlcs_api_url=fake_dlcs.url, dlcs_orchestrator_url=fake_dlcs.url,
        dlcs_projection="manifest", dlcs_named_query=PROJECTIONS["manifest"]))
    yield application.test_client()
    db.dispose()


def test_requeue_by_manifest_queues_and_tags_what_the_dlcs_lacks(by_manifest, admin,
                                                                 fake_dlcs):
    client = by_manifest
    fake_dlcs.add_batch(2, 500, [FOO])  # foo is in the DLCS already; bar is not
    register(client, admin, [1234])     # a batch that never delivers bar
    assert fake_dlcs.assets.manifests("2/5/foo") == ["letters"]

    requeued = client.post(URL + "/requeue", headers=admin)

    assert requeued.status_code == 202, requeued.get_json()
    [fresh] = requeued.get_json()["batches"]
    assert (requeued.get_json()["assets"], requeued.get_json()["dropped"]) == (1, [1234])
    [queued] = fake_dlcs.requests(QUEUE)
    assert [member["id"] for member in queued.body["member"]] == ["bar"]
    assert fake_dlcs.assets.manifests("2/5/bar") == ["letters"]
    assert notify(client, fresh).get_json()["outcome"] == "manifest-completed"
    assert painted_services(client) == [image_service_id(2, FOO), image_service_id(2, BAR)]


def test_delete_by_manifest_untags_every_asset_first(by_manifest, admin, fake_dlcs):
    client = by_manifest
    fake_dlcs.add_batch(2, 500, [FOO, BAR])
    assert register(client, admin, [])["state"] == "complete"
    assert fake_dlcs.assets.manifests("2/5/bar") == ["letters"]

    fake_dlcs.fail_next(1, status=500, endpoint=PATCH_ASSETS)
    failed = client.delete(URL, headers=admin)
    assert_problem(failed, 503)
    assert client.get(URL).status_code == 200  # nothing was deleted

    assert client.delete(URL, headers=admin).status_code == 204
    assert fake_dlcs.assets.manifests("2/5/foo") == []
    assert fake_dlcs.assets.manifests("2/5/bar") == []
    untagging = [call for call in fake_dlcs.requests(PATCH_ASSETS)
                 if call.body["operation"] == "remove" and call.status == 200]
    assert [m["id"] for call in untagging for m in call.body["member"]] == ["2/5/foo", "2/5/bar"]
    assert client.get(URL).status_code == 404


@pytest.mark.parametrize(("ingesting", "finished", "done"), [
    (False, dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc), True),
    (None, dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc), True),
    (True, dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc), False),  # ingested again
    (True, None, False),
    (False, None, False),
    (None, None, False),
])
def test_an_asset_is_finished_once_the_dlcs_is_done_with_it(ingesting, finished, done):
    asset = DlcsAsset("2/5/foo", error=None, ingesting=ingesting, finished=finished,
                      manifests=())
    assert maintenance_finished(asset) is done
