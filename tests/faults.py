"""Fault scenarios against the real service, for tests/test_faults.py and bench/faults.py.

Each scenario starts gunicorn (PostgreSQL, S3 on moto's server, the fake DLCS),
registers manifests, has every batch completion delivered by senders that
behave like Standard Webhooks senders (retry the same webhook-id on a non-2xx
answer or a broken connection, backing off), injects its faults, and then checks
that nothing was lost (``check_nothing_lost``):

- every delivery was finally answered 2xx and is in the delivery log with a
  finished outcome;
- every batch is completed and every manifest complete, published and correct;
- the database and the stored document agree (the manifest's ETag in the
  database is the ETag of the bytes in the bucket, and the one GET answers);
- exactly one successful rebuild per manifest (the service's "rebuild" log
  lines with outcome "published"), plus any the scenario ran on purpose;
- nothing half-written: no delivery still pending, no rebuild claimed or owed.

The scenarios (each returns the counts it saw):

- ``load_with_faults``: the DLCS fails a share of named queries (500, a timeout,
  JSON that is not) and S3 is cut off for a window, while every completion is
  delivered at once;
- ``crash_during_rebuilds``: a worker is killed (SIGKILL) while it holds
  rebuilds waiting on the DLCS; redeliveries take over once their claims' lease
  has run out (``REBUILD_LEASE_SECONDS``, short here);
- ``database_outage``: PostgreSQL is cut off (through a proxy) under load; the
  service answers 503 and ``/readyz`` says why; redeliveries complete everything.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import boto3
import psycopg2
import requests

from tests.fake_dlcs import NAMED_QUERY, FakeDlcs
from tests.proxy import TcpProxy
from tests.servers import GunicornServer, MotoServer, scratch_postgres
from tests.test_end_to_end import (AWS, FINISHED, Plan, ServiceClient, assert_published,
                                   make_plan, notification, register_with_fake,
                                   running_service, service_environment)
from webhook.storage import etag_for

DLCS_FAULTS = ("status-500", "timeout", "invalid-json")


# ---------------------------------------------------------------- senders

@dataclass
class Send:
    """One completion, delivered (and redelivered) under one webhook-id."""

    plan: Plan
    batch_id: int
    msg_id: str
    body: bytes
    attempts: list[tuple[int | str, dict]] = field(default_factory=list)  # (status or error, body)

    @property
    def delivered(self) -> bool:
        """Tell whether the last attempt was a 2xx answer with a finished outcome."""
        if not self.attempts:
            return False
        status, body = self.attempts[-1]
        return status == 200 and body.get("outcome") in FINISHED


class Sender:
    """Deliver like a Standard Webhooks sender: the same webhook-id until a 2xx, backing off.

    Real senders wait minutes between attempts; these wait ``first_backoff``
    doubling to ``max_backoff`` seconds (with jitter), and give up after
    ``deadline`` seconds. Every attempt is signed afresh, as a sender does.
    """

    def __init__(self, url: str, *, threads: int = 16, first_backoff: float = 0.1,
                 max_backoff: float = 1.0, deadline: float = 120.0, timeout: float = 60.0):
        self.url = url
        self.threads = threads
        self.first_backoff = first_backoff
        self.max_backoff = max_backoff
        self.deadline = deadline
        self.timeout = timeout
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()

    def send_all(self, sends: list[Send],
                 on_answer: Callable[[Send], None] | None = None) -> None:
        """Deliver every send from a pool of threads; return when each is done or gave up."""
        try:
            with ThreadPoolExecutor(max_workers=self.threads) as pool:
                for future in [pool.submit(self._deliver, send, on_answer) for send in sends]:
                    future.result()
        finally:
            for session in self._sessions:
                session.close()

    def _client(self) -> ServiceClient:
        if not hasattr(self._local, "client"):
            session = requests.Session()
            with self._lock:
                self._sessions.append(session)
            self._local.client = ServiceClient(self.url, session)
        return self._local.client

    def _deliver(self, send: Send, on_answer) -> None:
        jitter = random.Random(send.msg_id)
        give_up = time.monotonic() + self.deadline
        attempt = 0
        while True:
            try:
                response = self._client().deliver(send.body, send.msg_id)
                try:
                    body = response.json()
                except ValueError:
                    body = {"text": response.text[:200]}
                send.attempts.append((response.status_code, body))
            except requests.RequestException as exc:
                send.attempts.append((type(exc).__name__, {}))
                # The connection may be dead (a killed worker): start a fresh one.
                self._local.__dict__.pop("client", None)
            if on_answer is not None:
                on_answer(send)
            if send.attempts[-1][0] in range(200, 300) or time.monotonic() > give_up:
                return
            delay = min(self.first_backoff * 2 ** attempt, self.max_backoff)
            time.sleep(delay * (0.5 + jitter.random()))
            attempt += 1


def register_all(fake: FakeDlcs, client: ServiceClient, plans: list[Plan]) -> None:
    """Give the fake DLCS every plan's batches and register every plan's manifest."""
    for plan in plans:
        register_with_fake(fake, plan)
        assert client.register(plan).status_code == 202


def make_sends(plans: list[Plan], seed: int, batches: Callable[[Plan], list[int]] | None = None
               ) -> list[Send]:
    """One send per batch completion (of ``batches(plan)``, default all), shuffled."""
    sends = [Send(plan, batch_id, f"msg_{batch_id}_{uuid.uuid4().hex[:8]}",
                  notification(batch_id, plan.customer, len(plan.batches[batch_id])))
             for plan in plans for batch_id in (batches(plan) if batches else plan.batches)]
    random.Random(seed).shuffle(sends)
    return sends


def make_plans(count: int, batches: int, seed: int, first_batch: int) -> list[Plan]:
    """``count`` manifests of ``batches`` batches of 1 to 3 images, over three customers."""
    rng = random.Random(seed)
    return [make_plan(21 + n % 3, f"f{seed}-{n:03d}",
                      {first_batch + n * 10 + b: rng.randint(1, 3) for b in range(batches)},
                      space=n % 4)
            for n in range(count)]


def summarise_attempts(sends: list[Send]) -> dict[str, int]:
    """Count attempts by what they were answered (503s by problem type)."""
    counts: collections.Counter = collections.Counter()
    for send in sends:
        for status, body in send.attempts:
            if status == 503:
                counts["503 " + str(body.get("type", "")).rsplit(":", 1)[-1]] += 1
            elif isinstance(status, int):
                counts[f"{status} {body.get('outcome', '')}".strip()] += 1
            else:
                counts[f"error {status}"] += 1
    return dict(sorted(counts.items()))


# ---------------------------------------------------------------- faults

def schedule_dlcs_faults(fake: FakeDlcs, calls: int, rate: float, seed: int,
                         timeout: float) -> list[str | None]:
    """Queue, for the next ``calls`` named queries, a fault with probability ``rate``.

    A fault is a 500, an answer slower than the service's DLCS timeout, or a
    200 whose body is not JSON; the other calls are answered normally.
    """
    rng = random.Random(seed)
    schedule = []
    for _ in range(calls):
        kind = rng.choice(DLCS_FAULTS) if rng.random() < rate else None
        if kind == "status-500":
            fake.fail_next(1, status=500)
        elif kind == "timeout":
            fake.fail_next(1, delay=timeout + 0.5)
        elif kind == "invalid-json":
            fake.fail_next(1, invalid_json=True)
        else:
            fake.fail_next(1)  # no fault: answered as usual
        schedule.append(kind)
    return schedule


class Outage:
    """Cut ``proxy`` once ``after`` answers were seen, restore it ``seconds`` later."""

    def __init__(self, proxy: TcpProxy, after: int, seconds: float,
                 during: Callable[[], None] | None = None):
        self.proxy = proxy
        self.after = after
        self.seconds = seconds
        self.during = during
        self.started: float | None = None
        self.ended: float | None = None
        self._answers = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def on_answer(self, send: Send) -> None:
        with self._lock:
            self._answers += 1
            if self._answers == self.after and self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True)
                self._thread.start()

    def _run(self) -> None:
        self.started = time.monotonic()
        self.proxy.cut()
        try:
            if self.during is not None:
                self.during()
            time.sleep(max(0.0, self.seconds - (time.monotonic() - self.started)))
        finally:
            self.proxy.restore()
            self.ended = time.monotonic()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join(timeout=120)
        assert self.started is not None, "the outage never started"


# ---------------------------------------------------------------- what to check

def new_bucket(moto: MotoServer):
    """Create an empty bucket; return its name and a client that reads it directly."""
    client = boto3.session.Session().client(
        "s3", endpoint_url=moto.url, region_name=AWS["AWS_DEFAULT_REGION"],
        aws_access_key_id=AWS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=AWS["AWS_SECRET_ACCESS_KEY"])
    name = f"faults-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    return name, client


def rebuild_lines(server: GunicornServer) -> list[dict]:
    """Return the service's "rebuild" log lines (one per rebuild, whichever way it ended)."""
    lines = []
    for line in server.log().splitlines():
        if line.startswith("{") and '"rebuild"' in line:
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("message") == "rebuild":
                    lines.append(entry)
    return lines


