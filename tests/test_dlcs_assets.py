"""The DLCS client's asset calls: lookup, tagging, a batch's assets, the manifest projection.

First against ``responses`` (matchers check what was sent; unused mocks fail
the test), then against the loopback fake DLCS over real HTTP, the way the
end-to-end tests will use them. Request and answer bodies are the samples in
``tests/samples`` (see their README for where each shape was confirmed).
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
from responses import matchers

from tests.fake_dlcs import BATCH_ASSETS, FIND_ASSETS, PATCH_ASSETS, FakeAsset, FakeDlcs
from webhook.dlcs import MAX_ASSET_PAGES, DlcsClient, make_session
from webhook.dlcs_documents import ERROR_TEXT_LIMIT
from webhook.domain import DlcsAsset
from webhook.errors import DlcsError, NamedQueryNotFound

SAMPLES = Path(__file__).parent / "samples"
ORCHESTRATOR = "https://dlcs.example"
API = "https://api.dlcs.example"
KEY, SECRET = "key-4f1c9e27", "s3cr3t-Zq8x-do-not-leak"
BASIC = "Basic " + base64.b64encode(f"{KEY}:{SECRET}".encode()).decode()
TIMEOUT = 7.5
ALL_IMAGES = f"{API}/customers/2/allImages"
BATCH_ASSETS_URL = f"{API}/customers/2/queue/batches/1234/assets"
SENT_AS_CONFIGURED = matchers.request_kwargs_matcher({"timeout": TIMEOUT})
FAILED_BAR = "Failed to fetch origin 'https://example.org/bar.jpg': 404 Not Found"


def sample(name: str):
    return json.loads((SAMPLES / name).read_text())


def lookup_body(ids: list[str]) -> dict:
    return {"@context": "http://www.w3.org/ns/hydra/context.jsonld", "@type": "Collection",
            "member": [{"id": asset_id} for asset_id in ids]}


def patch_body(ids: list[str], operation: str = "add", manifest: str = "letters") -> dict:
    return {"field": "manifests", "operation": operation, "value": [manifest],
            "member": [{"id": asset_id} for asset_id in ids]}


def collection(members: list[dict], **extra) -> dict:
    return {"@context": "http://www.w3.org/ns/hydra/context.jsonld", "@type": "Collection",
            "totalItems": len(members), "pageSize": len(members), "member": members, **extra}


def image(asset_id: str, **fields) -> dict:
    """A Hydra Image of the samples' shape for ``asset_id`` ("c/s/id")."""
    _, space, model_id = asset_id.split("/")
    document = copy.deepcopy(sample("assets-lookup-response.json")["member"][0])
    document.update(id=model_id, space=int(space), **fields)
    return document


@pytest.fixture
def session():
    session = make_session(retries=2, backoff=0)
    yield session
    session.close()


@pytest.fixture
def client(session):
    return DlcsClient(orchestrator_url=ORCHESTRATOR, api_url=API, timeout=TIMEOUT,
                      credentials=(KEY, SECRET), session=session,
                      named_query="manifest-query")


@pytest.fixture
def rsps():
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


# --- which assets exist -------------------------------------------------------------


def test_find_assets_sends_the_ids_and_reads_the_images_that_exist(rsps, client):
    request = sample("assets-lookup-request.json")
    rsps.post(ALL_IMAGES, json=sample("assets-lookup-response.json"),
              match=[matchers.json_params_matcher(request),
                     matchers.header_matcher({"Authorization": BASIC}), SENT_AS_CONFIGURED])

    found = client.find_assets(2, [member["id"] for member in request["member"]])

    assert [asset.asset_id for asset in found] == ["2/5/foo", "2/5/bar"]
    assert found[0] == DlcsAsset(asset_id="2/5/foo", error=None, ingesting=False,
                                 finished=found[0].finished, manifests=(), batch=1234)
    assert found[0].finished.isoformat() == "2025-02-20T12:29:14.202312+00:00"
    assert found[1].manifests == ("catalogue",)


