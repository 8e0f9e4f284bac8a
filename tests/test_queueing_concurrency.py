"""Identical registrations without batches at the same moment queue the assets once.

Real threads against the real database (SQLite or PostgreSQL, as the run
selects) and a DLCS API on a loopback port that counts queue requests and can
hold them. Before, on PostgreSQL two PUTs of a new manifest could both find no
manifest and both queue; on both backends a PUT arriving while another was
queueing answered ``200`` with the state ``complete`` (no batch was recorded
yet, so nothing looked ingesting).
"""

from __future__ import annotations

import dataclasses
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import sample
from tests.fake_dlcs import QUEUE
from webhook import create_app, db
from webhook.model_base import utcnow
from webhook.models import Manifest

URL = "/2/manifests/letters"


@pytest.fixture
def app(settings, fake_dlcs):
    application = create_app(dataclasses.replace(
        settings, dlcs_api_url=fake_dlcs.url, dlcs_credentials=("key", "secret")))
    yield application
    fake_dlcs.release()
    db.dispose()


def registration(slug: str = "letters") -> bytes:
    body = json.loads(sample("registration-2-assets.json"))
    del body["batches"]
    for row in body["paintedResources"]:
        row["asset"]["id"] = f"{slug}-{row['asset']['id']}"
    return json.dumps(body).encode()


def put(app, admin, slug: str = "letters", barrier: threading.Barrier | None = None):
    client = app.test_client()
    if barrier is not None:
        barrier.wait(timeout=10)
    response = client.put(f"/2/manifests/{slug}", data=registration(slug), headers=admin)
    return response.status_code, response.get_json()


def test_a_put_while_an_identical_one_queues_neither_queues_nor_says_complete(app, admin,
                                                                             fake_dlcs):
    fake_dlcs.hold_each(QUEUE)
    with ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(put, app, admin)
        fake_dlcs.wait_for_calls(QUEUE, 1)
        # The first PUT is at the DLCS: the same registration again.
        status, body = put(app, admin)
        assert (status, body["state"], body["batches"]) == (202, "ingesting", [])
        fake_dlcs.release_call(0)
        status, body = first.result(timeout=30)

    assert (status, body["state"]) == (202, "ingesting")
    assert len(body["batches"]) == 1
    assert len(fake_dlcs.requests(QUEUE)) == 1
    status = app.test_client().get(f"{URL}/status", headers=admin).get_json()
    assert (status["state"], status["error"]) == ("ingesting", None)
    assert status["batches"] == body["batches"]


@pytest.mark.parametrize("copies", [2, 4])
def test_identical_puts_at_the_same_moment_queue_once(app, admin, fake_dlcs, copies):
    slugs = [f"m{n:02d}" for n in range(12)]
    barrier = threading.Barrier(copies * len(slugs))
    with ThreadPoolExecutor(max_workers=copies * len(slugs)) as pool:
        answers = [(slug, pool.submit(put, app, admin, slug, barrier))
                   for slug in slugs for _ in range(copies)]
        results = [(slug, future.result(timeout=60)) for slug, future in answers]

    # One queue request (of 2 assets) per manifest, whatever the number of PUTs.
    assert len(fake_dlcs.requests(QUEUE)) == len(slugs)
    assert {(status, body["state"]) for _, (status, body) in results} == {(202, "ingesting")}
    client = app.test_client()
    for slug in slugs:
        status = client.get(f"/2/manifests/{slug}/status", headers=admin).get_json()
        assert len(status["batches"]) == 1, (slug, status)


def test_an_identical_put_takes_over_queueing_that_was_interrupted(app, admin, fake_dlcs):
    fake_dlcs.hold_each(QUEUE)
    with ThreadPoolExecutor(max_workers=2) as pool:
        first = pool.submit(put, app, admin)
        fake_dlcs.wait_for_calls(QUEUE, 1)
        # As a worker that died while queueing leaves it, once its lease has run out:
        Manifest.update(queueing_until=utcnow()).where(
            (Manifest.customer == 2) & (Manifest.slug == "letters")).execute()
        db.close()
        status = app.test_client().get(f"{URL}/status", headers=admin).get_json()
        assert status["state"] == "ingesting"
        assert "was interrupted" in status["error"]
        # The same registration again queues the assets itself.
        second = pool.submit(put, app, admin)
        fake_dlcs.wait_for_calls(QUEUE, 2)
        fake_dlcs.release()
        assert first.result(timeout=30)[0] == 202
        assert second.result(timeout=30)[0] == 202

    assert len(fake_dlcs.requests(QUEUE)) == 2
