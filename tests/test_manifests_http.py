"""The manifest, delivery-log and replay endpoints over HTTP, as their users see them.

The DLCS Orchestrator is mocked with ``responses``; a mock left unused fails
the test, and any call nobody mocked fails it too (responses answers it with a
ConnectionError, which the service turns into a 503).
"""

from __future__ import annotations

import copy
import json
import re

import pytest
import responses

from tests.conftest import ORCHESTRATOR, sample, signed_headers
from tests.iiif import assert_valid_iiif
from webhook.models import Manifest
from webhook.paintings import CanvasPainting

CUSTOMER = 2
SLUG = "letters"
URL = f"/{CUSTOMER}/manifests/{SLUG}"
PUBLIC_URL = f"https://presentation.example{URL}"
IIIF_CONTENT_TYPE = 'application/ld+json;profile="http://iiif.io/api/presentation/3/context.json"'
PROBLEM = "application/problem+json"
SUBMITTED = "2025-02-20T12:28:01.517392Z"
FINISHED = "2025-02-20T12:30:15.123456Z"
ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


# ----------------------------------------------------------------- helpers


def registration(**changes) -> dict:
    """Return the sample registration with top-level properties replaced."""
    document = json.loads(sample("registration-2-assets.json"))
    document.update(changes)
    return document


def painted(asset: str, order: int, canvas_id: str | None = None, **painting) -> dict:
    """Return one painted resource of an asset in space 5."""
    canvas = {"canvasOrder": order, **painting}
    if canvas_id is not None:
        canvas["canvasId"] = canvas_id
    return {"canvasPainting": canvas, "asset": {"id": asset, "space": 5}}


def put(client, admin, document, url: str = URL):
    body = document if isinstance(document, bytes) else json.dumps(document).encode()
    return client.put(url, data=body, headers=admin)


def notification(batch: int = 1234, **changes) -> bytes:
    """Return the sample current-format notification for ``batch``."""
    document = json.loads(sample("notification-current.json"))
    document.update(id=batch, **changes)
    return json.dumps(document).encode()


def deliver(client, body: bytes, msg_id: str | None = None):
    return client.post("/webhooks/batch-completed", data=body,
                       headers=signed_headers(body, msg_id))


def named_query_url(*batches: int) -> re.Pattern:
    ids = ",".join(str(batch) for batch in batches)
    return re.compile(re.escape(f"{ORCHESTRATOR}/iiif-resource/v3/{CUSTOMER}/batch-query/{ids}")
                      + r"\?cacheBust=[^&]+$")


def complete(client, *batches: int, answer: bytes | None = None, msg_id: str | None = None,
             **changes):
    """Deliver the last completion of ``batches`` with the named query answering once."""
    with responses.RequestsMock() as rm:
        query = rm.get(named_query_url(*batches),
                       body=answer or sample("named-query-2-assets.json"),
                       content_type="application/json")
        response = deliver(client, notification(batches[-1], **changes), msg_id)
        assert response.status_code == 200, response.get_json()
        assert response.get_json()["outcome"] == "manifest-completed"
        assert query.call_count == 1
    return response


def fetch_published(client, headers=None):
    """GET the manifest, checking a 200 answer is valid IIIF."""
    response = client.get(URL, headers=headers or {})
    if response.status_code == 200:
        assert_valid_iiif(json.loads(response.data))
    return response


def expected_published() -> dict:
    return json.loads(sample("published-2-assets.json"))


def status_of(client, admin, url: str = URL) -> dict:
    response = client.get(f"{url}/status", headers=admin)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def deliveries(client, admin, query: str = "") -> list[dict]:
    response = client.get(f"/deliveries{query}", headers=admin)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.data
    assert response.mimetype == PROBLEM
    body = response.get_json()
    assert body["status"] == status
    assert {"type", "title", "detail"} <= body.keys()
    return body


def ingesting_batch(batch_id: int) -> dict:
    return {"id": batch_id, "status": "ingesting", "count": None, "completed": None,
            "errors": None, "submitted": None, "finished": None}


def completed_batch(batch_id: int, count=2, completed=2, errors=0) -> dict:
    return {"id": batch_id, "status": "completed", "count": count, "completed": completed,
            "errors": errors, "submitted": SUBMITTED, "finished": FINISHED}


