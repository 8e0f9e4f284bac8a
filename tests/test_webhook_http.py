"""POST /webhooks/batch-completed over HTTP, as the DLCS (and an attacker) sees it.

Hostile and malformed deliveries first, then every outcome, then duplicate
deliveries racing on real threads against SQLite and PostgreSQL, then the admin
guard. The DLCS Orchestrator is mocked with ``responses``: an unused mock
fails the test, and a call nobody mocked gets a ConnectionError (a 503).
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import re
import threading
import time
from collections import Counter

import pytest
import responses

from tests.conftest import ADMIN_TOKEN, ORCHESTRATOR, SECRET, sample, signed_headers
from webhook import create_app, db
from webhook.deliveries import Delivery
from webhook.model_base import COMPLETED, INGESTING
from webhook.models import Batch, Manifest
from webhook.paintings import CanvasPainting
from webhook.routes.http import PROBLEM_TYPE
from webhook.secret import parse_secret
from webhook.signature import sign

URL = "/webhooks/batch-completed"
MANIFEST = "/2/manifests/letters"
PROBLEM = "application/problem+json"
OTHER_SECRET = "whsec_" + base64.b64encode(b"a different key, 32 bytes long!!").decode()
CURRENT = json.loads(sample("notification-current.json"))   # batch 1234, customer 2
OLD = json.loads(sample("notification-old.json"))           # batch 1235, customer 2
NAMED_QUERY = ORCHESTRATOR + r"/iiif-resource/v3/2/batch-query/{}\?cacheBust=[0-9a-f]+"
BOTH_BATCHES = re.compile(NAMED_QUERY.format("1234,1235"))
ONLY_1234 = re.compile(NAMED_QUERY.format("1234"))
MAX_BODY = 64 * 1024
THREADS = 16


# ----------------------------------------------------------------- helpers


def notification(base: dict = CURRENT, **changes) -> bytes:
    """A notification document with fields replaced (``...`` removes one), as bytes."""
    document = {**base, **changes}
    return json.dumps({k: v for k, v in document.items() if v is not ...}).encode()


def post(client, body: bytes, headers: dict | None = None):
    return client.post(URL, data=body, headers=signed_headers(body) if headers is None else headers)


def register(client, admin, batches=(1234, 1235)):
    """Register the sample manifest (2/letters) with ``batches``."""
    document = json.loads(sample("registration-2-assets.json"))
    document["batches"] = list(batches)
    return client.put(MANIFEST, data=json.dumps(document).encode(), headers=admin)


@pytest.fixture
def registered(client, admin):
    """2/letters registered with batches 1234 and 1235, both ingesting."""
    response = register(client, admin)
    assert response.status_code == 202, response.get_data(as_text=True)
    return response


def assert_problem(response, status: int, slug: str) -> dict:
    """Check an RFC 9457 answer and return its body."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == PROBLEM
    body = json.loads(response.get_data())
    assert body["type"] == PROBLEM_TYPE + slug
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    return body


def assert_outcome(response, outcome: str, batch: int | None, manifest: str | None):
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    assert response.get_json() == {"outcome": outcome, "batch": batch, "manifest": manifest}


def state() -> tuple:
    """Everything a delivery could change in batches and manifests."""
    batches = [dict(b.__data__) for b in Batch.select().order_by(Batch.id)]
    manifests = [dict(m.__data__) for m in Manifest.select().order_by(Manifest.id)]
    return batches, manifests


def the_delivery() -> Delivery:
    """The one recorded delivery (fails when there are none or several)."""
    rows = list(Delivery.select())
    assert len(rows) == 1, [r.delivery_id for r in rows]
    return rows[0]


def logged(client, admin, **query) -> list[dict]:
    response = client.get("/deliveries", query_string=query, headers=admin)
    assert response.status_code == 200
    return response.get_json()


def status_of(client, admin) -> dict:
    response = client.get(MANIFEST + "/status", headers=admin)
    assert response.status_code == 200
    return response.get_json()


def batch_status(client, admin, batch_id: int) -> dict:
    (found,) = [b for b in status_of(client, admin)["batches"] if b["id"] == batch_id]
    return found


@pytest.fixture
def make_app(settings):
    """Build an app from ``settings`` with some fields replaced (one at a time per test)."""

    def build(**changes):
        return create_app(dataclasses.replace(settings, **changes))

    yield build
    db.dispose()


# ----------------------------------------------------------------- hostile input

KEY = parse_secret(SECRET)


def _headers_without(name):
    def build(body):
        headers = signed_headers(body)
        del headers[name]
        return body, headers
    return build


def _signed_with(**kwargs):
    return lambda body: (body, signed_headers(body, **kwargs))


