"""The database: a proxy the models bind to, its connection, and schema migration.

``database`` is filled in by ``init_app`` (or ``bind``) from ``DATABASE_URL``;
nothing connects at import time. Connections are pooled on both backends: a
fresh PostgreSQL connection per request costs several times the throughput,
and a fresh SQLite one costs its pragmas (about a fifth of a delivery) and,
when the last connection to a file closes, a checkpoint that folds the WAL
back into the database and deletes it, to be created again at once. Every
``transaction()`` on SQLite is ``BEGIN IMMEDIATE``: it takes the write lock up
front, so two writers never deadlock upgrading a read lock, and a transaction
is the unit of mutual exclusion there (PostgreSQL uses row locks instead).
"""

from __future__ import annotations

import fcntl
import logging
import time
import zlib
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote, unquote, urlsplit

import peewee
from playhouse.migrations import Runner
from playhouse.pool import PooledDatabase, PooledPostgresqlDatabase

from webhook.errors import DatabaseUnavailable
from webhook.fair_pool import FairWait
from webhook.sqlite_pool import SqlitePool

log = logging.getLogger("webhook.db")

database = peewee.DatabaseProxy()

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
MIGRATION_TABLE = "schema_migration"
# How long a request waits for a pooled connection when all are in use.
POOL_WAIT_SECONDS = 10
# A pooled PostgreSQL connection idle for longer is checked with a round trip before use.
CHECK_IDLE_AFTER_SECONDS = 5.0
# Any fixed number: every instance must agree on it so only one migrates at a time.
_MIGRATION_LOCK_KEY = zlib.crc32(b"dlcs-webhook:migrations")

T = TypeVar("T")


def open_database(url: str, *, pool_size: int = 10, create: bool = True) -> peewee.Database:
    """Create (not connect) the peewee database a DATABASE_URL names.

    ``pool_size``: the connections this process keeps at most
    (DATABASE_POOL_SIZE); a request that finds them all taken waits up to
    POOL_WAIT_SECONDS for one, then playhouse's MaxConnectionsExceeded
    (answered 503).

    With ``create=False`` a SQLite file that does not exist is not made (nor its
    folder): connecting fails instead, as for an unreachable server.
    """
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        path = unquote(url[len("sqlite:///"):])
        options = {
            "lock_type": "IMMEDIATE",
            "pragmas": {
                "journal_mode": "wal",      # readers never block the writer
                # FULL: a commit reaches the disk before the answer goes out. In
                # WAL mode NORMAL survives the process dying but not the machine:
                # a delivery answered 200 could vanish with a power cut, and its
                # sender never sends it again.
                "synchronous": "full",
                "foreign_keys": 1,
                # Last: the pragmas before it wait in SQLite's busy handler
                # (sqlite3.connect's 5 s, once per new connection); every
                # statement after them waits in SqlitePool's pauses instead.
                "busy_timeout": 0,
            },
        }
        if path == ":memory:":
            # Every connection to :memory: is a database of its own: never pool them.
            return peewee.SqliteDatabase(path, timeout=30, **options)
        if create:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        else:
            # mode=rw: SQLite opens an existing file, never creates one.
            path, options["uri"] = f"file:{quote(str(Path(path).resolve()))}?mode=rw", True
        # A pooled connection serves one thread at a time, not always the one
        # that opened it, hence check_same_thread=False.
        # (``timeout`` is the pool's wait for a free connection here; the wait
        # for SQLite's locks is the pool's pauses, up to sqlite_pool.SQLITE_BUSY_TIMEOUT_MS.)
        return SqlitePool(path, max_connections=pool_size, stale_timeout=300,
                           timeout=POOL_WAIT_SECONDS, check_same_thread=False, **options)
    return _PostgresPool(
        unquote(parts.path.lstrip("/")),
        user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        host=parts.hostname,
        port=parts.port or 5432,
        max_connections=pool_size,
        stale_timeout=300,
        timeout=POOL_WAIT_SECONDS,
        connect_timeout=5,
    )


