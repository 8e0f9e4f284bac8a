"""Time the final completion of a large manifest end to end, next to its data cost.

The service runs under gunicorn (one worker, so its memory can be watched) on
a fresh database, stores manifests in moto's S3 server over HTTP and asks the
fake DLCS (``tests/fake_dlcs.py``, loopback HTTP) for the named query. For each
of ``--repeat`` manifests of ``--canvases`` images in batches of
``--batch-size``, the manifest is registered, every batch but one is completed
by a signed webhook, the worker is replaced by a fresh one (warmed up by
``/readyz``, which also builds its S3 client) and then the final webhook is
sent and timed, from the POST to the ``manifest-completed`` answer: the named
query, the build, the S3 upload and the write-back of every canvas row.

Printed per manifest and as medians:

- ``final``: the final webhook, as its sender sees it;
- ``stages``: the service's own timings from its rebuild log line;
- ``data``: the unavoidable data cost, measured in a separate process with the
  cyclic garbage collector off (and again with it on, ``data+gc``): GET the
  named-query answer from the fake, ``json.loads`` it, serialise the published
  document (``webhook.manifest.serialise``) and PUT it to the same S3 server;
- ``ratio``: final / data;
- ``peak``: the worker's peak RSS during the final webhook above its RSS
  before (``VmHWM`` after resetting it through ``/proc/<pid>/clear_refs``), and
  that growth as a multiple of the named-query answer's size.

Run: ``.venv/bin/python bench/final_completion.py [--canvases 10000]
[--batch-size 100] [--repeat 3] [--databases sqlite,postgresql]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import boto3  # noqa: E402
import requests  # noqa: E402

from bench.build import CUSTOMER, notification, registration  # noqa: E402
from bench.intake import fresh_database  # noqa: E402
from tests.fake_dlcs import FakeDlcs, image_assets  # noqa: E402
from tests.servers import GunicornServer, start_gunicorn, start_moto_server  # noqa: E402
from webhook.config import parse_secret  # noqa: E402
from webhook.signature import sign  # noqa: E402

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ADMIN_TOKEN = "bench-admin-token-0123456789"
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
       "AWS_DEFAULT_REGION": "us-east-1"}
BUCKET = "bench-manifests"
MB = 2**20


def deliver(session: requests.Session, url: str, body: bytes, msg_id: str) -> requests.Response:
    timestamp = int(time.time())
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
               "webhook-signature": sign(parse_secret(SECRET), msg_id, timestamp, body)}
    return session.post(f"{url}/webhooks/batch-completed", data=body, headers=headers,
                        timeout=300)


# ---------------------------------------------------------------- the worker's memory

def worker_pid(server: GunicornServer, timeout: float = 30.0) -> int:
    """Return the pid of the server's only worker, once it answers /readyz."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
        pids = [int(p) for p in children.read_text().split()]
        if len(pids) == 1:
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{server.url}/readyz", timeout=5).status_code == 200:
                    return pids[0]
        time.sleep(0.1)
    raise TimeoutError("no single ready worker")


def fresh_worker(server: GunicornServer, old: int | None) -> int:
    """Replace the worker by a new one (gunicorn respawns it); return its pid once ready."""
    if old is not None:
        os.kill(old, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while Path(f"/proc/{old}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    pid = worker_pid(server)
    # Warm up: /readyz builds the S3 client and checks the bucket and the database.
    for _ in range(3):
        requests.get(f"{server.url}/readyz", timeout=10)
    return pid


def memory_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak(pid: int) -> None:
    """Reset the process's VmHWM (peak RSS) to its current RSS (Linux, needs permission)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


# ---------------------------------------------------------------- the data cost

def _data_cost(named_query_url: str, published: bytes, endpoint: str, repeat: int,
               collector: bool, queue: multiprocessing.Queue) -> None:
    """In a process of its own: fetch + parse the answer, serialise + store the result."""
    import gc

    from webhook.manifest import serialise

    s3 = boto3.session.Session().client("s3", endpoint_url=endpoint, **_aws_kwargs())
    document = json.loads(published)
    if not collector:
        gc.disable()
    results = []
    with requests.Session() as session:
        for n in range(repeat):
            started = time.perf_counter()
            raw = session.get(named_query_url, params={"cacheBust": f"data-{n}"},
                              timeout=300).content
            fetched = time.perf_counter()
            json.loads(raw)
            parsed = time.perf_counter()
            body = serialise(document)
            serialised = time.perf_counter()
            s3.put_object(Bucket=BUCKET, Key=f"data-cost/{n}", Body=body,
                          ContentType="application/ld+json")
            stored = time.perf_counter()
            results.append({"fetch": fetched - started, "parse": parsed - fetched,
                            "serialise": serialised - parsed, "store": stored - serialised,
                            "answer_bytes": len(raw), "published_bytes": len(body)})
    queue.put(results)


def _aws_kwargs() -> dict:
    return {"region_name": AWS["AWS_DEFAULT_REGION"],
            "aws_access_key_id": AWS["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": AWS["AWS_SECRET_ACCESS_KEY"]}


def data_cost(named_query_url: str, published: bytes, endpoint: str, repeat: int,
              collector: bool) -> list[dict]:
    """Measure the data cost in a spawned process, so it does not share the fake's GIL."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_data_cost, args=(named_query_url, published, endpoint,
                                                       repeat, collector, queue))
    process.start()
    results = queue.get(timeout=600)
    process.join(timeout=60)
    return results


