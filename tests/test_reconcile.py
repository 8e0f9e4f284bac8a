"""Recovering lost notifications: reconcile asks the DLCS API for ingesting batches."""

import dataclasses
import json
import re

import pytest
import responses

from tests.conftest import ORCHESTRATOR, sample
from webhook import create_app, db

API = "https://api.dlcs.test"
NAMED_QUERY = re.compile(ORCHESTRATOR + r"/iiif-resource/v3/2/batch-query/1234,1235\?cacheBust=.+")


@pytest.fixture
def app(settings):
    application = create_app(dataclasses.replace(settings, dlcs_api_url=API))
    yield application
    db.dispose()


@pytest.fixture
def registered(client, admin):
    body = json.loads(sample("registration-2-assets.json"))
    body["batches"] = [1234, 1235]
    assert client.put("/2/manifests/letters", json=body, headers=admin).status_code == 202


def batch_state(batch_id: int, finished: bool) -> dict:
    state = json.loads(sample("queue-response-201.json"))
    state["@id"] = f"{API}/customers/2/queue/batches/{batch_id}"
    state.update(count=1, completed=1 if finished else 0)
    if finished:
        state["finished"] = "2025-02-20T12:31:40.9931Z"
    return state


def answer_batches(mock, **finished):
    for batch_id, done in finished.items():
        mock.get(f"{API}/customers/2/queue/batches/{batch_id[1:]}",
                 json=batch_state(int(batch_id[1:]), done))


def test_a_lost_notification_is_recovered(client, admin, registered):
    with responses.RequestsMock() as mock:
        answer_batches(mock, b1234=True, b1235=False)
        first = client.post("/2/manifests/letters/reconcile", headers=admin)
    assert first.status_code == 200
    assert first.json == {"outcome": "batch-completed", "batch": 1234, "manifest": "2/letters",
                          "completed": [1234], "stalled": []}
    log = client.get("/deliveries?batch=1234", headers=admin).json
    assert [(d["transport"], d["outcome"]) for d in log] == [("reconcile", "batch-completed")]

    with responses.RequestsMock() as mock:
        answer_batches(mock, b1235=True)
        mock.get(NAMED_QUERY, body=sample("named-query-2-assets.json"))
        second = client.post("/2/manifests/letters/reconcile", headers=admin)
    assert second.json == {"outcome": "manifest-completed", "batch": 1235,
                           "manifest": "2/letters", "completed": [1235], "stalled": []}
    assert client.get("/2/manifests/letters").status_code == 200
    status = client.get("/2/manifests/letters/status", headers=admin).json
    assert status["state"] == "complete"
    assert status["batches"][0]["finished"] == "2025-02-20T12:31:40.993100Z"

    with responses.RequestsMock():  # nothing is ingesting: no DLCS call at all
        third = client.post("/2/manifests/letters/reconcile", headers=admin)
    assert third.json["outcome"] == "unchanged" and third.json["completed"] == []


def test_a_dlcs_failure_answers_503_and_changes_nothing(client, admin, registered):
    with responses.RequestsMock() as mock:
        mock.get(f"{API}/customers/2/queue/batches/1234", status=500,
                 json={"description": "boom"})
        answer = client.post("/2/manifests/letters/reconcile", headers=admin)
    assert answer.status_code == 503 and "boom" in answer.json["detail"]
    assert client.get("/deliveries", headers=admin).json == []


@pytest.mark.parametrize("change, reason", [
    ({"count": 2**31, "completed": 2**31}, "count is not a count from 0 to 2147483647"),
    ({"errors": 2**70}, "errors is not a count from 0 to 2147483647"),
    ({"finished": "0001-01-01T00:00:00+01:00"}, "finished is out of range once converted to UTC"),
    ({"submitted": "9999-12-31T23:59:59-01:00"},
     "submitted is out of range once converted to UTC"),
], ids=["count-beyond-int32", "errors-beyond-int64", "finished-before-year-1",
        "submitted-after-year-9999"])
def test_a_batch_the_database_cannot_hold_answers_503_and_changes_nothing(client, admin,
                                                                         registered, change,
                                                                         reason):
    # These were 500s: a count PostgreSQL refused (SQLite beyond 64 bits), and a
    # date whose conversion to UTC left Python's range.
    state = batch_state(1234, True)
    state.update(change)
    with responses.RequestsMock() as mock:
        mock.get(f"{API}/customers/2/queue/batches/1234", json=state)
        answer = client.post("/2/manifests/letters/reconcile", headers=admin)
    assert answer.status_code == 503
    assert answer.json["detail"] == (f"batch 1234 of customer 2: the answer is not a DLCS "
                                     f"batch ({reason})")
    assert client.get("/deliveries", headers=admin).json == []


def test_reconcile_needs_the_admin_token_and_a_known_manifest(client, admin):
    assert client.post("/2/manifests/letters/reconcile").status_code == 401
    assert client.post("/2/manifests/letters/reconcile", headers=admin).status_code == 404


def test_the_command_reconciles_stale_manifests_one_line_each(app, registered):
    with responses.RequestsMock() as mock:
        answer_batches(mock, b1234=True, b1235=True)
        mock.get(NAMED_QUERY, body=sample("named-query-2-assets.json"))
        result = app.test_cli_runner().invoke(args=["reconcile", "--older-than", "0s"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["2/letters: completed 1234,1235 -> manifest-completed"]


def test_the_command_skips_recent_batches(app, registered):
    with responses.RequestsMock():
        result = app.test_cli_runner().invoke(args=["reconcile", "--older-than", "30m"])
    assert result.exit_code == 0 and result.output == ""


def test_the_command_exits_non_zero_when_a_manifest_fails(app, registered):
    with responses.RequestsMock() as mock:
        mock.get(f"{API}/customers/2/queue/batches/1234", status=503)
        result = app.test_cli_runner().invoke(args=["reconcile", "--older-than", "0s"])
    assert result.exit_code == 1
    assert result.output.startswith("2/letters: failed: DlcsError")


def test_the_command_rejects_a_bad_duration(app):
    result = app.test_cli_runner().invoke(args=["reconcile", "--older-than", "soon"])
    assert result.exit_code == 2 and "not a duration" in result.output


def test_a_superseded_batch_is_recorded_and_reported_stalled(client, admin, registered):
    superseded = batch_state(1235, finished=False)
    superseded["superseded"] = True
    with responses.RequestsMock() as mock:
        answer_batches(mock, b1234=False)
        mock.get(f"{API}/customers/2/queue/batches/1235", json=superseded)
        answer = client.post("/2/manifests/letters/reconcile", headers=admin)
    assert answer.status_code == 200
    body = answer.json
    assert (body["outcome"], body["completed"]) == ("unchanged", [])
    [stalled] = body["stalled"]
    assert (stalled["batch"], stalled["reason"]) == (1235, "superseded")
    assert 0 <= stalled["age"] < 60 and stalled["since"].endswith("Z")
    status = client.get("/2/manifests/letters/status", headers=admin).json
    assert status["stalled"] == [stalled | {"age": status["stalled"][0]["age"]}]
    assert status["state"] == "ingesting"


def test_the_command_reports_stalled_batches_on_the_manifests_line(app, registered):
    superseded = batch_state(1235, finished=False)
    superseded["superseded"] = True
    with responses.RequestsMock() as mock:
        answer_batches(mock, b1234=True)
        mock.get(f"{API}/customers/2/queue/batches/1235", json=superseded)
        result = app.test_cli_runner().invoke(args=["reconcile", "--older-than", "0s"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "2/letters: completed 1234 -> batch-completed; stalled 1235 (superseded, 0m00s)"]
