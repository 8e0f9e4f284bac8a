"""Time the final completion of large manifests end to end, next to their data cost.

The service runs under gunicorn with one worker (so its memory and CPU time can
be watched), sync and gevent (``--worker-classes``), on a fresh database per backend, stores manifests in
moto's S3 server over HTTP and asks the fake DLCS (``tests/fake_dlcs.py``,
loopback HTTP) for the named query, once with the default DLCS timeout (30 s)
and once with a short one (``--timeouts``). The fake renders each answer once
before the final webhook (``FakeDlcs.freeze``) and sends those bytes when asked,
so even a 50,000-canvas answer starts at once and arrives at socket speed
within a short timeout: the bench times the service, not the fake.

For each size (``--canvases``, default 1,000, 10,000 and 50,000 images in
batches of ``--batch-size``) ``--repeat`` manifests are registered, every batch
but one is completed by a signed webhook, the worker is replaced by a fresh
one (warmed up by ``/readyz``) and the final webhook is sent and timed, from the
POST to the ``manifest-completed`` answer: the named query, the build, the S3
upload and the write-back of every canvas row. Right after it, the data cost of
that answer is measured in a separate process with the cyclic garbage
collector off: GET the named-query answer from the fake, ``json.loads`` it,
serialise the published document (``webhook.manifest_json.serialise``) and PUT it to
the same S3 server. Printed per manifest and as medians:

- ``final``: the final webhook's wall time, as its sender sees it, and the
  worker's CPU time during it;
- ``data``: the data cost's wall time and CPU time;
- ``ratio``: final / data, wall (the goal: at most 1.5x) and CPU (steadier
  when other work shares the machine); the median of the per-manifest ratios;
- ``fetches``: named queries the fake answered for the manifest (1 unless a
  fetch timed out and was retried);
- ``peak``: the worker's peak RSS during the final webhook above its RSS
  before (``VmHWM`` after resetting it through ``/proc/<pid>/clear_refs``), as
  a multiple of the named-query answer's size (the goal: under 5x);
- per backend and timeout, the largest size's median final over the one
  before it, next to the ratio of their sizes (linear: 50,000 at most 5.5x
  the 10,000 time).
- per cell, the time above the data cost stage by stage: the named query
  against the data cost's fetch + parse, the build against its serialise,
  the store against its PUT, and the rest (the rows read and written, the
  delivery's transaction, HTTP), next to what the goal allows (half the data
  cost).

Run: ``.venv/bin/python bench/final_completion.py [--canvases 1000,10000,50000]
[--timeouts 30,2] [--repeat 3] [--databases sqlite,postgresql]``. The full run
takes about 15 minutes on two cores.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import multiprocessing
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import boto3  # noqa: E402
import requests  # noqa: E402

from bench.build import CUSTOMER, notification, registration  # noqa: E402
from bench.intake import cpu_seconds, fresh_database, machine_line  # noqa: E402
from tests.fake_dlcs import FakeDlcs, image_assets  # noqa: E402
from tests.servers import GunicornServer, start_gunicorn, start_moto_server  # noqa: E402
from webhook.secret import parse_secret  # noqa: E402
from webhook.signature import sign  # noqa: E402

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ADMIN_TOKEN = "bench-admin-token-0123456789"
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
       "AWS_DEFAULT_REGION": "us-east-1"}
BUCKET = "bench-manifests"
MB = 2**20
GOAL_RATIO = 1.5
GOAL_MEMORY = 5.0
GOAL_LINEAR = 1.1   # the larger size's time over the smaller's, per unit of their size ratio


def deliver(session: requests.Session, url: str, body: bytes, msg_id: str) -> requests.Response:
    timestamp = int(time.time())
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
               "webhook-signature": sign(parse_secret(SECRET), msg_id, timestamp, body)}
    return session.post(f"{url}/webhooks/batch-completed", data=body, headers=headers,
                        timeout=600)


# ---------------------------------------------------------------- the worker

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

def _data_cost(named_query_url: str, published: bytes, endpoint: str,
               queue: multiprocessing.Queue) -> None:
    """In a process of its own: fetch + parse the answer, serialise + store the result."""
    import gc

    from webhook.manifest_json import serialise

    s3 = boto3.session.Session().client("s3", endpoint_url=endpoint, **_aws_kwargs())
    document = json.loads(published)
    gc.disable()
    with requests.Session() as session:
        started, cpu = time.perf_counter(), time.process_time()
        raw = session.get(named_query_url, params={"cacheBust": "data"}, timeout=600).content
        fetched = time.perf_counter()
        json.loads(raw)
        parsed = time.perf_counter()
        body = serialise(document)
        serialised = time.perf_counter()
        s3.put_object(Bucket=BUCKET, Key="data-cost", Body=body,
                      ContentType="application/ld+json")
        stored = time.perf_counter()
    queue.put({"fetch": fetched - started, "parse": parsed - fetched,
               "serialise": serialised - parsed, "store": stored - serialised,
               "data": stored - started, "data_cpu": time.process_time() - cpu,
               "answer_bytes": len(raw)})


def _aws_kwargs() -> dict:
    return {"region_name": AWS["AWS_DEFAULT_REGION"],
            "aws_access_key_id": AWS["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": AWS["AWS_SECRET_ACCESS_KEY"]}


def data_cost(named_query_url: str, published: bytes, endpoint: str) -> dict:
    """Measure the data cost in a spawned process, so it does not share the fake's GIL."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_data_cost,
                              args=(named_query_url, published, endpoint, queue))
    process.start()
    result = queue.get(timeout=900)
    process.join(timeout=60)
    return result


