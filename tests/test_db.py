"""The schema is created and upgraded by the service, and PostgreSQL connections are pooled."""

import datetime as dt
import os
import re
import shutil
import sqlite3
import threading
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import peewee
import pytest
from playhouse.pool import PooledPostgresqlDatabase

from webhook import db, sqlite_pool
from webhook.errors import DatabaseUnavailable
from webhook.deliveries import Delivery
from webhook.models import Batch, Manifest

ROOT = Path(__file__).parents[1]
MIGRATIONS = sorted(path.stem for path in db.MIGRATIONS_DIR.glob("[0-9]*.py"))
LATEST = MIGRATIONS[-1]

ADD_COLUMN = '''
from peewee import TextField


def up(migrator, db):
    migrator.migrate(migrator.add_column("manifest", "note", TextField(default="none")))
'''


@pytest.fixture
def fresh_database_url(request, tmp_path):
    """An empty database on the selected backend (no tables yet)."""
    if os.environ.get("WEBHOOK_TEST_DATABASE") == "postgresql":
        return request.getfixturevalue("empty_postgres_url")
    return f"sqlite:///{tmp_path}/webhook.db"


@pytest.fixture
def bound(fresh_database_url):
    db.bind(db.open_database(fresh_database_url))
    yield db.database
    db.dispose()


