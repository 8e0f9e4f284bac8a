"""DATABASE_POOL_SIZE bounds each worker's connections; a request that finds none free is a 503.

With gevent workers a process serves up to GUNICORN_WORKER_CONNECTIONS
requests at once, so the pool, not the worker class, bounds what one process
asks of the database (PostgreSQL refuses connections past max_connections).
"""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest
from playhouse.pool import MaxConnectionsExceeded

from tests.conftest import ADMIN_TOKEN, sample, signed_headers
from webhook import create_app, db


def test_a_request_that_finds_every_connection_taken_is_answered_503(settings, monkeypatch):
    monkeypatch.setattr(db, "POOL_WAIT_SECONDS", 1)
    app = create_app(dataclasses.replace(settings, database_pool_size=1))
    taken, release = threading.Event(), threading.Event()

    def hold_the_only_connection():
        with app.app_context():
            db.connect()
            taken.set()
            release.wait(30)

    holder = threading.Thread(target=hold_the_only_connection)
    holder.start()
    body = sample("notification-current.json")
    headers = signed_headers(body, msg_id="msg_pool")
    try:
        assert taken.wait(10)
        answer = app.test_client().post("/webhooks/batch-completed", data=body,
                                        headers=headers)
    finally:
        release.set()
        holder.join(10)

    assert answer.status_code == 503
    assert answer.headers["Content-Type"] == "application/problem+json"
    assert answer.headers["Retry-After"] == "1"
    assert "connection" in answer.get_json()["detail"]
    # Nothing was recorded; the connection given back, the same delivery is accepted.
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    client = app.test_client()
    assert client.get("/deliveries", headers=admin).get_json() == []
    again = client.post("/webhooks/batch-completed", data=body, headers=headers)
    assert (again.status_code, again.get_json()["outcome"]) == (200, "ignored")
    db.dispose()


# ---------------------------------------------------------------- first come, first served

def _queue_behind(pool, callers: int, order: list[str]) -> list[threading.Thread]:
    """Start ``callers`` threads that each wait for a connection, one after another."""
    threads = []
    for number in range(callers):
        def wait_for_one(name=f"waited {number + 1}"):
            pool.connect()
            order.append(name)
            pool.close()
        thread = threading.Thread(target=wait_for_one)
        thread.start()
        threads.append(thread)
        _wait_for_queue(pool, number + 1)   # queued before the next one starts
    return threads


def _wait_for_queue(pool, length: int) -> None:
    deadline = time.monotonic() + 10
    while len(pool._queue) < length:
        assert time.monotonic() < deadline, "the caller did not queue"
        time.sleep(0.005)


def test_a_connection_given_back_goes_to_the_longest_waiter(database_url):
    # playhouse's pool woke a waiter but let whoever asked next take the
    # connection: a keep-alive client's next request, most often, so under
    # load a few requests waited seconds while the rest went through.
    pool = db.open_database(database_url, pool_size=1)
    order: list[str] = []
    holding, let_go = threading.Event(), threading.Event()

    def hold_then_ask_again():
        pool.connect()
        holding.set()
        let_go.wait(30)
        pool.close()
        pool.connect()   # at once: a connection is free, but others waited first
        order.append("asked again")
        pool.close()

    holder = threading.Thread(target=hold_then_ask_again)
    holder.start()
    try:
        assert holding.wait(10)
        waiters = _queue_behind(pool, 2, order)
        let_go.set()
        for thread in [holder, *waiters]:
            thread.join(10)
        assert order == ["waited 1", "waited 2", "asked again"]
    finally:
        let_go.set()
        pool.close_all()


def _connecting(pool) -> tuple[threading.Thread, list]:
    """Start a thread that takes a connection and gives it back; return it and its outcome,
    which holds "connected" or the exception met once the thread ends."""
    outcome: list = []

    def connect():
        try:
            pool.connect()
        except Exception as exc:  # noqa: BLE001 - the test judges it
            outcome.append(exc)
            return
        outcome.append("connected")
        pool.close()

    thread = threading.Thread(target=connect)
    thread.start()
    return thread, outcome


def test_a_waiter_that_gives_up_leaves_the_line(database_url, monkeypatch):
    monkeypatch.setattr(db, "POOL_WAIT_SECONDS", 0.3)
    pool = db.open_database(database_url, pool_size=1)
    pool.connect()   # the only connection, held by this thread
    waiter, gave_up = _connecting(pool)
    waiter.join(10)
    assert [type(error) for error in gave_up] == [MaxConnectionsExceeded]
    pool.close()
    # Its place was not kept for it: the connection given back serves the next
    # caller (who would otherwise wait 0.3 s in vain too, and give up).
    asker, answered = _connecting(pool)
    asker.join(10)
    assert answered == ["connected"]
    pool.close_all()


@pytest.mark.parametrize("once_admitted", [False, True], ids=["waiting", "once admitted"])
def test_a_waiter_stopped_costs_the_pool_nothing(database_url, monkeypatch, once_admitted):
    # A greenlet killed as it waits (a worker stopping, a deadline) must keep
    # neither its place in line nor the connection it was just admitted to.
    monkeypatch.setattr(db, "POOL_WAIT_SECONDS", 0.3)
    pool = db.open_database(database_url, pool_size=1)
    pool.connect()
    wait_until = pool._wait_until

    class Stopped(Exception):
        pass

    def stopped_while_waiting(admitted, deadline):
        if once_admitted:
            wait_until(admitted, deadline)
        raise Stopped

    monkeypatch.setattr(pool, "_wait_until", stopped_while_waiting)
    waiter, stopped = _connecting(pool)
    if once_admitted:
        _wait_for_queue(pool, 1)
    pool.close()   # admits the waiter, if it still waits
    waiter.join(10)
    assert [type(error) for error in stopped] == [Stopped]
    asker, answered = _connecting(pool)
    asker.join(10)
    assert answered == ["connected"]   # not kept waiting for a caller that is gone
    pool.close_all()