class _PostgresPool(FairWait, PooledPostgresqlDatabase):
    """peewee's PostgreSQL pool, with two round trips fewer.

    A connection is checked by a round trip only after it idled. The pool
    runs ``SELECT 1`` on each connection it hands out, under the database's
    lock: a round trip per request (a quarter of a delivery's time in
    py-spy), and the threads of a worker queue behind it. A connection given
    back moments ago is alive unless the server went away since; then its
    first statement fails (503: senders retry), psycopg2 marks it broken and
    the pool drops it when it is given back. PgBouncer's
    ``server_check_delay`` makes the same trade.

    ``BEGIN`` travels with the transaction's first statement (``BEGIN;
    SELECT ...`` is one message; the answer is the statement's), instead of
    a round trip of its own. A transaction that ran no statement sends
    nothing at all.
    """

    def __init__(self, *args, **kwargs):
        self._returned: dict[int, float] = {}   # when each idle connection was given back
        super().__init__(*args, **kwargs)

    def _close(self, conn, close_conn=False):
        with self._pool_lock:
            self._returned[id(conn)] = time.monotonic()
            super()._close(conn, close_conn)   # may close it for good: see _close_raw

    def _close_raw(self, conn):
        self._returned.pop(id(conn), None)
        super()._close_raw(conn)

    def _is_closed(self, conn):
        returned = self._returned.pop(id(conn), None)
        if (returned is not None and not conn.closed
                and time.monotonic() - returned < CHECK_IDLE_AFTER_SECONDS
                and self._adapter.txn_status(conn) == self._adapter.txn_idle):
            return False
        return super()._is_closed(conn)

    def begin(self, isolation_level=None):
        if isolation_level is not None or self._isolation_level:
            return super().begin(isolation_level)
        if self.is_closed():
            # As the BEGIN would have: connecting later would reset the transaction stack.
            self.connect()
        self._state.begin_pending = True   # this thread's connection state

    def _execute_cursor(self, sql, params, **cursor_options):
        if getattr(self._state, "begin_pending", False):
            self._state.begin_pending = False
            sql = "BEGIN;" + sql
        return super()._execute_cursor(sql, params, **cursor_options)

    def cursor(self, named_cursor=None):
        cursor = super().cursor(named_cursor)
        if getattr(self._state, "begin_pending", False):
            # Used directly, not through execute_sql: BEGIN cannot ride along.
            self._state.begin_pending = False
            cursor.execute("BEGIN")
        return cursor

    def commit(self):
        if not self._sent_begin():
            return
        super().commit()

    def rollback(self):
        if not self._sent_begin():
            return
        super().rollback()

    def _sent_begin(self) -> bool:
        """Tell whether BEGIN went out; forget a pending one (the transaction is ending)."""
        pending = getattr(self._state, "begin_pending", False)
        self._state.begin_pending = False
        return not pending


def bind(db: peewee.Database) -> None:
    """Point the models at ``db``."""
    database.initialize(db)


def is_postgres() -> bool:
    """Tell whether the bound database is PostgreSQL."""
    return isinstance(database.obj, peewee.PostgresqlDatabase)


def connection_lost(exc: BaseException) -> bool:
    """Tell whether a database error means the connection (or the server) is gone.

    psycopg2 reports a connection the server dropped as OperationalError, then
    InterfaceError ("connection already closed"); sqlite3 reports a closed
    connection as ProgrammingError ("Cannot operate on a closed database").
    """
    if isinstance(exc, (peewee.OperationalError, peewee.InterfaceError)):
        return True
    return isinstance(exc, peewee.ProgrammingError) and "closed database" in str(exc)


@contextmanager
def _connection_loss_reported():
    """Raise DatabaseUnavailable for an error that means the connection is gone."""
    try:
        yield
    except (peewee.DatabaseError, peewee.InterfaceError) as exc:
        if not connection_lost(exc):
            raise
        raise DatabaseUnavailable(f"database unavailable: {type(exc).__name__}") from exc


@contextmanager
def transaction():
    """Run a block in one write transaction, mapping connection loss to DatabaseUnavailable."""
    with _connection_loss_reported(), database.atomic():
        yield


def in_transaction(work: Callable[[], T]) -> T:
    """Return ``work()`` run in one write transaction, as ``with transaction():`` would.

    On SQLite the transaction may be shared with other requests of this
    process waiting to write at the same time, all committed together (group
    commit, ``SqlitePool.run_grouped``): ``work`` must use nothing of its
    thread's own but the database, since it may run on another's.
    """
    pool = database.obj
    if not isinstance(pool, SqlitePool) or pool.in_transaction():
        with transaction():
            return work()
    with _connection_loss_reported():
        return pool.run_grouped(work)