def test_concurrent_sqlite_starts_migrate_exactly_once(tmp_path):
    url = f"sqlite:///{tmp_path}/fresh.db"
    script = ("import sys; from webhook import db; "
              "db.bind(db.open_database(sys.argv[1])); print(db.migrate())")
    processes = [subprocess.Popen([sys.executable, "-c", script, url], cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(4)]
    results = [p.communicate(timeout=60) for p in processes]
    assert all(p.returncode == 0 for p in processes), [err for _, err in results]
    outputs = [out.strip() for out, _ in results]
    assert outputs.count("[]") == 3 and outputs.count(str(MIGRATIONS)) == 1


def test_migrate_creates_the_schema_once(bound):
    assert db.migrate() == MIGRATIONS
    assert db.migrate() == []
    assert db.schema_version() == (LATEST, [])
    assert {"manifest", "batch", "canvas_painting", "delivery"} <= set(bound.get_tables())


def test_a_manifests_rows_are_indexed_once(bound):
    """One index serves a manifest's rows: the unique (manifest, position) one (0008)."""
    db.migrate()
    indexes = {index.name: index.columns for index in bound.get_indexes("canvas_painting")}
    assert [columns for columns in indexes.values() if columns[0] == "manifest_id"] == \
        [["manifest_id", "position"]]
    if db.is_postgres():
        plan = bound.execute_sql("EXPLAIN SELECT id FROM canvas_painting WHERE manifest_id = 1 "
                                 "ORDER BY position").fetchall()
    else:
        plan = bound.execute_sql("EXPLAIN QUERY PLAN SELECT id FROM canvas_painting "
                                 "WHERE manifest_id = 1 ORDER BY position").fetchall()
    assert "canvas_painting_manifest_id_position" in str(plan)


def test_upgrading_a_live_first_release_database_keeps_its_rows(bound):
    """A database created by the first release upgrades in place to the newest schema."""
    assert db.migrate(target="0001_initial") == ["0001_initial"]
    bound.execute_sql("INSERT INTO manifest (customer, slug, document, generation, "
                      "needs_rebuild, created_at, updated_at) VALUES (2, 'letters', "
                      "'{\"type\": \"Manifest\"}', 1, false, '2025-01-01', '2025-01-01')")
    bound.execute_sql("INSERT INTO batch (id, manifest_id, customer, status, superseded) "
                      "VALUES (1234, 1, 2, 'ingesting', false)")
    assert db.migrate() == MIGRATIONS[1:]
    manifest = Manifest.get(Manifest.slug == "letters")
    assert manifest.document == {"type": "Manifest"} and manifest.fingerprint is None
    batch = Batch.get_by_id(1234)
    assert batch.manifest_id == manifest.id and batch.status == "ingesting"
    # 0005: a batch recorded undated takes its manifest's registration time (its age
    # decides whether it is stalled), and the manifest gets a version for If-Match.
    assert batch.created_at == dt.datetime(2025, 1, 1)
    assert re.fullmatch(r"[0-9a-f]{32}", manifest.version)
    # 0006: no published key recorded (a document published before stays at its
    # manifest_key until the next rebuild), and no queueing under way.
    assert (manifest.published_key, manifest.queueing_until) == (None, None)


def test_a_later_migration_adds_a_column_without_losing_rows(bound, tmp_path):
    db.migrate()
    manifest = Manifest.create(customer=2, slug="letters", document={"type": "Manifest"})
    Batch.create(id=1234, manifest=manifest, customer=2)
    Delivery.create(delivery_id="msg_1", transport="webhook", outcome="ignored", body=b"{}")

    directory = tmp_path / "migrations"
    shutil.copytree(db.MIGRATIONS_DIR, directory)
    (directory / "9999_add_note.py").write_text(ADD_COLUMN)
    assert db.schema_version(directory) == (LATEST, ["9999_add_note"])
    assert db.migrate(directory) == ["9999_add_note"]

    rows = bound.execute_sql("SELECT customer, slug, note FROM manifest").fetchall()
    assert [tuple(r) for r in rows] == [(2, "letters", "none")]
    assert Batch.get_by_id(1234).manifest_id == manifest.id
    assert Delivery.get(Delivery.delivery_id == "msg_1").outcome == "ignored"
    assert db.schema_version(directory) == ("9999_add_note", [])


def test_concurrent_starts_migrate_exactly_once(empty_postgres_url):
    """Several processes starting at once on an empty database all come up."""
    script = ("import sys; from webhook import db; "
              "db.bind(db.open_database(sys.argv[1])); print(db.migrate())")
    processes = [subprocess.Popen([sys.executable, "-c", script, empty_postgres_url], cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(4)]
    results = [p.communicate(timeout=60) for p in processes]
    assert all(p.returncode == 0 for p in processes), [err for _, err in results]
    outputs = sorted(out.strip() for out, _ in results)
    assert outputs.count("[]") == 3 and outputs.count(str(MIGRATIONS)) == 1
    database = db.open_database(empty_postgres_url)
    history = database.execute_sql("SELECT name FROM schema_migration").fetchall()
    assert [r[0] for r in history] == MIGRATIONS
    database.close_all()


def test_postgresql_connections_are_pooled(postgres_url):
    database = db.open_database(postgres_url)
    assert isinstance(database, PooledPostgresqlDatabase)
    db.bind(database)
    try:
        for _ in range(20):
            db.connect()
            database.execute_sql("SELECT 1")
            db.close()  # back to the pool, not closed
        assert len(database._connections) == 1
        assert not database._in_use
    finally:
        db.dispose()


def _terminate_pooled_backends(database_url: str) -> None:
    """End, from another session, every other server session on this database."""
    import psycopg2

    with psycopg2.connect(database_url) as admin, admin.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                       "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    admin.close()


def query_once() -> int:
    db.connect()
    try:
        return db.database.execute_sql("SELECT 41 + 1").fetchone()[0]
    finally:
        db.close()


def test_a_pooled_connection_that_idled_is_checked_before_use(postgres_url, monkeypatch):
    monkeypatch.setattr(db, "CHECK_IDLE_AFTER_SECONDS", 0.0)
    db.bind(db.open_database(postgres_url))
    try:
        assert query_once() == 42
        _terminate_pooled_backends(postgres_url)
        assert query_once() == 42      # the dead connection was found out and replaced
    finally:
        db.dispose()


def test_a_connection_given_back_moments_ago_is_used_unchecked(postgres_url, monkeypatch):
    monkeypatch.setattr(db, "CHECK_IDLE_AFTER_SECONDS", 3600.0)
    db.bind(db.open_database(postgres_url))
    try:
        assert query_once() == 42
        _terminate_pooled_backends(postgres_url)
        # Used without a round trip first: the statement meets the dead session...
        with pytest.raises(peewee.OperationalError):
            query_once()
        # ...and the pool drops that connection rather than hand it out again.
        assert query_once() == 42
    finally:
        db.dispose()


@pytest.fixture
def pg_table(postgres_url):
    """A bound PostgreSQL database with a scratch table t(x), and a second connection."""
    import psycopg2

    db.bind(db.open_database(postgres_url))
    db.database.execute_sql("DROP TABLE IF EXISTS t; CREATE TABLE t (x integer PRIMARY KEY)")
    other = psycopg2.connect(postgres_url)
    other.autocommit = True
    try:
        yield other
    finally:
        other.close()
        db.database.execute_sql("DROP TABLE IF EXISTS t")
        db.dispose()


def test_begin_goes_with_the_first_statement_and_holds_its_lock(pg_table):
    import psycopg2

    db.database.execute_sql("INSERT INTO t VALUES (1)")
    with db.transaction():
        db.database.execute_sql("SELECT x FROM t WHERE x = 1 FOR UPDATE")
        # The lock is held to the commit, so that statement ran inside the transaction.
        with pg_table.cursor() as cursor, pytest.raises(psycopg2.errors.LockNotAvailable):
            cursor.execute("SELECT x FROM t WHERE x = 1 FOR UPDATE NOWAIT")
        db.database.execute_sql("INSERT INTO t VALUES (2)")
        with pg_table.cursor() as cursor:   # not committed yet: not seen
            cursor.execute("SELECT count(*) FROM t")
            assert cursor.fetchone()[0] == 1
    with pg_table.cursor() as cursor:
        cursor.execute("SELECT x FROM t WHERE x = 1 FOR UPDATE NOWAIT")
        cursor.execute("SELECT count(*) FROM t")
        assert cursor.fetchone()[0] == 2


def test_a_cursor_taken_directly_in_a_transaction_runs_inside_it(pg_table):
    with pytest.raises(RuntimeError), db.transaction():
        db.database.cursor().execute("INSERT INTO t VALUES (5)")
        raise RuntimeError("undo")
    with pg_table.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM t")
        assert cursor.fetchone()[0] == 0


def test_a_failed_transaction_leaves_nothing_and_an_empty_one_nothing_behind(pg_table):
    with pytest.raises(RuntimeError), db.transaction():
        db.database.execute_sql("INSERT INTO t VALUES (3)")
        raise RuntimeError("undo")
    with db.transaction():
        pass                      # no statement: nothing was sent, nothing is left open
    db.database.execute_sql("INSERT INTO t VALUES (4)")   # autocommit again
    with pg_table.cursor() as cursor:
        cursor.execute("SELECT x FROM t ORDER BY x")
        assert cursor.fetchall() == [(4,)]


def test_sqlite_connections_are_pooled_and_keep_the_wal(tmp_path):
    database = db.open_database(f"sqlite:///{tmp_path}/pooled.db")
    db.bind(database)
    try:
        for _ in range(20):
            db.connect()
            database.execute_sql("CREATE TABLE IF NOT EXISTS t (x)")
            database.execute_sql("INSERT INTO t VALUES (1)")
            db.close()  # back to the pool, not closed
            # Closing the last connection would checkpoint the WAL into the file and delete it.
            assert (tmp_path / "pooled.db-wal").exists()
        assert len(database._connections) == 1
        assert not database._in_use
        # A pooled connection may serve another thread than the one that opened it.
        with ThreadPoolExecutor(max_workers=1) as pool:
            assert pool.submit(lambda: database.execute_sql(
                "SELECT count(*) FROM t").fetchone()[0]).result() == 20
    finally:
        db.dispose()
    assert not (tmp_path / "pooled.db-wal").exists()


def test_sqlite_runs_in_wal_mode_without_sqlites_own_busy_wait(tmp_path):
    database = db.open_database(f"sqlite:///{tmp_path}/sub/dir/w.db")
    database.connect()
    assert database.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
    # The pool waits for locks itself (see the tests below), in pauses that yield.
    assert database.execute_sql("PRAGMA busy_timeout").fetchone()[0] == 0
    database.close()
    assert (tmp_path / "sub" / "dir" / "w.db").exists()


@pytest.mark.parametrize("create", [True, False])
def test_sqlite_commits_are_synced_to_disk(tmp_path, create):
    # 2 is FULL: every commit is synced before it returns, so an answered delivery
    # outlives the machine (NORMAL, 1, in WAL mode outlives only the process). Both
    # ways of opening the file: the service's, and the read-only commands' (create=False).
    sqlite3.connect(tmp_path / "s.db").close()   # the file exists, as create=False needs
    database = db.open_database(f"sqlite:///{tmp_path}/s.db", create=create)
    database.connect()
    assert database.execute_sql("PRAGMA synchronous").fetchone()[0] == 2
    database.close()


@pytest.fixture
def sqlite_table(tmp_path):
    """A bound, pooled SQLite database with a table ``t``, and another connection to its file."""
    path = tmp_path / "locks.db"
    database = db.open_database(f"sqlite:///{path}")
    db.bind(database)
    database.execute_sql("CREATE TABLE t (x)")
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    yield database, other
    other.close()
    db.dispose()


def _in_a_transaction(statement: str) -> None:
    with db.transaction():
        db.database.execute_sql(statement)


def _on_its_own(statement: str) -> None:
    with db.autocommit():
        db.database.execute_sql(statement)


def _in_a_shared_transaction(statement: str) -> None:
    db.in_transaction(lambda: db.database.execute_sql(statement))


WRITES = pytest.mark.parametrize("write", [_in_a_transaction, _on_its_own,
                                           _in_a_shared_transaction],
                                 ids=["transaction", "single statement", "group commit"])


@WRITES
def test_a_write_waits_for_another_writer(sqlite_table, write):
    database, other = sqlite_table
    other.execute("BEGIN IMMEDIATE")   # another process's writer, as far as SQLite can tell

    with ThreadPoolExecutor(max_workers=1) as pool:
        waiting = pool.submit(write, "INSERT INTO t VALUES (1)")
        with pytest.raises(TimeoutError):
            waiting.result(timeout=0.5)   # the other writer still holds the lock
        other.execute("ROLLBACK")
        waiting.result(timeout=10)        # once it is free, the write goes through
    assert other.execute("SELECT count(*) FROM t").fetchone()[0] == 1


@WRITES
def test_a_write_gives_up_on_a_lock_held_past_the_busy_timeout(sqlite_table, monkeypatch,
                                                               write):
    database, other = sqlite_table
    monkeypatch.setattr(sqlite_pool, "SQLITE_BUSY_TIMEOUT_MS", 300)
    other.execute("BEGIN IMMEDIATE")
    try:
        # What a request then answers: 503, retry later (as for any outage).
        with pytest.raises(DatabaseUnavailable):
            write("INSERT INTO t VALUES (1)")
    finally:
        other.execute("ROLLBACK")
    # The lock of the process was given back: the next transaction goes through.
    with db.transaction():
        database.execute_sql("INSERT INTO t VALUES (2)")
    assert [row[0] for row in database.execute_sql("SELECT x FROM t")] == [2]


def test_a_refused_statement_waits_in_line_behind_the_processs_transaction(sqlite_table):
    # Refused once, a statement of its own queues for the process's turn behind
    # the transaction holding SQLite's lock, and runs once that commits. Trying
    # again after pauses instead, it lost the lock to whoever asked as it came
    # free: under load, a hundred tries and seconds for some re-notifications.
    database, _ = sqlite_table
    holding, let_go, refused = threading.Event(), threading.Event(), threading.Event()
    tries: list[str] = []

    def hold_the_lock():
        with db.transaction():
            database.execute_sql("INSERT INTO t VALUES (1)")
            holding.set()
            let_go.wait(30)

    def insert_on_its_own():
        def traced(statement):
            tries.append(statement)
            refused.set()
        database.connection().set_trace_callback(traced)   # this thread's connection
        with db.autocommit():
            database.execute_sql("INSERT INTO t VALUES (2)")

    with ThreadPoolExecutor(max_workers=2) as pool:
        holder = pool.submit(hold_the_lock)
        assert holding.wait(10)
        single = pool.submit(insert_on_its_own)
        assert refused.wait(10)
        with pytest.raises(TimeoutError):
            single.result(timeout=0.5)   # it waits for the transaction ...
        let_go.set()
        holder.result(10)
        single.result(10)                # ... and then runs
    assert tries == ["INSERT INTO t VALUES (2)"] * 2   # refused once, then run once
    assert [row[0] for row in database.execute_sql("SELECT x FROM t ORDER BY x")] == [1, 2]


def test_a_statement_failing_for_another_reason_is_not_tried_again(sqlite_table,
                                                                    monkeypatch):
    database, _ = sqlite_table

    def no_pause(seconds):
        raise AssertionError("paused to try again")

    monkeypatch.setattr(sqlite_pool.time, "sleep", no_pause)
    with pytest.raises(peewee.OperationalError, match="no such table"):
        database.execute_sql("SELECT * FROM missing")


def test_an_unreachable_database_is_reported_as_unavailable():
    db.bind(db.open_database("postgresql://postgres@127.0.0.1:1/none"))
    try:
        with pytest.raises(DatabaseUnavailable):
            db.ping()
    finally:
        db.dispose()
