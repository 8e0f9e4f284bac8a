"""The delivery log: paging past 500 by cursor, and pruning what nothing needs any more."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.conftest import sample, signed_headers
from webhook import create_app, db, maintenance
from webhook.deliveries import Delivery
from webhook.domain import DeliveryKey
from webhook.listing_schemas import encode_page
from webhook.model_base import utcnow

BASE = "https://presentation.example"
LINK = re.compile(r'^<(?P<url>[^>]+)>; rel="next"$')


def deliver(client, batch: int, msg_id: str, customer: int = 2):
    document = json.loads(sample("notification-current.json"))
    document.update(id=batch, customer=customer)
    body = json.dumps(document).encode()
    return client.post("/webhooks/batch-completed", data=body,
                       headers=signed_headers(body, msg_id))


def next_url(response) -> str | None:
    """The path and query of the Link rel=next, or None when there is none."""
    link = response.headers.get("Link")
    if link is None:
        return None
    url = LINK.match(link).group("url")
    assert url.startswith(BASE + "/deliveries?")
    return url.removeprefix(BASE)


def walk(client, admin, url: str) -> list[list[dict]]:
    """Every page from ``url`` on, following Link rel=next."""
    pages = []
    while url is not None:
        response = client.get(url, headers=admin)
        assert response.status_code == 200, response.get_json()
        pages.append(response.get_json())
        url = next_url(response)
    return pages


def record(count: int, *, start: dt.datetime, outcome: str = "ignored",
           same_time_every: int = 1, prefix: str = "msg", step: float = 1.0) -> None:
    """Insert ``count`` deliveries ``step`` s apart, ``same_time_every`` sharing a time."""
    rows = [{"delivery_id": f"{prefix}_{n:05d}", "transport": "webhook", "batch": 5000 + n,
             "outcome": outcome, "body": b"{}",
             "received_at": start + dt.timedelta(seconds=n // same_time_every * step),
             "updated_at": start}
            for n in range(count)]
    for chunk in range(0, len(rows), 500):
        Delivery.insert_many(rows[chunk:chunk + 500]).execute()


# ----------------------------------------------------------------- paging


def test_a_page_announces_the_next_one_in_a_link_header(client, admin):
    for n in range(7):
        deliver(client, 9000 + n, f"msg_{n}")

    pages = walk(client, admin, "/deliveries?limit=3")

    assert [len(page) for page in pages] == [3, 3, 1]
    ids = [item["id"] for page in pages for item in page]
    assert ids == [f"msg_{n}" for n in reversed(range(7))]
    # The body is the same bare list as without paging.
    assert pages[0] == client.get("/deliveries?limit=3", headers=admin).get_json()


def test_paging_goes_past_500_with_ties_in_time(client, admin):
    # Seven deliveries share each time; every other time has no fraction of a
    # second, which SQLite keeps as shorter text: the order must not mind.
    record(1203, start=dt.datetime(2025, 1, 1), same_time_every=7, step=0.5)

    pages = walk(client, admin, "/deliveries?limit=500")

    assert [len(page) for page in pages] == [500, 500, 203]
    ids = [item["id"] for page in pages for item in page]
    # Newest first; among equal times, the later recorded first; none twice.
    assert ids == [f"msg_{n:05d}" for n in reversed(range(1203))]


def test_the_next_link_keeps_the_filters(client, admin):
    for n in range(4):
        deliver(client, 9000 + n, f"msg_{n}")
    deliver(client, 9100, "msg_other_customer", customer=3)
    deliver(client, 9001, "msg_again")

    first = client.get("/deliveries?batch=9001&limit=1", headers=admin)

    query = parse_qs(urlsplit(next_url(first)).query)
    assert query["batch"] == ["9001"] and query["limit"] == ["1"] and "cursor" in query
    pages = walk(client, admin, "/deliveries?batch=9001&limit=1")
    assert [[item["id"] for item in page] for page in pages] == [["msg_again"], ["msg_1"]]


def test_deliveries_recorded_while_paging_neither_repeat_nor_shift_a_page(client, admin):
    for n in range(4):
        deliver(client, 9000 + n, f"msg_{n}")
    first = client.get("/deliveries?limit=2", headers=admin)
    deliver(client, 9010, "msg_new")

    rest = walk(client, admin, next_url(first))

    assert [item["id"] for page in rest for item in page] == ["msg_1", "msg_0"]


def test_the_last_page_has_no_link(client, admin):
    deliver(client, 9000, "msg_only")
    response = client.get("/deliveries?limit=1", headers=admin)
    assert response.get_json()[0]["id"] == "msg_only" and "Link" not in response.headers


@pytest.mark.parametrize("cursor", [
    "not a cursor", "abc", "a" * 401, "%00", "W1siZCJd",
    encode_page(DeliveryKey(dt.datetime(2025, 1, 1), 0)),
    # Well-formed base64url JSON of the wrong shapes:
    "WyJtIiwxLCJsZXR0ZXJzIl0",        # ["m",1,"letters"] (a manifest page token)
    "eyJkIjoxfQ",                      # {"d":1}
    "WyJkIiwiMjAyNS0wMS0wMVQwMDowMDowMCswMDowMCIsMV0",  # an aware time
    "WyJkIiwieWVzdGVyZGF5IiwxXQ",      # ["d","yesterday",1]
    "WyJkIiwiMjAyNS0wMS0wMSIsIjEiXQ",  # ["d","2025-01-01","1"]
])
def test_a_cursor_that_is_not_one_is_400(client, admin, cursor):
    response = client.get("/deliveries", query_string={"cursor": cursor}, headers=admin)
    assert response.status_code == 400
    assert response.mimetype == "application/problem+json"
    assert "cursor" in response.get_json()["errors"]


# ----------------------------------------------------------------- pruning


@pytest.fixture
def aged(client, admin):
    """A manifest with one completed and one ingesting batch, and deliveries 40 days old."""
    document = json.loads(sample("registration-2-assets.json"))
    document["batches"] = [1234, 1235]
    assert client.put("/2/manifests/letters", json=document, headers=admin).status_code == 202
    assert deliver(client, 1234, "msg_completed").get_json()["outcome"] == "batch-completed"
    # Ignored (another customer) but of a batch still ingesting: a replay could be wanted.
    assert deliver(client, 1235, "msg_wrong_customer", customer=3).get_json()[
        "outcome"] == "ignored"
    assert deliver(client, 777, "msg_unknown_batch").get_json()["outcome"] == "ignored"
    assert client.post("/webhooks/batch-completed", data=b"{}",
                       headers=signed_headers(b"{}", "msg_garbage")).status_code == 422
    Delivery.insert(delivery_id="msg_rebuild_pending", transport="webhook", batch=1234,
                    manifest="2/letters", outcome="failed", body=b"{}").execute()
    old = utcnow() - dt.timedelta(days=40)
    Delivery.update(received_at=old).execute()
    deliver(client, 778, "msg_recent")


def log_ids(client, admin) -> set[str]:
    return {item["id"] for item in client.get("/deliveries?limit=500", headers=admin).get_json()}


def test_prune_keeps_failed_deliveries_and_those_of_ingesting_batches(app, client, admin,
                                                                      aged):
    result = app.test_cli_runner().invoke(args=["prune-deliveries", "--older-than", "30d"])

    assert result.exit_code == 0, result.output
    assert re.fullmatch(r"pruned 3 deliveries received before "
                        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\n", result.output)
    assert log_ids(client, admin) == {"msg_wrong_customer", "msg_rebuild_pending",
                                      "msg_recent"}
    again = app.test_cli_runner().invoke(args=["prune-deliveries", "--older-than", "30d"])
    assert again.output.startswith("pruned 0 deliveries")


def test_prune_defaults_to_delivery_retention_days(settings, client, admin, aged):
    application = create_app(dataclasses.replace(settings, delivery_retention_days=41))
    result = application.test_cli_runner().invoke(args=["prune-deliveries"])
    assert result.output.startswith("pruned 0 deliveries"), result.output

    application = create_app(dataclasses.replace(settings, delivery_retention_days=39))
    result = application.test_cli_runner().invoke(args=["prune-deliveries"])
    assert result.output.startswith("pruned 3 deliveries"), result.output
    db.dispose()


def test_prune_works_through_a_large_log_a_chunk_at_a_time(app, client, admin, monkeypatch):
    monkeypatch.setattr(maintenance, "PRUNE_CHUNK", 4)
    record(11, start=utcnow() - dt.timedelta(days=50))
    record(2, start=utcnow() - dt.timedelta(days=1), prefix="recent")

    result = app.test_cli_runner().invoke(args=["prune-deliveries", "--older-than", "2d"])

    assert result.output.startswith("pruned 11 deliveries"), result.output
    assert log_ids(client, admin) == {"recent_00000", "recent_00001"}


# "\u00b2d" and durations past year 1 once ended in a traceback (ValueError, OverflowError).
@pytest.mark.parametrize("older_than", ["0s", "0d", "soon", "-1d", "\u00b2d", "36501d",
                                        "999999999999d"])
def test_prune_refuses_a_duration_that_is_not_one(app, older_than):
    result = app.test_cli_runner().invoke(args=["prune-deliveries", "--older-than", older_than])
    assert result.exit_code == 2, result.output


def test_a_pruned_delivery_sent_again_is_processed_afresh(app, client, admin):
    assert deliver(client, 777, "msg_once").get_json()["outcome"] == "ignored"
    Delivery.update(received_at=utcnow() - dt.timedelta(days=40)).execute()
    app.test_cli_runner().invoke(args=["prune-deliveries", "--older-than", "30d"])
    assert log_ids(client, admin) == set()

    again = deliver(client, 777, "msg_once")

    assert again.get_json()["outcome"] == "ignored"  # not "duplicate": it was forgotten
    assert log_ids(client, admin) == {"msg_once"}
    assert client.post("/deliveries/msg_pruned/replay", headers=admin).status_code == 404


def test_a_delivery_that_vanishes_between_its_two_transactions_is_no_500(app, client, admin,
                                                                         monkeypatch):
    # A redelivery's first transaction finds its id recorded; before the second
    # one reads the row, a prune may delete it. The lookup under the lock then
    # finds nothing (as here, once), and the delivery is recorded again instead.
    assert deliver(client, 777, "msg_raced").get_json()["outcome"] == "ignored"
    real_lock = Delivery.lock.__func__
    vanished = []

    def lock_after_a_prune(cls, delivery_id):
        if not vanished:
            vanished.append(delivery_id)
            return None
        return real_lock(cls, delivery_id)

    monkeypatch.setattr(Delivery, "lock", classmethod(lock_after_a_prune))

    again = deliver(client, 777, "msg_raced")

    assert again.status_code == 200, again.get_json()
    assert again.get_json()["outcome"] == "duplicate" and vanished == ["msg_raced"]
    assert log_ids(client, admin) == {"msg_raced"}