def _skewed(seconds):
    """Sign with a timestamp ``seconds`` away from now (taken when the test runs)."""
    return lambda body: (body, signed_headers(body, timestamp=int(time.time()) + seconds))


def _one_byte_changed(body):
    headers = signed_headers(body)
    position = body.index(b'"errors": 0') + len(b'"errors": ')
    tampered = body[:position] + b"1" + body[position + 1:]
    assert len(tampered) == len(body) and tampered != body
    return tampered, headers


def _reserialised(body):
    # The sender signed the JSON it meant, but the bytes on the wire differ.
    other = json.dumps(json.loads(body), separators=(",", ":")).encode()
    assert other != body and json.loads(other) == json.loads(body)
    return body, signed_headers(other)


def _signature(change):
    def build(body):
        headers = signed_headers(body)
        headers["webhook-signature"] = change(headers["webhook-signature"])
        return body, headers
    return build


def _timestamp_text(text_of):
    """Send a timestamp written as ``text_of(now)``, signed exactly as sent."""
    def build(body):
        msg_id, text = "msg_timestamp_text", text_of(int(time.time()))
        return body, {"webhook-id": msg_id, "webhook-timestamp": text,
                      "webhook-signature": sign(KEY, msg_id, text, body)}
    return build


def _id(msg_id):
    def build(body):
        timestamp = int(time.time())
        return body, {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
                      "webhook-signature": sign(KEY, msg_id, timestamp, body)}
    return build


def _other_versions_only(signature):
    digest = signature.removeprefix("v1,")
    return f"v1a,{digest} v2,{digest}"


HOSTILE = [
    pytest.param(_headers_without("webhook-id"), "missing-header", id="no-webhook-id"),
    pytest.param(_headers_without("webhook-timestamp"), "missing-header",
                 id="no-webhook-timestamp"),
    pytest.param(_headers_without("webhook-signature"), "missing-header",
                 id="no-webhook-signature"),
    pytest.param(_signed_with(secret=OTHER_SECRET), "bad-signature", id="wrong-secret"),
    pytest.param(_one_byte_changed, "bad-signature", id="one-byte-of-body-changed"),
    pytest.param(_reserialised, "bad-signature", id="signed-over-reserialised-json"),
    pytest.param(_signature(lambda s: s[:-4]), "bad-signature", id="signature-truncated"),
    pytest.param(_signature(lambda s: s[:-1]), "malformed-signature",
                 id="signature-truncated-to-invalid-base64"),
    pytest.param(_signature(lambda s: "v1," + base64.b64encode(b"\0" * 32).decode()),
                 "bad-signature", id="zero-signature"),
    pytest.param(_signature(lambda s: "garbage"), "malformed-signature", id="garbage"),
    pytest.param(_signature(lambda s: "v1,a,b"), "malformed-signature", id="v1-a-b"),
    pytest.param(_signature(lambda s: "v1,"), "malformed-signature", id="v1-empty"),
    pytest.param(_signature(lambda s: ""), "malformed-signature", id="empty-signature"),
    pytest.param(_signature(lambda s: s + " v1,\u00e9t\u00e9"), "malformed-signature",
                 id="non-ascii"),
    pytest.param(_signature(lambda s: s + " v1," + "A" * 100_000), "malformed-signature",
                 id="100kb-signature-header"),
    pytest.param(_signature(_other_versions_only), "no-v1-signature", id="only-v1a-and-v2"),
    pytest.param(_id("x" * 100_000), "malformed-id", id="100kb-webhook-id"),
    pytest.param(_id("x" * 257), "malformed-id", id="257-character-webhook-id"),
    pytest.param(_id(""), "malformed-id", id="empty-webhook-id"),
    pytest.param(_id("msg.1"), "malformed-id", id="dot-in-webhook-id"),
    pytest.param(_id("msg 1"), "malformed-id", id="space-in-webhook-id"),
    pytest.param(_skewed(-301), "timestamp-too-old", id="timestamp-301s-old"),
    pytest.param(_skewed(301), "timestamp-too-new", id="timestamp-301s-ahead"),
    pytest.param(_signed_with(timestamp=0), "timestamp-too-old", id="timestamp-zero"),
    pytest.param(_timestamp_text(lambda now: "1700000000.9"), "malformed-timestamp",
                 id="timestamp-1700000000.9"),
    pytest.param(_timestamp_text(lambda now: "+1700000000"), "malformed-timestamp",
                 id="timestamp-+1700000000"),
    # The same forms around the current time: only the format can reject them.
    pytest.param(_timestamp_text(lambda now: f"{now}.9"), "malformed-timestamp",
                 id="timestamp-now-fraction"),
    pytest.param(_timestamp_text(lambda now: f"+{now}"), "malformed-timestamp",
                 id="timestamp-now-plus-sign"),
    pytest.param(_timestamp_text(lambda now: f"0{now}"), "malformed-timestamp",
                 id="timestamp-now-leading-zero"),
    pytest.param(_timestamp_text(lambda now: f"{now}000"), "timestamp-too-new",
                 id="timestamp-now-in-milliseconds"),
    pytest.param(_timestamp_text(lambda now: "\u0661" * 10), "malformed-timestamp",
                 id="timestamp-arabic-indic-digits"),
]


