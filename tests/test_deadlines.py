"""webhook.deadlines: a timeout told apart through urllib3's and requests' wrappers; cut timeouts."""

from __future__ import annotations

import pytest
import requests
from urllib3.connection import HTTPConnection
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.exceptions import (ConnectTimeoutError, MaxRetryError, NewConnectionError,
                                ProtocolError, ReadTimeoutError)

from webhook.deadlines import DeadlineTimeout, timed_out
from webhook.domain import Deadline

POOL = HTTPConnectionPool("127.0.0.1", 9)


def retries_ran_out(reason: Exception) -> requests.ConnectionError:
    """What requests raises when urllib3's retries end on ``reason``."""
    return requests.ConnectionError(MaxRetryError(POOL, "/q", reason))


@pytest.mark.parametrize("exc, expected", [
    pytest.param(requests.ReadTimeout("read timed out"), True, id="read-timeout"),
    pytest.param(requests.ConnectTimeout("connect timed out"), True, id="connect-timeout"),
    pytest.param(retries_ran_out(ReadTimeoutError(POOL, "/q", "read timed out")), True,
                 id="retries-ended-on-read-timeouts"),
    pytest.param(retries_ran_out(ConnectTimeoutError("connect timed out")), True,
                 id="retries-ended-on-connect-timeouts"),
    pytest.param(retries_ran_out(NewConnectionError(HTTPConnection("127.0.0.1", 9),
                                                    "refused")), False, id="refused"),
    pytest.param(retries_ran_out(ProtocolError("connection aborted")), False, id="dropped"),
    pytest.param(requests.ConnectionError("no route"), False, id="plain-connection-error"),
])
def test_a_timeout_is_told_apart_from_a_failed_connection(exc, expected):
    assert timed_out(exc) is expected


def test_each_attempt_waits_at_most_the_time_left():
    timeout = DeadlineTimeout(30, Deadline.after(5)).clone()
    assert 4 < timeout.connect_timeout <= 5 and 4 < timeout.read_timeout <= 5
    roomy = DeadlineTimeout(3, Deadline.after(60)).clone()
    assert (roomy.connect_timeout, roomy.read_timeout) == (3, 3)
    # Past the deadline an attempt still gets a positive (tiny) timeout, never "no wait".
    late = DeadlineTimeout(3, Deadline.after(-1)).clone()
    assert 0 < late.read_timeout <= 0.01
