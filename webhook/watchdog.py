"""One watchdog per process: calls each watched piece of work's ``expire`` once its deadline passes.

A socket read blocked in ``recv()`` cannot be bounded by a socket timeout when
the peer trickles (each byte resets it). What bounds it is shutting the socket
from elsewhere once the deadline has passed: the blocked read returns at once.
Request bodies (``webhook.body_deadline``) and the headers of outbound answers
(``webhook.deadlines``) both read inside ``socket_shut_at``.

The watchdog is a daemon thread (a greenlet under gevent, whose ``threading``
is patched) that wakes every ``TICK_SECONDS``; registering and forgetting a
read costs a dict operation under a lock, a microsecond each. A cut comes at
most one tick late.
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

# How often the watchdog looks for work past its deadline: how late a cut may come.
TICK_SECONDS = 0.1


class _Watchdog:
    """Calls each watched read's ``expire`` once its deadline has passed, from one thread."""

    def __init__(self):
        self._lock = threading.Lock()
        self._watched: dict[int, tuple[float, Callable[[], None]]] = {}
        self._numbers = itertools.count()
        thread = threading.Thread(target=self._run, name="deadline-watchdog", daemon=True)
        thread.start()

    def watch(self, deadline: float, expire: Callable[[], None]) -> int:
        """Have ``expire`` called once ``deadline`` (time.monotonic) has passed; return a handle."""
        number = next(self._numbers)
        with self._lock:
            self._watched[number] = (deadline, expire)
        return number

    def forget(self, number: int) -> None:
        """Stop watching (the read returned); harmless once it has expired."""
        with self._lock:
            self._watched.pop(number, None)

    def _run(self) -> None:
        while True:
            time.sleep(TICK_SECONDS)
            now = time.monotonic()
            with self._lock:
                due = [number for number, (deadline, _) in self._watched.items()
                       if deadline <= now]
                expired = [self._watched.pop(number)[1] for number in due]
            for expire in expired:
                expire()


_started: tuple[int, _Watchdog] | None = None   # (the process that started it, it)
_starting = threading.Lock()


def watchdog() -> _Watchdog:
    """This process's watchdog, started on first use (a forked worker starts its own)."""
    global _started
    started = _started
    if started is None or started[0] != os.getpid():
        with _starting:
            if _started is None or _started[0] != os.getpid():
                _started = (os.getpid(), _Watchdog())
            started = _started
    return started[1]


@dataclass(slots=True)
class SocketCut:
    """Whether ``socket_shut_at`` shut its socket (the deadline passed during the block)."""

    done: bool = False


@contextmanager
def socket_shut_at(deadline: float, sock: socket.socket, how: int) -> Iterator[SocketCut]:
    """Shut ``sock`` (``how``: ``socket.SHUT_RD`` or ``SHUT_RDWR``) once ``deadline`` passes.

    ``deadline`` is a ``time.monotonic()`` value; once the block ends, nothing is shut. A read
    blocked in the block returns (end-of-stream or an error) once it is shut; the yielded
    ``SocketCut`` tells the caller why.
    """
    cut = SocketCut()

    def expire() -> None:
        cut.done = True
        try:
            # The plain socket's shutdown, under TLS too: SSLSocket's own
            # would drop its SSL object under the reading thread's feet.
            socket.socket.shutdown(sock, how)
        except OSError:
            pass  # closed already

    dog = watchdog()
    handle = dog.watch(deadline, expire)
    try:
        yield cut
    finally:
        dog.forget(handle)
