"""Logs carry no query string, not even urllib3's retry warnings.

The named query's URL ends in ``?cacheBust=...``; when its connection breaks,
urllib3 retries and logs a warning naming the URL. The test breaks a real
connection (a loopback Orchestrator that hangs up on the first request) and
reads every line logged while the delivery is answered.
"""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import ADMIN_TOKEN, SECRET, sample, signed_headers
from tests.servers import LOOPBACK
from webhook import create_app, db, logs
from webhook.config import Settings


class HangsUpOnce(ThreadingHTTPServer):
    """A named query that drops its first connection unanswered, then answers."""

    daemon_threads = True

    def __init__(self):
        super().__init__((LOOPBACK, 0), _Handler)
        self.paths: list[str] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the signature is http.server's
        pass

    def do_GET(self):
        with self.server.lock:
            self.server.paths.append(self.path)
            first = len(self.server.paths) == 1
        if first:
            # No status line: the client sees the connection closed mid-exchange.
            self.close_connection = True
            return
        body = sample("named-query-2-assets.json")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def orchestrator() -> Iterator[HangsUpOnce]:
    server = HangsUpOnce()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def app(database_url, tmp_path, orchestrator):
    application = create_app(Settings.from_env({
        "DATABASE_URL": database_url,
        "STORAGE_URL": f"file://{tmp_path}/manifests",
        "WEBHOOK_SECRETS": SECRET,
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "DLCS_ORCHESTRATOR_URL": orchestrator.url,
        "DLCS_TIMEOUT_SECONDS": "5",
    }))
    yield application
    db.dispose()


@pytest.fixture
def json_lines():
    """What a JSON handler on the root logger writes while the test runs."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    yield stream
    root.removeHandler(handler)


def test_a_retried_named_query_logs_no_query_string(client, admin, orchestrator, caplog,
                                                     json_lines):
    caplog.set_level(logging.DEBUG)
    registration = {**json.loads(sample("registration-2-assets.json")), "batches": [1234]}
    assert client.put("/2/manifests/letters", json=registration, headers=admin).status_code == 202
    body = json.dumps({**json.loads(sample("notification-current.json")), "id": 1234}).encode()

    answer = client.post("/webhooks/batch-completed", data=body, headers=signed_headers(body))

    assert (answer.status_code, answer.json["outcome"]) == (200, "manifest-completed")
    # The Orchestrator saw the query twice: urllib3 really retried it.
    assert len(orchestrator.paths) == 2 and all("?cacheBust=" in p for p in orchestrator.paths)
    [retry] = [r for r in caplog.records if r.getMessage().startswith("Retrying")]
    assert retry.name.startswith("urllib3") and retry.levelno == logging.WARNING
    path = orchestrator.paths[0].split("?", 1)[0]
    assert retry.getMessage().endswith(": " + path)
    for text in (caplog.text, json_lines.getvalue(),
                 *(r.getMessage() + repr(r.args) for r in caplog.records)):
        assert "cacheBust" not in text
    # (peewee's SQL has "?" placeholders; urllib3's and the service's lines have no "?".)
    for record in caplog.records:
        if record.name.startswith(("urllib3", "webhook")):
            assert "?" not in record.getMessage() + repr(record.args)


@pytest.mark.parametrize(("text", "expected"), [
    ("http://h:1/a/b?x=1&y=2 done", "http://h:1/a/b done"),
    ("broken by 'E()': /iiif-resource/v3/2/q/1?cacheBust=ab12", "broken by 'E()': /iiif-resource/v3/2/q/1"),
    ("'GET /p?token=s3cret HTTP/1.1' 200", "'GET /p HTTP/1.1' 200"),
    ("Redirecting /a?x -> https://b/c?y", "Redirecting /a -> https://b/c"),
    ("no query here", "no query here"),
])
def test_query_strings_are_stripped_from_text(text, expected):
    assert logs.strip_query_strings(text) == expected
