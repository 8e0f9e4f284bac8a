"""Measure webhook intake under load, next to a ceiling app doing the bare minimum.

For each database (SQLite, PostgreSQL), the service (``wsgi:app``) and the
ceiling (``bench/ceiling.py``: verify, parse, insert one row) run under
gunicorn with the same settings (``gunicorn.conf.py``, the same workers and
threads), each on a fresh database of its own. ``wrk`` drives both with the
same bounded closed-loop load (``bench/intake.lua``): valid, unique, signed
completions, 16 and 64 connections, ``--duration`` seconds a run, ``--repeat``
rounds alternating service and ceiling so that drift hits both alike.

The service's deliveries are NON-final completions: before each run fresh
manifests of ``--batches-per-manifest`` batches are registered through ``PUT``,
and the run completes every batch but the last of each, so each request takes
the service's full intake path (record the delivery, lock the manifest, complete
the batch, count what is left) and answers ``batch-completed``, never a rebuild.
Each run's deliveries are signed just before it (timestamps within tolerance).
After each run the delivery rows are counted to confirm every request was
recorded with the expected outcome.

Printed: requests/s, p50 and p99 latency and errors (non-2xx, socket errors) per
run; then per database and connection count the medians and the ratio
service / ceiling.

Run: ``.venv/bin/python bench/intake.py [--databases sqlite,postgresql]
[--connections 16,64] [--duration 10] [--repeat 3] [--workers 2] [--threads 4]``.
Needs ``wrk`` (``apt-get install wrk``) and, for PostgreSQL, a server at
``--postgres-url`` where the user may create databases.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from tests.servers import GunicornServer, scratch_postgres, start_gunicorn  # noqa: E402
from webhook.config import parse_secret  # noqa: E402
from webhook.signature import sign  # noqa: E402

LUA = ROOT / "bench" / "intake.lua"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ADMIN_TOKEN = "bench-admin-token-0123456789"
CUSTOMER = 7
SERVICE_APP = "wsgi:app"
CEILING_APP = "bench.ceiling:create_app()"
# Headroom over the fastest rate seen so far, so a run never runs out of deliveries.
POOL_HEADROOM = 1.6
FIRST_RATE_GUESS = 2500.0


@dataclass
class Target:
    """One app under gunicorn on one database, and the deliveries it has been sent."""

    name: str                 # "service" or "ceiling"
    database: str             # "sqlite" or "postgresql"
    database_url: str
    server: GunicornServer
    next_batch: int = 1_000_000
    manifests: int = 0
    expected_rows: int = 0
    runs: list[dict] = field(default_factory=list)


# ---------------------------------------------------------------- databases

@contextlib.contextmanager
def fresh_database(kind: str, label: str, workdir: Path, postgres_url: str) -> Iterator[str]:
    """Yield the URL of a new, empty database; drop it afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{workdir}/{label}.db"
        return
    with scratch_postgres(postgres_url, f"bench_{label}") as url:
        yield url


def count_rows(database_url: str, outcome: str) -> int:
    """Count the delivery rows with ``outcome`` (read directly, not through the app)."""
    if database_url.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(database_url[len("sqlite:///"):])) as con:
            return con.execute("SELECT count(*) FROM delivery WHERE outcome = ?",
                               (outcome,)).fetchone()[0]
    import psycopg2

    with contextlib.closing(psycopg2.connect(database_url)) as con, con.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM delivery WHERE outcome = %s", (outcome,))
        return cursor.fetchone()[0]


# ---------------------------------------------------------------- servers

def environment(database_url: str, workdir: Path) -> dict[str, str]:
    """The environment of both apps: nothing inherited that could configure them."""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("AWS_", "DLCS_", "WEBHOOK_", "SNS_", "GUNICORN_"))
           and name not in ("DATABASE_URL", "STORAGE_URL", "PUBLIC_BASE_URL", "ADMIN_TOKEN",
                            "PROMETHEUS_MULTIPROC_DIR")}
    env.update({"DATABASE_URL": database_url, "STORAGE_URL": f"file://{workdir}/manifests",
                "PUBLIC_BASE_URL": "https://presentation.example", "WEBHOOK_SECRETS": SECRET,
                "ADMIN_TOKEN": ADMIN_TOKEN, "DLCS_ORCHESTRATOR_URL": "http://127.0.0.1:9",
                "PYTHONUNBUFFERED": "1"})
    return env


