"""Re-notifications of completed batches, racing on real threads, on SQLite and PostgreSQL.

A completion of a batch already complete, under a new webhook-id, is answered
without the manifest's lock (``Intake._known_completion``). These tests race
such deliveries against what could make that wrong: the first completion of
the same batch, the completion of the manifest's last batch, a registration
that replaces the batches, and copies of the same webhook-id. Each checks what
users see: the answers, the delivery log, the batches and manifest, and that
no DLCS call is made except the one rebuild.
"""

from __future__ import annotations

import json
import threading
from collections import Counter

import pytest
import responses

from tests.conftest import ADMIN_TOKEN, sample, signed_headers
from tests.test_webhook_http import (BOTH_BATCHES, MANIFEST, URL, assert_outcome,  # noqa: F401
                                     make_app, notification, post, register, threaded_app)
from webhook import db
from webhook.deliveries import Delivery
from webhook.model_base import COMPLETED, INGESTING
from webhook.models import Batch, Manifest
from webhook.routes.http import PROBLEM_TYPE

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SENDERS = 12
ROUNDS = 4        # deliveries per sender, one after the other


def race(app, jobs: list) -> list:
    """Run each job (a function of a test client) on a thread of its own, released together."""
    barrier = threading.Barrier(len(jobs))
    results, failures = [None] * len(jobs), []

    def run(index, job):
        client = app.test_client()
        try:
            barrier.wait(timeout=30)
            results[index] = job(client)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(n, job)) for n, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert not failures, failures
    return results


def sender(bodies: list[bytes], ids: list[str]):
    """A job sending ``bodies`` one after the other under ``ids``; returns (id, status, answer)."""
    def job(client):
        answers = []
        for body, msg_id in zip(bodies, ids):
            response = client.post(URL, data=body, headers=signed_headers(body, msg_id=msg_id))
            answers.append((msg_id, response.status_code, json.loads(response.get_data())))
        return answers
    return job


def answers_of(results: list) -> dict[str, tuple[int, dict]]:
    return {msg_id: (status, answer) for job in results if isinstance(job, list)
            for msg_id, status, answer in job}


def recorded() -> dict[str, tuple[str, str | None, int]]:
    return {d.delivery_id: (d.outcome, d.manifest, d.attempts) for d in Delivery.select()}


def test_renotifications_racing_the_first_completion_complete_the_batch_once(threaded_app):
    client = threaded_app.test_client()
    assert register(client, ADMIN).status_code == 202
    # Every delivery reports a different count, so the batch shows whose completion won.
    bodies = {f"msg_{s}_{r}": notification(count=100 + s * ROUNDS + r,
                                           completed=100 + s * ROUNDS + r)
              for s in range(SENDERS) for r in range(ROUNDS)}
    jobs = [sender([bodies[f"msg_{s}_{r}"] for r in range(ROUNDS)],
                   [f"msg_{s}_{r}" for r in range(ROUNDS)]) for s in range(SENDERS)]
    with responses.RequestsMock():  # no DLCS call: batch 1235 is still ingesting
        answers = answers_of(race(threaded_app, jobs))

    outcomes = Counter((status, answer["outcome"]) for status, answer in answers.values())
    assert outcomes == {(200, "batch-completed"): 1, (200, "duplicate"): len(bodies) - 1}
    assert {(a["batch"], a["manifest"]) for _, a in answers.values()} == {(1234, "2/letters")}
    (winner,) = [m for m, (_, a) in answers.items() if a["outcome"] == "batch-completed"]
    batch = Batch.get_by_id(1234)
    assert (batch.status, batch.count) == (COMPLETED, json.loads(bodies[winner])["count"])
    assert Batch.get_by_id(1235).status == INGESTING
    assert recorded() == {m: (a["outcome"], "2/letters", 1) for m, (_, a) in answers.items()}


