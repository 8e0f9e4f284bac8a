"""Serving a large manifest to slow readers: how much memory do the workers take for it?

For each storage (a directory, moto's S3 server over HTTP), a manifest is
published and its stored document replaced by one of ``--size-mb`` MiB (by the
app in this process, so no worker has held it), then gunicorn serves it as the
README runs it (``gunicorn.conf.py`` of ``--root``, 2 workers) to
``--readers`` clients at once, each reading at ``--rate`` KiB/s for
``--seconds`` s and then hanging up, as slow viewers on poor links do.

Printed per storage: the workers' resident memory (summed) before, its peak
growth while the readers read (sampled every 0.25 s), what is still held 2 s
after they are gone, both as multiples of the document's size, and how much the
readers received in all (the baseline: what a worker must send).

Run: ``.venv/bin/python bench/large_manifest.py [--size-mb 50] [--readers 16]
[--rate 512] [--seconds 10] [--storages file,s3] [--root DIR]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import socket
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import boto3  # noqa: E402
import requests  # noqa: E402

from tests.fake_dlcs import FakeDlcs, image_assets  # noqa: E402
from tests.servers import AWS, LOOPBACK, start_gunicorn, start_moto_server  # noqa: E402
from webhook import create_app, db  # noqa: E402
from webhook.config import Settings  # noqa: E402
from webhook.secret import parse_secret  # noqa: E402
from webhook.signature import sign  # noqa: E402
from webhook.models import Manifest  # noqa: E402
from webhook.s3_store import S3Store  # noqa: E402
from webhook.storage import published_key  # noqa: E402

ADMIN_TOKEN = "bench-admin-token-0123456789"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MAX_READERS = 64


def publish(database_url: str, storage_url: str, store, size: int) -> int:
    """Publish a small manifest, store a document of ``size`` bytes in its place; return its size."""
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
            answer = client.put("/2/manifests/large", json=registration,
                                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
            assert answer.status_code == 202, answer.data
            completion = json.dumps({"id": 1234, "customer": 2, "count": 2, "completed": 2,
                                     "errors": 0, "superseded": False,
                                     "submitted": "2025-02-20T12:28:01Z",
                                     "finished": "2025-02-20T12:30:15Z"}).encode()
            msg_id, timestamp = f"msg_{uuid.uuid4().hex}", int(time.time())
            answer = client.post("/webhooks/batch-completed", data=completion, headers={
                "webhook-id": msg_id, "webhook-timestamp": str(timestamp),
                "webhook-signature": sign(parse_secret(SECRET), msg_id, timestamp, completion)})
            assert answer.json["outcome"] == "manifest-completed", answer.data
            published = json.loads(client.get("/2/manifests/large").data)
            document = json.dumps({**published, "summary": {"en": ["x" * size]}}).encode()
            # Where the database says the published document is (a version key).
            key = published_key(2, "large", Manifest.registered(2, "large").published_key)
            app.extensions["webhook.store"].put(key, document)
            return len(document)
        finally:
            db.dispose()


def workers_of(master: int) -> list[int]:
    return [int(pid) for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split()]


def resident(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


def reader(port: int, rate: float, seconds: float, received: list[int]) -> None:
    """GET the manifest and read it at ``rate`` bytes/s for ``seconds``; count what arrived."""
    got = 0
    try:
        with socket.create_connection((LOOPBACK, port), timeout=30) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            sock.sendall(f"GET /2/manifests/large HTTP/1.1\r\nHost: {LOOPBACK}\r\n\r\n".encode())
            started = time.monotonic()
            block = max(1024, int(rate / 10))
            while time.monotonic() - started < seconds:
                chunk = sock.recv(block)
                if not chunk:
                    break
                got += len(chunk)
                # Paced: never ahead of rate x elapsed time.
                ahead = got / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
    except OSError:
        pass
    received.append(got)


def measure(storage: str, args: argparse.Namespace, workdir: Path) -> dict:
    database_url = f"sqlite:///{workdir}/{storage}.db"
    env = {"PATH": os.environ.get("PATH", ""), "DATABASE_URL": database_url,
           "ADMIN_TOKEN": ADMIN_TOKEN, "TMPDIR": str(workdir)}
    with contextlib.ExitStack() as stack:
        if storage == "file":
            storage_url, store = f"file://{workdir}/manifests", None
        else:
            moto = start_moto_server()
            stack.callback(moto.stop)
            bucket = f"bench-{uuid.uuid4().hex[:12]}"
            client = boto3.session.Session().client(
                "s3", endpoint_url=moto.url, region_name=AWS["AWS_DEFAULT_REGION"],
                aws_access_key_id=AWS["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=AWS["AWS_SECRET_ACCESS_KEY"])
            client.create_bucket(Bucket=bucket)
            storage_url, store = f"s3://{bucket}", S3Store(bucket, client=client)
            env.update({"AWS_ENDPOINT_URL": moto.url, **AWS})
        env["STORAGE_URL"] = storage_url
        size = publish(database_url, storage_url, store, args.size_mb * 1024 * 1024)
        server = start_gunicorn(env, cwd=args.root, workers=2, threads=4)
        stack.callback(server.cleanup)
        pids = workers_of(server.process.pid)
        # Each worker builds its store's client on first use (boto3's is ~15 MiB):
        # /readyz on fresh connections reaches both, so "before" includes it.
        for _ in range(8):
            requests.get(f"{server.url}/readyz", timeout=10)
        before = resident(pids)
        received: list[int] = []
        threads = [threading.Thread(target=reader, args=(server.port, args.rate * 1024,
                                                         args.seconds, received))
                   for _ in range(args.readers)]
        for thread in threads:
            thread.start()
        peak = before
        while any(thread.is_alive() for thread in threads):
            peak = max(peak, resident(pids))
            time.sleep(0.25)
        time.sleep(2.0)
        after = resident(pids)
    return {"storage": storage, "size": size, "before": before, "peak": peak - before,
            "after": after - before, "received": sum(received)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=50)
    parser.add_argument("--readers", type=int, default=16)
    parser.add_argument("--rate", type=float, default=512, help="KiB/s each reader reads")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--storages", default="file,s3")
    parser.add_argument("--root", type=Path, default=ROOT)
    args = parser.parse_args()
    if args.readers > MAX_READERS or args.seconds > 120:
        parser.error(f"at most {MAX_READERS} readers and 120 s")
    print(f"# {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"checkout {args.root}; {args.readers} readers x {args.rate:g} KiB/s x {args.seconds:g} s")
    print(f"{'storage':<8} {'document':>9} {'RSS before':>11} {'peak growth':>12} "
          f"{'x doc':>6} {'held after':>11} {'x doc':>6} {'readers got':>12}")
    with tempfile.TemporaryDirectory(prefix="bench-large-") as workdir:
        for storage in args.storages.split(","):
            r = measure(storage, args, Path(workdir))
            mib = 2 ** 20
            print(f"{r['storage']:<8} {r['size'] / mib:>5.1f} MiB {r['before'] / mib:>7.1f} MiB "
                  f"{r['peak'] / mib:>8.1f} MiB {r['peak'] / r['size']:>5.2f}x "
                  f"{r['after'] / mib:>7.1f} MiB {r['after'] / r['size']:>5.2f}x "
                  f"{r['received'] / mib:>8.1f} MiB")


if __name__ == "__main__":
    main()