def database_rows(database_url: str) -> dict:
    """Read the manifests, batches and deliveries straight from PostgreSQL."""
    with contextlib.closing(psycopg2.connect(database_url)) as connection, \
            connection.cursor() as cursor:
        cursor.execute("SELECT customer, slug, needs_rebuild, rebuild_owner, published_etag, "
                       "published_key FROM manifest")
        manifests = {f"{c}/{s}": (need, owner, etag, key)
                     for c, s, need, owner, etag, key in cursor}
        cursor.execute("SELECT id, status FROM batch")
        batches = dict(cursor.fetchall())
        cursor.execute("SELECT delivery_id, outcome, batch, manifest FROM delivery")
        deliveries = {row[0]: row[1:] for row in cursor}
    return {"manifests": manifests, "batches": batches, "deliveries": deliveries}


def check_nothing_lost(client: ServiceClient, server: GunicornServer, plans: list[Plan],
                       sends: list[Send], database_url: str, bucket: str, s3,
                       *, extra_rebuilds: dict[str, int] | None = None) -> dict[str, int]:
    """Assert that every delivery, batch and manifest came through; return counts."""
    lost = [(s.msg_id, s.attempts[-3:]) for s in sends if not s.delivered]
    assert not lost, f"{len(lost)} deliveries never answered 2xx: {lost[:3]}"
    # Faults may cost a 503 (or a broken connection), never another answer.
    unexpected = [(s.msg_id, status, body) for s in sends for status, body in s.attempts
                  if isinstance(status, int) and status not in (200, 503)]
    assert not unexpected, unexpected[:3]
    log = server.log()
    assert "Traceback" not in log and "unhandled error" not in log, log[-5000:]

    rows = database_rows(database_url)
    for plan in plans:
        published = client.manifest(plan)
        assert published.status_code == 200, (plan.key, published.status_code)
        assert_published(published.json(), plan)
        status = client.status(plan)
        assert status["state"] == "complete", (plan.key, status)
        assert {b["id"]: b["status"] for b in status["batches"]} == dict.fromkeys(
            plan.batches, "completed")
        # The database and the stored document agree, and GET serves that document.
        needs_rebuild, owner, etag, key = rows["manifests"][plan.key]
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert (needs_rebuild, owner) == (False, None), plan.key
        assert etag == etag_for(body) == published.headers["ETag"], plan.key
        assert body == published.content, plan.key

    # Exactly one successful rebuild per manifest (plus those run on purpose).
    lines = rebuild_lines(server)
    published_count = collections.Counter(
        line["manifest"] for line in lines if line.get("outcome") == "published")
    expected = {plan.key: 1 + (extra_rebuilds or {}).get(plan.key, 0) for plan in plans}
    assert published_count == expected, {k: v for k, v in published_count.items()
                                         if v != expected.get(k)}

    # No delivery missing from the log, none left pending, every batch completed.
    logged = {}
    for plan in plans:
        for batch_id in plan.batches:
            for item in client.deliveries(batch=batch_id):
                logged[item["id"]] = item["outcome"]
    sent = {s.msg_id for s in sends}
    assert sent <= set(logged), f"missing from the delivery log: {sorted(sent - set(logged))[:5]}"
    assert set(logged.values()) <= FINISHED - {"ignored"}, collections.Counter(logged.values())
    assert set(rows["deliveries"]) == set(logged)
    assert all(outcome in FINISHED for outcome, *_ in rows["deliveries"].values())
    ours = {batch_id for plan in plans for batch_id in plan.batches}
    assert {b: rows["batches"][b] for b in ours} == dict.fromkeys(ours, "completed")

    failed = collections.Counter(line.get("stage") for line in lines
                                 if line.get("outcome") == "failed")
    return {"manifests": len(plans), "batches": len(ours), "deliveries sent": len(sends),
            "attempts": sum(len(s.attempts) for s in sends),
            "deliveries logged": len(logged),
            "rebuilds published": sum(published_count.values()),
            "rebuilds published per manifest (min-max)":
                f"{min(published_count.values())}-{max(published_count.values())}",
            **{f"rebuilds failed at {stage}": n for stage, n in sorted(failed.items())}}