def test_renotifications_racing_the_final_completion_rebuild_once(threaded_app):
    client = threaded_app.test_client()
    assert register(client, ADMIN).status_code == 202
    assert_outcome(post(client, sample("notification-old.json")), "batch-completed", 1235,
                   "2/letters")
    final = sample("notification-current.json")            # batch 1234: the last one
    again = sample("notification-old.json")                # batch 1235, complete already
    jobs = [sender([final] * ROUNDS, [f"final_{s}_{r}" for r in range(ROUNDS)])
            for s in range(SENDERS // 2)]
    jobs += [sender([again] * ROUNDS, [f"again_{s}_{r}" for r in range(ROUNDS)])
             for s in range(SENDERS // 2)]
    with responses.RequestsMock() as rm:
        rm.get(BOTH_BATCHES, body=sample("named-query-2-assets.json"))
        answers = answers_of(race(threaded_app, jobs))
        assert len(rm.calls) == 1

    outcomes = Counter((msg_id.split("_")[0], status, answer.get("outcome"))
                       for msg_id, (status, answer) in answers.items())
    assert outcomes[("final", 200, "manifest-completed")] == 1
    # Others met the rebuild running (503, retry) or came after it (duplicate); a
    # re-notification of 1235 may also have come before it.
    assert set(outcomes) <= {("final", 200, "manifest-completed"), ("final", 503, "failed"),
                             ("final", 200, "duplicate"), ("again", 503, "failed"),
                             ("again", 200, "duplicate")}
    for msg_id, (status, answer) in answers.items():
        if status == 503:
            assert answer["type"] == PROBLEM_TYPE + "rebuild-in-progress"
    assert client.get(MANIFEST).get_json() == json.loads(sample("published-2-assets.json"))
    log = recorded()
    assert len(log) == len(answers) + 1   # and the first completion of 1235
    # Those told to retry were finished by the rebuild; the rest are as answered.
    assert {m: log[m] for m in answers} == {
        m: ("manifest-completed" if s == 503 else a["outcome"], "2/letters", 1)
        for m, (s, a) in answers.items()}
    with responses.RequestsMock():  # retries now hear it is done, without another rebuild
        for msg_id, (status, _) in answers.items():
            if status == 503:
                body = final if msg_id.startswith("final") else again
                response = client.post(URL, data=body, headers=signed_headers(body, msg_id))
                assert response.status_code == 200
                assert response.get_json()["outcome"] == "duplicate"


def test_renotifications_racing_a_registration_that_drops_their_batch(threaded_app):
    client = threaded_app.test_client()
    assert register(client, ADMIN, batches=(1234, 1235, 1236)).status_code == 202
    for batch_id in (1234, 1235):
        assert_outcome(post(client, notification(id=batch_id)), "batch-completed", batch_id,
                       "2/letters")
    dropped, kept = notification(id=1234), notification(id=1235)

    def reregister(client):
        response = register(client, ADMIN, batches=(1235, 1236, 1237))
        return response.status_code, response.get_json()

    jobs = [sender([dropped if (s + r) % 2 else kept for r in range(ROUNDS)],
                   [f"msg_{s}_{r}" for r in range(ROUNDS)]) for s in range(SENDERS)]
    with responses.RequestsMock():  # batches still ingesting before and after: no DLCS call
        results = race(threaded_app, [reregister, *jobs])
    assert results[0][0] == 202, results[0]
    answers = answers_of(results[1:])

    for msg_id, (status, answer) in answers.items():
        assert status == 200
        if answer["batch"] == 1235:       # complete in both registrations
            assert answer == {"outcome": "duplicate", "batch": 1235, "manifest": "2/letters"}
        else:                             # before the registration, or after it
            assert answer in ({"outcome": "duplicate", "batch": 1234, "manifest": "2/letters"},
                              {"outcome": "ignored", "batch": 1234, "manifest": None})
    log = recorded()
    assert {m: log[m] for m in answers} == {m: (a["outcome"], a["manifest"], 1)
                                            for m, (_, a) in answers.items()}
    assert {b.id: b.status for b in Batch.select()} == {1235: COMPLETED, 1236: INGESTING,
                                                        1237: INGESTING}
    assert not Manifest.get().needs_rebuild

    # A later registration of batch 1234 applies the deliveries answered "ignored"
    # (the first of them completes it), never those answered "duplicate".
    ignored = [m for m, (_, a) in answers.items() if a["outcome"] == "ignored"]
    document = json.loads(sample("registration-2-assets.json"))
    document["batches"] = [1234, 1238]
    assert client.put("/2/manifests/other", data=json.dumps(document).encode(),
                      headers=ADMIN).status_code == 202
    assert Batch.get_by_id(1234).status == (COMPLETED if ignored else INGESTING)
    outcomes = Counter(recorded()[m][0] for m in answers if answers[m][1]["batch"] == 1234)
    if ignored:
        assert outcomes == {"batch-completed": 1, "duplicate": sum(outcomes.values()) - 1}
    else:
        assert outcomes == {"duplicate": sum(outcomes.values())}


def test_copies_of_one_renotification_are_recorded_once(threaded_app):
    client = threaded_app.test_client()
    assert register(client, ADMIN).status_code == 202
    assert_outcome(post(client, notification()), "batch-completed", 1234, "2/letters")
    body = notification()
    headers = signed_headers(body)
    jobs = [lambda client: client.post(URL, data=body, headers=headers)] * SENDERS
    with responses.RequestsMock():
        answered = race(threaded_app, jobs)
    assert [(r.status_code, r.get_json()) for r in answered] == [
        (200, {"outcome": "duplicate", "batch": 1234, "manifest": "2/letters"})] * SENDERS
    assert recorded()[headers["webhook-id"]] == ("duplicate", "2/letters", SENDERS)
    assert len(recorded()) == 2


# ----------------------------------------------------------------- when the lock is still needed


def test_a_renotification_during_the_rebuild_is_told_to_retry(threaded_app):
    client = threaded_app.test_client()
    assert register(client, ADMIN).status_code == 202
    assert_outcome(post(client, sample("notification-old.json")), "batch-completed", 1235,
                   "2/letters")
    started, release = threading.Event(), threading.Event()

    def named_query(request):
        started.set()
        assert release.wait(timeout=60), "the test never released the named query"
        return 200, {}, sample("named-query-2-assets.json")

    final = sample("notification-current.json")
    with responses.RequestsMock() as rm:
        rm.add_callback(responses.GET, BOTH_BATCHES, callback=named_query)
        results = []
        finishing = threading.Thread(target=lambda: results.append(
            post(threaded_app.test_client(), final)))
        finishing.start()
        try:
            assert started.wait(timeout=30)
            # Batch 1235 is complete, but the manifest is not published yet.
            again = sample("notification-old.json")
            headers = signed_headers(again)
            busy = post(client, again, headers)
            assert busy.status_code == 503, busy.get_data(as_text=True)
            assert busy.get_json()["type"] == PROBLEM_TYPE + "rebuild-in-progress"
        finally:
            release.set()
            finishing.join(timeout=60)
        assert_outcome(results[0], "manifest-completed", 1234, "2/letters")
        assert_outcome(post(client, again, headers), "duplicate", 1235, "2/letters")
        assert len(rm.calls) == 1
    assert recorded()[headers["webhook-id"]] == ("manifest-completed", "2/letters", 2)


def test_a_renotification_after_a_failed_rebuild_rebuilds(client):
    assert register(client, ADMIN).status_code == 202
    assert_outcome(post(client, sample("notification-old.json")), "batch-completed", 1235,
                   "2/letters")
    with responses.RequestsMock() as rm:
        rm.get(BOTH_BATCHES, status=500, json={"description": "try later"})
        failed = post(client, sample("notification-current.json"))
        assert failed.status_code == 503
    # The sender of batch 1235 re-notifies under a new id: that finishes the job.
    with responses.RequestsMock() as rm:
        rm.get(BOTH_BATCHES, body=sample("named-query-2-assets.json"))
        assert_outcome(post(client, sample("notification-old.json")), "manifest-completed",
                       1235, "2/letters")
        assert len(rm.calls) == 1
    assert client.get(MANIFEST).get_json() == json.loads(sample("published-2-assets.json"))


def test_a_renotification_from_another_customer_is_ignored(client):
    assert register(client, ADMIN).status_code == 202
    assert_outcome(post(client, notification()), "batch-completed", 1234, "2/letters")
    assert_outcome(post(client, notification(customer=3)), "ignored", 1234, None)
    batch = Batch.get_by_id(1234)
    assert (batch.status, batch.customer) == (COMPLETED, 2)


def test_on_sqlite_only_a_batch_found_complete_tries_the_unlocked_insert(client, statements):
    # On SQLite an INSERT waits for the database's write lock even when it
    # inserts nothing: a first completion must not take that lock twice. The
    # answers are the same either way; what shows it is the statements run.
    if db.is_postgres():
        pytest.skip("PostgreSQL takes one call instead (tests/test_completion_call.py)")
    assert register(client, ADMIN).status_code == 202
    for msg_id, outcome in (("msg_1", "batch-completed"), ("msg_2", "duplicate")):
        statements.clear()
        body = notification()
        response = client.post(URL, data=body, headers=signed_headers(body, msg_id=msg_id))
        assert response.get_json()["outcome"] == outcome
        inserts = [sql for sql in statements if sql.lstrip().upper().startswith("INSERT")]
        assert statements[0].lstrip().upper().startswith("SELECT"), statements
        assert len(inserts) == 1, statements
        if outcome == "duplicate":   # answered by the unlocked insert, nothing else written
            assert "SELECT" in inserts[0] and not any(
                sql.lstrip().upper().startswith("UPDATE") for sql in statements), statements
