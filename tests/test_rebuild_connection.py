"""A database connection that dies during a rebuild does not keep the claim for its lease.

The rebuild's connection is lost while it waits for (or just after) the DLCS:
on PostgreSQL the server terminates it (``pg_terminate_backend`` from another
connection, while the named query is held); on SQLite it is closed under the
rebuild (just after the document is stored, in the rebuild's own thread, as
sqlite3 allows). The delivery must be answered ``503``, and the failure
recorded on a new connection: the status says ``rebuild-failed`` with the
reason, not ``ingesting`` until the lease expires, and a retry rebuilds at once.
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import sample, signed_headers
from tests.fake_dlcs import FakeAsset
from webhook import create_app, db
from webhook.stores import open_store

URL = "/2/manifests/letters"


class ClosingStore:
    """The real store, except that after its first put it closes the caller's SQLite connection.

    The connection is closed beneath peewee, which still takes it for open: the
    next statement on it fails as on a connection that died.
    """

    def __init__(self, store):
        self._store = store
        self._armed = True

    def put(self, *args, **kwargs):
        etag = self._store.put(*args, **kwargs)
        if self._armed:
            self._armed = False
            db.database.connection().close()
        return etag

    def __getattr__(self, name):
        return getattr(self._store, name)


def terminate_the_service_connections(url: str) -> int:
    """Have PostgreSQL end every connection to the test database but this one; count them."""
    import psycopg2

    connection = psycopg2.connect(url)
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                           "WHERE datname = current_database() AND pid <> pg_backend_pid()")
            return cursor.fetchone()[0]
    finally:
        connection.close()


def deliver(app) -> tuple[int, dict]:
    body = sample("notification-current.json")
    response = app.test_client().post("/webhooks/batch-completed", data=body,
                                      headers=signed_headers(body, "msg_last"))
    return response.status_code, response.get_json()


def test_a_rebuild_whose_connection_died_records_its_failure(settings, fake_dlcs, admin):
    postgres = settings.database_url.startswith("postgresql")
    settings = dataclasses.replace(settings, dlcs_orchestrator_url=fake_dlcs.url)
    store = open_store(settings.storage)
    app = create_app(settings, store=store if postgres else ClosingStore(store))
    try:
        fake_dlcs.add_batch(2, 1234, [FakeAsset(5, "foo"), FakeAsset(5, "bar")])
        client = app.test_client()
        registered = client.put(URL, data=sample("registration-2-assets.json"), headers=admin)
        assert registered.status_code == 202
        # The connections used so far are closed: the rebuild opens the only one.
        db.dispose()
        fake_dlcs.hold_each()
        with ThreadPoolExecutor(max_workers=1) as pool:
            final = pool.submit(deliver, app)
            fake_dlcs.wait_for_named_queries(1)
            if postgres:
                # The rebuild's connection (and any an earlier test left open).
                assert terminate_the_service_connections(settings.database_url) >= 1
            fake_dlcs.release_call(0)
            status, problem = final.result(timeout=30)

        assert status == 503, problem
        assert problem["type"].endswith("rebuild-failed")
        assert problem["detail"].startswith("database unavailable")
        state = client.get(f"{URL}/status", headers=admin).get_json()
        assert (state["state"], state["error"]) == ("rebuild-failed", problem["detail"])

        # The claim was released, so the sender's retry rebuilds now.
        fake_dlcs.release()
        assert deliver(app) == (200, {"outcome": "manifest-completed", "batch": 1234,
                                      "manifest": "2/letters"})
        assert client.get(URL).status_code == 200
        assert client.get(f"{URL}/status", headers=admin).get_json()["state"] == "complete"
    finally:
        fake_dlcs.release()
        db.dispose()