@pytest.mark.parametrize("build, reason", HOSTILE)
def test_hostile_deliveries_are_refused_and_leave_no_trace(client, admin, registered, build,
                                                           reason):
    before = state()
    body, headers = build(sample("notification-current.json"))
    response = client.post(URL, data=body, headers=headers)
    problem = assert_problem(response, 401, "invalid-signature")
    assert problem["reason"] == reason
    text = response.get_data(as_text=True)
    assert SECRET.removeprefix("whsec_") not in text
    if headers.get("webhook-timestamp", "").isdigit():
        expected = sign(KEY, headers.get("webhook-id", ""), int(headers["webhook-timestamp"]),
                        body)
        assert expected.removeprefix("v1,") not in text
    assert len(text) < 1000  # nothing of a huge header is echoed
    assert Delivery.select().count() == 0
    assert state() == before
    assert logged(client, admin) == []


def test_a_missing_header_is_named(client):
    body = sample("notification-current.json")
    headers = signed_headers(body)
    del headers["webhook-id"], headers["webhook-signature"]
    problem = assert_problem(post(client, body, headers), 401, "invalid-signature")
    assert problem["detail"] == "missing header: webhook-id, webhook-signature"


ACCEPTED_SIGNATURES = [
    pytest.param(lambda s: " " + s, id="leading-space"),   # signature.py strips it
    pytest.param(lambda s: s + "  ", id="trailing-spaces"),
    pytest.param(lambda s: "v1,bm90IGl0 " + s, id="valid-after-a-wrong-one"),
    pytest.param(lambda s: "v1a,abc garbage v2,xyz= " + s, id="valid-among-others"),
    pytest.param(lambda s: s + "  " + s, id="repeated"),
    pytest.param(lambda s: s + " " + signed_headers(b"x", secret=OTHER_SECRET)[
        "webhook-signature"], id="valid-before-one-of-another-key"),
]


@pytest.mark.parametrize("change", ACCEPTED_SIGNATURES)
def test_signature_headers_that_still_carry_a_valid_entry_are_accepted(client, change):
    body = sample("notification-current.json")
    headers = signed_headers(body)
    headers["webhook-signature"] = change(headers["webhook-signature"])
    assert_outcome(post(client, body, headers), "ignored", 1234, None)


@pytest.mark.parametrize("skew", [-290, 290])
def test_timestamps_within_the_tolerance_are_accepted(client, skew):
    body = sample("notification-current.json")
    headers = signed_headers(body, timestamp=int(time.time()) + skew)
    assert_outcome(post(client, body, headers), "ignored", 1234, None)


def test_the_longest_webhook_id_is_recorded_whole(client):
    body = sample("notification-current.json")
    msg_id = "m" * 255 + "~"
    assert_outcome(post(client, body, signed_headers(body, msg_id=msg_id)), "ignored", 1234, None)
    assert the_delivery().delivery_id == msg_id


def test_content_type_is_not_required(client):
    body = sample("notification-current.json")
    response = client.post(URL, data=body, headers=signed_headers(body),
                           content_type="text/plain")
    assert_outcome(response, "ignored", 1234, None)


def test_either_of_two_rotated_secrets_is_accepted(make_app):
    app = make_app(webhook_keys=(parse_secret(OTHER_SECRET), parse_secret(SECRET)))
    client = app.test_client()
    for secret in (SECRET, OTHER_SECRET):
        body = sample("notification-current.json")
        assert_outcome(post(client, body, signed_headers(body, secret=secret)),
                       "ignored", 1234, None)
    assert Delivery.select().count() == 2


def padded(size: int) -> bytes:
    """A valid notification of exactly ``size`` bytes (an unknown field pads it)."""
    bare = notification(padding="")
    body = notification(padding="x" * (size - len(bare)))
    assert len(body) == size
    return body


def test_a_body_over_64_kib_is_refused_unread(client, admin, registered):
    before = state()
    body = padded(MAX_BODY + 1)
    problem = assert_problem(post(client, body), 413, "payload-too-large")
    assert "65536" in problem["detail"]
    assert Delivery.select().count() == 0
    assert state() == before


