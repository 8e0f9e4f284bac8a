"""SQLite's connection pool: waits for the write lock that let the worker run, and group commit.

``webhook.db.open_database`` makes one of these for a ``sqlite:///`` URL. Two
things set it apart from playhouse's pool: a statement SQLite turns away with
"database is locked" is tried again after short pauses that yield to the
worker's other requests (not in SQLite's busy handler), and the writes of one
process that wait for their turn at the same time can share one commit
(``run_grouped``), which costs one sync to disk instead of one each.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TypeVar

import peewee
from playhouse.pool import PooledSqliteDatabase

from webhook import cpu
from webhook.fair_pool import FairWait

# How long a statement waits for SQLite's locks before it fails ("database is locked").
SQLITE_BUSY_TIMEOUT_MS = 30_000
# The first and the longest pause between tries for SQLite's write lock.
_FIRST_TRY_PAUSE = 0.0002
_LONGEST_TRY_PAUSE = 0.002

T = TypeVar("T")


class SqlitePool(FairWait, PooledSqliteDatabase):
    """peewee's SQLite pool, whose statements wait for locks in short, yielding pauses.

    SQLite's busy handler waits for a write lock held by another connection
    by sleeping in C, 1, 2, 5, 10 ms and longer between tries, while the
    transactions it waits for last a third of a millisecond: the lock sat
    idle while its waiters slept, and under gevent the sleep stopped every
    request of the worker, health checks included. The connections therefore
    run with no busy handler (``busy_timeout`` 0), and whatever SQLite refuses
    with "database is locked" is tried again after pauses of 0.2 ms doubling
    to 2 ms, up to the same 30 s; under gevent the pause (``time.sleep``,
    patched) lets the worker's other requests run. That is ``BEGIN
    IMMEDIATE`` for a transaction, and for a statement outside one (the known
    re-notification's insert, a read SQLite turned away while a connection
    closed) the statement itself: refused, it did nothing, so it can run
    again. Inside a transaction nothing waits: ``BEGIN IMMEDIATE`` took the
    write lock, and in WAL mode reads take none.

    One thread or greenlet of a process tries ``BEGIN`` at a time: the others
    queue on a lock held from ``BEGIN`` to ``COMMIT`` or ``ROLLBACK``
    (gevent's lock under gevent), which hands over at once and costs no CPU
    while waiting. Every explicit transaction starts here, so a connection
    holding SQLite's write lock in one already holds that lock and never
    waits for it. A statement outside a transaction tries once without it;
    refused, it queues there too, and tries again holding it.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._turn = threading.Lock()   # gevent's under gevent (patched)
        self._waiting: deque[_GroupedWork] = deque()
        self._threaded = not cpu.cooperative()   # gevent patches before the app is built

    def run_grouped(self, work: Callable[[], T]) -> T:
        """Return ``work()`` run in a write transaction, perhaps one it shares with others.

        Group commit. A commit waits for the disk (``synchronous=FULL``), and
        while it waits the process's other writers queue for their turn. Each
        of them leaves its work here; whoever gets the turn next runs every
        piece waiting, each in a savepoint of its own (one that raises is
        undone alone, and its caller gets the error), and commits them once.
        Every piece sees the ones before it as if they had committed, as
        transactions run one after another would; none returns before the
        commit, and a commit that fails fails them all. Alone (a sync worker,
        or no one waiting), the work runs in a transaction of its own, as
        ``transaction()`` would run it. The work runs on whichever thread or
        greenlet leads: it must use nothing of its own thread but the
        database.
        """
        mine = _GroupedWork(work)
        self._waiting.append(mine)
        self._turn.acquire()
        try:
            if not mine.done:  # no one ran it while this one waited: lead
                if self._threaded and len(self._in_use) > 1:
                    # Other threads of this process are in requests (each holds a
                    # connection, in the pool's ``_in_use``, from its first
                    # statement to the request's end): give them the GIL once,
                    # so those a few steps from here join this group instead of
                    # waiting for the next commit (gthread, first completions:
                    # 0.73-0.78x of the ceiling without, 0.83-0.97x with). Alone, as
                    # in a sync worker, the pause (about 80 us) buys nothing; under
                    # gevent it runs every ready greenlet first, holding the turn
                    # (0.61-0.68x with, 0.67-0.73x without).
                    time.sleep(0)
                self._run_waiting()
        finally:
            self._turn.release()
        return mine.result()

    def _run_waiting(self) -> None:
        """Run every waiting piece of work in one transaction; the caller holds the turn."""
        group = []
        while self._waiting:
            group.append(self._waiting.popleft())
        self._state.leads = True
        try:
            with self.atomic():
                if len(group) == 1:
                    group[0].run()   # an error undoes the transaction, as transaction() does
                else:
                    for piece in group:
                        piece.run_in(self.savepoint())
        except BaseException as exc:  # noqa: BLE001 - handed to every caller not failed already
            for piece in group:
                piece.fail(exc)
            if not isinstance(exc, Exception):
                raise  # the leader is being stopped: so is its own request
        finally:
            self._state.leads = False
            for piece in group:
                piece.done = True

    def begin(self, lock_type=None):
        if getattr(self._state, "leads", False):
            # run_grouped's leader holds the turn already, and gives it back itself.
            return self._pausing(super().begin, lock_type)
        self._turn.acquire()
        self._state.holds_turn = True
        try:
            self._pausing(super().begin, lock_type)
        except BaseException:
            self._give_turn()
            raise

    def execute_sql(self, sql, params=None):
        if self.in_transaction():
            # BEGIN IMMEDIATE took the write lock: nothing in here waits for it.
            return super().execute_sql(sql, params)
        # A statement of its own: it either took its lock and ran, or did nothing.
        if self._holds_turn():  # begin()'s BEGIN: its caller queued already
            return self._pausing(super().execute_sql, sql, params)
        try:
            return super().execute_sql(sql, params)
        except peewee.OperationalError as exc:
            if "database is locked" not in str(exc):
                raise
        # Refused: wait in line with the process's transactions. Trying again
        # alone, after pauses, it lost the lock to whoever asked as it came
        # free, again and again: at 64 connections under gevent a few
        # re-notifications waited 2-4 s, a hundred tries and more.
        with self._turn:
            return self._pausing(super().execute_sql, sql, params)

    def _holds_turn(self) -> bool:
        """Tell whether this thread holds the turn (in ``begin`` or leading a group)."""
        return (getattr(self._state, "holds_turn", False)
                or getattr(self._state, "leads", False))

    @staticmethod
    def _pausing(attempt, *args):
        """Run ``attempt`` until SQLite does not answer "database is locked", or give up."""
        give_up = None
        pause = _FIRST_TRY_PAUSE
        while True:
            try:
                return attempt(*args)
            except peewee.OperationalError as exc:
                if "database is locked" not in str(exc):
                    raise
                now = time.monotonic()
                give_up = give_up or now + SQLITE_BUSY_TIMEOUT_MS / 1000
                if now >= give_up:
                    raise
            time.sleep(pause)  # gevent's under gevent: the worker's other requests run
            pause = min(pause * 2, _LONGEST_TRY_PAUSE)

    def commit(self):
        try:
            super().commit()
        finally:
            self._give_turn()

    def rollback(self):
        try:
            super().rollback()
        finally:
            self._give_turn()

    def _give_turn(self) -> None:
        if getattr(self._state, "holds_turn", False):
            self._state.holds_turn = False
            self._turn.release()


class _GroupedWork:
    """One caller's work in a group commit, and what came of it."""

    __slots__ = ("work", "done", "value", "error")

    def __init__(self, work: Callable[[], object]):
        self.work = work
        self.done = False
        self.value = None
        self.error: BaseException | None = None

    def run(self) -> None:
        self.value = self.work()

    def run_in(self, savepoint: peewee._savepoint) -> None:
        """Run in ``savepoint``; an error undoes this work alone and is kept for its caller.

        Should undoing it fail, that error leaves here and fails the whole group:
        what the work wrote must never commit once its caller has been told it failed.
        """
        with savepoint:
            try:
                self.run()
            except Exception as exc:  # noqa: BLE001 - raised again by result() in the caller
                self.error = exc
                savepoint.rollback(begin=False)

    def fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc

    def result(self):
        if self.error is not None:
            raise self.error
        return self.value