def test_find_assets_chunks_distinct_ids_by_max_batch_size(rsps, session):
    client = DlcsClient(orchestrator_url=None, api_url=API, max_batch_size=2, session=session)
    ids = ["2/5/a", "2/5/b", "2/5/a", "2/6/c", "2/5/b"]
    rsps.post(ALL_IMAGES, json=collection([image("2/5/a")]),
              match=[matchers.json_params_matcher(lookup_body(["2/5/a", "2/5/b"]))])
    rsps.post(ALL_IMAGES, json=collection([image("2/6/c")]),
              match=[matchers.json_params_matcher(lookup_body(["2/6/c"]))])

    found = client.find_assets(2, ids)

    assert [asset.asset_id for asset in found] == ["2/5/a", "2/6/c"]


def test_nothing_to_look_up_or_tag_calls_nothing(rsps, client):
    assert client.find_assets(2, []) == []
    assert client.tag_assets(2, "letters", []) == []
    assert client.untag_assets(2, "letters", iter(())) == []


@pytest.mark.parametrize("bad", ["3/5/foo", "2/foo", "2/5/foo/bar", "foo", 2])
def test_asset_ids_of_another_form_or_customer_are_refused_before_sending(rsps, client, bad):
    with pytest.raises(ValueError, match="not an asset id of customer 2"):
        client.find_assets(2, ["2/5/ok", bad])
    with pytest.raises(ValueError):
        client.tag_assets(2, "letters", [bad])


def test_the_lookup_is_not_retried_on_a_5xx(rsps, client):
    # A read, but sent as POST: urllib3 retries by method, so it fails at once.
    rsps.post(ALL_IMAGES, status=503, json={"description": "busy"})

    with pytest.raises(DlcsError, match="asset lookup 1/1 of customer 2: the DLCS answered "
                                        "503: busy"):
        client.find_assets(2, ["2/5/foo"])

    assert len(rsps.calls) == 1


# --- tagging ------------------------------------------------------------------------------


def test_tag_assets_sends_the_bulk_patch_and_reads_the_tagged_images(rsps, client):
    request = sample("assets-tag-request.json")
    rsps.patch(ALL_IMAGES, json=sample("assets-tag-response.json"),
               match=[matchers.json_params_matcher(request),
                      matchers.header_matcher({"Authorization": BASIC}), SENT_AS_CONFIGURED])

    tagged = client.tag_assets(2, "letters", [member["id"] for member in request["member"]])

    assert [(asset.asset_id, asset.manifests) for asset in tagged] == [
        ("2/5/foo", ("letters",)), ("2/5/bar", ("catalogue", "letters"))]


def test_untag_assets_sends_remove(rsps, client):
    rsps.patch(ALL_IMAGES, json=collection([image("2/5/foo", manifests=[])]),
               match=[matchers.json_params_matcher(patch_body(["2/5/foo"], "remove"))])

    [seen] = client.untag_assets(2, "letters", ["2/5/foo"])

    assert seen.manifests == ()


def test_tagging_chunks_and_names_how_far_it_got(rsps, session):
    client = DlcsClient(orchestrator_url=None, api_url=API, max_batch_size=2, session=session)
    ids = [f"2/5/a{n}" for n in range(5)]
    rsps.patch(ALL_IMAGES, json=collection([image(i) for i in ids[0:2]]),
               match=[matchers.json_params_matcher(patch_body(ids[0:2]))])
    rsps.patch(ALL_IMAGES, status=400, json={"description": "Members cannot be empty"},
               match=[matchers.json_params_matcher(patch_body(ids[2:4]))])

    with pytest.raises(DlcsError, match=r"tagging request 2/3 of customer 2: the DLCS answered "
                                        r"400: Members cannot be empty \(after 2 of 5 assets\)"
                       ) as caught:
        client.tag_assets(2, "letters", ids)

    assert caught.value.status == 400
    assert caught.value.description == "Members cannot be empty"
    assert len(rsps.calls) == 2  # the third chunk is never sent


@pytest.mark.parametrize("status", [502, 503, 504])
def test_a_patch_is_not_resent_after_a_5xx(rsps, client, status):
    rsps.patch(ALL_IMAGES, status=status)

    with pytest.raises(DlcsError) as caught:
        client.tag_assets(2, "letters", ["2/5/foo"])

    assert caught.value.status == status
    assert len(rsps.calls) == 1


