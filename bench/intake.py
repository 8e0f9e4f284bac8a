"""Measure webhook intake under load, next to a ceiling app doing the bare minimum.

One run measures every combination of:

- database: SQLite (a file) and PostgreSQL;
- gunicorn configuration: ``gthread`` (the default of ``gunicorn.conf.py``,
  2 workers x 4 threads) and ``sync`` (``-k sync``, 4 workers, one request at
  a time each);
- path: ``first``, the first completion of a batch (lock the manifest,
  complete the batch, count what is left, record the delivery: the service's
  full intake path, never the last batch, so never a rebuild), and
  ``renotify``, a completion of a batch already complete under a new
  webhook-id (what a sender that retries, or SNS and a webhook both
  delivering, produces; answered ``duplicate``);
- 16 and 64 connections.

Each is measured for the service (``wsgi:app``) and for the ceiling
(``bench/ceiling.py``: verify, parse, insert one row in a transaction of its
own) under the same gunicorn settings, each app on a fresh database of its own
per gunicorn configuration. ``--ceilings autocommit,transaction`` measures a
second ceiling beside it in the same rounds: the same app with its insert in
BEGIN ... COMMIT, as issue 15's ceiling had it (the yardstick the issue's
first figures were measured against; the default one is the stricter).
``wrk`` drives both with the same bounded closed-loop load
(``bench/intake.lua``): valid, unique, signed deliveries, ``--duration``
seconds a run, ``--repeat`` rounds alternating service and ceiling(s) so that
drift hits them alike.

Deliveries: before each ``first`` run fresh manifests of
``--batches-per-manifest`` batches are registered through ``PUT`` and the run
completes every batch but the last of each. A ``renotify`` run re-sends the
batches the ``first`` runs completed (read from the service's database), each
under a webhook-id never used before; their manifests still have their last
batch ingesting, which the service treats as it treats a manifest complete and
published (``needs_rebuild`` is false either way). Every run's deliveries are
signed just before it (timestamps within tolerance). After each run the
delivery rows with the expected outcome are counted: every answered request
must have left its row.

Printed: requests/s, p50 and p99 latency and errors (non-2xx, socket errors)
per run; then per database, configuration, connection count and path the
medians, the median of the per-round ratios service / ceiling (with their
range) and whether the goal holds: ratio >= 0.8, p99 within 2x the ceiling's,
no errors. Since other load on a shared machine moves req/s a lot, the CPU
time per request (the app's gunicorn processes, and on PostgreSQL the server
processes of its database) is printed too, with its ratio.

Run: ``.venv/bin/python bench/intake.py [--quick] [--databases sqlite,postgresql]
[--configs gthread,sync] [--paths first,renotify] [--connections 16,64]
[--duration 5] [--repeat 3] [--ceilings autocommit,transaction]``. ``--quick`` is 2 s runs, one round (about
3 minutes); the full run takes about 12. Needs ``wrk`` (Debian:
``apt-get install -y wrk``) and, for PostgreSQL, a server at ``--postgres-url``
where the user may create databases.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
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
from webhook.secret import parse_secret  # noqa: E402
from webhook.signature import sign  # noqa: E402

LUA = ROOT / "bench" / "intake.lua"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ADMIN_TOKEN = "bench-admin-token-0123456789"
CUSTOMER = 7
SERVICE_APP = "wsgi:app"
CEILING_APP = "bench.ceiling:create_app()"
# The ceilings --ceilings can name: the target's name, and whether its insert is in BEGIN ... COMMIT.
CEILINGS = {"autocommit": ("ceiling", False), "transaction": ("ceiling-tx", True)}
# Headroom over the fastest rate seen so far, so a run never runs out of deliveries.
POOL_HEADROOM = 2.0
FIRST_RATE_GUESS = 2500.0
# The goal: at least this share of the ceiling's throughput, p99 within this factor of its p99.
GOAL_RATIO = 0.8
GOAL_P99 = 2.0
PATHS = ("first", "renotify")
# What the service records for each path; a ceiling records "recorded" for all.
OUTCOMES = {"first": "batch-completed", "renotify": "duplicate"}


@dataclass(frozen=True)
class Config:
    """One gunicorn configuration, used alike for the service and the ceiling."""

    name: str
    workers: int
    threads: int
    worker_class: str

    def describe(self) -> str:
        return f"{self.name} ({self.workers} workers x {self.threads} threads)"


CONFIGS = {
    # gunicorn.conf.py's thread workers: 2 workers x 4 threads.
    "gthread": Config("gthread", 2, 4, "gthread"),
    # What many deployments run: one request per process, more processes.
    "sync": Config("sync", 4, 1, "sync"),
    # gunicorn.conf.py's cooperative workers: 2 workers, a greenlet per connection.
    "gevent": Config("gevent", 2, 1, "gevent"),
}


@dataclass
class Target:
    """One app under gunicorn on one database, and the deliveries it has been sent."""

    name: str                 # "service", or a ceiling's name in CEILINGS
    database: str             # "sqlite" or "postgresql"
    config: Config
    database_url: str
    server: GunicornServer
    next_batch: int = 1_000_000
    next_message: int = 0
    manifests: int = 0
    rows: dict[str, int] = field(default_factory=dict)    # outcome -> rows counted so far
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


def query_column(database_url: str, sql: str, params: tuple = ()) -> list:
    """Run one query directly (not through the app); return its first column."""
    if database_url.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(database_url[len("sqlite:///"):],
                                                timeout=60)) as con:
            return [row[0] for row in con.execute(sql.replace("%s", "?"), params)]
    import psycopg2

    with contextlib.closing(psycopg2.connect(database_url)) as con, con.cursor() as cursor:
        cursor.execute(sql, params)
        return [row[0] for row in cursor.fetchall()]


def count_rows(database_url: str, outcome: str) -> int:
    """Count the delivery rows with ``outcome``."""
    return query_column(database_url, "SELECT count(*) FROM delivery WHERE outcome = %s",
                        (outcome,))[0]


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


def start(app: str, config: Config, database_url: str, workdir: Path,
          ceiling_transaction: bool = False) -> GunicornServer:
    env = environment(database_url, workdir)
    # gunicorn.conf.py decides from this variable whether to patch the standard
    # library for gevent; "-k" alone would run thread workers on a patched one.
    env["GUNICORN_WORKER_CLASS"] = config.worker_class
    if ceiling_transaction:
        env["CEILING_TRANSACTION"] = "1"
    return start_gunicorn(env, cwd=ROOT, workers=config.workers,
                          threads=config.threads, app=app, timeout=60,
                          args=("--no-control-socket",))


# ---------------------------------------------------------------- CPU time

def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """Return each live process's user + system CPU seconds so far."""
    tick = os.sysconf("SC_CLK_TCK")
    seconds = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue  # gone
        seconds[pid] = (int(fields[11]) + int(fields[12])) / tick
    return seconds


