"""A body that has not fully arrived by BODY_TIMEOUT_SECONDS is answered 408; nothing is recorded.

Through a real gunicorn (``gunicorn.conf.py``, as deployed) on the selected
database, with raw sockets that send a request's headers and then stall or
trickle the body, as a slow or hostile client does.
"""

from __future__ import annotations

import io
import json
import select
import socket
import time
import uuid
from collections.abc import Iterator

import pytest
import requests

from tests.conftest import ADMIN_TOKEN, sample, signed_headers
from tests.servers import LOOPBACK, GunicornServer
from tests.test_end_to_end import running_service, service_environment
from webhook.body_deadline import BodyDeadline

pytestmark = pytest.mark.e2e

# The longest a test waits for an answer: far past the deadline, so a server
# without one fails the test instead of hanging it.
PATIENCE_SECONDS = 20.0
TRICKLE_SECONDS = 0.25


def deadline_service(database_url: str, tmp_path, worker_class: str):
    env = service_environment(database_url=database_url, storage_url=f"file://{tmp_path}/m",
                              dlcs_url="http://127.0.0.1:9", BODY_TIMEOUT_SECONDS="1",
                              SNS_TOPIC_ARNS="arn:aws:sns:eu-west-1:123456789012:dlcs",
                              GUNICORN_WORKER_CLASS=worker_class)
    return running_service(env)


@pytest.fixture
def server(database_url, tmp_path) -> Iterator[GunicornServer]:
    """The service under the default worker class (gevent)."""
    with deadline_service(database_url, tmp_path, "gevent") as running:
        yield running


@pytest.fixture(params=["gthread", "sync"])
def other_worker_server(request, database_url, tmp_path) -> Iterator[GunicornServer]:
    """The service under the other worker classes: the same deadline, without gevent."""
    with deadline_service(database_url, tmp_path, request.param) as running:
        yield running


def completion(batch: int) -> bytes:
    return json.dumps({**json.loads(sample("notification-current.json")), "id": batch}).encode()