@pytest.mark.parametrize("fault, message", [
    (requests.ConnectionError("reset"), "could not be reached"),
    (requests.ReadTimeout(), "did not answer within 7.5 s"),
])
def test_network_faults_of_the_asset_calls_become_dlcs_errors(rsps, client, fault, message):
    rsps.patch(ALL_IMAGES, body=fault)
    rsps.post(ALL_IMAGES, body=fault)
    rsps.get(BATCH_ASSETS_URL, body=fault)

    for call in (lambda: client.tag_assets(2, "m", ["2/5/a"]),
                 lambda: client.find_assets(2, ["2/5/a"]),
                 lambda: client.batch_assets(2, 1234)):
        with pytest.raises(DlcsError, match=message) as caught:
            call()
        assert caught.value.__cause__ is fault


def test_manifest_id_must_be_given(client):
    with pytest.raises(ValueError):
        client.tag_assets(2, "", ["2/5/a"])


# --- a batch's assets -------------------------------------------------------------------------


def test_batch_assets_follows_the_pages_and_keeps_each_error(rsps, client):
    rsps.get(BATCH_ASSETS_URL, json=sample("batch-assets-page-1.json"),
             match=[matchers.query_string_matcher("page=1&pageSize=500"),
                    matchers.header_matcher({"Authorization": BASIC}), SENT_AS_CONFIGURED])
    rsps.get(BATCH_ASSETS_URL, json=sample("batch-assets-page-2.json"),
             match=[matchers.query_string_matcher("page=2&pageSize=2")])

    assets = client.batch_assets(2, 1234)

    assert [(a.asset_id, a.error) for a in assets] == [
        ("2/5/foo", None), ("2/5/bar", FAILED_BAR), ("2/5/baz", None)]


def test_batch_assets_takes_only_the_query_of_the_next_link(rsps, client):
    # The DLCS writes links with its own idea of its host; credentials must not follow them.
    page = collection([image("2/5/a")], totalItems=2, pageSize=1,
                      view={"next": "http://internal:8080/elsewhere/assets?page=2&pageSize=1"})
    rsps.get(BATCH_ASSETS_URL, json=page, match=[matchers.query_string_matcher(
        "page=1&pageSize=500")])
    rsps.get(BATCH_ASSETS_URL, json=collection([image("2/5/b")]),
             match=[matchers.query_string_matcher("page=2&pageSize=1")])

    assert [a.asset_id for a in client.batch_assets(2, 1234)] == ["2/5/a", "2/5/b"]
    assert all(call.request.url.startswith(BATCH_ASSETS_URL) for call in rsps.calls)


def test_batch_assets_stops_at_the_page_cap(rsps, client):
    def endless(request):
        page = int(parse_qs(urlsplit(request.url).query)["page"][0])
        body = collection([image(f"2/5/a{page}")], totalItems=10**6, pageSize=1,
                          view={"next": f"{BATCH_ASSETS_URL}?page={page + 1}&pageSize=1"})
        return 200, {}, json.dumps(body)

    rsps.add_callback(responses.GET, BATCH_ASSETS_URL, callback=endless)

    with pytest.raises(DlcsError, match=f"more than {MAX_ASSET_PAGES} pages"):
        client.batch_assets(2, 1234)

    assert len(rsps.calls) == MAX_ASSET_PAGES


def test_batch_assets_refuses_a_page_that_points_back(rsps, client):
    page = collection([image("2/5/a")], totalItems=2, pageSize=1,
                      view={"next": f"{BATCH_ASSETS_URL}?page=1&pageSize=500"})
    rsps.get(BATCH_ASSETS_URL, json=page)

    with pytest.raises(DlcsError, match="already read"):
        client.batch_assets(2, 1234)


def test_batch_assets_is_retried_on_a_5xx(rsps, client):
    rsps.get(BATCH_ASSETS_URL, status=503)
    rsps.get(BATCH_ASSETS_URL, json=collection([image("2/5/a")]))

    assert [a.asset_id for a in client.batch_assets(2, 1234)] == ["2/5/a"]


def test_an_unknown_batch_is_a_dlcs_error(rsps, client):
    rsps.get(BATCH_ASSETS_URL, status=404, json={"description": "Batch not found"})

    with pytest.raises(DlcsError, match="404: Batch not found") as caught:
        client.batch_assets(2, 1234)

    assert caught.value.status == 404