def app_pids(target: Target) -> list[int]:
    """The gunicorn master and its workers."""
    master = target.server.process.pid
    try:
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    except OSError:
        children = []
    return [master, *map(int, children)]


def database_pids(target: Target) -> list[int]:
    """The PostgreSQL server processes serving the app's database (none for SQLite)."""
    if target.database == "sqlite":
        return []
    return query_column(target.database_url, "SELECT pid FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()")


def cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    # A process started during the run used all its CPU time within it.
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


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


def completed_batches(target: Target, count: int) -> list[int]:
    """Return ``count`` batch ids the service has completed, cycling through them."""
    done = query_column(target.database_url,
                        "SELECT id FROM batch WHERE status = 'completed' ORDER BY id")
    if not done:
        raise RuntimeError("no completed batch to re-notify: run the 'first' path first")
    # Spread over the manifests, as the first path's deliveries are.
    done = done[::7] + [b for n, b in enumerate(done) if n % 7]
    return [done[n % len(done)] for n in range(count)]


def write_pool(path: Path, target: Target, count: int, run_path: str,
               batches_per_manifest: int) -> None:
    """Sign ``count`` unique deliveries now and write them for the Lua script."""
    if target.name != "service":
        batch_ids = list(range(target.next_batch, target.next_batch + count))
        target.next_batch += count
    elif run_path == "first":
        batch_ids = register_manifests(target, count, batches_per_manifest)
    else:
        batch_ids = completed_batches(target, count)
    key = parse_secret(SECRET)
    timestamp = int(time.time())
    with path.open("w") as pool:
        for batch_id in batch_ids:
            body = notification(batch_id)
            msg_id = f"msg_{target.name}_{target.next_message}"
            target.next_message += 1
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


