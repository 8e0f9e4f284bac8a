"""Exactly one rebuild per manifest, under real concurrency, through gunicorn.

Many manifests of several batches each are registered, then every completion is
fired at once from a pool of threads, with the duplicates real senders produce
mixed in: the same webhook-id delivered two or three times, and the same batch
under a new webhook-id. Each sender behaves like a Standard Webhooks sender: on
a 503 it retries the same webhook-id (re-signed) after a backoff. The fake DLCS
answers the named query slowly, so duplicates arrive while a rebuild is in
progress and get ``503 rebuild-in-progress``.

Afterwards: exactly one named query per manifest, every manifest published and
correct, every batch completed, exactly one ``manifest-completed`` answer per
manifest among the first attempts, and every webhook-id in the delivery log
with a finished outcome. On PostgreSQL (one gunicorn with 3 workers, and two
gunicorns sharing the database and the bucket) and on a SQLite file shared by
two workers.
"""

from __future__ import annotations

import collections
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest
import requests

from tests.test_end_to_end import (BASE_URL, FINISHED, Plan, ServiceClient, assert_no_tracebacks,
                                   assert_published, make_plan, notification, register_with_fake,
                                   running_service, service_environment)

pytestmark = pytest.mark.e2e

MANIFESTS = 30
SENDER_THREADS = 48
MAX_ATTEMPTS = 12
FIRST_BACKOFF = 0.05      # seconds; a real sender waits minutes, the test cannot
MAX_BACKOFF = 1.0
NAMED_QUERY_DELAY = 0.4   # keeps each rebuild in progress long enough to be raced


@dataclass
class Send:
    """One delivery a sender makes (and retries until it is not a 503)."""

    plan: Plan
    batch_id: int
    msg_id: str
    body: bytes
    duplicate: bool  # a second sending of an id, or a batch under a new id
    attempts: list[tuple[int, dict]] = field(default_factory=list)  # (status, JSON body)

    @property
    def first(self) -> tuple[int, dict]:
        return self.attempts[0]

    @property
    def last(self) -> tuple[int, dict]:
        return self.attempts[-1]


def make_plans(count: int, seed: int) -> list[Plan]:
    """Return ``count`` manifests of 3 or 4 batches of 1 to 4 images, over 3 customers."""
    rng = random.Random(seed)
    plans = []
    for n in range(count):
        batches = {20_000 + n * 10 + b: rng.randint(1, 4) for b in range(rng.choice((3, 4)))}
        plans.append(make_plan(11 + n % 3, f"m{n:03d}", batches, space=n % 5))
    return plans


def make_sends(plans: list[Plan], seed: int) -> list[Send]:
    """Every batch's completion, some sent 2-3 times, some again under a new id; shuffled."""
    rng = random.Random(seed)
    sends = []
    for plan in plans:
        for batch_id, assets in plan.batches.items():
            body = notification(batch_id, plan.customer, len(assets))
            msg_id = f"msg_{batch_id}"
            copies = rng.choice((1, 1, 2, 3))
            sends += [Send(plan, batch_id, msg_id, body, duplicate=i > 0) for i in range(copies)]
            if rng.random() < 0.4:
                sends.append(Send(plan, batch_id, f"msg_{batch_id}_again", body, duplicate=True))
    rng.shuffle(sends)
    return sends