@pytest.mark.parametrize("error, shown", [
    ("", None), (None, None), ("   ", None), (" timed out \n", "timed out"),
    ("x" * (ERROR_TEXT_LIMIT + 1), "x" * ERROR_TEXT_LIMIT + "..."),
    ("x" * ERROR_TEXT_LIMIT, "x" * ERROR_TEXT_LIMIT),
], ids=["empty", "null", "blank", "trimmed", "cut-short", "at-the-limit"])
def test_error_text_as_shown(rsps, client, error, shown):
    rsps.get(BATCH_ASSETS_URL, json=collection([image("2/5/a", error=error)]))

    [asset] = client.batch_assets(2, 1234)

    assert asset.error == shown


def test_an_image_without_optional_fields_reads(rsps, client):
    rsps.get(BATCH_ASSETS_URL, json=collection([{"id": "a", "space": 5}]))

    assert client.batch_assets(2, 1234) == [
        DlcsAsset(asset_id="2/5/a", error=None, ingesting=None, finished=None, manifests=())]


@pytest.mark.parametrize("document, reason", [
    ([], "not a JSON object"),
    ({"totalItems": 0}, "member is not a list"),
    (collection(["2/5/a"]), "member 0 is not a JSON object"),
    (collection([{"space": 5}]), "member 0 has no asset id"),
    (collection([{"id": "a/b", "space": 5}]), "member 0 has no asset id"),
    (collection([{"id": "a", "space": "5"}]), "member 0 has no space"),
    (collection([{"id": "a", "space": True}]), "member 0 has no space"),
    (collection([{"id": "a", "space": 5, "error": 500}]), "error is not text"),
    (collection([{"id": "a", "space": 5, "ingesting": "no"}]), "ingesting is not a boolean"),
    (collection([{"id": "a", "space": 5, "manifests": "letters"}]), "manifests is not a list"),
    (collection([{"id": "a", "space": 5, "manifests": [1]}]), "manifests is not a list"),
    (collection([{"id": "a", "space": 5, "finished": "soon"}]), "finished is not an ISO"),
    (collection([{"id": "a", "space": 5, "batch": 7}]), "batch is not a link"),
    (collection([{"id": "a", "space": 5, "batch": f"{API}/customers/2/queue/batches/x"}]),
     "member 0: batch .* does not end in a batch id"),
    (collection([{"id": "a", "space": 5, "batch": f"{API}/customers/2/queue/batches/\u00b2"}]),
     "member 0: batch .* does not end in a batch id"),
    (collection([{"id": "a", "space": 5, "batch": f"{API}/customers/2/queue/batches/0"}]),
     "member 0: batch .* does not end in a batch id"),
    (collection([{"id": "a", "space": 5,
                  "batch": f"{API}/customers/2/queue/batches/{2**63}"}]),
     "member 0: batch .* does not end in a batch id"),
    (collection([], view=[]), "view is not a JSON object"),
    (collection([], view={"next": 2}), "view.next is not a link"),
    (collection([], view={"next": f"{BATCH_ASSETS_URL}?pageSize=2"}), "names no page"),
    (collection([], view={"next": f"{BATCH_ASSETS_URL}?page=\u00b2"}), "names no page"),
], ids=["list", "no-member", "member-string", "no-id", "id-with-slash", "space-string",
        "space-bool", "error-number", "ingesting-string", "manifests-string",
        "manifests-numbers", "finished-not-a-date", "batch-number", "batch-not-a-batch",
        "batch-superscript-digit", "batch-zero", "batch-beyond-int64", "view-list",
        "next-number", "next-no-page", "next-superscript-page"])
def test_wrong_shapes_are_dlcs_errors(rsps, client, document, reason):
    rsps.get(BATCH_ASSETS_URL, json=document)

    with pytest.raises(DlcsError, match=f"not a DLCS collection of images .*{reason}") as caught:
        client.batch_assets(2, 1234)

    assert caught.value.status == 200


# --- the manifest projection ------------------------------------------------------------------


MANIFEST_QUERY_URL = re.compile(
    re.escape(f"{ORCHESTRATOR}/iiif-resource/v3/2/manifest-query/report-2024")
    + r"\?cacheBust=[0-9a-f]{32}$")


