"""Slow and idle clients against the service as the README runs it: does it still answer?

The service runs under gunicorn with the repository's ``gunicorn.conf.py`` and
its defaults (2 workers; the worker class the file chooses) on a fresh
database, on 127.0.0.1 only. Two probes run one request after another, each on
a new connection, as a health checker and the DLCS would:

- ``healthz``: ``GET /healthz``;
- ``delivery``: a valid, signed, unique ``POST /webhooks/batch-completed``
  (a batch no manifest has: answered ``ignored``, and recorded).

First alone for ``--baseline`` seconds (the baseline of this run), then for
``--duration`` seconds while an attacker, with no credentials, holds
``--idle`` TCP connections that never send a byte and ``--slow`` connections
that send a webhook's headers and then one body byte every ``--interval``
seconds (every connection the server drops is opened again at once).

Printed per phase and probe: requests, p50, p99 and max latency, errors
(timeouts after ``--probe-timeout`` s, refused or broken connections, non-2xx),
and the attack's p99 as a multiple of the baseline's; then what the slow
connections were answered (``408``: their body missed the deadline) and how
often the server dropped an idle connection. The goal, checked at the end (exit
status 1 when missed): under attack, both probes' p99 under 1 s and no errors.

With ``--rebuild-canvases N`` a third phase runs the probes (no attacker)
while a manifest of N canvases is rebuilt ``--rebuilds`` times in a row
(``POST .../rebuild``, the fake DLCS of ``tests/fake_dlcs.py`` answering):
how much a rebuild's CPU-bound work (parse, build, write) delays the others.

``--root`` runs another checkout (say, the code before a change) with this
script. ``--quick`` is the short version CI runs.

Run: ``.venv/bin/python bench/slow_clients.py [--quick] [--database sqlite|postgresql]
[--idle 200] [--slow 50] [--duration 30] [--root DIR]``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import selectors
import socket
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from bench.build import CUSTOMER, registration  # noqa: E402
from tests.fake_dlcs import FakeDlcs, image_assets  # noqa: E402
from tests.servers import LOOPBACK, scratch_postgres, start_gunicorn  # noqa: E402
from webhook.secret import parse_secret  # noqa: E402
from webhook.signature import sign  # noqa: E402

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ADMIN_TOKEN = "bench-admin-token-0123456789"
GOAL_P99_SECONDS = 1.0
# Bounds, whatever the command line asks: this is a test, not a weapon.
MAX_CONNECTIONS = 1000
MAX_SECONDS = 300.0


@dataclass
class Probe:
    """Latencies (seconds) of one probe's successful requests, and its errors."""

    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def percentile(self, fraction: float) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


@dataclass
class Attack:
    """What the attacker's connections saw."""

    slow_answers: dict[str, int] = field(default_factory=dict)
    idle_dropped: int = 0
    connect_failures: int = 0


