"""SQLite group commit: writers of one process that wait together share one commit.

``db.in_transaction`` runs the first completion's write. While one writer of a
process waits for SQLite's lock or for the disk, the others queue; the next to
get the turn runs all of their work in one transaction, each piece in a
savepoint of its own. What callers must see is unchanged: each gets its own
result or error, a piece that fails leaves nothing, and nothing is reported
done before it is committed. These tests hold the process's turn so that the
writers really do queue, then let them go at once.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import peewee
import pytest

from tests.conftest import ADMIN_TOKEN, signed_headers
from tests.test_webhook_http import URL, make_app, notification, register  # noqa: F401
from webhook import db
from webhook.deliveries import Delivery
from webhook.model_base import COMPLETED, INGESTING
from webhook.models import Batch

WRITERS = 5


@pytest.fixture
def sqlite_tables(tmp_path):
    """A bound, pooled SQLite database with a table ``t`` and a deferred foreign key."""
    database = db.open_database(f"sqlite:///{tmp_path / 'group.db'}")
    db.bind(database)
    database.execute_sql("CREATE TABLE t (x INTEGER UNIQUE)")
    database.execute_sql("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    database.execute_sql("CREATE TABLE child (parent_id INTEGER REFERENCES parent (id) "
                         "DEFERRABLE INITIALLY DEFERRED)")
    yield database
    db.dispose()


def rows(database) -> list[int]:
    return [row[0] for row in database.execute_sql("SELECT x FROM t ORDER BY x")]


def insert(value: int):
    """A writer's work: insert ``value``, and tell which thread ran it."""
    def work():
        db.database.execute_sql("INSERT INTO t VALUES (?)", (value,))
        return value, threading.get_ident()
    return work


def queued_together(database, works: list) -> list:
    """Run each of ``works`` through ``db.in_transaction`` from a thread of its own,
    all queued behind a transaction that holds the turn; each one's result or error."""
    return calls_queued_together(database, [lambda w=work: db.in_transaction(w)
                                            for work in works])


def calls_queued_together(database, calls: list) -> list:
    """Start each of ``calls`` on a thread of its own while a transaction holds the
    process's turn, wait until all have queued to write, then let them go; each
    one's result or error."""
    holding, release = threading.Event(), threading.Event()

    def hold_the_turn():
        with db.transaction():
            holding.set()
            release.wait(30)

    def call(function):
        try:
            return function()
        except Exception as exc:  # noqa: BLE001 - what the caller would see
            return exc

    with ThreadPoolExecutor(max_workers=len(calls) + 1) as pool:
        holder = pool.submit(hold_the_turn)
        assert holding.wait(10)
        started = [pool.submit(call, function) for function in calls]
        deadline = time.monotonic() + 10
        while len(database._waiting) < len(calls):   # every writer has queued
            assert time.monotonic() < deadline, "the writers did not queue"
            time.sleep(0.01)
        release.set()
        holder.result(10)
        return [c.result(10) for c in started]


def test_writers_waiting_together_share_one_transaction(sqlite_tables):
    results = queued_together(sqlite_tables, [insert(n) for n in range(WRITERS)])

    assert [value for value, _ in results] == list(range(WRITERS))   # each its own result
    assert len({thread for _, thread in results}) == 1   # all run by one leader
    assert rows(sqlite_tables) == list(range(WRITERS))


def test_a_writer_alone_runs_in_a_transaction_of_its_own(sqlite_tables):
    value, thread = db.in_transaction(insert(7))

    assert (value, thread) == (7, threading.get_ident())
    assert rows(sqlite_tables) == [7]


def test_a_failing_writer_is_undone_alone_and_told(sqlite_tables):
    def insert_then_fail():
        db.database.execute_sql("INSERT INTO t VALUES (100)")
        raise ValueError("this writer fails")

    def insert_a_duplicate():   # an error from SQLite itself, as a unique id's would be
        db.database.execute_sql("INSERT INTO t VALUES (1)")

    results = queued_together(sqlite_tables, [insert(1), insert_then_fail, insert(2),
                                              insert_a_duplicate, insert(3)])

    assert isinstance(results[1], ValueError)
    assert isinstance(results[3], peewee.IntegrityError)
    assert [results[n][0] for n in (0, 2, 4)] == [1, 2, 3]
    assert rows(sqlite_tables) == [1, 2, 3]   # nothing of the failed writers


def test_a_commit_that_fails_fails_every_writer_and_keeps_nothing(sqlite_tables):
    def dangling_child():
        # Accepted by its statement; the deferred foreign key fails the COMMIT.
        db.database.execute_sql("INSERT INTO child VALUES (404)")
        return "inserted"

    results = queued_together(sqlite_tables, [insert(1), dangling_child, insert(2)])

    assert all(isinstance(result, peewee.IntegrityError) for result in results), results
    assert rows(sqlite_tables) == []
    assert sqlite_tables.execute_sql("SELECT count(*) FROM child").fetchone()[0] == 0
    # The turn was given back: the next writer goes through.
    assert db.in_transaction(insert(5))[0] == 5
    assert rows(sqlite_tables) == [5]


def test_a_writer_alone_whose_work_fails_leaves_nothing(sqlite_tables):
    def insert_then_fail():
        db.database.execute_sql("INSERT INTO t VALUES (1)")
        raise ValueError("fails")

    with pytest.raises(ValueError):
        db.in_transaction(insert_then_fail)
    assert rows(sqlite_tables) == []


def test_first_completions_through_the_webhook_share_a_commit_and_stay_exactly_once(
        make_app, tmp_path):
    app = make_app(database_url=f"sqlite:///{tmp_path / 'intake.db'}")
    batches = list(range(1234, 1240))
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert register(app.test_client(), admin, batches).status_code == 202

    def deliver(batch, msg_id):
        body = notification(id=batch)
        answer = app.test_client().post(URL, data=body, headers=signed_headers(body, msg_id))
        return answer.status_code, answer.get_json()["outcome"]

    # The first completions of every batch but the last, and a copy of the first
    # one's webhook-id, in one group: the copy's write is undone in its savepoint
    # and it is answered as the redelivery it is.
    calls = [lambda b=batch: deliver(b, f"msg_{b}") for batch in batches[:-1]]
    calls.append(lambda: deliver(batches[0], f"msg_{batches[0]}"))
    answers = calls_queued_together(db.database.obj, calls)

    # Which copy of the id queued first is up to the threads: one of them wins.
    assert answers[1:-1] == [(200, "batch-completed")] * (len(batches) - 2)
    assert sorted([answers[0], answers[-1]]) == [(200, "batch-completed"), (200, "duplicate")]
    assert sorted(d.delivery_id for d in Delivery.select()) == sorted(
        f"msg_{b}" for b in batches[:-1])
    assert [Batch.get_by_id(b).status for b in batches] == [COMPLETED] * 5 + [INGESTING]