def test_manifest_query_projects_the_manifest_id(rsps, client):
    body = (SAMPLES / "named-query-born-digital.json").read_bytes()
    rsps.get(MANIFEST_QUERY_URL, body=body,
             match=[matchers.header_matcher({"Authorization": BASIC}), SENT_AS_CONFIGURED])

    answer = client.manifest_query(2, "report-2024")

    assert answer.document == sample("named-query-born-digital.json")
    assert answer.size == len(body)


def test_manifest_query_with_nothing_tagged_is_not_found(rsps, client):
    rsps.get(MANIFEST_QUERY_URL, status=404)

    with pytest.raises(NamedQueryNotFound):
        client.manifest_query(2, "report-2024")


@pytest.mark.parametrize("manifest_id", ["", "a,b", "a/b", "a b", "a?b", None])
def test_manifest_query_refuses_an_id_the_dlcs_would_split(rsps, client, manifest_id):
    with pytest.raises(ValueError):
        client.manifest_query(2, manifest_id)


@pytest.mark.parametrize("call, variable", [
    (lambda c: c.find_assets(2, ["2/5/a"]), "DLCS_API_URL"),
    (lambda c: c.tag_assets(2, "m", ["2/5/a"]), "DLCS_API_URL"),
    (lambda c: c.untag_assets(2, "m", ["2/5/a"]), "DLCS_API_URL"),
    (lambda c: c.batch_assets(2, 1), "DLCS_API_URL"),
    (lambda c: c.manifest_query(2, "m"), "DLCS_ORCHESTRATOR_URL"),
], ids=["find", "tag", "untag", "batch-assets", "manifest-query"])
def test_missing_url_is_reported(rsps, session, call, variable):
    client = DlcsClient(orchestrator_url=None, api_url=None, session=session)

    with pytest.raises(DlcsError, match=f"^{variable} is not configured$"):
        call(client)


def test_credentials_never_leak_from_the_asset_calls(rsps, client, caplog):
    caplog.set_level(logging.DEBUG)
    rsps.patch(ALL_IMAGES, status=401, json={"description": "Invalid credentials"})
    rsps.get(BATCH_ASSETS_URL, json={"member": "x"})

    errors = []
    for call in (lambda: client.tag_assets(2, "m", ["2/5/a"]),
                 lambda: client.batch_assets(2, 1234)):
        with pytest.raises(DlcsError) as caught:
            call()
        errors.append(caught.value)

    texts = [caplog.text] + [text for error in errors
                             for text in (str(error), repr(error), str(error.__cause__))]
    assert not [text for text in texts for secret in (SECRET, BASIC) if secret in text]


# --- a real loopback server: what urllib3 does with a PATCH ------------------------------------


@pytest.fixture
def dropping_server():
    """A server that reads each request and hangs up without answering."""
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def _drop(self):
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            hits.append(self.command)

        do_PATCH = do_POST = do_GET = _drop

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", hits
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_a_patch_that_reached_the_server_is_not_resent(dropping_server):
    url, hits = dropping_server
    session = make_session(retries=2, backoff=0)
    session.trust_env = False
    client = DlcsClient(orchestrator_url=None, api_url=url, timeout=5, session=session)

    with pytest.raises(DlcsError, match="could not be reached"):
        client.tag_assets(2, "m", ["2/5/a"])
    with pytest.raises(DlcsError, match="could not be reached"):
        client.batch_assets(2, 1)
    session.close()

    # The PATCH once; the GET three times (two retries of a read error).
    assert hits == ["PATCH", "GET", "GET", "GET"]


# --- against the loopback fake DLCS ------------------------------------------------------------


@pytest.fixture
def fake():
    with FakeDlcs(credentials=(KEY, SECRET)) as fake:
        yield fake
    assert not fake.errors


@pytest.fixture
def loopback(fake):
    session = make_session(retries=0)
    session.trust_env = False
    yield DlcsClient(orchestrator_url=fake.url, api_url=fake.url, credentials=(KEY, SECRET),
                     named_query="manifest-query", max_batch_size=3, timeout=10,
                     session=session)
    session.close()