def healthz(port: int, timeout: float) -> int:
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        connection.request("GET", "/healthz")
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def delivery(port: int, timeout: float, batch: int, *, customer: int = 2, count: int = 1) -> int:
    body = json.dumps({"id": batch, "customer": customer, "count": count, "completed": count,
                       "errors": 0,
                       "superseded": False, "submitted": "2025-02-20T12:28:01Z",
                       "finished": "2025-02-20T12:30:15Z"}).encode()
    msg_id, timestamp = f"msg_{uuid.uuid4().hex}", int(time.time())
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
               "webhook-signature": sign(parse_secret(SECRET), msg_id, timestamp, body),
               "Content-Type": "application/json"}
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        connection.request("POST", "/webhooks/batch-completed", body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def run_probe(call, probe: Probe, stop: threading.Event, pause: float) -> None:
    """Call ``call()`` again and again until ``stop``; record each answer."""
    while not stop.is_set():
        started = time.perf_counter()
        try:
            status = call()
        except (socket.timeout, TimeoutError):
            probe.error("timeout")
        except OSError as exc:
            probe.error(type(exc).__name__)
        except http.client.HTTPException as exc:
            probe.error(type(exc).__name__)
        else:
            if 200 <= status < 300:
                probe.latencies.append(time.perf_counter() - started)
            else:
                probe.error(f"status {status}")
        stop.wait(pause)


def measure(port: int, seconds: float, timeout: float) -> dict[str, Probe]:
    """Run both probes for ``seconds``; return what they saw."""
    probes = {"healthz": Probe(), "delivery": Probe()}
    batches = iter(range(10_000_000, 20_000_000))
    stop = threading.Event()
    threads = [
        threading.Thread(target=run_probe, args=(lambda: healthz(port, timeout),
                                                 probes["healthz"], stop, 0.05)),
        threading.Thread(target=run_probe, args=(lambda: delivery(port, timeout, next(batches)),
                                                 probes["delivery"], stop, 0.1)),
    ]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    return probes


def measure_rebuilds(port: int, fake: FakeDlcs, canvases: int, rebuilds: int,
                     timeout: float) -> tuple[dict[str, Probe], list[float]]:
    """Probe while a manifest of ``canvases`` is rebuilt ``rebuilds`` times; return both."""
    base, admin = f"http://{LOOPBACK}:{port}", {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    batch = 900_001
    assets = image_assets("slow-bench", canvases)
    fake.add_batch(CUSTOMER, batch, assets)
    registered = requests.put(f"{base}/{CUSTOMER}/manifests/slow-bench", headers=admin,
                              data=registration("slow-bench", {batch: assets}), timeout=60)
    registered.raise_for_status()
    # Its batch completes (the first rebuild, not measured); then rebuilds on demand.
    completed = delivery(port, 120, batch, customer=CUSTOMER, count=canvases)
    assert completed == 200, completed
    seconds: list[float] = []
    done = threading.Event()

    def rebuild_again_and_again():
        try:
            for _ in range(rebuilds):
                started = time.perf_counter()
                answer = requests.post(f"{base}/{CUSTOMER}/manifests/slow-bench/rebuild",
                                       headers=admin, timeout=120)
                answer.raise_for_status()
                seconds.append(time.perf_counter() - started)
        finally:
            done.set()

    rebuilder = threading.Thread(target=rebuild_again_and_again)
    probes = {"healthz": Probe(), "delivery": Probe()}
    stop, batches = threading.Event(), iter(range(20_000_000, 30_000_000))
    threads = [
        threading.Thread(target=run_probe, args=(lambda: healthz(port, timeout),
                                                 probes["healthz"], stop, 0.05)),
        threading.Thread(target=run_probe, args=(lambda: delivery(port, timeout, next(batches)),
                                                 probes["delivery"], stop, 0.1)),
    ]
    for thread in (*threads, rebuilder):
        thread.start()
    done.wait(MAX_SECONDS)
    stop.set()
    for thread in (*threads, rebuilder):
        thread.join()
    return probes, seconds


# ---------------------------------------------------------------- the attacker

def _connect(port: int, attack: Attack) -> socket.socket | None:
    try:
        sock = socket.create_connection((LOOPBACK, port), timeout=2)
    except OSError:
        attack.connect_failures += 1
        return None
    sock.setblocking(False)
    return sock


def _slow_headers(port: int) -> bytes:
    return (f"POST /webhooks/batch-completed HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: 4096\r\n"
            f"webhook-id: msg_{uuid.uuid4().hex}\r\nwebhook-timestamp: {int(time.time())}\r\n"
            f"webhook-signature: v1,AAAA\r\n\r\n").encode()


def attacker(port: int, idle: int, slow: int, interval: float, stop: threading.Event,
             attack: Attack) -> None:
    """Hold ``idle`` silent and ``slow`` trickling connections until ``stop``."""
    selector = selectors.DefaultSelector()
    next_byte: dict[socket.socket, float] = {}

    def open_one(kind: str, stagger: float = 0.0) -> None:
        sock = _connect(port, attack)
        if sock is None:
            return
        if kind == "slow":
            try:
                sock.sendall(_slow_headers(port))
            except OSError:
                sock.close()
                return
            next_byte[sock] = time.monotonic() + stagger
        selector.register(sock, selectors.EVENT_READ, kind)

    for number in range(idle):
        open_one("idle")
    for number in range(slow):
        open_one("slow", stagger=interval * number / max(slow, 1))
    while not stop.is_set():
        for key, _ in selector.select(timeout=0.05):
            sock, kind = key.fileobj, key.data
            try:
                answer = sock.recv(4096)
            except BlockingIOError:
                continue
            except OSError as exc:
                answer, reason = b"", type(exc).__name__
            else:
                reason = "closed"
            selector.unregister(sock)
            next_byte.pop(sock, None)
            sock.close()
            if kind == "idle":
                attack.idle_dropped += 1
            else:
                status = answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/") else reason
                attack.slow_answers[status] = attack.slow_answers.get(status, 0) + 1
            open_one(kind)
        now = time.monotonic()
        for sock, due in list(next_byte.items()):
            if due <= now:
                try:
                    sock.send(b"{")
                except OSError:
                    pass  # the selector sees the close
                next_byte[sock] = now + interval
    for key in list(selector.get_map().values()):
        key.fileobj.close()
    selector.close()


# ---------------------------------------------------------------- report

def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms"


def report(baseline: dict[str, Probe], attacked: dict[str, Probe], attack: Attack,
           args: argparse.Namespace) -> bool:
    """Print the figures; return whether the goal was met."""
    print(f"\n{'probe':<9} {'phase':<8} {'requests':>8} {'p50':>8} {'p99':>8} {'max':>8}  errors")
    met = True
    for name in ("healthz", "delivery"):
        for phase, probes in (("baseline", baseline), ("attack", attacked)):
            probe = probes[name]
            errors = ", ".join(f"{k} x{v}" for k, v in sorted(probe.errors.items())) or "0"
            print(f"{name:<9} {phase:<8} {len(probe.latencies):>8} {_ms(probe.percentile(.5)):>8} "
                  f"{_ms(probe.percentile(.99)):>8} "
                  f"{_ms(max(probe.latencies) if probe.latencies else None):>8}  {errors}")
        before, during = baseline[name].percentile(.99), attacked[name].percentile(.99)
        if before and during:
            print(f"{'':<9} attack p99 / baseline p99: {during / before:.1f}x")
        if during is None or during >= GOAL_P99_SECONDS or attacked[name].errors:
            met = False
    answers = ", ".join(f"{k} x{v}" for k, v in sorted(attack.slow_answers.items())) or "none"
    print(f"\nslow connections answered: {answers}; idle connections dropped by the server: "
          f"{attack.idle_dropped}; attacker connects refused/failed: {attack.connect_failures}")
    print(f"goal (under {args.idle} idle + {args.slow} slow connections, p99 < "
          f"{GOAL_P99_SECONDS:g} s and no errors for both probes): {'MET' if met else 'MISSED'}")
    return met


def report_rebuilds(baseline: dict[str, Probe], probes: dict[str, Probe], seconds: list[float],
                    args: argparse.Namespace) -> None:
    """Print the probes' figures while rebuilds ran (informative: no goal is checked)."""
    print(f"\nwhile a {args.rebuild_canvases}-canvas manifest was rebuilt {len(seconds)} times "
          f"({', '.join(f'{s:.2f} s' for s in seconds)}):")
    for name in ("healthz", "delivery"):
        probe = probes[name]
        errors = ", ".join(f"{k} x{v}" for k, v in sorted(probe.errors.items())) or "0"
        before, during = baseline[name].percentile(.99), probe.percentile(.99)
        ratio = f"{during / before:.1f}x baseline" if before and during else "-"
        print(f"{name:<9} rebuild  {len(probe.latencies):>8} {_ms(probe.percentile(.5)):>8} "
              f"{_ms(during):>8} {_ms(max(probe.latencies) if probe.latencies else None):>8}  "
              f"{errors}; p99 {ratio}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the short version CI runs")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--postgres-url", default=os.environ.get(
        "WEBHOOK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--idle", type=int, default=200)
    parser.add_argument("--slow", type=int, default=50)
    parser.add_argument("--interval", type=float, default=2.0,
                        help="seconds between a slow connection's body bytes")
    parser.add_argument("--baseline", type=float, default=10.0)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--probe-timeout", type=float, default=5.0)
    parser.add_argument("--rebuild-canvases", type=int, default=0,
                        help="also probe while a manifest of this many canvases is rebuilt")
    parser.add_argument("--rebuilds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (README: 2)")
    parser.add_argument("--root", type=Path, default=ROOT,
                        help="the checkout to run (its gunicorn.conf.py and wsgi.py)")
    args = parser.parse_args()
    if args.quick:
        args.baseline, args.duration = 3.0, 12.0
    if args.idle + args.slow > MAX_CONNECTIONS or max(args.duration, args.baseline) > MAX_SECONDS:
        parser.error(f"at most {MAX_CONNECTIONS} connections and {MAX_SECONDS:g} s a phase")

    print(f"# {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"{args.database}; checkout {args.root}")
    with tempfile.TemporaryDirectory(prefix="bench-slow-") as workdir, contextlib.ExitStack() as stack:
        if args.database == "sqlite":
            database_url = f"sqlite:///{workdir}/webhook.db"
        else:
            database_url = stack.enter_context(scratch_postgres(args.postgres_url, "bench_slow"))
        fake = stack.enter_context(FakeDlcs())
        env = {"PATH": os.environ.get("PATH", ""), "DATABASE_URL": database_url,
               "STORAGE_URL": f"file://{workdir}/manifests", "WEBHOOK_SECRETS": SECRET,
               "ADMIN_TOKEN": ADMIN_TOKEN, "TMPDIR": workdir, "DLCS_ORCHESTRATOR_URL": fake.url}
        # As the README runs it: its gunicorn.conf.py, 2 workers (x 4 threads where threaded).
        server = start_gunicorn(env, cwd=args.root, workers=args.workers, threads=4,
                                ready_path="/healthz")
        stack.callback(server.cleanup)
        print(f"# gunicorn: {server.url}; baseline {args.baseline:g} s, attack {args.duration:g} s"
              f" with {args.idle} idle + {args.slow} slow connections (a byte every "
              f"{args.interval:g} s)")
        baseline = measure(server.port, args.baseline, args.probe_timeout)
        stop, attack = threading.Event(), Attack()
        thread = threading.Thread(target=attacker, args=(server.port, args.idle, args.slow,
                                                         args.interval, stop, attack))
        thread.start()
        try:
            time.sleep(1.0)  # the attacker's connections are open and waiting
            attacked = measure(server.port, args.duration, args.probe_timeout)
        finally:
            stop.set()
            thread.join()
        rebuilding = None
        if args.rebuild_canvases:
            rebuilding = measure_rebuilds(server.port, fake, args.rebuild_canvases,
                                          args.rebuilds, args.probe_timeout)
        if server.process.poll() is not None:
            print(f"gunicorn died:\n{server.log()[-3000:]}")
            return 1
    met = report(baseline, attacked, attack, args)
    if rebuilding is not None:
        report_rebuilds(baseline, *rebuilding, args)
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