def one_run(target: Target, connections: int, run_path: str, round_number: int, args,
            workdir: Path, rate_guess: float) -> dict:
    pool_size = int(rate_guess * args.duration * POOL_HEADROOM)
    pool_path = workdir / f"pool-{target.name}-{target.database}.tsv"
    for _ in range(3):
        write_pool(pool_path, target, pool_size, run_path, args.batches_per_manifest)
        before = (cpu_seconds(app_pids(target)), cpu_seconds(database_pids(target)))
        result = run_wrk(target, connections, args.duration, args.wrk_threads, pool_path)
        after = (cpu_seconds(app_pids(target)), cpu_seconds(database_pids(target)))
        answered = max(result["requests"], 1)
        result["app_cpu_ms"] = cpu_used(before[0], after[0]) / answered * 1000
        result["db_cpu_ms"] = cpu_used(before[1], after[1]) / answered * 1000
        if not result["wrapped"]:
            break
        # Ran out and re-sent deliveries: those were duplicates. Again, with more.
        print(f"  (the pool of {pool_size} deliveries ran out; again with twice as many)")
        pool_size *= 2
    else:
        raise RuntimeError(f"{target.name}: the pool of deliveries keeps running out")
    # Every answered request must have left its row (in-flight ones at the end may too).
    time.sleep(0.5)
    outcome = OUTCOMES[run_path] if target.name == "service" else "recorded"
    total = count_rows(target.database_url, outcome)
    recorded = total - target.rows.get(outcome, 0)
    target.rows[outcome] = total
    answered = result["requests"] - result["errors"]
    result.update(recorded=recorded, connections=connections, path=run_path,
                  round=round_number)
    target.runs.append(result)
    missing = "  !! fewer rows than answers" if recorded < answered else ""
    print(f"  {target.database:<10} {target.config.name:<7} {run_path:<8} {target.name:<10} "
          f"c={connections:<3} {result['rps']:>7.0f} req/s  p50 {result['p50_us'] / 1000:>6.1f} "
          f"ms  p99 {result['p99_us'] / 1000:>7.1f} ms  errors {result['errors']:>4}  cpu "
          f"{result['app_cpu_ms']:.2f}+{result['db_cpu_ms']:.2f} ms/req  "
          f"(recorded {recorded} of {result['requests']}){missing}", flush=True)
    return result


# ---------------------------------------------------------------- the table

