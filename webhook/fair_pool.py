"""Connection pools that hand out their connections in the order they were asked for.

playhouse's pool, when every connection is in use, makes a caller wait on a
condition that a connection given back notifies. But whoever asks next takes
the free connection, not the waiter it woke: under gevent, a request that
arrives while the waiter wakes (a keep-alive connection's next request, most
often) finds it free, and the waiter goes back to the end of the line. With
64 clients on two gevent workers of ten connections each, a few deliveries
waited 1.1-2.8 s for a connection while the median one took 12-58 ms (SQLite;
``bench/intake.py``). ``FairWait`` gives a returned connection to the longest
waiter, and lets nobody take one past those waiting.
"""

from __future__ import annotations

import threading
import time
from collections import deque

from playhouse.pool import MaxConnectionsExceeded, PooledDatabase


class FairWait:
    """Mixin for a playhouse ``PooledDatabase``: connections first come, first served.

    A caller that finds no one waiting and a connection free (idle, or room
    for a new one) goes through at once, as before. Otherwise it queues, and
    each connection given back admits the caller at the head of the queue.
    A caller admitted is counted until it holds its connection, so no one
    else can take it meanwhile. The wait is bounded by the pool's
    ``timeout``, then ``MaxConnectionsExceeded``, as playhouse's is.
    """

    def __init__(self, *args, **kwargs):
        self._queue: deque[threading.Event] = deque()   # the waiting, longest first
        self._admitted = 0   # let through and not yet holding their connection
        super().__init__(*args, **kwargs)

    def connect(self, reuse_if_open=False):
        if not self._max_connections or not self.is_closed():
            # No limit, or this thread has its connection: peewee answers
            # (reused, or "Connection already opened").
            return super().connect(reuse_if_open)
        self._wait_for_turn()
        try:
            # Past playhouse's own wait (PooledDatabase.connect): admitted,
            # this caller has a connection to take.
            return super(PooledDatabase, self).connect(reuse_if_open)
        finally:
            with self._pool_lock:
                self._admitted -= 1
                self._admit()   # if it failed, its place is free again

    def _close(self, conn, close_conn=False):
        with self._pool_lock:
            super()._close(conn, close_conn)
            self._admit()

    def _wait_for_turn(self) -> None:
        """Return when this caller may take a connection, or raise MaxConnectionsExceeded."""
        with self._pool_lock:
            if not self._queue and self._free() > 0:
                self._admitted += 1
                return
            admitted = threading.Event()   # gevent's under gevent (patched)
            self._queue.append(admitted)
        try:
            self._wait_until(admitted, time.monotonic() + self._wait_timeout)
        except BaseException:
            # Gave up, or was stopped while waiting (a greenlet killed): its place,
            # or the connection it was admitted to, goes to the next in line.
            with self._pool_lock:
                if admitted.is_set():
                    self._admitted -= 1
                    self._admit()
                else:
                    self._queue.remove(admitted)
            raise

    def _wait_until(self, admitted: threading.Event, deadline: float) -> None:
        # Woken each second at least: a connection can also come free without
        # being given back (dispose, close_stale), which admits no one by itself.
        while not admitted.wait(min(max(deadline - time.monotonic(), 0.0), 1.0)):
            with self._pool_lock:
                self._admit()
                if admitted.is_set():
                    return
                if time.monotonic() >= deadline:
                    raise MaxConnectionsExceeded(
                        "Max connections exceeded, timed out attempting to connect.")

    def _free(self) -> int:
        """Connections no one holds or has been admitted to take (under the pool lock)."""
        return self._max_connections - len(self._in_use) - self._admitted

    def _admit(self) -> None:
        """Admit the longest waiters, one per free connection (under the pool lock)."""
        while self._queue and self._free() > 0:
            self._admitted += 1
            self._queue.popleft().set()