@contextmanager
def autocommit():
    """Run a block's statements each in a transaction of its own, mapping connection loss.

    For a single statement that needs no other: it saves ``BEGIN`` and
    ``COMMIT``, and on SQLite it holds the write lock for that statement only.
    """
    if database.in_transaction():
        raise RuntimeError("autocommit() inside a transaction would join it")
    try:
        yield
    except (peewee.OperationalError, peewee.InterfaceError) as exc:
        raise DatabaseUnavailable(f"database unavailable: {type(exc).__name__}") from exc


def in_transaction_retried_once(work: Callable[[], T]) -> T:
    """Run ``work`` in a transaction; if the connection is lost, run it again on a new one.

    For writes that must not wait for a lease to expire, such as recording why
    a rebuild failed: the connection that failed the rebuild has often died
    with it. ``work`` runs twice only when the first transaction did not
    commit or its outcome is unknown, so it must be safe to repeat.
    """
    try:
        with transaction():
            return work()
    except DatabaseUnavailable:
        log.info("the database connection was lost; retrying on a new one")
        _discard_connection()
    with transaction():
        return work()


def connect() -> None:
    """Open (or take from the pool) this thread's connection."""
    try:
        database.connect(reuse_if_open=True)
    except (peewee.OperationalError, peewee.InterfaceError) as exc:
        raise DatabaseUnavailable(f"database unavailable: {type(exc).__name__}") from exc


def close() -> None:
    """Give this thread's connection back (to the pool, on PostgreSQL)."""
    if not database.is_closed():
        database.close()


def dispose() -> None:
    """Close every connection the bound database holds (pooled ones too)."""
    if database.obj is None:
        return
    if isinstance(database.obj, PooledDatabase):
        database.obj.close_all()
    elif not database.is_closed():
        database.close()


def ping() -> None:
    """Run a trivial query; raise DatabaseUnavailable when it fails."""
    try:
        database.connect(reuse_if_open=True)
        database.execute_sql("SELECT 1").fetchone()
    except (peewee.OperationalError, peewee.InterfaceError) as exc:
        # A pooled connection can die under us; drop it so the next try reconnects.
        _discard_connection()
        raise DatabaseUnavailable(f"database unavailable: {type(exc).__name__}") from exc


def _discard_connection() -> None:
    try:
        if isinstance(database.obj, PooledDatabase) and not database.is_closed():
            database.obj.manual_close()
        else:
            database.close()
    except Exception:  # noqa: BLE001 - already broken; nothing more to do
        log.debug("discarding a broken connection failed", exc_info=True)


def migration_runner(directory: Path = MIGRATIONS_DIR) -> Runner:
    """peewee's migration runner over the bound database and the migrations in ``directory``."""
    return Runner(database.obj, directory=str(directory), table_name=MIGRATION_TABLE)


def migrate(directory: Path = MIGRATIONS_DIR, target: str | None = None) -> list[str]:
    """Apply pending migrations (up to ``target``) under a lock, so concurrent starts migrate once."""
    runner = migration_runner(directory)
    if is_postgres():
        with database.atomic():
            # Held to the end of the transaction: other instances wait here.
            database.execute_sql("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK_KEY,))
            applied = runner.up(target)
    else:
        # Not inside one transaction on SQLite: a migration that rebuilds a table
        # must switch foreign keys off first (or the DROP cascades to child rows),
        # and that pragma is ignored inside a transaction. A file lock beside the
        # database serialises concurrent starts instead.
        with _file_lock(database.obj.database):
            applied = runner.up(target)
    if applied:
        log.info("applied migrations: %s", ", ".join(applied))
    return applied


@contextmanager
def _file_lock(database_path: str):
    if database_path == ":memory:":
        yield
        return
    with open(f"{database_path}.migrate.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def schema_version(directory: Path = MIGRATIONS_DIR) -> tuple[str | None, list[str]]:
    """Return the newest applied migration and the names still pending."""
    status = migration_runner(directory).status()
    applied = [m.name for m in status if m.applied]
    pending = [m.name for m in status if not m.applied and m.path]
    return (applied[-1] if applied else None), pending
