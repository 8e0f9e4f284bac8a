"""Batches that finish with errors, and manifests none of whose assets arrived (issue 13).

As in ``test_projection``: the app in-process on the suite's database, the
DLCS a loopback fake reached over real HTTP by a real client.
"""

from __future__ import annotations

import dataclasses

import pytest

from tests.fake_dlcs import BATCH_ASSETS, FakeAsset
from tests.test_projection import CUSTOMER, URL, Service, painted_assets, registration, service_for
from webhook import create_app, db
from webhook.dlcs import DlcsClient, make_session

FOO, BAR = FakeAsset(5, "foo"), FakeAsset(5, "bar")
BAR_ERROR = "Failed to fetch origin 'https://example.org/bar.jpg': 404 Not Found"


@pytest.fixture
def service(settings, fake_dlcs, admin):
    service, session = service_for(settings, fake_dlcs, admin, "batches")
    yield service
    session.close()
    db.dispose()


def deliveries(service: Service) -> list[dict]:
    answer = service.client.get("/deliveries", headers=service.admin)
    assert answer.status_code == 200
    return answer.get_json()


def test_failed_assets_are_read_and_listed(service):
    service.fake.add_batch(CUSTOMER, 800, [FOO, BAR])
    service.fake.finish_batch(CUSTOMER, 800, failed={"2/5/bar": BAR_ERROR})
    assert service.put(registration("foo", "bar", batches=[800])).status_code == 202

    answer = service.complete(800, 2, errors=1)

    assert answer.status_code == 200
    assert answer.get_json()["outcome"] == "manifest-completed"
    status = service.status()
    assert status["state"] == "complete-with-errors"
    assert status["failedAssets"] == [{"asset": "2/5/bar", "canvas": "p1", "error": BAR_ERROR}]
    assert status["missingAssets"] == ["2/5/bar"]
    assert painted_assets(service.published()) == ["2/5/foo"]
    [logged] = deliveries(service)
    assert (logged["outcome"], logged["failedAssets"]) == ("manifest-completed", 1)
    assert [call.path for call in service.fake.requests(BATCH_ASSETS)] == [
        f"/customers/{CUSTOMER}/queue/batches/800/assets"]


def test_an_error_text_no_database_can_hold_is_recorded_with_replacement_characters(service):
    # JSON carries NUL and lone surrogates; PostgreSQL refuses the one, UTF-8 the other.
    service.fake.add_batch(CUSTOMER, 800, [FOO, BAR])
    service.fake.finish_batch(CUSTOMER, 800, failed={"2/5/bar": "bad\u0000origin \ud800!"})
    assert service.put(registration("foo", "bar", batches=[800])).status_code == 202

    answer = service.complete(800, 2, errors=1)

    assert answer.get_json()["outcome"] == "manifest-completed"
    status = service.status()
    assert status["failedAssets"] == [{"asset": "2/5/bar", "canvas": "p1",
                                       "error": "bad\ufffdorigin \ufffd!"}]


def test_a_batch_with_errors_before_the_last_reads_its_failures_at_once(service):
    service.fake.add_batch(CUSTOMER, 800, [FOO, BAR])
    service.fake.add_batch(CUSTOMER, 801, [FakeAsset(5, "baz")])
    service.fake.finish_batch(CUSTOMER, 800, failed={"2/5/bar": BAR_ERROR})
    service.put(registration("foo", "bar", "baz", batches=[800, 801]))

    assert service.complete(800, 2, errors=1).get_json()["outcome"] == "batch-completed"

    status = service.status()
    assert status["state"] == "ingesting"
    assert status["failedAssets"] == [{"asset": "2/5/bar", "canvas": "p1", "error": BAR_ERROR}]


def test_an_api_outage_does_not_block_completion_and_reconcile_reads_later(service):
    service.fake.add_batch(CUSTOMER, 800, [FOO, BAR])
    service.fake.finish_batch(CUSTOMER, 800, failed={"2/5/bar": BAR_ERROR})
    service.put(registration("foo", "bar", batches=[800]))
    service.fake.fail_next(endpoint=BATCH_ASSETS, status=503)

    answer = service.complete(800, 2, errors=1)

    assert answer.status_code == 200 and answer.get_json()["outcome"] == "manifest-completed"
    assert painted_assets(service.published()) == ["2/5/foo"]
    status = service.status()
    assert (status["state"], status["failedAssets"]) == ("complete-with-errors", [])
    reconciled = service.client.post(f"{URL}/reconcile", headers=service.admin)
    assert reconciled.status_code == 200
    assert reconciled.get_json()["outcome"] == "unchanged"
    assert service.status()["failedAssets"] == [
        {"asset": "2/5/bar", "canvas": "p1", "error": BAR_ERROR}]
    # Read once: a second reconcile asks the DLCS nothing more.
    service.client.post(f"{URL}/reconcile", headers=service.admin)
    assert len(service.fake.requests(BATCH_ASSETS)) == 2