# ---------------------------------------------------------------- one database

def rebuild_line(server: GunicornServer, manifest: str) -> dict:
    """Return the service's last "rebuild" log line for ``manifest``."""
    for line in reversed(server.log().splitlines()):
        if '"rebuild"' in line and manifest in line:
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("message") == "rebuild" and entry.get("manifest") == manifest:
                    return entry
    return {}


def measure(database: str, args, workdir: Path, fake: FakeDlcs, moto) -> list[dict]:
    results = []
    with fresh_database(database, "final", workdir, args.postgres_url) as url:
        env = {name: value for name, value in os.environ.items()
               if not name.startswith(("AWS_", "DLCS_", "WEBHOOK_", "GUNICORN_"))
               and name not in ("DATABASE_URL", "STORAGE_URL", "PROMETHEUS_MULTIPROC_DIR")}
        env.update({"DATABASE_URL": url, "STORAGE_URL": f"s3://{BUCKET}/published",
                    "PUBLIC_BASE_URL": "https://presentation.example",
                    "WEBHOOK_SECRETS": SECRET, "ADMIN_TOKEN": ADMIN_TOKEN,
                    "DLCS_ORCHESTRATOR_URL": fake.url, "DLCS_TIMEOUT_SECONDS": "120",
                    "AWS_ENDPOINT_URL": moto.url, "PYTHONUNBUFFERED": "1", **AWS})
        server = start_gunicorn(env, cwd=ROOT, workers=1, threads=args.threads, timeout=60)
        session = requests.Session()
        try:
            pid = None
            for n in range(args.repeat):
                slug = f"final-{database}-{n}"
                assets = image_assets(slug, args.canvases)
                first = 500_000 + n * 1000 + (0 if database == "sqlite" else 100_000)
                batches = {first + b: assets[start:start + args.batch_size]
                           for b, start in enumerate(range(0, args.canvases, args.batch_size))}
                for batch_id, members in batches.items():
                    fake.add_batch(CUSTOMER, batch_id, members)
                started = time.perf_counter()
                response = session.put(f"{server.url}/{CUSTOMER}/manifests/{slug}",
                                       data=registration(slug, batches),
                                       headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                                       timeout=300)
                register_s = time.perf_counter() - started
                assert response.status_code == 202, response.text[:500]
                *early, last = batches
                for batch_id in early:
                    answer = deliver(session, server.url, notification(batch_id, args.batch_size),
                                     f"bench-{batch_id}")
                    assert answer.json()["outcome"] == "batch-completed", answer.text

                pid = fresh_worker(server, pid)
                session.close()
                session = requests.Session()
                rss_before = memory_kb(pid, "VmRSS")
                reset_peak(pid)
                body = notification(last, len(batches[last]))
                started = time.perf_counter()
                answer = deliver(session, server.url, body, f"bench-{last}")
                final_s = time.perf_counter() - started
                assert answer.status_code == 200, answer.text[:500]
                assert answer.json()["outcome"] == "manifest-completed", answer.text
                peak_kb = memory_kb(pid, "VmHWM")
                assert fake.calls(CUSTOMER, batches) == 1

                published = session.get(f"{server.url}/{CUSTOMER}/manifests/{slug}",
                                        timeout=60)
                assert published.status_code == 200
                assert len(published.json()["items"]) == args.canvases
                ids = ",".join(map(str, sorted(batches)))
                url = f"{fake.url}/iiif-resource/v3/{CUSTOMER}/batch-query/{ids}"
                costs = data_cost(url, published.content, moto.url, args.data_repeat, False)
                cost = {key: statistics.median(c[key] for c in costs)
                        for key in ("fetch", "parse", "serialise", "store")}
                data_s = sum(cost.values())
                # The same with the collector on, as a default interpreter runs it.
                with_gc = data_cost(url, published.content, moto.url, args.data_repeat, True)
                data_gc_s = statistics.median(sum(c[key] for key in cost) for c in with_gc)
                answer_bytes = costs[0]["answer_bytes"]
                stages = rebuild_line(server, f"{CUSTOMER}/{slug}")
                result = {"database": database, "register": register_s, "final": final_s,
                          "data": data_s, "data_gc": data_gc_s, **cost,
                          "ratio": final_s / data_s, "ratio_gc": final_s / data_gc_s,
                          "answer_mb": answer_bytes / MB,
                          "published_mb": len(published.content) / MB,
                          "growth_mb": (peak_kb - rss_before) / 1024,
                          "rss_before_mb": rss_before / 1024,
                          "stages": {k: stages.get(k) for k in
                                     ("named_query_ms", "build_ms", "store_ms", "duration_ms")}}
                result["growth_x"] = result["growth_mb"] / result["answer_mb"]
                results.append(result)
                s = result["stages"]
                print(f"  {database:<10} #{n + 1}  final {final_s:5.2f}s  data {data_s:5.2f}s "
                      f"(fetch {cost['fetch']:.2f} parse {cost['parse']:.2f} serialise "
                      f"{cost['serialise']:.2f} store {cost['store']:.2f}; {data_gc_s:.2f}s with "
                      f"the collector on)  ratio {result['ratio']:4.2f}x "
                      f"({result['ratio_gc']:.2f}x)  peak +{result['growth_mb']:.0f} MB "
                      f"({result['growth_x']:.1f}x the {result['answer_mb']:.1f} MB answer)  "
                      f"service stages: named query {s['named_query_ms']} ms, build "
                      f"{s['build_ms']} ms, store {s['store_ms']} ms, rebuild "
                      f"{s['duration_ms']} ms", flush=True)
        finally:
            session.close()
            log = server.log()
            server.cleanup()
            if "Traceback" in log:
                print(f"!! the service logged a traceback:\n{log[-3000:]}")
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--canvases", type=int, default=10_000)
    parser.add_argument("--batch-size", type=int, default=100,
                        help="assets per DLCS batch (default: %(default)s, the DLCS default)")
    parser.add_argument("--repeat", type=int, default=3, help="manifests per database")
    parser.add_argument("--data-repeat", type=int, default=3,
                        help="runs per median of the data cost")
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn threads")
    parser.add_argument("--postgres-url", default=os.environ.get(
        "WEBHOOK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    args = parser.parse_args(argv)

    load = " ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"machine: {os.cpu_count()} cores, {platform.machine()}, {platform.platform()}, "
          f"load average {load}")
    print(f"python {platform.python_version()}; {args.canvases} canvases in batches of "
          f"{args.batch_size}; gunicorn 1 worker x {args.threads} threads; S3: moto server; "
          f"DLCS: tests/fake_dlcs.py")
    results = []
    moto = start_moto_server()
    try:
        s3 = boto3.session.Session().client("s3", endpoint_url=moto.url, **_aws_kwargs())
        s3.create_bucket(Bucket=BUCKET)
        with tempfile.TemporaryDirectory(prefix="bench-final-") as tmp, FakeDlcs() as fake:
            for database in [d for d in args.databases.split(",") if d]:
                results += measure(database, args, Path(tmp), fake, moto)
            if fake.errors:
                print(f"!! the fake DLCS failed: {fake.errors!r}")
    finally:
        moto.stop()
    print()
    print(f"{'database':<10} {'final':>7} {'data':>7} {'ratio':>6} {'data+gc':>8} "
          f"{'ratio':>6} {'peak growth':>12} {'x answer':>9} {'answer':>8} {'published':>9}")
    for database in dict.fromkeys(r["database"] for r in results):
        rows = [r for r in results if r["database"] == database]
        med = {key: statistics.median(r[key] for r in rows)
               for key in ("final", "data", "ratio", "data_gc", "ratio_gc", "growth_mb",
                           "growth_x", "answer_mb", "published_mb")}
        print(f"{database:<10} {med['final']:>6.2f}s {med['data']:>6.2f}s "
              f"{med['ratio']:>5.2f}x {med['data_gc']:>7.2f}s {med['ratio_gc']:>5.2f}x "
              f"{med['growth_mb']:>9.0f} MB {med['growth_x']:>8.1f}x "
              f"{med['answer_mb']:>6.1f}MB {med['published_mb']:>7.1f}MB")
    print("data: fetch + parse the answer, serialise + store the result, collector off "
          "(data+gc: on)")
    load = " ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"(medians of {args.repeat}; load average at the end: {load})")


if __name__ == "__main__":
    main()
