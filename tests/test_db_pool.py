"""DATABASE_POOL_SIZE bounds each worker's connections; a request that finds none free is a 503.

With gevent workers a process serves up to GUNICORN_WORKER_CONNECTIONS
requests at once, so the pool, not the worker class, bounds what one process
asks of the database (PostgreSQL refuses connections past max_connections).
"""

from __future__ import annotations

import dataclasses
import threading

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
