"""One deadline for a whole rebuild: a DLCS that hangs or trickles cannot hold a delivery.

The named query goes to a loopback server that never answers, or that sends its
answer (its body, or its headers too) a byte every half second. With ``DLCS_TIMEOUT_SECONDS=1`` the rebuild's
deadline is 2 s: the delivery is answered ``503`` with ``Retry-After``, the
failure is reported as a timeout (not as a DLCS that "could not be reached"),
no retry starts without the time to finish, and the manifest's status says
why. How long it takes is measured by ``bench/deadline.py``, not here.
"""

from __future__ import annotations

import dataclasses

import pytest

from tests.conftest import sample, signed_headers
from tests.stalling import HangingServer, TricklingServer
from webhook import create_app, db

URL = "/2/manifests/letters"


@pytest.fixture
def deliver_against(settings, admin):
    """Register the sample manifest with the named query at ``url``; deliver its last completion."""
    apps = []

    def deliver(url: str):
        app = create_app(dataclasses.replace(settings, dlcs_orchestrator_url=url,
                                             dlcs_timeout_seconds=1.0))
        apps.append(app)
        client = app.test_client()
        registered = client.put(URL, data=sample("registration-2-assets.json"), headers=admin)
        assert registered.status_code == 202, registered.get_json()
        body = sample("notification-current.json")
        return client, client.post("/webhooks/batch-completed", data=body,
                                   headers=signed_headers(body, "msg_last"))

    yield deliver
    db.dispose()


def assert_timed_out(client, admin, response, detail: str) -> None:
    assert response.status_code == 503, response.get_json()
    assert response.mimetype == "application/problem+json"
    assert int(response.headers["Retry-After"]) > 0
    problem = response.get_json()
    assert problem["type"].endswith("rebuild-failed")
    assert problem["detail"] == detail
    assert "could not be reached" not in problem["detail"]
    status = client.get(f"{URL}/status", headers=admin).get_json()
    assert status["state"] == "rebuild-failed"
    assert status["error"] == detail


def test_a_hung_named_query_is_a_timeout_without_retries_past_the_deadline(deliver_against,
                                                                          admin):
    with HangingServer() as hung:
        client, response = deliver_against(hung.url)
        attempts = hung.requests

    assert_timed_out(client, admin, response,
                     "named query batch-query/1234 of customer 2: the DLCS did not answer "
                     "within 2 s")
    # The first attempt used its 1 s; a retry with less than 1 s left does not start
    # (before the deadline, three attempts were made and reported "could not be reached").
    assert attempts == 1


def test_a_trickling_named_query_is_cut_off_at_the_deadline(deliver_against, admin):
    # 40 bytes at one every 0.5 s: each read gets a byte well within the 1 s timeout,
    # so only a deadline for the whole answer stops it.
    with TricklingServer(length=40, interval=0.5) as trickle:
        client, response = deliver_against(trickle.url)

    assert_timed_out(client, admin, response,
                     "named query batch-query/1234 of customer 2: the DLCS did not answer "
                     "within 2 s (its answer was still arriving)")
    assert trickle.requests == 1
    assert trickle.bytes_sent < trickle.length
    assert trickle.hung_up == 1


def test_a_named_query_trickling_its_headers_is_cut_off_at_the_deadline(deliver_against, admin):
    # The status line and headers a byte every 0.5 s: each read gets a byte within the
    # 1 s timeout, so only the deadline, kept by the watchdog shutting the socket, stops it.
    with TricklingServer(length=40, interval=0.5, headers=True) as trickle:
        client, response = deliver_against(trickle.url)

    assert_timed_out(client, admin, response,
                     "named query batch-query/1234 of customer 2: the DLCS did not answer "
                     "within 2 s")
    assert trickle.requests == 1        # no retry started past the deadline
    assert trickle.bytes_sent < len(trickle.head)
    assert trickle.hung_up == 1