def summarise(targets: dict[tuple, Target], args) -> list[dict]:
    """Print the medians and ratios per (database, config, ceiling, connections, path)."""
    rows = []
    for (database, config, name), target in targets.items():
        if name != "service":
            continue
        for kind in args.ceilings:
            rows += _rows(target, targets[(database, config, CEILINGS[kind][0])], kind, args)
    print()
    print(f"{'database':<10} {'config':<8} {'ceiling':<11} {'conns':>5} {'path':<9} "
          f"{'req/s':>7} {'p99':>8} {'ceiling':>8} {'c. p99':>8} {'ratio':>6} {'(range)':>11} "
          f"{'p99 x':>6} {'errors':>6}  goal  {'cpu/req':>7} {'ceiling':>7} {'cpu x':>5}")
    for r in rows:
        print(f"{r['database']:<10} {r['config']:<8} {r['ceiling']:<11} {r['connections']:>5} "
              f"{r['path']:<9} {r['rps']:>7.0f} {r['p99']:>6.1f}ms {r['c_rps']:>8.0f} "
              f"{r['c_p99']:>6.1f}ms {r['ratio']:>5.2f}x {r['low']:>5.2f}-{r['high']:<5.2f} "
              f"{r['p99_ratio']:>5.1f}x {r['errors']:>6}  {'ok   ' if r['goal'] else 'SHORT'} "
              f"{r['cpu']:>5.2f}ms {r['c_cpu']:>5.2f}ms {r['c_cpu'] / r['cpu']:>4.2f}x")
    print(f"ratio: the median of the per-round ratios service / ceiling (range over the "
          f"rounds); p99 x: the service's p99 over the ceiling's; goal: ratio >= {GOAL_RATIO}, "
          f"p99 x <= {GOAL_P99}, no errors; cpu/req: CPU time per request of the app's "
          f"gunicorn processes and (PostgreSQL) the database's server processes, cpu x: the "
          f"ceiling's over the service's (less sensitive to other load than req/s); ceiling: "
          f"its insert on its own (autocommit) or in BEGIN ... COMMIT (transaction)")
    for kind in args.ceilings:
        of_kind = [r for r in rows if r["ceiling"] == kind]
        print(f"goal met against the {kind} ceiling: {sum(r['goal'] for r in of_kind)} "
              f"of {len(of_kind)}")
    return rows


def _rows(target: Target, ceiling: Target, kind: str, args) -> list[dict]:
    """The service against one ceiling: a row per connection count and path."""
    rows = []
    for conns in args.connections:
        for run_path in args.paths:
            def runs(of):
                return sorted((r for r in of.runs if r["connections"] == conns
                               and r["path"] == run_path), key=lambda r: r["round"])
            s_runs, c_runs = runs(target), runs(ceiling)
            if not s_runs or not c_runs:
                continue
            ratios = [s["rps"] / c["rps"] for s, c in zip(s_runs, c_runs)]
            p99_ratios = [s["p99_us"] / c["p99_us"] for s, c in zip(s_runs, c_runs)]
            row = {
                "database": target.database, "config": target.config.name, "ceiling": kind,
                "connections": conns, "path": run_path,
                "rps": statistics.median(r["rps"] for r in s_runs),
                "p99": statistics.median(r["p99_us"] for r in s_runs) / 1000,
                "c_rps": statistics.median(r["rps"] for r in c_runs),
                "c_p99": statistics.median(r["p99_us"] for r in c_runs) / 1000,
                "ratio": statistics.median(ratios), "low": min(ratios), "high": max(ratios),
                "p99_ratio": statistics.median(p99_ratios),
                "cpu": statistics.median(r["app_cpu_ms"] + r["db_cpu_ms"] for r in s_runs),
                "c_cpu": statistics.median(r["app_cpu_ms"] + r["db_cpu_ms"] for r in c_runs),
                "errors": sum(r["errors"] for r in s_runs + c_runs),
            }
            row["goal"] = (row["ratio"] >= GOAL_RATIO and row["p99_ratio"] <= GOAL_P99
                           and row["errors"] == 0)
            rows.append(row)
    return rows


