"""Outbound HTTP calls under a deadline: attempts cut to the time left, only retries that fit.

``requests`` gives each read a timeout, and urllib3 retries with the same one,
so a call that hangs, or an answer that trickles in a byte at a time, can
outlast any budget. With a ``Deadline``:

- ``DeadlineTimeout`` cuts each attempt's connect and read timeouts to the time
  left (urllib3 clones the timeout at the start of every attempt, retries too);
- ``DeadlineRetry`` starts no retry with less than ``MIN_RETRY_SECONDS`` left
  after its backoff (or ``Retry-After``); the session's one Retry object learns
  the call's deadline from ``call_deadline``, a context variable;
- ``DeadlineAdapter`` bounds the wait for an answer's status line and
  headers: a read timeout is per ``recv``, so a server sending them a byte
  at a time would outlast it; the process's watchdog (``webhook.watchdog``)
  shuts the socket when the call's deadline passes, and the attempt fails as
  a read timeout;
- the body's deadline is kept by ``webhook.capped.read_capped``.

``timed_out`` tells a timeout from a connection that failed, through the
wrappers urllib3 and requests put around it.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (ConnectTimeoutError, InvalidHeader, MaxRetryError,
                                NewConnectionError, ReadTimeoutError, ResponseError)
from urllib3.util import Timeout
from urllib3.util.retry import Retry

from webhook.domain import Deadline
from webhook.watchdog import socket_shut_at

#: Least time a retry must have left before the call's deadline (after its
#: backoff) to be worth starting; with less it would only be cut short.
MIN_RETRY_SECONDS = 1.0

# The deadline of the call under way in this thread, for the retry policy.
_CALL_DEADLINE: ContextVar[Deadline | None] = ContextVar("call_deadline", default=None)


@contextmanager
def call_deadline(deadline: Deadline | None) -> Iterator[None]:
    """Tell ``DeadlineRetry`` the deadline of the call made in the block (None: none)."""
    reset = _CALL_DEADLINE.set(deadline)
    try:
        yield
    finally:
        _CALL_DEADLINE.reset(reset)


class DeadlineRetry(Retry):
    """A retry policy, except that no retry starts too close to the call's deadline.

    A call without a deadline retries as ``Retry`` does. With one, a retry
    starts only if, after its backoff (or the server's ``Retry-After``), at
    least ``MIN_RETRY_SECONDS`` remain; otherwise the last error is raised (or,
    for a status, the last response returned) as when retries run out.
    A ``Retry-After`` that is neither seconds nor a date counts as none.
    """

    def parse_retry_after(self, retry_after: str) -> float:
        try:
            return super().parse_retry_after(retry_after)
        except InvalidHeader:
            # urllib3 raises it out of the call ("soon", "-5"): the backoff applies instead.
            return 0.0

    def increment(self, method=None, url=None, response=None, error=None, _pool=None,
                  _stacktrace=None):
        retry = super().increment(method, url, response, error, _pool, _stacktrace)
        deadline = _CALL_DEADLINE.get()
        if deadline is None:
            return retry
        wait = retry.get_backoff_time()
        if response is not None and retry.respect_retry_after_header:
            wait = retry.get_retry_after(response) or wait
        if deadline.remaining() - wait < MIN_RETRY_SECONDS:
            raise MaxRetryError(_pool, url, error or ResponseError(
                f"no time left for a retry before the deadline ({response and response.status})"))
        return retry


class DeadlineTimeout(Timeout):
    """Connect and read timeouts that each attempt cuts to the time left before a deadline."""

    def __init__(self, timeout: float, deadline: Deadline):
        super().__init__(connect=timeout, read=timeout)
        self._limit = timeout
        self._deadline = deadline

    def clone(self) -> Timeout:
        # Never zero or less: urllib3 would take that as "do not wait at all"
        # (non-blocking) or refuse it.
        left = max(self._deadline.remaining(), 0.01)
        return Timeout(connect=min(self._limit, left), read=min(self._limit, left))


class DeadlineAdapter(HTTPAdapter):
    """An adapter whose connections stop waiting for an answer's headers at the call's deadline."""

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}


class _HeadersUnderDeadline:
    """Mixed into urllib3's connections: ``getresponse`` is cut off at the call's deadline."""

    def getresponse(self, *args, **kwargs):
        deadline = _CALL_DEADLINE.get()
        sock = getattr(self, "sock", None)
        if deadline is None or sock is None:
            return super().getresponse(*args, **kwargs)
        with socket_shut_at(deadline.at, sock, socket.SHUT_RDWR) as cut:
            try:
                return super().getresponse(*args, **kwargs)
            except Exception as exc:
                if cut.done:
                    # Reported as what it is, a server that did not answer in time;
                    # urllib3's retry policy (DeadlineRetry) then starts no retry.
                    raise ReadTimeoutError(None, None, "the answer's headers did not arrive "
                                                       "before the deadline") from exc
                raise


class _HTTPConnection(_HeadersUnderDeadline, HTTPConnection):
    pass


class _HTTPSConnection(_HeadersUnderDeadline, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


def timed_out(exc: requests.RequestException) -> bool:
    """Tell whether a failure was a timeout, including one that ended urllib3's retries.

    urllib3 reports retries that ran out on read timeouts as MaxRetryError,
    which requests turns into a ConnectionError: a server that hung is not one
    that "could not be reached".
    """
    if isinstance(exc, requests.Timeout):
        return True
    reason = exc.args[0] if exc.args else None
    if isinstance(reason, MaxRetryError):
        reason = reason.reason
    # urllib3's NewConnectionError (refused, unresolvable) derives from ConnectTimeoutError.
    return (isinstance(reason, (ReadTimeoutError, ConnectTimeoutError, TimeoutError))
            and not isinstance(reason, NewConnectionError))