def test_a_body_over_64_kib_is_refused_even_unsigned(client):
    # The size is checked before the signature: a huge body is never read whole.
    assert_problem(client.post(URL, data=b"{" * (MAX_BODY * 2)), 413, "payload-too-large")
    assert Delivery.select().count() == 0


def test_a_body_of_exactly_64_kib_is_processed(client, admin, registered):
    body = padded(MAX_BODY)
    assert_outcome(post(client, body), "batch-completed", 1234, "2/letters")
    assert bytes(the_delivery().body) == body


@pytest.mark.parametrize("size, status", [(MAX_BODY, 200), (MAX_BODY + 1, 413),
                                          (16 * MAX_BODY, 413)])
def test_a_chunked_body_without_content_length_is_limited_too(client, size, status):
    body = padded(size)
    headers = {**signed_headers(body), "Transfer-Encoding": "chunked"}
    # What a WSGI server (gunicorn) says for a chunked body: no Content-Length, read to the end.
    response = client.post(URL, input_stream=io.BytesIO(body), headers=headers,
                           environ_overrides={"wsgi.input_terminated": True})
    if status == 200:
        assert_outcome(response, "ignored", 1234, None)
        assert bytes(the_delivery().body) == body
    else:
        assert_problem(response, 413, "payload-too-large")
        assert Delivery.select().count() == 0


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_other_methods_are_not_allowed(client, admin, registered, method):
    before = state()
    body = sample("notification-current.json")
    response = client.open(URL, method=method, data=body, headers=signed_headers(body))
    assert_problem(response, 405, "method-not-allowed")
    assert "POST" in {m.strip() for m in response.headers["Allow"].split(",")}
    assert Delivery.select().count() == 0
    assert state() == before


def test_without_secrets_the_webhook_answers_503_and_records_nothing(make_app):
    client = make_app(webhook_keys=()).test_client()
    body = sample("notification-current.json")
    response = post(client, body)
    problem = assert_problem(response, 503, "webhook-disabled")
    assert "WEBHOOK_SECRETS" in problem["detail"]
    assert int(response.headers["Retry-After"]) > 0
    assert Delivery.select().count() == 0


# ----------------------------------------------------------------- authentic but unprocessable

MISSING = "Missing data for required field."
NOT_INT = "Not a valid integer."
FIELDS = set(CURRENT)

# (body, expected "errors" in the answer, or None when there must be none)
UNPROCESSABLE = [
    pytest.param(b"not json", None, id="not-json"),
    pytest.param(b"", None, id="empty-body"),
    pytest.param(b'{"id": 1234,', None, id="truncated-json"),
    pytest.param(b"\xff\xfe{}", None, id="not-utf8"),
    pytest.param(b"null", None, id="null"),
    pytest.param(b"[]", None, id="list"),
    pytest.param(b"1234", None, id="number"),
    pytest.param(b"{}", {name: [MISSING] for name in FIELDS}, id="empty-object"),
    pytest.param(notification(finished=...), {"finished": [MISSING]}, id="missing-finished"),
    pytest.param(notification(finished=None), {"finished": ["Field may not be null."]},
                 id="finished-null"),
    pytest.param(notification(count="2"), {"count": [NOT_INT]}, id="count-string"),
    pytest.param(notification(id=1234.0), {"id": [NOT_INT]}, id="id-float"),
    pytest.param(notification(superseded=1), {"superseded": ["Not a valid boolean."]},
                 id="superseded-one"),
    pytest.param(notification(finished="the 20th of February"),
                 {"finished": ["Not a valid datetime."]}, id="finished-unparseable"),
    pytest.param(notification(finished="2025-02-20T12:30:15.123456"),
                 {"finished": ["Not a valid aware datetime."]}, id="finished-naive"),
    pytest.param(notification(submitted="9999-12-31T23:59:59-01:00"),
                 {"submitted": ["Out of range once converted to UTC."]},
                 id="submitted-beyond-year-9999-in-utc"),
    pytest.param(notification(count=2**31),
                 {"count": ["Must be greater than or equal to 0 and less than or equal to "
                            "2147483647."]}, id="count-over-int32"),
    pytest.param(notification(OLD, success="2"), {"success": [NOT_INT]}, id="old-format-string"),
]


@pytest.mark.parametrize("body, errors", UNPROCESSABLE)
def test_authentic_unprocessable_bodies_are_kept_but_change_nothing(client, admin, registered,
                                                                    body, errors):
    before = state()
    headers = signed_headers(body)
    response = post(client, body, headers)
    problem = assert_problem(response, 422, "unprocessable-body")
    assert problem["title"] == "Unprocessable notification"
    assert problem.get("errors") == errors
    delivery = the_delivery()
    assert delivery.delivery_id == headers["webhook-id"]
    assert delivery.outcome == "unprocessable"
    assert bytes(delivery.body) == body
    assert delivery.batch is None and delivery.manifest is None
    assert delivery.attempts == 1
    assert state() == before
    (item,) = logged(client, admin)
    assert (item["id"], item["outcome"], item["transport"]) == (
        headers["webhook-id"], "unprocessable", "webhook")
    assert item["error"]


