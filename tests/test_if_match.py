"""Optimistic concurrency of registrations: the registration's ETag and If-Match on PUT.

The ETag a PUT and ``status`` answer is the registration's version (replaced
by every registration); a PUT with ``If-Match`` registers only while one of
its tags is that version. The race is run with real threads on the database
the run selects (SQLite or PostgreSQL).
"""

from __future__ import annotations

import dataclasses
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import responses

from tests.conftest import sample
from webhook import create_app, db

URL = "/2/manifests/letters"
PROBLEM = "application/problem+json"


def registration(*batches: int) -> dict:
    document = json.loads(sample("registration-2-assets.json"))
    document["batches"] = list(batches)
    return document


def put(client, admin, document: dict, if_match: str | None = None):
    headers = dict(admin)
    if if_match is not None:
        headers["If-Match"] = if_match
    return client.put(URL, json=document, headers=headers)


def batches_of(client, admin) -> list[int]:
    return [b["id"] for b in client.get(URL + "/status", headers=admin).get_json()["batches"]]


def assert_precondition_failed(response) -> None:
    assert response.status_code == 412, response.get_json()
    assert response.mimetype == PROBLEM
    body = response.get_json()
    assert body["type"] == "urn:dlcs-webhook:problem:precondition-failed"
    assert body["status"] == 412 and body["detail"]


def test_put_and_status_answer_the_registrations_etag(client, admin):
    first = put(client, admin, registration(1234))
    etag = first.headers["ETag"]
    status = client.get(URL + "/status", headers=admin)
    assert status.headers["ETag"] == status.get_json()["etag"] == etag

    second = put(client, admin, registration(1234))  # the same content: a new registration
    assert second.headers["ETag"] != etag
    assert client.get(URL + "/status", headers=admin).headers["ETag"] == second.headers["ETag"]


def test_a_put_naming_the_current_etag_registers(client, admin):
    etag = put(client, admin, registration(1234)).headers["ETag"]

    replaced = put(client, admin, registration(1235), if_match=etag)

    assert replaced.status_code == 202
    assert batches_of(client, admin) == [1235]


@pytest.mark.parametrize("tags", ['"stale", {etag}', "{etag}, W/{etag}", "*"])
def test_any_current_tag_in_the_list_matches(client, admin, tags):
    etag = put(client, admin, registration(1234)).headers["ETag"]
    assert put(client, admin, registration(1235),
               if_match=tags.format(etag=etag)).status_code == 202


@pytest.mark.parametrize("if_match", ['"0123456789abcdef0123456789abcdef"', "W/{etag}",
                                      '"stale", "older"', ""])
def test_a_put_naming_no_current_etag_is_412_and_changes_nothing(client, admin, if_match):
    etag = put(client, admin, registration(1234)).headers["ETag"]

    refused = put(client, admin, registration(1235), if_match=if_match.format(etag=etag))

    assert_precondition_failed(refused)
    assert batches_of(client, admin) == [1234]
    assert client.get(URL + "/status", headers=admin).headers["ETag"] == etag


@pytest.mark.parametrize("if_match", ["*", '"0123456789abcdef0123456789abcdef"'])
def test_if_match_on_an_unknown_manifest_is_412(client, admin, if_match):
    assert_precondition_failed(put(client, admin, registration(1234), if_match=if_match))
    assert client.get(URL).status_code == 404


def test_an_old_etag_does_not_match_a_manifest_registered_again_after_a_delete(client, admin):
    etag = put(client, admin, registration(1234)).headers["ETag"]
    assert client.delete(URL, headers=admin).status_code == 204
    put(client, admin, registration(1234))
    assert_precondition_failed(put(client, admin, registration(1235), if_match=etag))


def test_a_conditional_put_that_would_queue_is_refused_before_the_dlcs_is_called(settings,
                                                                                admin):
    application = create_app(dataclasses.replace(settings, dlcs_api_url="https://api.test"))
    try:
        client = application.test_client()
        put(client, admin, registration(1234))
        document = registration()
        del document["batches"]
        with responses.RequestsMock():  # any DLCS call would fail the test
            refused = put(client, admin, document, if_match='"stale"')
        assert_precondition_failed(refused)
        assert batches_of(client, admin) == [1234]
    finally:
        db.dispose()


@pytest.mark.parametrize("racers", [2, 6])
def test_of_puts_racing_with_the_same_if_match_exactly_one_wins(app, admin, racers):
    client = app.test_client()
    etag = put(client, admin, registration(1000)).headers["ETag"]
    start = threading.Barrier(racers)

    def race(number: int):
        start.wait()
        return number, put(app.test_client(), admin, registration(2000 + number),
                           if_match=etag)

    with ThreadPoolExecutor(max_workers=racers) as pool:
        answers = dict(pool.map(race, range(racers)))

    statuses = sorted(response.status_code for response in answers.values())
    assert statuses == [202] + [412] * (racers - 1), statuses
    [winner] = [number for number, response in answers.items() if response.status_code == 202]
    assert batches_of(client, admin) == [2000 + winner]
    assert client.get(URL + "/status", headers=admin).headers["ETag"] == \
        answers[winner].headers["ETag"]