# ---------------------------------------------------------------- one configuration

def rebuild_line(server: GunicornServer, manifest: str) -> dict:
    """Return the service's last "rebuild" log line for ``manifest``."""
    for line in reversed(server.log().splitlines()):
        if '"rebuild"' in line and manifest in line:
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("message") == "rebuild" and entry.get("manifest") == manifest:
                    return entry
    return {}


class Run:
    """The service on one database with one DLCS timeout, and its manifests."""

    def __init__(self, database: str, worker_class: str, url: str, timeout: int, args,
                 fake: FakeDlcs, moto):
        # Printed and grouped by: the backend and the worker class together.
        self.database = f"{database}/{worker_class}"
        self.timeout, self.args, self.fake, self.moto = timeout, args, fake, moto
        env = {name: value for name, value in os.environ.items()
               if not name.startswith(("AWS_", "DLCS_", "WEBHOOK_", "GUNICORN_"))
               and name not in ("DATABASE_URL", "STORAGE_URL", "PROMETHEUS_MULTIPROC_DIR")}
        env.update({"DATABASE_URL": url, "STORAGE_URL": f"s3://{BUCKET}/published",
                    "PUBLIC_BASE_URL": "https://presentation.example",
                    "WEBHOOK_SECRETS": SECRET, "ADMIN_TOKEN": ADMIN_TOKEN,
                    "DLCS_ORCHESTRATOR_URL": fake.url, "DLCS_TIMEOUT_SECONDS": str(timeout),
                    "AWS_ENDPOINT_URL": moto.url, "PYTHONUNBUFFERED": "1",
                    # The one switch gunicorn.conf.py reads: it patches for gevent
                    # unless told otherwise, whatever "-k" says.
                    "GUNICORN_WORKER_CLASS": worker_class, **AWS})
        self.server = start_gunicorn(env, cwd=ROOT, workers=1, threads=1, timeout=60)
        self.session = requests.Session()
        self.pid: int | None = None

    def close(self) -> None:
        self.session.close()
        log = self.server.log()
        self.server.cleanup()
        if "Traceback" in log:
            print(f"!! the service logged a traceback:\n{log[-3000:]}")

    def final_completion(self, size: int, number: int, first_batch: int) -> dict:
        """Register a manifest of ``size`` canvases, complete it, and measure its final webhook."""
        args, fake, server = self.args, self.fake, self.server
        slug = f"final-{self.timeout}s-{size}-{number}"
        assets = image_assets(slug, size)
        batches = {first_batch + b: assets[start:start + args.batch_size]
                   for b, start in enumerate(range(0, size, args.batch_size))}
        for batch_id, members in batches.items():
            fake.add_batch(CUSTOMER, batch_id, members)
        response = self.session.put(f"{server.url}/{CUSTOMER}/manifests/{slug}",
                                    data=registration(slug, batches),
                                    headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                                    timeout=900)
        assert response.status_code == 202, response.text[:500]
        *early, last = batches
        for batch_id in early:
            answer = deliver(self.session, server.url,
                             notification(batch_id, len(batches[batch_id])), f"bench-{batch_id}")
            assert answer.json()["outcome"] == "batch-completed", answer.text
        answer_bytes = fake.freeze(CUSTOMER, batches)

        self.pid = fresh_worker(server, self.pid)
        self.session.close()
        self.session = requests.Session()
        rss_before = memory_kb(self.pid, "VmRSS")
        reset_peak(self.pid)
        body = notification(last, len(batches[last]))
        cpu_before = cpu_seconds([self.pid])[self.pid]
        started = time.perf_counter()
        answer = deliver(self.session, server.url, body, f"bench-{last}")
        final_s = time.perf_counter() - started
        final_cpu = cpu_seconds([self.pid])[self.pid] - cpu_before
        assert answer.status_code == 200, answer.text[:500]
        assert answer.json()["outcome"] == "manifest-completed", answer.text
        peak_kb = memory_kb(self.pid, "VmHWM")
        fetches = fake.calls(CUSTOMER, batches)

        published = self.session.get(f"{server.url}/{CUSTOMER}/manifests/{slug}", timeout=120)
        assert published.status_code == 200
        assert len(published.json()["items"]) == size
        ids = ",".join(map(str, sorted(batches)))
        cost = data_cost(f"{fake.url}/iiif-resource/v3/{CUSTOMER}/batch-query/{ids}",
                         published.content, self.moto.url)
        assert cost["answer_bytes"] == answer_bytes
        stages = rebuild_line(server, f"{CUSTOMER}/{slug}")
        result = {"database": self.database, "timeout": self.timeout, "size": size,
                  "final": final_s, "final_cpu": final_cpu, **cost,
                  "ratio": final_s / cost["data"], "ratio_cpu": final_cpu / cost["data_cpu"],
                  "fetches": fetches,
                  "answer_mb": answer_bytes / MB, "published_mb": len(published.content) / MB,
                  "growth_mb": (peak_kb - rss_before) / 1024,
                  "stages": {k: stages.get(k) for k in
                             ("named_query_ms", "build_ms", "store_ms", "duration_ms")}}
        result["growth_x"] = result["growth_mb"] / result["answer_mb"]
        s = result["stages"]
        print(f"  {self.database:<18} {self.timeout:>3}s {size:>6} #{number + 1}  final "
              f"{final_s:6.2f}s (cpu {final_cpu:5.2f}s)  data {cost['data']:5.2f}s (fetch "
              f"{cost['fetch']:.2f} parse {cost['parse']:.2f} serialise {cost['serialise']:.2f} "
              f"store {cost['store']:.2f}; cpu {cost['data_cpu']:.2f}s)  ratio "
              f"{result['ratio']:4.2f}x (cpu {result['ratio_cpu']:4.2f}x)  fetches "
              f"{result['fetches']}  peak +{result['growth_mb']:.0f} MB "
              f"({result['growth_x']:.1f}x the {result['answer_mb']:.1f} MB answer)  stages: "
              f"named query {s['named_query_ms']} ms, build {s['build_ms']} ms, store "
              f"{s['store_ms']} ms, whole rebuild {s['duration_ms']} ms", flush=True)
        return result