def test_an_unprocessable_delivery_sent_again_is_still_unprocessable(client, admin, registered):
    body = notification(count="2")
    headers = signed_headers(body)
    first = assert_problem(post(client, body, headers), 422, "unprocessable-body")
    again = assert_problem(post(client, body, headers), 422, "unprocessable-body")
    assert again["errors"] == first["errors"] == {"count": [NOT_INT]}
    assert the_delivery().attempts == 2
    assert batch_status(client, admin, 1234)["status"] == INGESTING


# ----------------------------------------------------------------- outcomes


def test_a_batch_of_no_registered_manifest_is_ignored_and_recorded(client, admin):
    body = sample("notification-current.json")
    headers = signed_headers(body)
    assert_outcome(post(client, body, headers), "ignored", 1234, None)
    delivery = the_delivery()
    assert (delivery.outcome, delivery.batch, delivery.manifest) == ("ignored", 1234, None)
    assert bytes(delivery.body) == body
    (item,) = logged(client, admin, outcome="ignored")
    assert item["id"] == headers["webhook-id"]
    assert (item["transport"], item["batch"], item["manifest"]) == ("webhook", 1234, None)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", item["receivedAt"])
    assert Batch.select().count() == 0 and Manifest.select().count() == 0


def test_a_non_final_batch_completes_and_dates_are_stored_in_utc(client, admin, registered):
    body = notification(count=5, completed=4, errors=1, superseded=True,
                        submitted="2025-02-20T14:28:01.5173929+02:00",
                        finished="2025-02-20T07:00:15.123456-05:30")
    assert Batch.get_by_id(1234).processed is None
    assert_outcome(post(client, body), "batch-completed", 1234, "2/letters")

    status = status_of(client, admin)
    assert status["state"] == "ingesting"
    assert status["batches"] == [
        {"id": 1234, "status": COMPLETED, "count": 5, "completed": 4, "errors": 1,
         "submitted": "2025-02-20T12:28:01.517392Z", "finished": "2025-02-20T12:30:15.123456Z"},
        {"id": 1235, "status": INGESTING, "count": None, "completed": None, "errors": None,
         "submitted": None, "finished": None},
    ]
    batch = Batch.get_by_id(1234)
    assert batch.superseded is True
    assert batch.processed is not None
    assert abs((batch.processed - Delivery.get().received_at).total_seconds()) < 60
    assert Batch.get_by_id(1235).processed is None
    manifest = Manifest.get()
    assert not manifest.needs_rebuild and manifest.published_etag is None
    assert (the_delivery().outcome, the_delivery().manifest) == ("batch-completed", "2/letters")
    assert client.get(MANIFEST).status_code == 202


def test_extreme_but_valid_values_are_stored(client, admin, registered):
    top = 2**31 - 1
    body = notification(count=top, completed=top, errors=top, submitted="0001-01-01T00:00:00Z",
                        finished="9999-12-31T23:59:59.9999999Z")
    assert_outcome(post(client, body), "batch-completed", 1234, "2/letters")
    assert batch_status(client, admin, 1234) == {
        "id": 1234, "status": COMPLETED, "count": top, "completed": top, "errors": top,
        "submitted": "0001-01-01T00:00:00.000000Z", "finished": "9999-12-31T23:59:59.999999Z"}


def test_the_largest_batch_id_is_recorded(client, admin):
    largest = 2**63 - 1
    assert_outcome(post(client, notification(id=largest)), "ignored", largest, None)
    assert [item["batch"] for item in logged(client, admin, batch=largest)] == [largest]


def test_the_old_format_is_accepted_the_same_way(client, admin, registered):
    assert_outcome(post(client, sample("notification-old.json")), "batch-completed", 1235,
                   "2/letters")
    assert batch_status(client, admin, 1235) == {
        "id": 1235, "status": COMPLETED, "count": 3, "completed": 2, "errors": 1,
        "submitted": "2025-02-20T12:28:02.040000Z", "finished": "2025-02-20T12:31:40.993100Z"}
    assert batch_status(client, admin, 1234)["status"] == INGESTING


def test_unknown_fields_are_ignored(client, admin, registered):
    body = notification(images="https://api.dlcs.example/customers/2/queue/batches/1234/images",
                        extra={"nested": [1, None]}, customerId=99, total=99)
    assert_outcome(post(client, body), "batch-completed", 1234, "2/letters")
    assert batch_status(client, admin, 1234)["count"] == 2