# ---------------------------------------------------------------- scenarios

def load_with_faults(database_url: str, moto: MotoServer, fake: FakeDlcs, *,
                     manifests: int = 100, batches: int = 4, workers: int = 4, threads: int = 4,
                     senders: int = 32, dlcs_fault_rate: float = 0.2,
                     s3_outage_after: float = 0.3, s3_outage_seconds: float = 3.0,
                     seed: int = 1) -> dict:
    """Deliver every completion while the DLCS fails and S3 goes away for a while."""
    bucket, s3 = new_bucket(moto)
    plans = make_plans(manifests, batches, seed, first_batch=100_000)
    with TcpProxy(("127.0.0.1", moto.port)) as s3_proxy:
        env = service_environment(database_url=database_url, storage_url=f"s3://{bucket}",
                                  dlcs_url=fake.url, s3_endpoint=s3_proxy.url,
                                  DLCS_TIMEOUT_SECONDS="1")
        with running_service(env, workers=workers, threads=threads) as server:
            client = ServiceClient(server.url)
            try:
                register_all(fake, client, plans)
                schedule = schedule_dlcs_faults(fake, manifests * 30, dlcs_fault_rate, seed,
                                                timeout=1.0)
                sends = make_sends(plans, seed)
                outage = Outage(s3_proxy, max(1, int(len(sends) * s3_outage_after)),
                                s3_outage_seconds)
                started = time.monotonic()
                Sender(server.url, threads=senders).send_all(sends, outage.on_answer)
                elapsed = time.monotonic() - started
                outage.join()
                calls = len(fake.requests(NAMED_QUERY))
                served = collections.Counter(kind for kind in schedule[:calls] if kind)
                counts = check_nothing_lost(client, server, plans, sends, database_url,
                                            bucket, s3)
            finally:
                client.close()
    return {**counts, "seconds": round(elapsed, 1), "named-query calls": calls,
            **{f"DLCS faults: {kind}": served[kind] for kind in DLCS_FAULTS},
            "S3 outage seconds": round(outage.ended - outage.started, 1),
            "S3 connections refused or reset": s3_proxy.counts.refused + s3_proxy.counts.reset,
            **summarise_attempts(sends)}