def test_without_the_api_failures_are_counted_but_not_named(settings, fake_dlcs, admin):
    session = make_session(retries=0)
    session.trust_env = False
    dlcs = DlcsClient(orchestrator_url=fake_dlcs.url, api_url=None, timeout=5, session=session)
    app = create_app(dataclasses.replace(settings, dlcs_orchestrator_url=fake_dlcs.url),
                     dlcs=dlcs)
    service = Service(app.test_client(), fake_dlcs, admin)
    fake_dlcs.add_batch(CUSTOMER, 800, [FOO, BAR])
    fake_dlcs.finish_batch(CUSTOMER, 800, failed={"2/5/bar": BAR_ERROR})
    service.put(registration("foo", "bar", batches=[800]))

    answer = service.complete(800, 2, errors=1)

    assert answer.get_json()["outcome"] == "manifest-completed"
    status = service.status()
    assert (status["state"], status["failedAssets"]) == ("complete-with-errors", [])
    assert fake_dlcs.requests(BATCH_ASSETS) == []
    session.close()
    db.dispose()


def test_every_asset_failed_is_final_until_registered_again(service):
    fake = service.fake
    fake.add_batch(CUSTOMER, 800, [FOO, BAR])
    fake.finish_batch(CUSTOMER, 800, failed={"2/5/foo": "bad tiff", "2/5/bar": BAR_ERROR})
    service.put(registration("foo", "bar", batches=[800]))

    answer = service.complete(800, 2, errors=2)

    # Nothing a redelivery could change: 200, not a 503 the DLCS would retry.
    assert answer.status_code == 200
    assert answer.get_json() == {"outcome": "manifest-failed", "batch": 800,
                                 "manifest": "2/letters"}
    status = service.status()
    assert status["state"] == "failed"
    assert "Every asset failed at the DLCS (2 errors in 1 batch)" in status["error"]
    assert [a["asset"] for a in status["failedAssets"]] == ["2/5/foo", "2/5/bar"]
    assert service.client.get(URL).status_code == 202  # never published
    [logged] = deliveries(service)
    assert logged["outcome"] == "manifest-failed" and "Every asset failed" in logged["error"]
    assert service.complete(800, 2, errors=2).get_json()["outcome"] == "duplicate"
    reconciled = service.client.post(f"{URL}/reconcile", headers=service.admin)
    assert reconciled.get_json()["outcome"] == "unchanged"
    named_queries = fake.total_named_queries

    # The assets are ingested again in a new batch; registering with it starts over.
    fake.add_batch(CUSTOMER, 801, [FOO, BAR])
    assert service.put(registration("foo", "bar", batches=[801])).status_code == 202
    assert service.status()["state"] == "ingesting"
    assert service.complete(801, 2).get_json()["outcome"] == "manifest-completed"
    assert fake.total_named_queries == named_queries + 1
    assert painted_assets(service.published()) == ["2/5/foo", "2/5/bar"]
    assert service.status()["state"] == "complete"


def test_a_rebuild_starts_a_failed_manifest_again(service):
    fake = service.fake
    fake.add_batch(CUSTOMER, 800, [FOO])
    fake.finish_batch(CUSTOMER, 800, failed={"2/5/foo": "bad tiff"})
    service.put(registration("foo", batches=[800]))
    assert service.complete(800, 1, errors=1).get_json()["outcome"] == "manifest-failed"

    again = service.client.post(f"{URL}/rebuild", headers=service.admin)
    assert again.status_code == 200 and again.get_json()["outcome"] == "manifest-failed"

    fake.add_batch(CUSTOMER, 800, [FOO])  # re-ingested in the same batch, successfully
    rebuilt = service.client.post(f"{URL}/rebuild", headers=service.admin)
    assert rebuilt.status_code == 200 and rebuilt.get_json()["outcome"] == "manifest-completed"
    assert painted_assets(service.published()) == ["2/5/foo"]
    # The batch still says its one asset failed; the state says what the DLCS said.
    assert service.status()["state"] == "complete-with-errors"


def test_a_named_query_404_with_some_assets_ingested_stays_retryable(service):
    # A 404 answers an unknown query name too: only batches that say every asset
    # failed make it final.
    service.fake.add_batch(CUSTOMER, 800, [FOO, BAR])
    service.fake.fail_next(status=404)
    service.put(registration("foo", "bar", batches=[800]))

    answer = service.complete(800, 2)

    assert answer.status_code == 503
    assert service.status()["state"] == "rebuild-failed"