# ---------------------------------------------------------------- deliveries

def notification(batch_id: int) -> bytes:
    return json.dumps({
        "id": batch_id, "customer": CUSTOMER, "count": 1, "completed": 1, "errors": 0,
        "superseded": False, "submitted": "2025-02-20T12:28:01.517392Z",
        "finished": "2025-02-20T12:30:15.123456Z"}, separators=(",", ":")).encode()


def register_manifests(target: Target, deliveries: int, batches_per_manifest: int) -> list[int]:
    """Register fresh manifests; return ``deliveries`` of their batch ids, never a last one."""
    per_manifest = batches_per_manifest - 1
    count = -(-deliveries // per_manifest)
    plans = []
    for _ in range(count):
        ids = list(range(target.next_batch, target.next_batch + batches_per_manifest))
        target.next_batch += batches_per_manifest
        plans.append((f"m{target.manifests:06d}", ids))
        target.manifests += 1

    def put(plan):
        slug, ids = plan
        body = {"type": "Manifest", "label": {"en": [f"Intake benchmark {slug}"]},
                "paintedResources": [], "batches": ids}
        with requests.put(f"{target.server.url}/{CUSTOMER}/manifests/{slug}", json=body,
                          headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                          timeout=60) as response:
            if response.status_code != 202:
                raise RuntimeError(f"registering {slug}: {response.status_code} "
                                   f"{response.text[:300]}")

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(put, plans))
    # Interleave the manifests: consecutive deliveries lock different manifest rows.
    return [ids[b] for b in range(per_manifest) for _, ids in plans][:deliveries]


def write_pool(path: Path, target: Target, count: int, batches_per_manifest: int) -> None:
    """Sign ``count`` unique deliveries now and write them for the Lua script."""
    if target.name == "service":
        batch_ids = register_manifests(target, count, batches_per_manifest)
    else:
        batch_ids = list(range(target.next_batch, target.next_batch + count))
        target.next_batch += count
    key = parse_secret(SECRET)
    timestamp = int(time.time())
    with path.open("w") as pool:
        for batch_id in batch_ids:
            body = notification(batch_id)
            msg_id = f"msg_{target.name}_{batch_id}"
            pool.write(f"{msg_id}\t{timestamp}\t{sign(key, msg_id, timestamp, body)}\t"
                       f"{body.decode()}\n")


def run_wrk(target: Target, connections: int, duration: int, threads: int,
            pool_path: Path) -> dict:
    """Run wrk once against ``target``; return its RESULT line as a dict."""
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "10s",
               "-s", str(LUA), f"{target.server.url}/webhooks/batch-completed", "--",
               str(pool_path), str(threads)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 120)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    result = json.loads(lines[-1][len("RESULT "):])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    result["errors"] = sum(result[k] for k in ("connect_errors", "read_errors", "write_errors",
                                               "status_errors", "timeouts"))
    return result


def one_run(target: Target, connections: int, args, workdir: Path, rate_guess: float) -> dict:
    pool_size = int(rate_guess * args.duration * POOL_HEADROOM)
    pool_path = workdir / f"pool-{target.name}-{target.database}.tsv"
    write_pool(pool_path, target, pool_size, args.batches_per_manifest)
    result = run_wrk(target, connections, args.duration, args.wrk_threads, pool_path)
    if result["wrapped"]:
        raise RuntimeError(f"{target.name}: the pool of {pool_size} deliveries ran out "
                           f"({result['wrapped']} re-sent); raise --rate-guess")
    # Every answered request must have left its row (in-flight ones at the end may too).
    time.sleep(0.5)
    outcome = "batch-completed" if target.name == "service" else "recorded"
    recorded = count_rows(target.database_url, outcome) - target.expected_rows
    target.expected_rows += recorded
    result["recorded"] = recorded
    result["connections"] = connections
    target.runs.append(result)
    print(f"  {target.database:<10} {target.name:<8} c={connections:<3} "
          f"{result['rps']:>8.0f} req/s  p50 {result['p50_us'] / 1000:>6.1f} ms  "
          f"p99 {result['p99_us'] / 1000:>7.1f} ms  errors {result['errors']:>4}  "
          f"(recorded {recorded} of {result['requests']} answered)", flush=True)
    return result


