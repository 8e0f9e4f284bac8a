"""The stand-in DLCS on its own: a queued batch finishes and is announced, signed, until accepted."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

from tests.conftest import SECRET
from tests.servers import LOOPBACK
from webhook.devdlcs import Asset, CompletionSender, DevDlcs, image_service_id
from webhook.schemas import parse_notification
from webhook.secret import parse_secret
from webhook.signature import verify

KEY = parse_secret(SECRET)
MEMBERS = [{"id": "foo", "space": 5, "origin": "https://example.org/foo.jpg"},
           {"id": "bar", "space": 5, "origin": "https://example.org/bar.jpg"}]


class Receiver:
    """A loopback webhook endpoint answering the given statuses in turn, recording deliveries."""

    def __init__(self, statuses: list[int]):
        self.deliveries: list[tuple[dict, bytes]] = []
        self.received = threading.Semaphore(0)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.deliveries.append((dict(self.headers), body))
                status = statuses.pop(0) if statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                receiver.received.release()

            def log_message(self, format, *args):  # noqa: A002
                pass

        self.server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://{LOOPBACK}:{self.server.server_address[1]}/webhooks/batch-completed"

    def wait(self, count: int) -> None:
        for _ in range(count):
            assert self.received.acquire(timeout=30), "no delivery arrived"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_queued_batch_is_served_and_announced_signed_until_the_service_accepts_it():
    receiver = Receiver([503])  # the service fails once: the same delivery comes again
    try:
        with DevDlcs(ingest_seconds=0, sender=CompletionSender(receiver.url, KEY)) as dlcs:
            queued = requests.post(f"{dlcs.url}/customers/2/queue", timeout=10,
                                   json={"@type": "Collection", "member": MEMBERS})
            assert queued.status_code == 201
            batch = queued.json()
            batch_id = int(batch["@id"].rsplit("/", 1)[1])
            assert batch["count"] == 2

            receiver.wait(2)
            named = requests.get(f"{dlcs.url}/iiif-resource/v3/2/batch-query/{batch_id}",
                                 params={"cacheBust": "1"}, timeout=10)
            state = requests.get(f"{dlcs.url}/customers/2/queue/batches/{batch_id}", timeout=10)
            assert dlcs.errors == []
    finally:
        receiver.close()

    (first_headers, first), (again_headers, again) = receiver.deliveries
    assert again == first and again_headers["webhook-id"] == first_headers["webhook-id"]
    verified = verify([KEY], {k.lower(): v for k, v in first_headers.items()}, first,
                      now=time.time())
    assert verified.msg_id == first_headers["webhook-id"]
    completion = parse_notification(first)
    assert (completion.batch_id, completion.customer, completion.count, completion.completed,
            completion.errors) == (batch_id, 2, 2, 2, 0)

    assert named.status_code == 200
    services = {svc["id"] for canvas in named.json()["items"]
                for svc in canvas["items"][0]["items"][0]["body"]["service"] if "id" in svc}
    assert services == {image_service_id(2, Asset(5, "foo")), image_service_id(2, Asset(5, "bar"))}
    assert state.json()["completed"] == 2 and "finished" in state.json()


def test_unknown_batches_and_bad_queue_bodies_are_refused():
    with DevDlcs() as dlcs:
        assert requests.get(f"{dlcs.url}/iiif-resource/v3/2/batch-query/1",
                            timeout=10).status_code == 404
        assert requests.get(f"{dlcs.url}/iiif-resource/v3/2/other/1", timeout=10).status_code == 404
        assert requests.get(f"{dlcs.url}/customers/2/queue/batches/1", timeout=10).status_code == 404
        refused = requests.post(f"{dlcs.url}/customers/2/queue", json={"member": [{"id": 1}]},
                                timeout=10)
        assert refused.status_code == 400 and "description" in refused.json()
        # Without ingest_seconds a batch never finishes by itself (the tests' FakeDlcs).
        queued = requests.post(f"{dlcs.url}/customers/2/queue", json={"member": MEMBERS},
                               timeout=10).json()
        assert queued["completed"] == 0 and "finished" not in queued


def test_ids_of_digits_that_are_not_ascii_are_refused_not_crashed_on():
    # http.server reads the request line as latin-1: byte 0xB2 is "\u00b2", a digit to
    # str.isdigit() that int() refuses; the handler died and the client got no answer.
    with DevDlcs() as dlcs:
        host, port = dlcs.url.removeprefix("http://").split(":")
        for path in (b"/customers/2/queue/batches/\xb2", b"/customers/\xb2/queue/batches/1",
                     b"/iiif-resource/v3/2/batch-query/1,\xb2"):
            with socket.create_connection((host, int(port)), timeout=10) as sock:
                sock.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                status_line = sock.makefile("rb").readline()
            assert status_line.split()[1] in (b"400", b"404"), (path, status_line)


def test_the_command_needs_the_webhook_secret():
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, "-m", "webhook.devdlcs", "--port", "0"],
                            env={"PATH": "/usr/bin:/bin"}, cwd=root, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 3
    [line] = [json.loads(text) for text in result.stderr.splitlines()]
    assert line["variable"] == "WEBHOOK_SECRETS"