def test_fake_tagging_drives_the_manifest_projection(fake, loopback):
    fake.add_assets(2, [FakeAsset(5, name) for name in ("a", "b", "c")])

    with pytest.raises(NamedQueryNotFound):
        loopback.manifest_query(2, "letters")
    tagged = loopback.tag_assets(2, "letters", ["2/5/a", "2/5/b", "2/5/never"])
    canvases = loopback.manifest_query(2, "letters").document["items"]

    assert sorted(asset.asset_id for asset in tagged) == ["2/5/a", "2/5/b"]
    assert sorted(canvas["id"].split("/iiif-img/")[1].split("/canvas/")[0]
                  for canvas in canvases) == ["2/5/a", "2/5/b"]
    assert fake.assets.manifests("2/5/a") == ["letters"]
    loopback.untag_assets(2, "letters", ["2/5/a", "2/5/b"])
    with pytest.raises(NamedQueryNotFound):
        loopback.manifest_query(2, "letters")
    assert [call.body for call in fake.requests(PATCH_ASSETS)] == [
        patch_body(["2/5/a", "2/5/b", "2/5/never"], manifest="letters"),
        patch_body(["2/5/a", "2/5/b"], "remove", manifest="letters")]


def test_fake_lookup_answers_the_assets_that_exist_in_chunks(fake, loopback):
    fake.add_batch(2, 77, [FakeAsset(5, "a"), FakeAsset(6, "b")])
    fake.add_assets(2, [FakeAsset(5, "old")])

    found = loopback.find_assets(2, ["2/5/a", "2/6/b", "2/5/x", "2/5/old", "2/5/y"])

    assert [asset.asset_id for asset in found] == ["2/5/a", "2/6/b", "2/5/old"]
    assert [len(call.body["member"]) for call in fake.requests(FIND_ASSETS)] == [3, 2]


def test_fake_batch_assets_pages_and_reports_errors(fake, loopback):
    assets = [FakeAsset(5, f"a{n:04d}") for n in range(1203)]
    fake.add_batch(2, 88, assets)
    fake.finish_batch(2, 88, failed={"2/5/a0007": "origin 404", "2/5/a1202": "bad tiff"})

    read = loopback.batch_assets(2, 88)

    assert [asset.asset_id for asset in read] == [asset.asset_id(2) for asset in assets]
    assert {asset.asset_id: asset.error for asset in read if asset.error} == {
        "2/5/a0007": "origin 404", "2/5/a1202": "bad tiff"}
    assert [call.query["page"] for call in fake.requests(BATCH_ASSETS)] == [["1"], ["2"], ["3"]]


def direct(method: str, url: str, **kwargs) -> requests.Response:
    """Send one request straight to the fake, past any proxy from the environment."""
    with requests.Session() as plain:
        plain.trust_env = False
        return plain.request(method, url, auth=(KEY, SECRET), timeout=10, **kwargs)


def test_fake_leaves_failed_assets_out_of_both_projections(fake):
    fake.add_batch(2, 90, [FakeAsset(5, "ok"), FakeAsset(5, "bad")])
    fake.assets.patch(2, patch_body(["2/5/ok", "2/5/bad"], manifest="m"), fake.url)
    fake.finish_batch(2, 90, failed={"2/5/bad": "boom"})

    by_batch = direct("GET", f"{fake.url}/iiif-resource/v3/2/batch-query/90").json()
    by_manifest = direct("GET", f"{fake.url}/iiif-resource/v3/2/manifest-query/m").json()

    for document in (by_batch, by_manifest):
        assert [c["id"].split("/iiif-img/")[1].split("/canvas/")[0]
                for c in document["items"]] == ["2/5/ok"]


@pytest.mark.parametrize("body, description", [
    (lookup_body(["2/5/a", "2/5/a"]), "duplicate"),
    (lookup_body(["1/5/a"]), "different customer"),
    (lookup_body([]), "cannot be empty"),
    (lookup_body([f"2/5/a{n}" for n in range(501)]), "Maximum assets"),
    ({**patch_body(["2/5/a"]), "field": "tags"}, "Unsupported field"),
], ids=["duplicates", "other-customer", "empty", "over-500", "other-field"])
def test_fake_refuses_what_the_dlcs_refuses(fake, body, description):
    method = "PATCH" if "field" in body else "POST"
    answer = direct(method, f"{fake.url}/customers/2/allImages", json=body)

    assert answer.status_code == 400
    assert description in answer.json()["description"]
