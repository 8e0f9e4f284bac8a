"""The gevent worker as gunicorn.conf.py sets it up: cooperative PostgreSQL, working HTTPS.

- ``post_fork`` gives psycopg2 a wait callback that yields to gevent. Without
  it, one request blocked on a row lock would block every connection its worker
  holds. One worker, so the blocked request and the probe share it; the lock is
  held by the test's own PostgreSQL session.
- The file patches the standard library before it imports the service. Patched
  only in the worker, after the master had imported requests and urllib3, every
  HTTPS call fails (ssl's RecursionError): the test has the service call a
  loopback DLCS over TLS.
"""

from __future__ import annotations

import datetime as dt
import http.server
import ipaddress
import json
import sqlite3
import ssl
import threading
import time
from collections.abc import Iterator

import psycopg2
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.conftest import ADMIN_TOKEN, sample, signed_headers
from tests.servers import LOOPBACK
from tests.test_end_to_end import running_service, service_environment

pytestmark = pytest.mark.e2e

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _waiting_for_a_lock(connection) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                       " AND wait_event_type = 'Lock'")
        return cursor.fetchone()[0] > 0


def _register(server) -> None:
    registration = {**json.loads(sample("registration-2-assets.json")), "batches": [1234, 1235]}
    assert requests.put(f"{server.url}/2/manifests/locked", json=registration, headers=ADMIN,
                        timeout=10).status_code == 202


def _post_completion_of_1234(server, timeout: float) -> requests.Response:
    """Post a completion of batch 1234 under a new webhook-id."""
    body = json.dumps({**json.loads(sample("notification-current.json")), "id": 1234}).encode()
    return requests.post(f"{server.url}/webhooks/batch-completed", data=body,
                         headers=signed_headers(body), timeout=timeout)


def _deliver_in_background(server) -> tuple[threading.Thread, list]:
    """Post a completion of batch 1234 from a thread; its answer lands in the list."""
    answers = []
    delivery = threading.Thread(
        target=lambda: answers.append(_post_completion_of_1234(server, timeout=60)))
    delivery.start()
    return delivery, answers


def _assert_the_worker_answers_meanwhile(server, answers: list) -> None:
    health = requests.get(f"{server.url}/healthz", timeout=10)
    assert health.status_code == 200
    assert answers == []  # the delivery still waits for the lock


def _assert_completed(delivery: threading.Thread, answers: list,
                      outcome: str = "batch-completed") -> None:
    delivery.join(60)
    [answer] = answers
    assert (answer.status_code, answer.json()["outcome"]) == (200, outcome)


def test_a_request_waiting_on_a_row_lock_does_not_block_its_worker(postgres_url, tmp_path):
    env = service_environment(database_url=postgres_url, storage_url=f"file://{tmp_path}/m",
                              dlcs_url="http://127.0.0.1:9")
    with running_service(env, workers=1) as server:
        _register(server)
        holder = psycopg2.connect(postgres_url)
        observer = psycopg2.connect(postgres_url)
        observer.autocommit = True
        try:
            with holder.cursor() as cursor:
                cursor.execute("SELECT id FROM manifest WHERE slug = 'locked' FOR UPDATE")
            delivery, answers = _deliver_in_background(server)
            waited = time.monotonic() + 20
            while not _waiting_for_a_lock(observer):
                assert time.monotonic() < waited, "the delivery never waited for the row lock"
                time.sleep(0.05)
            # The delivery is blocked in PostgreSQL; the same worker still answers.
            _assert_the_worker_answers_meanwhile(server, answers)
        finally:
            holder.rollback()
            holder.close()
            observer.close()
        _assert_completed(delivery, answers)


@pytest.mark.parametrize("path", ["first completion", "re-notification"])
def test_a_request_waiting_for_sqlites_write_lock_does_not_block_its_worker(tmp_path, path):
    # SQLite's own busy handler sleeps in C, which would stop the whole worker
    # until the lock came free; the pool tries again after yielding instead,
    # for a transaction (a first completion) as for a single statement (the
    # insert that answers a re-notification of a batch already complete).
    database = tmp_path / "webhook.db"
    env = service_environment(database_url=f"sqlite:///{database}",
                              storage_url=f"file://{tmp_path}/m", dlcs_url="http://127.0.0.1:9")
    with running_service(env, workers=1) as server:
        _register(server)
        if path == "re-notification":
            first = _post_completion_of_1234(server, timeout=10)
            assert first.json()["outcome"] == "batch-completed"
        # Another process's writer (here the test's own connection) holds the lock.
        holder = sqlite3.connect(database, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            delivery, answers = _deliver_in_background(server)
            time.sleep(1)  # for the delivery to reach its write and wait there
            _assert_the_worker_answers_meanwhile(server, answers)
        finally:
            holder.rollback()
            holder.close()
        _assert_completed(delivery, answers,
                          "duplicate" if path == "re-notification" else "batch-completed")


# ---------------------------------------------------------------- HTTPS


def _self_signed(directory) -> tuple[str, str]:
    """Write a key and a certificate for 127.0.0.1; return their paths."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, LOOPBACK)])
    now = dt.datetime.now(dt.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(days=1))
                   .not_valid_after(now + dt.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName(
                       [x509.IPAddress(ipaddress.ip_address(LOOPBACK))]), critical=False)
                   .sign(key, hashes.SHA256()))
    key_path, certificate_path = directory / "tls.key", directory / "tls.crt"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    certificate_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return str(key_path), str(certificate_path)


class _NamedQuery(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        body = sample("named-query-2-assets.json")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # noqa: A002 - the signature is http.server's
        pass


@pytest.fixture
def tls_orchestrator(tmp_path) -> Iterator[tuple[str, str]]:
    """A named query over HTTPS on a loopback port: (its URL, the certificate to trust)."""
    key, certificate = _self_signed(tmp_path)
    server = http.server.ThreadingHTTPServer((LOOPBACK, 0), _NamedQuery)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://{LOOPBACK}:{server.server_address[1]}", certificate
    server.shutdown()
    server.server_close()


def test_a_gevent_worker_calls_the_dlcs_over_https(database_url, tmp_path, tls_orchestrator):
    url, certificate = tls_orchestrator
    env = service_environment(database_url=database_url, storage_url=f"file://{tmp_path}/m",
                              dlcs_url=url, REQUESTS_CA_BUNDLE=certificate)
    with running_service(env, workers=1) as server:
        registration = {**json.loads(sample("registration-2-assets.json")), "batches": [1234]}
        assert requests.put(f"{server.url}/2/manifests/tls", json=registration, headers=ADMIN,
                            timeout=10).status_code == 202
        body = json.dumps({**json.loads(sample("notification-current.json")),
                           "id": 1234}).encode()
        answer = requests.post(f"{server.url}/webhooks/batch-completed", data=body,
                               headers=signed_headers(body), timeout=30)
        assert (answer.status_code, answer.json()["outcome"]) == (200, "manifest-completed")