def summarise(targets: dict[tuple[str, str], Target], databases, connections) -> None:
    print()
    print(f"{'database':<10} {'conns':>5} {'service req/s':>14} {'p50':>8} {'p99':>8} "
          f"{'ceiling req/s':>14} {'p50':>8} {'p99':>8} {'ratio':>6} {'errors':>7}")
    for database in databases:
        for conns in connections:
            rows = {}
            for name in ("service", "ceiling"):
                runs = [r for r in targets[(database, name)].runs if r["connections"] == conns]
                rows[name] = {
                    "rps": statistics.median(r["rps"] for r in runs),
                    "p50": statistics.median(r["p50_us"] for r in runs) / 1000,
                    "p99": statistics.median(r["p99_us"] for r in runs) / 1000,
                    "errors": sum(r["errors"] for r in runs),
                }
            s, c = rows["service"], rows["ceiling"]
            print(f"{database:<10} {conns:>5} {s['rps']:>14.0f} {s['p50']:>6.1f}ms "
                  f"{s['p99']:>6.1f}ms {c['rps']:>14.0f} {c['p50']:>6.1f}ms {c['p99']:>6.1f}ms "
                  f"{s['rps'] / c['rps']:>5.2f}x {s['errors'] + c['errors']:>7}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--connections", default="16,64")
    parser.add_argument("--duration", type=int, default=10, help="seconds per run")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers, both apps")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn threads, both apps")
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--batches-per-manifest", type=int, default=50)
    parser.add_argument("--rate-guess", type=float, default=FIRST_RATE_GUESS,
                        help="requests/s to size the first pool of deliveries for")
    parser.add_argument("--postgres-url", default=os.environ.get(
        "WEBHOOK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    args = parser.parse_args(argv)
    databases = [d for d in args.databases.split(",") if d]
    connections = [int(c) for c in args.connections.split(",") if c]

    load = " ".join(f"{value:.1f}" for value in os.getloadavg())
    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True,
                                 text=True).stdout.splitlines()[0]
    print(f"machine: {os.cpu_count()} cores, {platform.machine()}, {platform.platform()}, "
          f"load average {load}")
    print(f"python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, {wrk_version}")
    print(f"gunicorn: {args.workers} workers x {args.threads} threads (gthread), both apps; "
          f"wrk: {args.wrk_threads} threads, {args.duration} s per run, {args.repeat} rounds")
    targets: dict[tuple[str, str], Target] = {}
    with tempfile.TemporaryDirectory(prefix="bench-intake-") as tmp:
        workdir = Path(tmp)
        for database in databases:
            with contextlib.ExitStack() as stack:
                for name, app in (("service", SERVICE_APP), ("ceiling", CEILING_APP)):
                    url = stack.enter_context(fresh_database(database, name, workdir,
                                                             args.postgres_url))
                    server = start_gunicorn(environment(url, workdir), cwd=ROOT,
                                            workers=args.workers, threads=args.threads,
                                            app=app, timeout=60)
                    stack.callback(server.cleanup)
                    targets[(database, name)] = Target(name, database, url, server)
                # Sized by the fastest rate measured so far (a guess before the first run).
                rate: dict[str, float] = {}
                for round_number in range(1, args.repeat + 1):
                    print(f"round {round_number}/{args.repeat}")
                    for conns in connections:
                        for name in ("service", "ceiling"):
                            result = one_run(targets[(database, name)], conns, args, workdir,
                                             rate.get(name, args.rate_guess))
                            rate[name] = max(rate.get(name, 0.0), result["rps"])
                for name in ("service", "ceiling"):
                    log = targets[(database, name)].server.log()
                    if "Traceback" in log:
                        print(f"!! {name} on {database} logged a traceback:\n{log[-3000:]}")
    summarise(targets, databases, connections)
    load = " ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"load average at the end: {load}")


if __name__ == "__main__":
    main()