def test_a_completion_for_another_customers_batch_is_ignored(client, admin, registered):
    before = state()
    body = notification(customer=3)
    assert_outcome(post(client, body), "ignored", 1234, None)
    assert state() == before
    assert the_delivery().outcome == "ignored"
    (item,) = logged(client, admin, batch=1234)
    assert (item["outcome"], item["manifest"]) == ("ignored", None)


def test_the_final_batch_completes_the_manifest_once(client, admin, registered):
    assert_outcome(post(client, sample("notification-old.json")), "batch-completed", 1235,
                   "2/letters")
    body = sample("notification-current.json")
    headers = signed_headers(body)
    with responses.RequestsMock() as rm:
        named_query = rm.get(BOTH_BATCHES, body=sample("named-query-2-assets.json"))
        assert_outcome(post(client, body, headers), "manifest-completed", 1234, "2/letters")
        assert named_query.call_count == 1

        published = client.get(MANIFEST)
        assert published.status_code == 200
        assert published.get_json() == json.loads(sample("published-2-assets.json"))
        status = status_of(client, admin)
        assert status["state"] == "complete-with-errors"  # notification-old.json: 1 error
        assert status["lastProcessed"] is not None
        assert [b["status"] for b in status["batches"]] == [COMPLETED, COMPLETED]

        # The same delivery again: a duplicate, and no second named query.
        assert_outcome(post(client, body, headers), "duplicate", 1234, "2/letters")
        # The same completion under a new webhook-id: a duplicate too.
        assert_outcome(post(client, body), "duplicate", 1234, "2/letters")
        assert named_query.call_count == 1
    rows = {d.delivery_id: d for d in Delivery.select()}
    assert len(rows) == 3
    assert rows[headers["webhook-id"]].attempts == 2
    assert rows[headers["webhook-id"]].outcome == "manifest-completed"
    outcomes = Counter(item["outcome"] for item in logged(client, admin))
    assert outcomes == {"batch-completed": 1, "manifest-completed": 1, "duplicate": 1}
    assert client.get(MANIFEST).get_json() == json.loads(sample("published-2-assets.json"))


def findings() -> list[tuple]:
    """What the rebuilds wrote back to each canvas-painting row (rule 8), in row order."""
    return [(r.asset_id, r.ingesting, r.thumbnail, r.width, r.height, r.duration)
            for r in CanvasPainting.select().order_by(CanvasPainting.position)]


def test_the_completing_rebuild_writes_each_rows_findings_back(client, admin, registered):
    assert findings() == [("2/5/foo", True, None, None, None, None),
                          ("2/5/bar", True, None, None, None, None)]
    answer = json.loads(sample("named-query-2-assets.json"))
    bar = answer["items"][1]["items"][0]["items"][0]
    bar["body"] = {"id": "https://dlcs.example/iiif-av/2/5/bar/full/max/default.mp3",
                   "type": "Sound", "format": "audio/mpeg", "duration": 12.5}
    post(client, sample("notification-old.json"))
    with responses.RequestsMock() as rm:
        rm.get(BOTH_BATCHES, json=answer)
        assert_outcome(post(client, sample("notification-current.json")), "manifest-completed",
                       1234, "2/letters")
    # Sizes from the ImageService3 (the image) or the canvas (the sound), durations only
    # for time-based content, and the thumbnail whose larger side is closest to 100 px.
    assert findings() == [
        ("2/5/foo", False, "https://dlcs.example/thumbs/2/5/foo/full/200,150/0/default.jpg",
         4000, 3000, None),
        ("2/5/bar", False, "https://dlcs.example/thumbs/2/5/bar/full/133,200/0/default.jpg",
         2000, 3000, 12.5)]


def test_a_repeated_completion_does_not_overwrite_the_first(client, admin, registered):
    assert_outcome(post(client, notification(count=2, completed=2)), "batch-completed", 1234,
                   "2/letters")
    first = batch_status(client, admin, 1234)
    processed = Batch.get_by_id(1234).processed
    again = notification(count=9, completed=0, errors=9, finished="2025-03-01T00:00:00Z")
    assert_outcome(post(client, again), "duplicate", 1234, "2/letters")
    assert batch_status(client, admin, 1234) == first
    assert Batch.get_by_id(1234).processed == processed
    assert Delivery.select().count() == 2
    assert batch_status(client, admin, 1235)["status"] == INGESTING


def test_a_webhook_id_sent_again_with_another_batch_is_a_redelivery(client, admin, registered):
    """The id decides duplicates: a sender reusing one for another batch completes nothing."""
    first = signed_headers(notification(id=1235))
    assert_outcome(post(client, notification(id=1235), first), "batch-completed", 1235,
                   "2/letters")
    before = state()
    body = notification(id=1234)
    reused = signed_headers(body, msg_id=first["webhook-id"])
    assert_outcome(post(client, body, reused), "duplicate", 1235, "2/letters")
    assert state() == before                    # batch 1234 is still ingesting
    assert (the_delivery().batch, the_delivery().attempts) == (1235, 2)


