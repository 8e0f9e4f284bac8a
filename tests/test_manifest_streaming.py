"""GET /{customer}/manifests/{id} streams the stored document: slow readers cost no copies of it.

A 24 MiB manifest is published (by the app in this process, so the server's
worker has never held it), then one gunicorn worker serves it to four clients
that read its first block and stop, as slow readers do. Whatever the worker
holds for them is in its resident memory while they wait: reading the whole
document per request would add at least four documents' worth.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from tests.conftest import ADMIN_TOKEN, SECRET, sample, signed_headers
from tests.fake_dlcs import FakeDlcs, image_assets
from tests.servers import AWS, LOOPBACK
from tests.test_end_to_end import running_service, service_environment
from webhook import create_app, db
from webhook.config import Settings
from webhook.models import Manifest
from webhook.s3_store import S3Store
from webhook.storage import published_key

pytestmark = pytest.mark.e2e

SIZE = 24 * 1024 * 1024
READERS = 4


def publish_large_manifest(database_url: str, storage_url: str, store=None) -> int:
    """Publish a manifest, then store a document of SIZE bytes in its place; return its size.

    Built the usual way, a document this large comes from a named query over
    thousands of assets; the registration (and its row) stays small either way,
    which writing the document straight to the store keeps true here.
    """
    with FakeDlcs() as dlcs:
        assets = dlcs.add_batch(2, 1234, image_assets("large", 2))
        app = create_app(Settings.from_env({
            "DATABASE_URL": database_url, "STORAGE_URL": storage_url, "ADMIN_TOKEN": ADMIN_TOKEN,
            "WEBHOOK_SECRETS": SECRET, "DLCS_ORCHESTRATOR_URL": dlcs.url}), store=store)
        try:
            client = app.test_client()
            registration = {"type": "Manifest", "label": {"en": ["Large"]}, "batches": [1234],
                            "paintedResources": [
                                {"canvasPainting": {"canvasOrder": n},
                                 "asset": {"id": asset.id, "space": asset.space}}
                                for n, asset in enumerate(assets)]}
            assert client.put("/2/manifests/large", json=registration, headers={
                "Authorization": f"Bearer {ADMIN_TOKEN}"}).status_code == 202
            completion = json.dumps({**json.loads(sample("notification-current.json")),
                                     "id": 1234}).encode()
            answer = client.post("/webhooks/batch-completed", data=completion,
                                 headers=signed_headers(completion))
            assert answer.json["outcome"] == "manifest-completed"
            published = json.loads(client.get("/2/manifests/large").data)
            document = json.dumps({**published, "summary": {"en": ["x" * SIZE]}}).encode()
            # Where the database says the published document is (a version key).
            key = published_key(2, "large", Manifest.registered(2, "large").published_key)
            app.extensions["webhook.store"].put(key, document)
            return len(document)
        finally:
            db.dispose()


def worker_pid(master: int) -> int:
    [child] = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return int(child)


def resident_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def slow_reader(port: int) -> tuple[socket.socket, bytes]:
    """Ask for the manifest and read until its first body bytes arrive; then read no more."""
    sock = socket.create_connection((LOOPBACK, port), timeout=30)
    # A small receive buffer: the server cannot push the document into it.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.sendall(f"GET /2/manifests/large HTTP/1.1\r\nHost: {LOOPBACK}\r\n\r\n".encode())
    received = b""
    while b"\r\n\r\n" not in received or len(received.partition(b"\r\n\r\n")[2]) < 1024:
        chunk = sock.recv(64 * 1024)
        assert chunk, "the server closed the connection"
        received += chunk
    return sock, received


@pytest.fixture(params=["file", "s3"])
def storage(request, tmp_path):
    """Where the manifest is published: (STORAGE_URL, environment, store for the publisher)."""
    if request.param == "file":
        return f"file://{tmp_path}/manifests", {}, None
    name, client = request.getfixturevalue("bucket")
    url = request.getfixturevalue("moto_server").url
    return f"s3://{name}", {"AWS_ENDPOINT_URL": url, **AWS}, S3Store(name, client=client)


def test_slow_readers_of_a_large_manifest_do_not_copy_it(database_url, storage):
    storage_url, aws, store = storage
    size = publish_large_manifest(database_url, storage_url, store)
    env = service_environment(database_url=database_url, storage_url=storage_url,
                              dlcs_url="http://127.0.0.1:9", **aws)
    with running_service(env, workers=1) as server:
        worker = worker_pid(server.process.pid)
        before = resident_bytes(worker)
        readers = [slow_reader(server.port) for _ in range(READERS)]
        try:
            time.sleep(0.5)  # whatever each request loads is loaded by now
            grown = resident_bytes(worker) - before
            for _, received in readers:
                head = received.partition(b"\r\n\r\n")[0].decode("latin-1").lower()
                assert head.startswith("http/1.1 200") and f"content-length: {size}" in head
        finally:
            for sock, _ in readers:
                sock.close()
    print(f"worker RSS grew {grown / 2**20:.1f} MiB with {READERS} readers of "
          f"{size / 2**20:.1f} MiB")
    assert grown < size