# ---------------------------------------------------------------- the table

STAGE_KEYS = ("named_query_ms", "build_ms", "store_ms")
# Each stage's time above what the data cost spends on the same job, in ms.
EXCESS = {
    "named query": lambda r: r["stages"]["named_query_ms"] - (r["fetch"] + r["parse"]) * 1000,
    "build": lambda r: r["stages"]["build_ms"] - r["serialise"] * 1000,
    "store": lambda r: r["stages"]["store_ms"] - r["store"] * 1000,
    "rest": lambda r: r["final"] * 1000 - sum(r["stages"][key] for key in STAGE_KEYS),
}


def cells(results: list[dict], sizes: list[int]) -> Iterator[tuple[str, int, int, list[dict]]]:
    """Yield ``(database/worker, timeout, size, results)`` for every cell that has results."""
    for database, timeout in dict.fromkeys((r["database"], r["timeout"]) for r in results):
        for size in sizes:
            rows = [r for r in results if (r["database"], r["timeout"], r["size"])
                    == (database, timeout, size)]
            if rows:
                yield database, timeout, size, rows


def summarise(results: list[dict], sizes: list[int]) -> None:
    print()
    print(f"{'database/worker':<18} {'timeout':>7} {'canvases':>8} {'final':>7} {'data':>7} "
          f"{'ratio':>6} {'(range)':>11} {'cpu ratio':>9} {'fetches':>7} {'peak':>8} "
          f"{'x answer':>8}  goal")
    medians = {}
    for database, timeout, size, rows in cells(results, sizes):
        med = {key: statistics.median(r[key] for r in rows)
               for key in ("final", "data", "ratio", "ratio_cpu", "growth_mb", "growth_x")}
        medians[(database, timeout, size)] = med["final"]
        fetches = "/".join(str(r["fetches"]) for r in rows)
        ratios = [r["ratio"] for r in rows]
        ok = (med["ratio"] <= GOAL_RATIO and med["growth_x"] < GOAL_MEMORY
              and all(r["fetches"] == 1 for r in rows))
        print(f"{database:<18} {timeout:>6}s {size:>8} {med['final']:>6.2f}s "
              f"{med['data']:>6.2f}s {med['ratio']:>5.2f}x {min(ratios):>5.2f}-"
              f"{max(ratios):<5.2f} {med['ratio_cpu']:>8.2f}x {fetches:>7} "
              f"{med['growth_mb']:>5.0f} MB {med['growth_x']:>7.1f}x  "
              f"{'ok' if ok else 'SHORT'}")
    print(f"ratio: final webhook / data cost (GET + json.loads of the answer, serialise + PUT "
          f"of the result, collector off), the median of the per-manifest ratios; goal "
          f"<= {GOAL_RATIO}x, one fetch, peak RSS growth < {GOAL_MEMORY}x the answer")
    for database, timeout in dict.fromkeys((r["database"], r["timeout"]) for r in results):
        for smaller, larger in zip(sizes, sizes[1:]):
            if (database, timeout, smaller) in medians and (database, timeout, larger) in medians:
                times = medians[(database, timeout, larger)] / medians[(database, timeout, smaller)]
                allowed = larger / smaller * GOAL_LINEAR
                print(f"linear: {database} {timeout}s: {larger} canvases took {times:.2f}x "
                      f"the time of {smaller} ({larger / smaller:.0f}x the canvases; goal <= "
                      f"{allowed:.1f}x)  {'ok' if times <= allowed else 'SHORT'}")


