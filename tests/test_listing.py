"""The manifest listing (GET /{customer}/manifests) and the paged delivery log behind the console."""

from __future__ import annotations

import base64
import datetime as dt
import logging
import re

import pytest
import responses

from tests.conftest import ORCHESTRATOR, sample
from tests.manifest_states import (EVERY_STATE, api_settings, deliver, make_every_state,
                                   register)
from webhook import create_app, db, listing
from webhook.deliveries import Delivery
from webhook.domain import DeliveryKey, ManifestKey
from webhook.listing_schemas import decode_page, encode_page
from webhook.model_base import utcnow


@pytest.fixture
def app(settings):
    application = create_app(api_settings(settings))
    yield application
    db.dispose()


def list_json(client, admin, query: str = "", customer: int = 2) -> dict:
    response = client.get(f"/{customer}/manifests{query}", headers=admin)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def all_pages(client, admin, query: str) -> list[list[str]]:
    """Follow ``next`` from the first page to the last; the ids of each page."""
    pages, token = [], None
    while True:
        page = list_json(client, admin, query + (f"&page={token}" if token else ""))
        pages.append([item["id"] for item in page["items"]])
        token = page["next"]
        if token is None:
            return pages


# ----------------------------------------------------------------- states


def test_every_state_is_listed_as_status_reports_it(client, admin):
    made = make_every_state(client, admin)
    listed = {item["id"]: item for item in list_json(client, admin)["items"]}
    assert list(listed) == [m.slug for m in made]  # sorted by id
    for m in made:
        status = client.get(f"/2/manifests/{m.slug}/status", headers=admin).get_json()
        item = listed[m.slug]
        assert (item["state"], item["error"]) == (status["state"], status["error"]), m.slug
        assert item["state"] == m.state, m.slug
        assert (m.error is None) == (item["error"] is None), m.slug
        if m.error:
            assert m.error in item["error"], m.slug
        assert item["assets"]["missing"] == len(status["missingAssets"]) == m.missing, m.slug
        assert item["lastProcessed"] == status["lastProcessed"], m.slug


@pytest.mark.parametrize("state", ["ingesting", "complete", "rebuild-failed"])
def test_the_state_filter_keeps_exactly_that_state(client, admin, state):
    made = make_every_state(client, admin)
    expected = [m.slug for m in made if m.state == state]
    assert expected  # every state has manifests to keep
    assert all_pages(client, admin, f"?state={state}&limit=1") == [[slug] for slug in expected]


def test_a_summary_counts_batches_and_assets(client, admin):
    response = client.put("/2/manifests/two", headers=admin, data=(
        b'{"type": "Manifest", "label": {"en": ["Two batches"]}, "batches": [3101, 3102], '
        b'"paintedResources": [{"canvasPainting": {"canvasOrder": 0}, '
        b'"asset": {"id": "foo", "space": 5}}, {"canvasPainting": {"canvasOrder": 1}, '
        b'"asset": {"id": "bar", "space": 5}}, {"canvasPainting": {"canvasOrder": 2}, '
        b'"asset": {"id": "baz", "space": 5}}]}'))
    assert response.status_code == 202
    with responses.RequestsMock():  # the manifest still waits for 3102: no DLCS call
        assert deliver(client, 3101).get_json()["outcome"] == "batch-completed"
    [two] = list_json(client, admin)["items"]
    assert two == {
        "id": "two", "customer": 2, "label": "Two batches", "state": "ingesting",
        "error": None, "batches": {"total": 2, "complete": 1},
        # The sample notification says 2 assets finished, none failed.
        "assets": {"total": 3, "finished": 2, "errors": 0, "missing": 0},
        "lastProcessed": None, "published": False, "updatedAt": two["updatedAt"]}


# ----------------------------------------------------------------- paging


def test_pages_cover_every_manifest_once_in_order(client, admin):
    slugs = [f"m{n:02d}" for n in range(7)]
    for n, slug in enumerate(reversed(slugs)):
        register(client, admin, slug, 4000 + n)
    register(client, admin, "other-customer", 4100, customer=3)
    assert all_pages(client, admin, "?limit=3") == [slugs[0:3], slugs[3:6], slugs[6:7]]
    assert all_pages(client, admin, "?limit=7") == [slugs]
    assert [i["id"] for i in list_json(client, admin, customer=3)["items"]] == [
        "other-customer"]
    assert list_json(client, admin, customer=4) == {"items": [], "next": None}