def test_a_completion_before_registration_is_applied_by_the_registration(client, admin):
    body = sample("notification-current.json")
    headers = signed_headers(body)
    assert_outcome(post(client, body, headers), "ignored", 1234, None)

    with responses.RequestsMock() as rm:
        named_query = rm.get(ONLY_1234, body=sample("named-query-2-assets.json"))
        response = register(client, admin, batches=[1234])
        # Nothing is left ingesting, so the registration publishes at once.
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.get_json()["state"] == "complete"
        assert named_query.call_count == 1
    assert batch_status(client, admin, 1234) == {
        "id": 1234, "status": COMPLETED, "count": 2, "completed": 2, "errors": 0,
        "submitted": "2025-02-20T12:28:01.517392Z", "finished": "2025-02-20T12:30:15.123456Z"}
    assert status_of(client, admin)["state"] == "complete"
    (item,) = logged(client, admin, batch=1234)
    assert (item["id"], item["outcome"], item["manifest"]) == (
        headers["webhook-id"], "batch-completed", "2/letters")
    assert client.get(MANIFEST).status_code == 200
    # The DLCS retrying the same delivery later changes nothing.
    with responses.RequestsMock():
        assert_outcome(post(client, body, headers), "duplicate", 1234, "2/letters")


def test_an_early_completion_leaves_the_other_batches_ingesting(client, admin):
    assert_outcome(post(client, sample("notification-old.json")), "ignored", 1235, None)
    with responses.RequestsMock():  # still ingesting: no DLCS call
        assert register(client, admin).status_code == 202
    status = status_of(client, admin)
    assert status["state"] == "ingesting"
    assert [(b["id"], b["status"], b["count"]) for b in status["batches"]] == [
        (1234, INGESTING, None), (1235, COMPLETED, 3)]
    assert the_delivery().outcome == "batch-completed"


def test_of_two_early_completions_of_a_batch_the_first_wins(client, admin):
    first, second = signed_headers(b""), signed_headers(b"")
    bodies = {first["webhook-id"]: notification(count=2, completed=2),
              second["webhook-id"]: notification(count=7, completed=7,
                                                 finished="2025-03-01T00:00:00Z")}
    for msg_id, body in bodies.items():
        assert_outcome(post(client, body, signed_headers(body, msg_id=msg_id)), "ignored", 1234,
                       None)
    assert register(client, admin).status_code == 202
    status = batch_status(client, admin, 1234)
    assert (status["count"], status["finished"]) == (2, "2025-02-20T12:30:15.123456Z")
    outcomes = {item["id"]: item["outcome"] for item in logged(client, admin)}
    assert outcomes == {first["webhook-id"]: "batch-completed",
                        second["webhook-id"]: "duplicate"}


def test_an_early_completion_of_another_customer_is_not_applied(client, admin):
    assert_outcome(post(client, notification(customer=3)), "ignored", 1234, None)
    assert register(client, admin).status_code == 202
    assert batch_status(client, admin, 1234)["status"] == INGESTING
    (item,) = logged(client, admin)
    assert (item["outcome"], item["manifest"]) == ("ignored", None)


# ----------------------------------------------------------------- duplicates on real threads


@pytest.fixture(params=["sqlite", "postgresql"])
def threaded_app(request, make_app, tmp_path):
    """An app on a database that real threads can share: a SQLite file or PostgreSQL."""
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
    else:
        url = f"sqlite:///{tmp_path}/threads.db"
    return make_app(database_url=url)


