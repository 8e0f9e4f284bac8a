"""The cyclic garbage collector is off while a rebuild parses and builds, and comes back after.

A large rebuild allocates millions of containers and no cycles, so the service
pauses the collector around the named query and the build
(``webhook.rebuild._collector_paused``). The pause must never leak: the
collector is back on after a rebuild that succeeds or fails, stays on while
another rebuild of the worker still runs only if it was paused by that one,
and stays off if something else had switched it off.
"""

from __future__ import annotations

import gc
import json

import pytest
import responses

from tests.conftest import sample, signed_headers
from tests.test_webhook_http import BOTH_BATCHES, URL, register
from webhook.rebuild import _collector_paused


@pytest.fixture
def collector_on():
    """Start with the collector on, and leave it as found."""
    was = gc.isenabled()
    gc.enable()
    yield
    (gc.enable if was else gc.disable)()


def complete_both_batches(client, admin, named_query_answer) -> list[bool]:
    """Register 2/letters and complete its batches; return gc.isenabled() seen by the DLCS."""
    assert register(client, admin).status_code == 202
    seen = []

    def named_query(request):
        seen.append(gc.isenabled())
        return named_query_answer

    first = sample("notification-old.json")
    assert client.post(URL, data=first, headers=signed_headers(first)).status_code == 200
    with responses.RequestsMock() as mock:
        mock.add_callback(responses.GET, BOTH_BATCHES, callback=named_query)
        last = sample("notification-current.json")
        client.post(URL, data=last, headers=signed_headers(last))
    return seen


def test_the_collector_is_off_during_a_rebuild_and_back_on_after(client, admin, collector_on):
    seen = complete_both_batches(client, admin,
                                 (200, {}, sample("named-query-2-assets.json")))
    assert seen == [False]
    assert gc.isenabled()
    assert client.get("/2/manifests/letters").status_code == 200


@pytest.mark.parametrize("answer", [
    (500, {}, json.dumps({"description": "down"})),
    (200, {}, '{"items": [ not json'),
    (200, {}, json.dumps({"type": "Manifest", "items": [{"id": 1}]})),
], ids=["dlcs-500", "invalid-json", "unbuildable"])
def test_a_failed_rebuild_switches_the_collector_back_on(client, admin, collector_on, answer):
    assert complete_both_batches(client, admin, answer) == [False]
    assert gc.isenabled()


def test_overlapping_rebuilds_share_one_pause(collector_on):
    first, second = _collector_paused(), _collector_paused()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert not gc.isenabled()  # the second rebuild is still running
    second.__exit__(None, None, None)
    assert gc.isenabled()


def test_a_collector_switched_off_elsewhere_stays_off(collector_on):
    gc.disable()
    with _collector_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()
