"""Under gevent, a request waiting for PostgreSQL lets the rest of its worker run.

gunicorn.conf.py's ``post_fork`` hook gives psycopg2 a wait callback that
yields to gevent. Without it, one request blocked on a row lock would block
every connection its worker holds. One worker, so the blocked request and the
probe share it; the lock is held by the test's own PostgreSQL session.
"""

from __future__ import annotations

import json
import threading
import time

import psycopg2
import pytest
import requests

from tests.conftest import ADMIN_TOKEN, sample, signed_headers
from tests.test_end_to_end import running_service, service_environment

pytestmark = pytest.mark.e2e

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _waiting_for_a_lock(connection) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                       " AND wait_event_type = 'Lock'")
        return cursor.fetchone()[0] > 0


def test_a_request_waiting_on_a_row_lock_does_not_block_its_worker(postgres_url, tmp_path):
    env = service_environment(database_url=postgres_url, storage_url=f"file://{tmp_path}/m",
                              dlcs_url="http://127.0.0.1:9")
    with running_service(env, workers=1) as server:
        registration = {**json.loads(sample("registration-2-assets.json")), "batches": [1234, 1235]}
        assert requests.put(f"{server.url}/2/manifests/locked", json=registration, headers=ADMIN,
                            timeout=10).status_code == 202
        holder = psycopg2.connect(postgres_url)
        observer = psycopg2.connect(postgres_url)
        observer.autocommit = True
        answers = []
        try:
            with holder.cursor() as cursor:
                cursor.execute("SELECT id FROM manifest WHERE slug = 'locked' FOR UPDATE")
            body = json.dumps({**json.loads(sample("notification-current.json")),
                               "id": 1234}).encode()
            delivery = threading.Thread(target=lambda: answers.append(requests.post(
                f"{server.url}/webhooks/batch-completed", data=body,
                headers=signed_headers(body), timeout=60)))
            delivery.start()
            waited = time.monotonic() + 20
            while not _waiting_for_a_lock(observer):
                assert time.monotonic() < waited, "the delivery never waited for the row lock"
                time.sleep(0.05)

            # The delivery is blocked in PostgreSQL; the same worker still answers.
            health = requests.get(f"{server.url}/healthz", timeout=10)
            assert health.status_code == 200
            assert answers == []  # still waiting for the lock
        finally:
            holder.rollback()
            holder.close()
            observer.close()
        delivery.join(60)
        [answer] = answers
        assert (answer.status_code, answer.json()["outcome"]) == (200, "batch-completed")