def fire(urls: list[str], sends: list[Send], seed: int) -> None:
    """Send everything at once from SENDER_THREADS threads, each retrying its 503s."""
    local = threading.local()
    sessions: list[requests.Session] = []
    sessions_lock = threading.Lock()
    go = threading.Event()
    rng = random.Random(seed)
    choices = [[rng.choice(urls) for _ in range(MAX_ATTEMPTS)] for _ in sends]

    def session() -> requests.Session:
        if not hasattr(local, "session"):
            local.session = requests.Session()
            with sessions_lock:
                sessions.append(local.session)
        return local.session

    def deliver(send: Send, urls_to_try: list[str]) -> None:
        go.wait()
        jitter = random.Random(send.msg_id)
        for attempt, url in enumerate(urls_to_try):
            response = ServiceClient(url, session()).deliver(send.body, send.msg_id)
            send.attempts.append((response.status_code, response.json()))
            if response.status_code != 503:
                return
            # Standard Webhooks senders back off and retry the same id; Retry-After
            # is minutes-scale advice we shorten so the test stays fast.
            delay = min(FIRST_BACKOFF * 2 ** attempt, MAX_BACKOFF)
            time.sleep(delay * (0.5 + jitter.random()))

    try:
        with ThreadPoolExecutor(max_workers=SENDER_THREADS) as pool:
            futures = [pool.submit(deliver, send, urls_to_try)
                       for send, urls_to_try in zip(sends, choices)]
            go.set()
            for future in futures:
                future.result()
    finally:
        for each in sessions:
            each.close()


def check(client: ServiceClient, fake, plans: list[Plan], sends: list[Send],
          *, expect_in_progress: bool = True) -> dict[str, int]:
    """Assert the exactly-once outcome of a storm; return counts of what happened."""
    unfinished = [(s.msg_id, [_brief(status, body) for status, body in s.attempts])
                  for s in sends if s.last[0] != 200 or s.last[1]["outcome"] not in FINISHED]
    assert not unfinished, f"deliveries left unfinished after retries: {unfinished[:5]}"
    other_errors = [(s.msg_id, status, body) for s in sends for status, body in s.attempts
                    if status not in (200, 503)]
    assert not other_errors, other_errors[:5]

    # One named query per manifest, over all of its batches, and nothing else.
    counts = {plan.key: fake.calls(plan.customer, plan.batches) for plan in plans}
    assert counts == {plan.key: 1 for plan in plans}
    assert fake.total_named_queries == len(plans)

    # Exactly one first-time answer "manifest-completed" per manifest: the
    # delivery that completed the last batch. Retries of a delivery that was
    # told "in progress" may report the completion too; that is their job.
    winners = collections.Counter(s.plan.key for s in sends
                                  if s.first[0] == 200
                                  and s.first[1]["outcome"] == "manifest-completed")
    assert winners == {plan.key: 1 for plan in plans}

    for plan in plans:
        published = client.manifest(plan)
        assert published.status_code == 200, f"{plan.key}: {published.status_code}"
        assert_published(published.json(), plan)
        status = client.status(plan)
        assert status["state"] == "complete", (plan.key, status)
        assert {b["id"]: b["status"] for b in status["batches"]} == {
            batch_id: "completed" for batch_id in plan.batches}

    log = {item["id"]: item for item in client.deliveries()}
    assert set(log) == {s.msg_id for s in sends}
    assert {item["outcome"] for item in log.values()} <= FINISHED - {"ignored"}
    assert all(item["transport"] == "webhook" for item in log.values())

    in_progress = sum(1 for s in sends for status, body in s.attempts
                      if status == 503 and body["type"].endswith("rebuild-in-progress"))
    if expect_in_progress:
        # The race this test is about did happen (duplicates met running rebuilds).
        assert in_progress > 0
    return {"sends": len(sends), "attempts": sum(len(s.attempts) for s in sends),
            "in_progress_503": in_progress}


def _brief(status: int, body: dict) -> str:
    """Say in a few words what one attempt was answered."""
    return f"{status} {body.get('outcome') if status == 200 else body.get('detail')}"


def storm(urls: list[str], fake, plans: list[Plan], seed: int) -> dict[str, int]:
    """Register the plans, fire all their completions at once, and check the result."""
    client = ServiceClient(urls[0])
    try:
        for plan in plans:
            register_with_fake(fake, plan)
            response = client.register(plan)
            assert response.status_code == 202, response.text
        fake.delay = NAMED_QUERY_DELAY
        sends = make_sends(plans, seed)
        fire(urls, sends, seed)
        fake.delay = 0.0
        return check(client, fake, plans, sends)
    finally:
        client.close()