def deliver_at_once(app, body: bytes, headers: dict, answered=None) -> list:
    """POST the same delivery from THREADS threads released together; return the answers."""
    barrier = threading.Barrier(THREADS)
    answers, failures = [None] * THREADS, []

    def deliver(index):
        client = app.test_client()
        try:
            barrier.wait(timeout=30)
            response = client.post(URL, data=body, headers=headers)
            answers[index] = (response.status_code, json.loads(response.get_data()),
                              response.headers.get("Retry-After"))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failures.append(exc)
        finally:
            if answered is not None:
                answered()

    threads = [threading.Thread(target=deliver, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert not failures, failures
    return answers


def test_a_duplicate_delivery_racing_on_threads_completes_the_batch_once(threaded_app):
    client = threaded_app.test_client()
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert register(client, admin).status_code == 202
    body = sample("notification-current.json")
    headers = signed_headers(body)

    with responses.RequestsMock() as rm:
        answers = deliver_at_once(threaded_app, body, headers)
        assert len(rm.calls) == 0

    outcomes = Counter((status, answer.get("outcome")) for status, answer, _ in answers)
    assert outcomes == {(200, "batch-completed"): 1, (200, "duplicate"): THREADS - 1}
    assert all(answer["batch"] == 1234 and answer["manifest"] == "2/letters"
               for _, answer, _ in answers)
    delivery = the_delivery()
    assert (delivery.outcome, delivery.attempts) == ("batch-completed", THREADS)
    assert batch_status(client, admin, 1234)["status"] == COMPLETED
    assert batch_status(client, admin, 1235)["status"] == INGESTING


def test_a_duplicate_final_delivery_racing_on_threads_rebuilds_once(threaded_app):
    client = threaded_app.test_client()
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert register(client, admin).status_code == 202
    assert_outcome(post(client, sample("notification-old.json")), "batch-completed", 1235,
                   "2/letters")
    body = sample("notification-current.json")
    headers = signed_headers(body)

    # The rebuild holds the named query until every other thread has its answer, so
    # each duplicate arrives while the rebuild is in progress.
    lock, count, others_answered = threading.Lock(), [0], threading.Event()

    def answered():
        with lock:
            count[0] += 1
            if count[0] == THREADS - 1:
                others_answered.set()

    def named_query(request):
        assert others_answered.wait(timeout=60), "the other deliveries never answered"
        return 200, {}, sample("named-query-2-assets.json")

    with responses.RequestsMock() as rm:
        rm.add_callback(responses.GET, BOTH_BATCHES, callback=named_query)
        answers = deliver_at_once(threaded_app, body, headers, answered)
        assert len(rm.calls) == 1

    outcomes = Counter((status, answer.get("outcome")) for status, answer, _ in answers)
    assert outcomes == {(200, "manifest-completed"): 1, (503, "failed"): THREADS - 1}
    for status, answer, retry_after in answers:
        assert (answer["batch"], answer["manifest"]) == (1234, "2/letters")
        if status == 503:
            assert answer["type"] == PROBLEM_TYPE + "rebuild-in-progress"
            assert int(retry_after) > 0
    assert Delivery.select().count() == 2  # the old-format one, and this one
    delivery = Delivery.get(Delivery.delivery_id == headers["webhook-id"])
    assert (delivery.outcome, delivery.attempts) == ("manifest-completed", THREADS)
    assert status_of(client, admin)["state"] == "complete-with-errors"  # 1235 had an error
    assert client.get(MANIFEST).get_json() == json.loads(sample("published-2-assets.json"))
    # Those who were told to retry now hear it is done, without another rebuild.
    with responses.RequestsMock():
        assert_outcome(post(client, body, headers), "duplicate", 1234, "2/letters")
    assert Delivery.get(Delivery.delivery_id == headers["webhook-id"]).attempts == THREADS + 1


# ----------------------------------------------------------------- the admin guard

UNAUTHORISED = [
    pytest.param({}, id="no-header"),
    pytest.param({"Authorization": "Bearer wrong-token-0123456789"}, id="wrong-token"),
    pytest.param({"Authorization": f"Bearer {ADMIN_TOKEN[:-1]}"}, id="token-prefix"),
    pytest.param({"Authorization": f"Bearer {ADMIN_TOKEN}x"}, id="token-extended"),
    pytest.param({"Authorization": "Bearer"}, id="empty-bearer"),
    pytest.param({"Authorization": ADMIN_TOKEN}, id="no-scheme"),
    pytest.param({"Authorization": "Basic " + base64.b64encode(
        f"admin:{ADMIN_TOKEN}".encode()).decode()}, id="basic-scheme"),
    pytest.param({"Authorization": f"Basic {ADMIN_TOKEN}"}, id="basic-with-the-token"),
    pytest.param({"Authorization": f"Token {ADMIN_TOKEN}"}, id="other-scheme"),
]


@pytest.mark.parametrize("headers", UNAUTHORISED)
def test_admin_endpoints_need_the_bearer_token(client, headers):
    response = client.get("/deliveries", headers=headers)
    assert_problem(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert ADMIN_TOKEN not in response.get_data(as_text=True)


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_the_bearer_scheme_is_case_insensitive(client, scheme):
    response = client.get("/deliveries", headers={"Authorization": f"{scheme} {ADMIN_TOKEN}"})
    assert response.status_code == 200
    assert response.get_json() == []


def test_without_an_admin_token_admin_endpoints_answer_503(make_app):
    client = make_app(admin_token=None).test_client()
    response = client.get("/deliveries", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert_problem(response, 503, "admin-disabled")
    assert client.get("/deliveries").status_code == 503