def machine_line() -> str:
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    return (f"machine: {os.cpu_count()} cores, {platform.machine()}, {platform.platform()}, "
            f"load average {load}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="2 s runs, one round: a CI-sized check of every combination")
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--configs", default="gthread,sync,gevent", help="of: " + ",".join(CONFIGS))
    parser.add_argument("--paths", default=",".join(PATHS), help="of: " + ",".join(PATHS))
    parser.add_argument("--connections", default="16,64")
    parser.add_argument("--duration", type=int, help="seconds per run (default: 5, quick: 2)")
    parser.add_argument("--repeat", type=int, help="rounds (default: 3, quick: 1)")
    parser.add_argument("--ceilings", default="autocommit",
                        help="of: autocommit (the ceiling's insert on its own, the default), "
                             "transaction (in BEGIN ... COMMIT, as issue 15's ceiling had it)")
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--batches-per-manifest", type=int, default=50)
    parser.add_argument("--rate-guess", type=float, default=FIRST_RATE_GUESS,
                        help="requests/s to size the first pool of deliveries for")
    parser.add_argument("--postgres-url", default=os.environ.get(
        "WEBHOOK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    args = parser.parse_args(argv)
    args.duration = args.duration or (2 if args.quick else 5)
    args.repeat = args.repeat or (1 if args.quick else 3)
    args.databases = [d for d in args.databases.split(",") if d]
    args.configs = [CONFIGS[c] for c in args.configs.split(",") if c]
    args.paths = [p for p in args.paths.split(",") if p]
    if "renotify" in args.paths and "first" not in args.paths:
        parser.error("the renotify path re-sends what the first path completed: add 'first'")
    args.connections = [int(c) for c in args.connections.split(",") if c]
    args.ceilings = [c for c in args.ceilings.split(",") if c]
    if not args.ceilings or set(args.ceilings) - set(CEILINGS):
        parser.error(f"--ceilings: one or more of {', '.join(CEILINGS)}")
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian: apt-get install -y wrk)")

    wrk_version = subprocess.run(["wrk", "--version"], capture_output=True,
                                 text=True).stdout.splitlines()[0]
    print(machine_line())
    print(f"python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, {wrk_version}")
    print(f"ceilings: verify, parse, one insert: "
          f"{', '.join(f'{CEILINGS[c][0]} ({c})' for c in args.ceilings)}")
    print(f"gunicorn: {'; '.join(c.describe() for c in args.configs)}, the same for both apps; "
          f"wrk: {args.wrk_threads} threads, {args.duration} s per run, {args.repeat} rounds")
    targets: dict[tuple, Target] = {}
    with tempfile.TemporaryDirectory(prefix="bench-intake-") as tmp:
        workdir = Path(tmp)
        for database in args.databases:
            for config in args.configs:
                with contextlib.ExitStack() as stack:
                    for name, app, in_transaction in apps(args.ceilings):
                        url = stack.enter_context(fresh_database(
                            database, f"{name.replace('-', '_')}_{config.name}", workdir,
                            args.postgres_url))
                        server = start(app, config, url, workdir, in_transaction)
                        stack.callback(server.cleanup)
                        targets[(database, config.name, name)] = Target(
                            name, database, config, url, server)
                    measure(targets, database, config, args, workdir)
    summarise(targets, args)
    print(machine_line().replace("load average", "load average at the end"))


def apps(ceilings: list[str]) -> list[tuple[str, str, bool]]:
    """(target name, gunicorn app, insert in BEGIN ... COMMIT) of the service and each ceiling."""
    ceiling_apps = [(CEILINGS[kind][0], CEILING_APP, CEILINGS[kind][1]) for kind in ceilings]
    return [("service", SERVICE_APP, False), *ceiling_apps]


def measure(targets: dict[tuple, Target], database: str, config: Config, args,
            workdir: Path) -> None:
    """Run every round of one database and configuration, alternating the two apps."""
    # Pools are sized by the fastest rate measured so far (a guess before the first run).
    fastest = 0.0
    for round_number in range(1, args.repeat + 1):
        print(f"{database} {config.describe()}: round {round_number}/{args.repeat}",
              flush=True)
        for conns in args.connections:
            for run_path in args.paths:
                for name, _, _ in apps(args.ceilings):
                    result = one_run(targets[(database, config.name, name)], conns, run_path,
                                     round_number, args, workdir,
                                     fastest or args.rate_guess)
                    fastest = max(fastest, result["rps"])
    for name, _, _ in apps(args.ceilings):
        log = targets[(database, config.name, name)].server.log()
        if "Traceback" in log:
            print(f"!! {name} on {database} ({config.name}) logged a traceback:\n{log[-3000:]}")


if __name__ == "__main__":
    main()
