"""A deadline for request bodies: one that has not fully arrived in time is answered 408.

A client that sends its headers and then trickles the body (a byte every few
seconds) would otherwise hold its request open for as long as it likes: under
gunicorn's threaded worker that is a thread, under gevent a greenlet and the
memory of a half-read body. ``BodyDeadline`` wraps the WSGI application and
gives every read of ``wsgi.input`` the time left until ``seconds`` after the
request reached the application.

How a read is cut short: gunicorn's body reader loops over ``recv()`` until it
has the bytes it was asked for, so a socket timeout (which each ``recv`` would
reset) does not bound a trickle. Instead a timer started around the read shuts
the socket's read side down when the deadline passes; the blocked ``recv``
returns end-of-stream at once, the read fails, and the application answers
``408`` (problem+json, through the HTTP error handler) and gunicorn closes the
connection. Nothing here depends on the worker class.

The process's one watchdog (``webhook.watchdog``) does the shutting; a timer
thread per read, as this module first had, cost a thread start per request, a
quarter of a sync worker's time in py-spy. Without gunicorn's socket in
the environ (the test client, other servers) the deadline is only checked
between reads.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext

from werkzeug.exceptions import RequestTimeout

from webhook.domain import ascii_digits
from webhook.watchdog import SocketCut, socket_shut_at


class BodyTimeout(RequestTimeout):
    """The request body did not fully arrive before its deadline (408)."""

    def __init__(self, seconds: float):
        super().__init__(f"The request body did not arrive within {seconds:g} seconds.")


class BodyDeadline:
    """WSGI middleware: each request's body must arrive within ``seconds``."""

    def __init__(self, app: Callable, seconds: float):
        self.app = app
        self.seconds = seconds

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        if _has_body(environ):
            environ["wsgi.input"] = _DeadlineInput(
                environ["wsgi.input"], environ.get("gunicorn.socket"),
                time.monotonic() + self.seconds, self.seconds)
        return self.app(environ, start_response)


def _has_body(environ: dict) -> bool:
    length = environ.get("CONTENT_LENGTH") or ""
    chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    return chunked or (ascii_digits(length) and int(length) > 0)


class _DeadlineInput:
    """``wsgi.input`` whose reads fail with BodyTimeout once the deadline has passed."""

    def __init__(self, stream, sock: socket.socket | None, deadline: float, seconds: float):
        self._stream = stream
        self._sock = sock
        self._deadline = deadline
        self._seconds = seconds
        self._expired = False

    def read(self, size: int | None = -1) -> bytes:
        return self._guarded(self._stream.read, size)

    def readline(self, size: int | None = -1) -> bytes:
        return self._guarded(self._stream.readline, size)

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        return self._guarded(self._stream.readlines, hint)

    def __iter__(self):
        return iter(self.readline, b"")

    def _guarded(self, read, size):
        if self._expired or time.monotonic() >= self._deadline:
            raise BodyTimeout(self._seconds)
        if self._sock is None:
            shut = nullcontext(SocketCut())
        else:
            # End-of-stream for the blocked recv(); the answer can still be sent.
            shut = socket_shut_at(self._deadline, self._sock, socket.SHUT_RD)
        with shut as cut:
            try:
                data = read(size)
            except Exception as exc:
                # The read failed because the deadline shut it (gunicorn: NoMoreData).
                if cut.done or time.monotonic() >= self._deadline:
                    self._expired = True
                    raise BodyTimeout(self._seconds) from exc
                raise
        if cut.done:
            # What came back is cut short (the read side is shut): not a whole body.
            self._expired = True
            raise BodyTimeout(self._seconds)
        return data