@pytest.fixture
def postgres_env(postgres_url, bucket, fake_dlcs, moto_server):
    name, _ = bucket
    return service_environment(database_url=postgres_url, storage_url=f"s3://{name}",
                               dlcs_url=fake_dlcs.url, s3_endpoint=moto_server.url)


def test_one_rebuild_per_manifest_on_postgresql(postgres_env, fake_dlcs):
    with running_service(postgres_env, workers=3, threads=8) as server:
        print(storm([server.url], fake_dlcs, make_plans(MANIFESTS, seed=1), seed=1))
        assert_no_tracebacks(server)


def test_one_rebuild_per_manifest_across_two_instances(postgres_env, fake_dlcs):
    with running_service(postgres_env, workers=2, threads=6) as first, \
            running_service(postgres_env, workers=2, threads=6) as second:
        print(storm([first.url, second.url], fake_dlcs, make_plans(MANIFESTS, seed=2), seed=2))
        assert_no_tracebacks(first)
        assert_no_tracebacks(second)


def test_one_rebuild_per_manifest_on_sqlite(tmp_path, fake_dlcs):
    env = service_environment(database_url=f"sqlite:///{tmp_path}/webhook.db",
                              storage_url=f"file://{tmp_path}/manifests", dlcs_url=fake_dlcs.url)
    with running_service(env, workers=2, threads=4) as server:
        print(storm([server.url], fake_dlcs, make_plans(MANIFESTS, seed=3), seed=3))
        assert_no_tracebacks(server)


def test_a_duplicate_during_the_rebuild_is_told_to_retry(postgres_env, fake_dlcs):
    """Deterministic: the named query is held while duplicates of the final delivery arrive."""
    plan = make_plan(12, "held", {30_001: 2, 30_002: 1})
    register_with_fake(fake_dlcs, plan)
    with running_service(postgres_env, workers=3, threads=4) as server:
        client = ServiceClient(server.url)
        try:
            assert client.register(plan).status_code == 202
            first = notification(30_001, plan.customer, 2)
            last = notification(30_002, plan.customer, 1)
            assert client.deliver(first, "msg_first").json()["outcome"] == "batch-completed"

            fake_dlcs.hold()
            with ThreadPoolExecutor(max_workers=1) as pool:
                final = pool.submit(_deliver_once, server.url, last, "msg_last")
                fake_dlcs.wait_for_named_queries(1)
                # The rebuild is running: the same id, and the same batch under a new id.
                for msg_id in ("msg_last", "msg_last_again"):
                    busy = client.deliver(last, msg_id)
                    assert busy.status_code == 503, busy.text
                    assert busy.json()["type"].endswith("rebuild-in-progress")
                    assert busy.json()["manifest"] == plan.key
                    assert int(busy.headers["Retry-After"]) > 0
                rebuild = client.rebuild(plan)
                assert rebuild.status_code == 503, rebuild.text
                assert client.status(plan)["state"] == "ingesting"
                fake_dlcs.release()
                status, body = final.result(timeout=30)
            assert (status, body["outcome"]) == (200, "manifest-completed")

            # Their retries find the work done (the rebuild finished their deliveries too).
            for msg_id in ("msg_last", "msg_last_again"):
                again = client.deliver(last, msg_id)
                assert again.status_code == 200, again.text
                assert again.json() == {"outcome": "duplicate", "batch": 30_002,
                                        "manifest": plan.key}
            assert fake_dlcs.calls(plan.customer, plan.batches) == 1
            assert_published(client.manifest(plan).json(), plan, BASE_URL)
            log = {item["id"]: item["outcome"] for item in client.deliveries()}
            assert log == {"msg_first": "batch-completed", "msg_last": "manifest-completed",
                           "msg_last_again": "manifest-completed"}
            assert_no_tracebacks(server)
        finally:
            fake_dlcs.release()
            client.close()


def _deliver_once(url: str, body: bytes, msg_id: str) -> tuple[int, dict]:
    client = ServiceClient(url)
    try:
        response = client.deliver(body, msg_id)
        return response.status_code, response.json()
    finally:
        client.close()