def worker_pids(server: GunicornServer) -> list[int]:
    """Return the pids of the gunicorn master's workers."""
    pid = server.process.pid
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def pids_connected_to(port: int, pids: list[int]) -> collections.Counter:
    """Count, per pid, the established TCP connections it has to 127.0.0.1:``port``."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[2].split(":")[1], 16) == port and fields[3] == "01":  # ESTABLISHED
            inodes.add(fields[9])
    counts: collections.Counter = collections.Counter()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:[") and target[8:-1] in inodes:
                        counts[pid] += 1
    return counts


def crash_during_rebuilds(database_url: str, moto: MotoServer, fake: FakeDlcs, *,
                          manifests: int = 6, workers: int = 2, threads: int = 4,
                          lease: int = 3, seed: int = 2) -> dict:
    """Kill -9 a worker holding rebuilds; redeliveries must finish them after the lease."""
    bucket, s3 = new_bucket(moto)
    plans = make_plans(manifests, 2, seed, first_batch=200_000)
    env = service_environment(database_url=database_url, storage_url=f"s3://{bucket}",
                              dlcs_url=fake.url, s3_endpoint=moto.url,
                              DLCS_TIMEOUT_SECONDS="20", REBUILD_LEASE_SECONDS=str(lease))
    with running_service(env, workers=workers, threads=threads) as server:
        client = ServiceClient(server.url)
        try:
            register_all(fake, client, plans)
            first = make_sends(plans, seed, lambda plan: list(plan.batches)[:1])
            Sender(server.url).send_all(first)
            assert {s.attempts[-1][1]["outcome"] for s in first} == {"batch-completed"}

            # Every final completion starts a rebuild that waits in the named query.
            finals = make_sends(plans, seed, lambda plan: list(plan.batches)[1:])
            fake.hold()
            sender = threading.Thread(
                target=Sender(server.url, deadline=90).send_all, args=(finals,), daemon=True)
            sender.start()
            # A worker's threads may all be busy while it holds more requests: wait
            # until no more rebuilds reach the DLCS.
            held_rebuilds = wait_until_settled(fake)
            holding = pids_connected_to(urlsplit(fake.url).port, worker_pids(server))
            assert holding, "no worker is talking to the DLCS"
            victim, held = holding.most_common(1)[0]
            os.kill(victim, signal.SIGKILL)
            killed_at = time.monotonic()
            time.sleep(0.2)
            fake.release()
            sender.join(timeout=120)
            assert not sender.is_alive(), "the senders did not finish"
            recovered = time.monotonic() - killed_at
            assert victim not in worker_pids(server)
            broken = sum(1 for s in finals for status, _ in s.attempts
                         if not isinstance(status, int))
            assert broken >= 1, "no delivery lost its connection: the kill missed"
            counts = check_nothing_lost(client, server, plans, first + finals, database_url,
                                        bucket, s3)
        finally:
            fake.release()
            client.close()
    return {**counts, "rebuilds held at the DLCS": held_rebuilds, "worker killed": victim,
            "its connections to the DLCS": held,
            "seconds from the kill to the last delivery": round(recovered, 1),
            "lease seconds": lease, **summarise_attempts(finals)}


def wait_until_settled(fake: FakeDlcs, quiet: float = 0.5, timeout: float = 30.0) -> int:
    """Wait for a first named query, then until none arrived for ``quiet`` s; return the count."""
    fake.wait_for_named_queries(1, timeout=timeout)
    deadline = time.monotonic() + timeout
    seen, since = fake.total_named_queries, time.monotonic()
    while time.monotonic() - since < quiet and time.monotonic() < deadline:
        time.sleep(0.05)
        if fake.total_named_queries != seen:
            seen, since = fake.total_named_queries, time.monotonic()
    return seen


def with_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"{parts.hostname}:{port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


def database_outage(database_url: str, moto: MotoServer, fake: FakeDlcs, *,
                    manifests: int = 20, batches: int = 3, workers: int = 2, threads: int = 4,
                    senders: int = 16, outage_after: float = 0.3, outage_seconds: float = 3.0,
                    lease: int = 5, seed: int = 3) -> dict:
    """Cut PostgreSQL off under load; expect 503s, a failing /readyz and then everything done."""
    bucket, s3 = new_bucket(moto)
    plans = make_plans(manifests, batches, seed, first_batch=300_000)
    target = urlsplit(database_url)
    readiness: list[tuple[int, dict]] = []
    with TcpProxy((target.hostname, target.port or 5432)) as db_proxy:
        env = service_environment(database_url=with_port(database_url, db_proxy.port),
                                  storage_url=f"s3://{bucket}", dlcs_url=fake.url,
                                  s3_endpoint=moto.url, REBUILD_LEASE_SECONDS=str(lease))
        with running_service(env, workers=workers, threads=threads) as server:
            client = ServiceClient(server.url)

            def probe_readiness() -> None:
                time.sleep(0.3)
                with contextlib.suppress(requests.RequestException):
                    answer = requests.get(f"{server.url}/readyz", timeout=10)
                    readiness.append((answer.status_code, answer.json()))

            try:
                register_all(fake, client, plans)
                sends = make_sends(plans, seed)
                outage = Outage(db_proxy, max(1, int(len(sends) * outage_after)),
                                outage_seconds, during=probe_readiness)
                Sender(server.url, threads=senders, deadline=90).send_all(sends,
                                                                         outage.on_answer)
                outage.join()
                assert readiness and readiness[0][0] == 503, readiness
                assert readiness[0][1]["checks"]["database"].startswith("failed"), readiness
                assert readiness[0][1]["checks"]["storage"] == "ok", readiness
                unavailable = [body for s in sends for status, body in s.attempts
                               if status == 503 and body.get("type", "").endswith("unavailable")]
                assert unavailable, "no delivery was answered 503 while the database was away"
                ready_again = requests.get(f"{server.url}/readyz", timeout=10)
                assert ready_again.status_code == 200, ready_again.text
                counts = check_nothing_lost(client, server, plans, sends, database_url, bucket,
                                            s3)
            finally:
                client.close()
    return {**counts, "database outage seconds": round(outage.ended - outage.started, 1),
            "database connections refused or reset":
                db_proxy.counts.refused + db_proxy.counts.reset,
            "/readyz during the outage": f"{readiness[0][0]} {readiness[0][1]['checks']}",
            **summarise_attempts(sends)}


def fresh_postgres(server_url: str) -> contextlib.AbstractContextManager[str]:
    """Create a database of its own on the server at ``server_url``; drop it afterwards."""
    return scratch_postgres(server_url, "faults")