def summarise_excess(results: list[dict], sizes: list[int]) -> None:
    """Print where each cell's time above its data cost goes, stage by stage (medians, ms).

    Each stage of the rebuild is set against the part of the data cost that
    does the same job: the named query against fetch + parse, the build
    against serialise, the store against the PUT; ``rest`` is what the data
    cost has no counterpart for (reading and writing the manifest's rows, the
    delivery's own transaction, HTTP). The goal allows half the data cost.
    """
    print()
    print("time above the data cost by stage, ms (medians): the named query over fetch + parse, "
          "the build over serialise, the store over the PUT, the rest (no counterpart); "
          "allowed: what the goal leaves")
    print(f"{'database/worker':<18} {'timeout':>7} {'canvases':>8} {'named query':>12} "
          f"{'build':>8} {'store':>7} {'rest':>7} {'allowed':>8}")
    # A manifest whose rebuild line was not found has no stages to set against.
    timed = [r for r in results if None not in (r["stages"][key] for key in STAGE_KEYS)]
    for database, timeout, size, rows in cells(timed, sizes):
        excess = [statistics.median(part(r) for r in rows) for part in EXCESS.values()]
        allowed = statistics.median(r["data"] for r in rows) * (GOAL_RATIO - 1) * 1000
        print(f"{database:<18} {timeout:>6}s {size:>8} {excess[0]:>+12.0f} "
              f"{excess[1]:>+8.0f} {excess[2]:>+7.0f} {excess[3]:>+7.0f} {allowed:>8.0f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--canvases", default="1000,10000,50000",
                        help="comma-separated sizes (default: %(default)s)")
    parser.add_argument("--timeouts", default="30,2",
                        help="DLCS_TIMEOUT_SECONDS values (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=100,
                        help="assets per DLCS batch (default: %(default)s, the DLCS default)")
    parser.add_argument("--repeat", type=int, default=3, help="manifests per configuration")
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--worker-classes", default="sync,gevent",
                        help="one worker of each (default: %(default)s; gevent is the "
                             "service's default)")
    parser.add_argument("--postgres-url", default=os.environ.get(
        "WEBHOOK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    args = parser.parse_args(argv)
    sizes = sorted(int(c) for c in args.canvases.split(",") if c)
    timeouts = [int(t) for t in args.timeouts.split(",") if t]

    print(machine_line())
    print(f"python {platform.python_version()}; sizes {sizes} in batches of {args.batch_size}; "
          f"DLCS timeouts {timeouts} s; gunicorn: 1 worker of {args.worker_classes}; S3: moto server; DLCS: "
          f"tests/fake_dlcs.py (answers rendered once, before each final webhook)")
    results = []
    moto = start_moto_server()
    try:
        s3 = boto3.session.Session().client("s3", endpoint_url=moto.url, **_aws_kwargs())
        s3.create_bucket(Bucket=BUCKET)
        next_batch = 500_000
        with tempfile.TemporaryDirectory(prefix="bench-final-") as tmp, FakeDlcs() as fake:
            for database in [d for d in args.databases.split(",") if d]:
                with fresh_database(database, "final", Path(tmp), args.postgres_url) as url:
                    for worker_class, timeout in itertools.product(
                            [w for w in args.worker_classes.split(",") if w], timeouts):
                        run = Run(database, worker_class, url, timeout, args, fake, moto)
                        try:
                            for size in sizes:
                                for number in range(args.repeat):
                                    results.append(run.final_completion(size, number,
                                                                        next_batch))
                                    next_batch += -(-size // args.batch_size)
                        finally:
                            run.close()
            if fake.errors:
                print(f"!! the fake DLCS failed: {fake.errors!r}")
    finally:
        moto.stop()
    summarise(results, sizes)
    summarise_excess(results, sizes)
    print(machine_line().replace("load average", "load average at the end"))


if __name__ == "__main__":
    main()