# ----------------------------------------------------------------- PUT


def test_register_answers_202_with_location_and_status(client, admin):
    response = put(client, admin, registration())

    assert response.status_code == 202
    assert response.headers["Location"] == PUBLIC_URL
    etag = response.headers["ETag"]
    assert re.fullmatch(r'"[0-9a-f]{32}"', etag)
    assert response.get_json() == {
        "state": "ingesting", "batches": [ingesting_batch(1234)], "lastProcessed": None,
        "error": None, "missingAssets": [], "failedAssets": [], "stalled": [], "etag": etag}


@pytest.mark.parametrize("url", [URL, f"{URL}/status", f"{URL}/rebuild", "/deliveries",
                                 "/deliveries/msg_1/replay"])
@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", "Basic YWRtaW46eA=="])
def test_admin_endpoints_need_the_token(client, url, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    method = {URL: client.put, f"{URL}/rebuild": client.post,
              "/deliveries/msg_1/replay": client.post}.get(url, client.get)

    response = method(url, data=json.dumps(registration()), headers=headers)

    assert_problem(response, 401)
    assert client.get(URL).status_code == 404


def _errors_at(errors: dict, path: tuple) -> list:
    for part in path:
        assert part in errors, f"no {part!r} in {errors}"
        errors = errors[part]
    return errors


def _without(document: dict, *path) -> dict:
    document = copy.deepcopy(document)
    target = document
    for part in path[:-1]:
        target = target[part]
    del target[path[-1]]
    return document


def _with(document: dict, value, *path) -> dict:
    document = copy.deepcopy(document)
    target = document
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return document


BASE = registration()
INVALID_REGISTRATIONS = [
    pytest.param(_without(BASE, "paintedResources", 0, "canvasPainting", "canvasOrder"),
                 ("paintedResources", "0", "canvasPainting", "canvasOrder"), id="no-canvasOrder"),
    pytest.param(_with(BASE, -1, "paintedResources", 1, "canvasPainting", "canvasOrder"),
                 ("paintedResources", "1", "canvasPainting", "canvasOrder"),
                 id="negative-canvasOrder"),
    pytest.param(_with(BASE, "0", "paintedResources", 0, "canvasPainting", "canvasOrder"),
                 ("paintedResources", "0", "canvasPainting", "canvasOrder"),
                 id="string-canvasOrder"),
    pytest.param(_with(BASE, 0, "paintedResources", 0, "canvasPainting", "choiceOrder"),
                 ("paintedResources", "0", "canvasPainting", "choiceOrder"), id="choiceOrder-0"),
    pytest.param(_without(BASE, "paintedResources", 1, "asset", "space"),
                 ("paintedResources", "1", "asset", "space"), id="no-asset-space"),
    pytest.param(_without(BASE, "paintedResources", 0, "asset", "id"),
                 ("paintedResources", "0", "asset", "id"), id="no-asset-id"),
    pytest.param(_with(BASE, "a/b", "paintedResources", 0, "asset", "id"),
                 ("paintedResources", "0", "asset", "id"), id="asset-id-with-slash"),
    pytest.param(_with(BASE, "x", "paintedResources", 0, "extra"),
                 ("paintedResources", "0", "extra"), id="unknown-painted-resource-field"),
    pytest.param(_with(BASE, 0, "paintedResources", 1, "canvasPainting", "canvasOrder"),
                 ("paintedResources", "1", "canvasPainting", "choiceOrder"),
                 id="same-canvasOrder-same-choiceOrder"),
    pytest.param(_with(BASE, {"canvasOrder": 0, "canvasId": "other", "choiceOrder": 2},
                       "paintedResources", 1, "canvasPainting"),
                 ("paintedResources", "1", "canvasPainting", "canvasId"),
                 id="canvasId-differs-within-canvasOrder"),
    pytest.param(_with(BASE, {"paintedResources": []}, "paintedResources"),
                 ("paintedResources",), id="paintedResources-not-a-list"),
    pytest.param(_with(BASE, "xywh=0,0,1,1\u0000", "paintedResources", 0, "canvasPainting",
                       "target"),
                 ("paintedResources", "0", "canvasPainting", "target"), id="nul-in-target"),
    pytest.param(_with(BASE, ["1234"], "batches"), ("batches", "0"), id="string-batch"),
    pytest.param(_with(BASE, [0], "batches"), ("batches", "0"), id="batch-0"),
    pytest.param(_with(BASE, [1234, 1234], "batches"), ("batches",), id="repeated-batch"),
    pytest.param(_without(BASE, "batches"), ("batches",), id="no-batches-no-dlcs-api"),
    pytest.param(_with(BASE, "Collection", "type"), ("type",), id="not-a-manifest"),
    pytest.param(_with(BASE, "Letters", "label"), ("label",), id="label-not-a-language-map"),
    pytest.param(_without(BASE, "label"), ("label",), id="no-label"),
    # Whole values only: a final newline used to pass the patterns, and a 64-character
    # canvasId with one was a 500 on PostgreSQL (its column holds 64).
    pytest.param(_with(BASE, "p" * 64 + "\n", "paintedResources", 0, "canvasPainting",
                       "canvasId"),
                 ("paintedResources", "0", "canvasPainting", "canvasId"),
                 id="64-character-canvasId-and-newline"),
    pytest.param(_with(BASE, "p1\n", "paintedResources", 0, "canvasPainting", "canvasId"),
                 ("paintedResources", "0", "canvasPainting", "canvasId"), id="canvasId-newline"),
    pytest.param(_with(BASE, "foo\n", "paintedResources", 0, "asset", "id"),
                 ("paintedResources", "0", "asset", "id"), id="asset-id-newline"),
]


@pytest.mark.parametrize(("document", "path"), INVALID_REGISTRATIONS)
def test_register_rejects_an_invalid_body_with_field_messages(client, admin, document, path):
    response = put(client, admin, document)

    body = assert_problem(response, 400)
    messages = _errors_at(body["errors"], path)
    assert messages and all(isinstance(m, str) for m in _flatten(messages))
    assert client.get(URL).status_code == 404


def _flatten(value):
    if isinstance(value, dict):
        for item in value.values():
            yield from _flatten(item)
    elif isinstance(value, list):
        for item in value:
            yield from _flatten(item)
    else:
        yield value


@pytest.mark.parametrize("body", [b"", b"{", b"not json", b"\xff\xfe", b"[]", b'"Manifest"',
                                  b"null"])
def test_register_rejects_a_body_that_is_not_a_json_object(client, admin, body):
    response = put(client, admin, body)

    problem = assert_problem(response, 400)
    assert "JSON" in problem["detail"]
    assert client.get(URL).status_code == 404


def _sample_with(extra: bytes) -> bytes:
    """The sample registration with ``extra`` (raw JSON text) as property ``x-extra``."""
    return sample("registration-2-assets.json").replace(b'"rights"', b'"x-extra": ' + extra
                                                        + b', "rights"')


@pytest.mark.parametrize("body, detail", [
    pytest.param(_sample_with(b"NaN"), "The body contains NaN, which is not a JSON number.",
                 id="NaN"),
    pytest.param(_sample_with(b"[1, -Infinity]"),
                 "The body contains -Infinity, which is not a JSON number.", id="-Infinity"),
    # Read as infinity, it was stored: the GET then answered "Infinity" (not JSON)
    # and the manifest could never be published.
    pytest.param(_sample_with(b'{"n": -1e400}'),
                 "The body contains -1e400, which is beyond the range of a double-precision "
                 "number.", id="-1e400"),
    pytest.param(_sample_with(b"[" * 64 + b"]" * 64),
                 "The body is nested deeper than 64 levels.", id="65-levels"),
    # About this deep, the steps after parsing used to exceed Python's recursion limit (a 500).
    pytest.param(_sample_with(b"[" * 960 + b"]" * 960),
                 "The body is nested deeper than 64 levels.", id="961-levels"),
    pytest.param(_sample_with(b"[" * 100_000 + b"]" * 100_000),
                 "The body is nested deeper than 64 levels.", id="100001-levels"),
])
def test_register_rejects_json_that_cannot_be_published(client, admin, body, detail):
    problem = assert_problem(put(client, admin, body), 400)

    assert problem["detail"] == detail
    assert client.get(URL).status_code == 404


@pytest.mark.parametrize("body", [
    b'{"type": "Manifest", "label": {"en": ["\\ud800"]}, "batches": []}',
    b'{"type": "Manifest", "summary": {"en": ["a\\udfffb"]}, "batches": []}',
    json.dumps(_with(BASE, "xywh=\ud83d", "paintedResources", 0, "canvasPainting",
                     "target")).encode(),
])
def test_register_rejects_text_that_is_not_unicode(client, admin, body):
    # Valid JSON escapes of lone surrogates: no database or published document can hold them.
    problem = assert_problem(put(client, admin, body), 400)

    assert "Unicode" in problem["detail"]
    assert client.get(URL).status_code == 404


@pytest.mark.parametrize("url", [
    "/0/manifests/letters",
    "/2147483648/manifests/letters",
    "/2/manifests/-letters",
    "/2/manifests/_letters",
    "/2/manifests/let.ters",
    "/2/manifests/" + "a" * 65,
])
def test_register_rejects_a_bad_path(client, admin, url):
    response = put(client, admin, registration(), url=url)

    assert_problem(response, 400)
    assert deliveries(client, admin) == []
    # Nothing was stored: the valid id under customer 2 is unknown too.
    assert client.get(URL).status_code == 404


def test_register_accepts_the_longest_id(client, admin):
    url = "/2/manifests/" + "a" * 64
    response = put(client, admin, registration(), url=url)

    assert response.status_code == 202
    assert response.headers["Location"] == "https://presentation.example" + url


def test_register_rejects_a_batch_of_another_manifest(client, admin):
    assert put(client, admin, registration()).status_code == 202
    other = "/2/manifests/other"

    response = put(client, admin, registration(batches=[1235, 1234]), url=other)

    problem = assert_problem(response, 409)
    assert "1234" in problem["detail"]
    assert client.get(other).status_code == 404
    assert client.get(f"{other}/status", headers=admin).status_code == 404
    # Batch 1235 of the refused registration was not kept: the first manifest may take it.
    assert put(client, admin, registration(batches=[1234, 1235])).status_code == 202
    assert status_of(client, admin)["batches"] == [ingesting_batch(1234), ingesting_batch(1235)]


def test_a_refused_replacement_leaves_the_registered_manifest_unchanged(client, admin):
    other = "/2/manifests/other"
    assert put(client, admin, registration()).status_code == 202
    assert put(client, admin, registration(batches=[999]), url=other).status_code == 202

    response = put(client, admin, registration(label={"en": ["Changed"]},
                                               paintedResources=[painted("baz", 0)],
                                               batches=[999, 1234]), url=other)

    assert_problem(response, 409)
    assert status_of(client, admin, other)["batches"] == [ingesting_batch(999)]
    view = client.get(other).get_json()
    assert view["label"] == {"en": ["Letters, 1890-1895"]}
    assert view["ingesting"] == {"state": "ingesting", "total": 2, "finished": 0, "errors": 0}
    assert Manifest.find(CUSTOMER, "other").generation == 1


def test_a_second_registration_replaces_the_first(client, admin):
    assert put(client, admin, registration(batches=[1234, 1235])).status_code == 202
    first = deliver(client, notification(1234, count=1, completed=1))
    assert first.get_json() == {"outcome": "batch-completed", "batch": 1234,
                                "manifest": "2/letters"}

    response = put(client, admin, registration(
        label={"en": ["Letters, revised"]},
        paintedResources=[painted("bar", 0, "back", label={"en": ["Back"]})],
        batches=[1234, 1236]))

    assert response.status_code == 202
    assert response.get_json()["batches"] == [completed_batch(1234, count=1, completed=1),
                                              ingesting_batch(1236)]
    assert Manifest.find(CUSTOMER, SLUG).generation == 2
    view = client.get(URL)
    assert view.status_code == 202
    assert view.get_json()["label"] == {"en": ["Letters, revised"]}
    assert view.get_json()["ingesting"] == {"state": "ingesting", "total": 1, "finished": 1, "errors": 0}
    # Batch 1235 left the manifest with the first registration.
    dropped = deliver(client, notification(1235))
    assert dropped.get_json() == {"outcome": "ignored", "batch": 1235, "manifest": None}

    complete(client, 1234, 1236)

    published = fetch_published(client)
    assert published.status_code == 200
    document = json.loads(published.data)
    assert document["label"] == {"en": ["Letters, revised"]}
    assert [canvas["id"] for canvas in document["items"]] == [
        "https://presentation.example/2/canvases/back"]
    assert document["items"][0]["label"] == {"en": ["Back"]}
    assert status_of(client, admin)["batches"] == [completed_batch(1234, count=1, completed=1),
                                                   completed_batch(1236)]


def test_registering_existing_assets_needs_the_dlcs_api(client, admin):
    # "batches": [] says the assets are in the DLCS already; without its API the
    # service could only publish a manifest without canvases (issue 13), so it refuses.
    # tests/test_projection.py covers the same registration with the API configured.
    with responses.RequestsMock():  # no DLCS call at all
        response = put(client, admin, registration(batches=[]))

    assert response.status_code == 400
    assert response.content_type == "application/problem+json"
    assert "DLCS_API_URL" in response.get_json()["errors"]["batches"][0]
    assert client.get("/2/manifests/letters/status", headers=admin).status_code == 404


def test_a_manifest_without_painted_resources_publishes_at_once(client, admin):
    with responses.RequestsMock():  # nothing to ask the DLCS
        response = put(client, admin, registration(batches=[], paintedResources=[]))

    assert response.status_code == 200
    assert response.get_json()["state"] == "complete"
    assert ISO_UTC.match(response.get_json()["lastProcessed"])
    document = json.loads(fetch_published(client).data)
    assert document["items"] == [] and document["id"] == PUBLIC_URL


def test_reregistering_a_complete_manifest_rebuilds_at_once(client, admin):
    assert put(client, admin, registration()).status_code == 202
    complete(client, 1234)
    before = fetch_published(client)

    with responses.RequestsMock() as rm:
        query = rm.get(named_query_url(1234), body=sample("named-query-2-assets.json"))
        response = put(client, admin, registration(label={"en": ["Letters, revised"]}))
        assert query.call_count == 1

    assert response.status_code == 200
    assert response.get_json()["state"] == "complete"
    assert response.get_json()["batches"] == [completed_batch(1234)]
    after = fetch_published(client)
    assert after.status_code == 200
    assert json.loads(after.data) == {**expected_published(),
                                      "label": {"en": ["Letters, revised"]}}
    assert after.headers["ETag"] != before.headers["ETag"]


# ----------------------------------------------------------------- GET manifest


def test_an_unknown_manifest_is_404(client, admin):
    assert_problem(client.get(URL), 404)
    assert_problem(client.get("/2/manifests/-bad"), 404)
    assert_problem(client.get(f"{URL}/status", headers=admin), 404)


def test_an_ingesting_manifest_answers_202_with_a_summary(client, admin):
    put(client, admin, registration(batches=[1234, 1235]))

    response = client.get(URL)

    assert response.status_code == 202
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    body = response.get_json()
    assert body["id"] == PUBLIC_URL
    assert body["type"] == "Manifest"
    assert body["label"] == {"en": ["Letters, 1890-1895"]}
    assert body["summary"] == {"en": ["Two letters"]}
    assert body["ingesting"] == {"state": "ingesting", "total": 2, "finished": 0, "errors": 0}
    assert "paintedResources" not in body and "batches" not in body
    assert "Retry-After" not in response.headers  # progressing: nothing to wait for

    deliver(client, notification(1234, count=1, completed=0, errors=1))

    body = client.get(URL).get_json()
    assert body["ingesting"] == {"state": "ingesting", "total": 2, "finished": 1, "errors": 1}


def test_a_completed_manifest_is_published(client, admin):
    put(client, admin, registration())
    complete(client, 1234)

    response = fetch_published(client)

    assert response.status_code == 200
    assert response.headers["Content-Type"] == IIIF_CONTENT_TYPE
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert re.fullmatch(r'"[^"]+"', response.headers["ETag"])
    assert json.loads(response.data) == expected_published()


@pytest.mark.parametrize("width", [2**31, 2**70], ids=["beyond-int32", "beyond-int64"])
def test_a_size_no_row_can_record_is_passed_over(client, admin, width):
    # The DLCS's image services claim a width the rows' columns cannot hold: the
    # rebuild's write-back failed on it (PostgreSQL, and SQLite beyond 64 bits).
    answer = json.loads(sample("named-query-2-assets.json"))
    body = answer["items"][0]["items"][0]["items"][0]["body"]
    for service in body["service"]:
        service["width"] = width
    put(client, admin, registration())

    complete(client, 1234, answer=json.dumps(answer).encode())

    canvas = json.loads(fetch_published(client).data)["items"][0]
    # Rule 5's next source: the body's own size.
    assert (canvas["width"], canvas["height"]) == (body["width"], body["height"])
    assert status_of(client, admin)["state"] == "complete"


def test_a_thumbnail_id_no_database_can_hold_is_published_but_not_recorded(client, admin):
    # The rows' findings once failed to record it on PostgreSQL: every retry a 503.
    answer = json.loads(sample("named-query-2-assets.json"))
    answer["items"][0]["thumbnail"][0]["id"] += "\u0000"
    put(client, admin, registration())

    complete(client, 1234, answer=json.dumps(answer).encode())

    published = json.loads(fetch_published(client).data)
    assert published["items"][0]["thumbnail"][0]["id"].endswith("\u0000")
    assert status_of(client, admin)["state"] == "complete"
    # Nothing shows a row's thumbnail but its row: the foo row records none, bar its own.
    rows = (CanvasPainting.select(CanvasPainting.asset_id, CanvasPainting.thumbnail)
            .order_by(CanvasPainting.position).tuples())
    assert [(asset, thumbnail is None) for asset, thumbnail in rows] == [
        ("2/5/foo", True), ("2/5/bar", False)]


def test_a_dlcs_description_no_database_can_hold_is_recorded_as_the_failure(client, admin):
    # Before, recording the failure failed too: the status said nothing and the
    # claim held until its lease ran out.
    put(client, admin, registration())
    with responses.RequestsMock() as rm:
        rm.get(named_query_url(1234), status=400, content_type="application/json",
               body=json.dumps({"description": "bad\u0000query \ud800"}).encode())
        response = deliver(client, notification(1234))

    problem = assert_problem(response, 503)
    assert problem["detail"].endswith("the DLCS answered 400: bad\ufffdquery \ufffd")
    status = status_of(client, admin)
    assert (status["state"], status["error"]) == ("rebuild-failed", problem["detail"])


@pytest.mark.parametrize("if_none_match", [
    "{etag}",
    '"stale", {etag}',
    '{etag},"stale"',
    "W/{etag}",
    '"a", W/{etag} , "b"',
    "*",
])
def test_a_matching_if_none_match_answers_304(client, admin, if_none_match):
    put(client, admin, registration())
    complete(client, 1234)
    etag = client.get(URL).headers["ETag"]

    response = client.get(URL, headers={"If-None-Match": if_none_match.format(etag=etag)})

    assert response.status_code == 304
    assert response.data == b""
    assert response.headers["ETag"] == etag
    assert response.headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize("if_none_match", ['"stale"', 'W/"stale"', '"a", "b"', ""])
def test_a_stale_if_none_match_answers_200(client, admin, if_none_match):
    put(client, admin, registration())
    complete(client, 1234)

    response = fetch_published(client, headers={"If-None-Match": if_none_match})

    assert response.status_code == 200
    assert json.loads(response.data) == expected_published()


def test_if_none_match_on_an_ingesting_manifest_answers_202(client, admin):
    put(client, admin, registration())

    response = client.get(URL, headers={"If-None-Match": "*"})

    assert response.status_code == 202


# ----------------------------------------------------------------- status


def test_status_follows_the_manifest_from_ingesting_to_complete(client, admin):
    etag = put(client, admin, registration(batches=[1234, 1235])).headers["ETag"]
    assert status_of(client, admin) == {
        "state": "ingesting", "batches": [ingesting_batch(1234), ingesting_batch(1235)],
        "lastProcessed": None, "error": None, "missingAssets": [], "failedAssets": [],
        "stalled": [], "etag": etag}

    deliver(client, notification(1234, count=1, completed=1))
    assert status_of(client, admin) == {
        "state": "ingesting",
        "batches": [completed_batch(1234, count=1, completed=1), ingesting_batch(1235)],
        "lastProcessed": None, "error": None, "missingAssets": [], "failedAssets": [],
        "stalled": [], "etag": etag}

    complete(client, 1234, 1235, count=1, completed=0, errors=1)
    status = status_of(client, admin)
    # An asset of 1235 failed: published, but not "complete" (issue 13).
    assert status["state"] == "complete-with-errors"
    assert status["batches"] == [completed_batch(1234, count=1, completed=1),
                                 completed_batch(1235, count=1, completed=0, errors=1)]
    assert ISO_UTC.match(status["lastProcessed"])
    assert status["error"] is None
    assert status["missingAssets"] == []


def test_status_lists_assets_the_named_query_did_not_return(client, admin):
    three = registration(paintedResources=[
        *registration()["paintedResources"], painted("baz", 2, "p3")])
    put(client, admin, three)

    complete(client, 1234)

    status = status_of(client, admin)
    assert status["state"] == "complete"
    assert status["missingAssets"] == ["2/5/baz"]
    published = fetch_published(client)
    assert json.loads(published.data) == expected_published()


# ----------------------------------------------------------------- deliveries

DELIVERY_KEYS = {"id", "transport", "receivedAt", "batch", "manifest", "outcome", "error",
                 "failedAssets"}


def _three_deliveries(client, admin):
    put(client, admin, registration(batches=[1234, 1235]))
    deliver(client, notification(999), "msg_a")
    deliver(client, notification(1234), "msg_b")
    deliver(client, b"{}", "msg_c")


def test_deliveries_are_listed_most_recent_first(client, admin):
    _three_deliveries(client, admin)

    items = deliveries(client, admin)

    assert [item["id"] for item in items] == ["msg_c", "msg_b", "msg_a"]
    assert all(item.keys() == DELIVERY_KEYS for item in items)
    assert all(ISO_UTC.match(item["receivedAt"]) for item in items)
    unprocessable, completed, ignored = items
    assert {k: v for k, v in completed.items() if k != "receivedAt"} == {
        "id": "msg_b", "transport": "webhook", "batch": 1234, "manifest": "2/letters",
        "outcome": "batch-completed", "error": None, "failedAssets": None}
    unchecked = ("receivedAt", "error", "failedAssets")
    assert {k: v for k, v in ignored.items() if k not in unchecked} == {
        "id": "msg_a", "transport": "webhook", "batch": 999, "manifest": None,
        "outcome": "ignored"}
    assert unprocessable["outcome"] == "unprocessable"
    assert unprocessable["batch"] is None and unprocessable["manifest"] is None
    assert unprocessable["error"]
    assert items[0]["receivedAt"] >= items[1]["receivedAt"] >= items[2]["receivedAt"]


@pytest.mark.parametrize(("query", "expected"), [
    ("?batch=1234", ["msg_b"]),
    ("?batch=999", ["msg_a"]),
    ("?batch=1235", []),
    ("?outcome=ignored", ["msg_a"]),
    ("?outcome=unprocessable", ["msg_c"]),
    ("?outcome=failed", []),
    ("?batch=1234&outcome=batch-completed", ["msg_b"]),
    ("?batch=999&outcome=batch-completed", []),
    ("?limit=2", ["msg_c", "msg_b"]),
    ("?limit=1&outcome=ignored", ["msg_a"]),
    ("?limit=500", ["msg_c", "msg_b", "msg_a"]),
])
def test_deliveries_filter(client, admin, query, expected):
    _three_deliveries(client, admin)

    assert [item["id"] for item in deliveries(client, admin, query)] == expected


def test_deliveries_default_to_the_50_most_recent(client, admin):
    for number in range(51):
        deliver(client, notification(1000 + number), f"msg_{number:02}")

    items = deliveries(client, admin)

    assert len(items) == 50
    assert [item["id"] for item in items] == [f"msg_{n:02}" for n in range(50, 0, -1)]
    assert len(deliveries(client, admin, "?limit=51")) == 51


@pytest.mark.parametrize("query", ["?limit=0", "?limit=501", "?limit=-1", "?limit=ten",
                                   "?batch=abc", "?batch=0",
                                   "?batch=9223372036854775808", "?outcome=lost", "?page=2",
                                   "?limit=10&sort=asc"])
def test_deliveries_reject_a_bad_query(client, admin, query):
    problem = assert_problem(client.get(f"/deliveries{query}", headers=admin), 400)
    assert problem["errors"]


# ----------------------------------------------------------------- rebuild


def test_rebuild_is_refused_while_batches_are_ingesting(client, admin):
    put(client, admin, registration(batches=[1234, 1235]))
    deliver(client, notification(1234))

    with responses.RequestsMock():
        assert_problem(client.post(f"{URL}/rebuild", headers=admin), 409)

    assert status_of(client, admin)["state"] == "ingesting"


def test_rebuild_of_a_complete_manifest_publishes_the_same_bytes(client, admin):
    put(client, admin, registration())
    complete(client, 1234)
    before = fetch_published(client)

    with responses.RequestsMock() as rm:
        query = rm.get(named_query_url(1234), body=sample("named-query-2-assets.json"))
        response = client.post(f"{URL}/rebuild", headers=admin)
        assert query.call_count == 1

    assert response.status_code == 200
    assert response.get_json() == {"outcome": "manifest-completed", "batch": None,
                                   "manifest": "2/letters"}
    after = fetch_published(client)
    assert after.data == before.data
    assert after.headers["ETag"] == before.headers["ETag"]
    assert status_of(client, admin)["state"] == "complete"


def test_rebuild_of_an_unknown_manifest_is_404(client, admin):
    with responses.RequestsMock():
        assert_problem(client.post(f"{URL}/rebuild", headers=admin), 404)


# ----------------------------------------------------------------- replay


def test_replay_of_an_unknown_delivery_is_404(client, admin):
    assert_problem(client.post("/deliveries/msg_unknown/replay", headers=admin), 404)


def test_an_ignored_delivery_completes_its_batch_once_the_manifest_is_registered(client, admin):
    early = deliver(client, notification(1234), "msg_early")
    assert early.get_json() == {"outcome": "ignored", "batch": 1234, "manifest": None}

    # The registration applies the recorded completion: the manifest is built at once.
    with responses.RequestsMock() as rm:
        query = rm.get(named_query_url(1234), body=sample("named-query-2-assets.json"))
        registered = put(client, admin, registration())
        assert query.call_count == 1
    assert registered.status_code == 200
    assert registered.get_json()["batches"] == [completed_batch(1234)]

    with responses.RequestsMock():  # nothing left to do: no DLCS call
        replayed = client.post("/deliveries/msg_early/replay", headers=admin)

    assert replayed.status_code == 200
    assert replayed.get_json() == {"outcome": "duplicate", "batch": 1234,
                                   "manifest": "2/letters"}
    [item] = deliveries(client, admin)
    assert (item["id"], item["outcome"], item["manifest"]) == (
        "msg_early", "batch-completed", "2/letters")
    assert json.loads(fetch_published(client).data) == expected_published()


def test_a_replacement_applies_a_completion_ignored_before_it(client, admin):
    # Registered under another batch first, so the early delivery stays ignored...
    put(client, admin, registration(batches=[1235]))
    deliver(client, notification(1234), "msg_early")
    # ...until a replacement takes batch 1234 on and applies it.
    registered = put(client, admin, registration(batches=[1234, 1235]))
    assert registered.status_code == 202

    with responses.RequestsMock() as rm:
        query = rm.get(named_query_url(1234, 1235), body=sample("named-query-2-assets.json"))
        last = deliver(client, notification(1235))
        assert query.call_count == 1

    assert last.get_json() == {"outcome": "manifest-completed", "batch": 1235,
                               "manifest": "2/letters"}
    assert status_of(client, admin)["batches"] == [completed_batch(1234),
                                                   completed_batch(1235)]