def test_a_manifest_registered_between_pages_is_not_listed_twice(client, admin):
    for slug, batch in (("a", 5001), ("c", 5003), ("e", 5005)):
        register(client, admin, slug, batch)
    first = list_json(client, admin, "?limit=2")
    register(client, admin, "b", 5002)  # behind the cursor: the next page does not repeat a
    register(client, admin, "d", 5004)  # ahead of it: the next page shows it
    rest = list_json(client, admin, f"?limit=2&page={first['next']}")
    assert [i["id"] for i in first["items"]] == ["a", "c"]
    assert [i["id"] for i in rest["items"]] == ["d", "e"] and rest["next"] is None


@pytest.mark.parametrize("query, field", [
    ("?state=failed-somehow", "state"), ("?limit=0", "limit"), ("?limit=201", "limit"),
    ("?limit=ten", "limit"), ("?page=", "page"), ("?page=%00", "page"),
    ("?page=not-base64!", "page"), ("?page=" + "A" * 401, "page"),
    ("?page=" + encode_page(DeliveryKey(dt.datetime(2025, 1, 1), 1)), "page"),  # another list
    ("?page=" + encode_page(ManifestKey(3, "a")), "page"),  # another customer's
    ("?customer=2", "customer"),
])
def test_an_invalid_query_is_a_400_naming_the_parameter(client, admin, query, field):
    response = client.get(f"/2/manifests{query}", headers=admin)
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    assert list(response.get_json()["errors"]) == [field]


@pytest.mark.parametrize("token", [
    encode_page(ManifestKey(2, "letters")), encode_page(ManifestKey(2**31 - 1, "a" * 64))])
def test_a_page_token_reads_back_as_written(token):
    assert encode_page(decode_page(token, ManifestKey)) == token


@pytest.mark.parametrize("parts", [
    '["m",0,"a"]', '["m",2,"no/slashes"]', '["m",true,"a"]', '["m",2.0,"a"]', '["m",2]',
    '["d","2025-01-01T00:00:00+00:00",1]', '["d","yesterday",1]', '["d","2025-01-01",0]',
    '{"m": 2}', '"m"'])
def test_a_forged_page_token_is_refused(parts):
    token = base64.urlsafe_b64encode(parts.encode()).decode().rstrip("=")
    kind = DeliveryKey if parts.startswith('["d"') else ManifestKey
    with pytest.raises(ValueError):
        decode_page(token, kind)


def test_the_listing_needs_the_admin_token(client):
    response = client.get("/2/manifests", headers={"Authorization": "Bearer wrong"})
    assert response.status_code == 401


# ----------------------------------------------------------------- cost


def test_a_page_is_three_statements_whatever_its_size(app, client, admin, caplog):
    # Every other manifest complete, so that a page of 50 ingesting ones spans 100.
    with responses.RequestsMock() as dlcs:
        dlcs.get(re.compile(re.escape(f"{ORCHESTRATOR}/iiif-resource/v3/2/batch-query/")
                            + r"\d+\?cacheBust=.+"),
                 body=sample("named-query-2-assets.json"), content_type="application/json")
        for n in range(102):
            register(client, admin, f"m{n:03d}", 6000 + n)
            if n % 2:
                assert deliver(client, 6000 + n).status_code == 200
    counts = {}
    with app.app_context():
        for states in (None, ("ingesting",), ("complete",)):
            for limit in (5, 50):
                caplog.clear()
                with caplog.at_level(logging.DEBUG, logger="peewee"):
                    page = listing.list_manifests(now=utcnow(), customer=2, limit=limit,
                                                  states=states)
                counts[states, limit] = sum(1 for r in caplog.records if r.name == "peewee")
                assert len(page.rows) == limit and page.next is not None
                assert all(row.batches.total == 1 and row.assets.total == 2
                           for row in page.rows)
                assert states is None or {row.state for row in page.rows} == set(states)
    assert set(counts.values()) == {3}


# ----------------------------------------------------------------- deliveries


def test_the_delivery_log_pages_newest_first_through_equal_times(app, client):
    with app.app_context():
        same = dt.datetime(2025, 3, 1, 12, 0, 0)
        for n in range(5):
            Delivery.create(delivery_id=f"msg_{n}", transport="webhook", outcome="ignored",
                            received_at=same if n < 4 else same + dt.timedelta(seconds=1),
                            batch=7000 + n % 2, body=b"{}")
        pages, after = [], None
        while True:
            page = listing.list_deliveries(limit=2, after=after)
            pages.append([row.delivery_id for row in page.rows])
            after = page.next
            if after is None:
                break
        assert pages == [["msg_4", "msg_3"], ["msg_2", "msg_1"], ["msg_0"]]
        only = listing.list_deliveries(batch=7001, outcome="ignored", limit=5)
        assert [row.delivery_id for row in only.rows] == ["msg_3", "msg_1"]
        assert only.next is None