def head(method: str, path: str, length: int, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {LOOPBACK}", f"Content-Length: {length}",
             "Content-Type: application/json", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def answer_of(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read the answer to the one request sent on ``sock``, until the server closes it."""
    received = b""
    sock.settimeout(PATIENCE_SECONDS)
    while b"\r\n\r\n" not in received or not _complete(received):
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    header, _, body = received.partition(b"\r\n\r\n")
    status_line, *fields = header.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (f.split(":", 1) for f in fields)}
    return int(status_line.split()[1]), headers, body


def _complete(received: bytes) -> bool:
    header, _, body = received.partition(b"\r\n\r\n")
    for line in header.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.lower() == "content-length":
            return len(body) >= int(value)
    return False


def stalled(server: GunicornServer, method: str, path: str, body: bytes,
            headers: dict[str, str], *, sent: int) -> tuple[int, dict[str, str], bytes]:
    """Send the headers and ``sent`` bytes of ``body``, then nothing more; return the answer."""
    with socket.create_connection((LOOPBACK, server.port), timeout=PATIENCE_SECONDS) as sock:
        sock.sendall(head(method, path, len(body), headers) + body[:sent])
        return answer_of(sock)


def trickled(server: GunicornServer, method: str, path: str, body: bytes,
             headers: dict[str, str]) -> tuple[int, dict[str, str], bytes, int]:
    """Send the headers, then one body byte at a time until the server answers."""
    with socket.create_connection((LOOPBACK, server.port), timeout=PATIENCE_SECONDS) as sock:
        sock.sendall(head(method, path, len(body), headers))
        sent = 0
        deadline = time.monotonic() + PATIENCE_SECONDS
        # Stops one byte short: the body is never whole, however slow the server.
        while sent < len(body) - 1 and time.monotonic() < deadline:
            readable, _, _ = select.select([sock], [], [], TRICKLE_SECONDS)
            if readable:
                break
            sock.sendall(body[sent:sent + 1])
            sent += 1
        return (*answer_of(sock), sent)


def assert_timeout_problem(status: int, headers: dict[str, str], body: bytes) -> None:
    assert status == 408
    assert headers["content-type"] == "application/problem+json"
    problem = json.loads(body)
    assert (problem["status"], problem["title"]) == (408, "Request Timeout")
    assert problem["type"].endswith(":request-timeout")
    assert "1 seconds" in problem["detail"]


def deliveries(server: GunicornServer) -> list[dict]:
    answer = requests.get(f"{server.url}/deliveries", timeout=10,
                          headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert answer.status_code == 200
    return answer.json()


def test_a_stalled_webhook_body_is_answered_408_and_not_recorded(server):
    body = completion(1234)
    headers = signed_headers(body, msg_id="msg_stalled")

    assert_timeout_problem(*stalled(server, "POST", "/webhooks/batch-completed", body, headers,
                                    sent=len(body) // 2))

    assert deliveries(server) == []
    # The id was not used up: the whole delivery is then accepted.
    whole = requests.post(f"{server.url}/webhooks/batch-completed", data=body, headers=headers,
                          timeout=10)
    assert (whole.status_code, whole.json()["outcome"]) == (200, "ignored")
    assert [d["id"] for d in deliveries(server)] == ["msg_stalled"]


def test_a_trickled_webhook_body_is_answered_408_and_not_recorded(server):
    # Each byte arrives well within any per-read timeout; only a deadline stops it.
    body = completion(1234) + b" " * 200
    status, headers, problem, sent = trickled(server, "POST", "/webhooks/batch-completed", body,
                                              signed_headers(body, msg_id="msg_trickled"))

    assert_timeout_problem(status, headers, problem)
    assert sent < len(body)
    assert deliveries(server) == []


def test_a_trickled_sns_body_is_answered_408(server):
    body = sample("sns-envelope.json")
    status, headers, problem, _ = trickled(server, "POST", "/webhooks/sns", body,
                                           {"x-amz-sns-message-type": "Notification"})
    assert_timeout_problem(status, headers, problem)
    assert deliveries(server) == []


def test_a_trickled_registration_is_answered_408_and_not_registered(server):
    body = sample("registration-2-assets.json")
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    status, headers, problem, _ = trickled(server, "PUT", "/2/manifests/slow", body, admin)

    assert_timeout_problem(status, headers, problem)
    answer = requests.get(f"{server.url}/2/manifests/slow/status", headers=admin, timeout=10)
    assert answer.status_code == 404


def test_the_server_answers_others_while_bodies_trickle(server):
    sockets = []
    try:
        for _ in range(20):
            sock = socket.create_connection((LOOPBACK, server.port), timeout=PATIENCE_SECONDS)
            body = completion(1234)
            sock.sendall(head("POST", "/webhooks/batch-completed", len(body),
                              signed_headers(body, msg_id=f"msg_{uuid.uuid4().hex}")) + b"{")
            sockets.append(sock)
        health = requests.get(f"{server.url}/healthz", timeout=PATIENCE_SECONDS)
        assert health.status_code == 200
        for sock in sockets:
            assert answer_of(sock)[0] == 408
    finally:
        for sock in sockets:
            sock.close()
    assert deliveries(server) == []



def test_the_deadline_holds_under_the_other_worker_classes(other_worker_server):
    server = other_worker_server
    body = completion(1234) + b" " * 200
    assert_timeout_problem(*stalled(server, "POST", "/webhooks/batch-completed", body,
                                    signed_headers(body, msg_id="msg_stalled"), sent=10))
    status, headers, problem, sent = trickled(server, "POST", "/webhooks/batch-completed", body,
                                              signed_headers(body, msg_id="msg_trickled"))
    assert_timeout_problem(status, headers, problem)
    assert sent < len(body)
    assert deliveries(server) == []


def test_a_content_length_that_is_no_number_passes_through_to_the_app():
    # gunicorn refuses "Content-Length: \xb2" itself; a server that passes it on
    # made the middleware's int() fail (str.isdigit() takes "\u00b2").
    seen = {}

    def app(environ, start_response):
        seen["input"] = environ["wsgi.input"].read()
        start_response("200 OK", [])
        return [b"ok"]

    environ = {"CONTENT_LENGTH": "\u00b2", "wsgi.input": io.BytesIO(b"")}
    assert BodyDeadline(app, 5)(environ, lambda status, headers: None) == [b"ok"]
    assert seen["input"] == b""
