"""Tests of the DLCS client against mocked (``responses``) and loopback DLCS servers.

``responses`` replaces ``HTTPAdapter.send``, so it emulates urllib3's status
retries (it calls ``Retry.is_retry``/``increment`` itself) but not connection
or read-error retries, backoff or Retry-After sleeps. Those are exercised with
a real ``http.server`` on 127.0.0.1 instead.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import re
import threading
import time
from collections import deque
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
import responses
from responses import matchers

from webhook.dlcs import DlcsClient, NamedQueryAnswer, make_session
from webhook.domain import BatchState, Deadline
from webhook.errors import DlcsError, NamedQueryNotFound, QueuePartiallyFailed

SAMPLES = Path(__file__).parent / "samples"
ORCHESTRATOR = "https://dlcs.example"
API = "https://api.dlcs.example"
KEY = "key-4f1c9e27"
SECRET = "s3cr3t-Zq8x-do-not-leak"
BASIC = "Basic " + base64.b64encode(f"{KEY}:{SECRET}".encode()).decode()
TIMEOUT = 7.5

NAMED_QUERY_URL = re.compile(
    re.escape(f"{ORCHESTRATOR}/iiif-resource/v3/2/batch-query/1234,1235")
    + r"\?cacheBust=[0-9a-f]{32}$")
BATCH_URL = f"{API}/customers/2/queue/batches/1234"
QUEUE_URL = f"{API}/customers/2/queue"
# allow_redirects is consumed by Session.send above the mocked adapter, so
# test_redirect_is_not_followed checks it by behaviour instead.
SENT_AS_CONFIGURED = matchers.request_kwargs_matcher({"timeout": TIMEOUT})


def sample(name: str):
    return json.loads((SAMPLES / name).read_text())


def sample_bytes(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def batch_document(batch_id: int, count: int = 2, **changes) -> dict:
    document = sample("queue-response-201.json")
    document["@id"] = f"{API}/customers/2/queue/batches/{batch_id}"
    document["count"] = count
    document.update(changes)
    return document


def assets(n: int) -> list[dict]:
    return [{"id": f"asset-{i}", "space": 5, "origin": f"https://example.org/{i}.jpg",
             "mediaType": "image/jpeg"} for i in range(n)]


def hydra(members: list[dict]) -> dict:
    return {"@context": "http://www.w3.org/ns/hydra/context.jsonld",
            "@type": "Collection", "member": members}


@pytest.fixture
def session():
    session = make_session(retries=2, backoff=0)
    yield session
    session.close()


@pytest.fixture
def client(session):
    return DlcsClient(orchestrator_url=ORCHESTRATOR + "/", api_url=API, timeout=TIMEOUT,
                      credentials=(KEY, SECRET), session=session)


@pytest.fixture
def anonymous(session):
    return DlcsClient(orchestrator_url=ORCHESTRATOR, api_url=API, timeout=TIMEOUT,
                      session=session)


@pytest.fixture
def rsps():
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


# --- named query ---------------------------------------------------------------


def test_named_query_sends_credentials_timeout_and_cache_bust(rsps, client):
    body = sample_bytes("named-query-2-assets.json")
    rsps.get(NAMED_QUERY_URL, body=body, content_type="application/ld+json",
             match=[matchers.header_matcher({"Authorization": BASIC}), SENT_AS_CONFIGURED])

    answer = client.named_query(2, [1234, 1235])

    assert isinstance(answer, NamedQueryAnswer)
    assert answer.document == sample("named-query-2-assets.json")
    assert answer.size == len(body)


def test_named_query_cache_bust_differs_between_calls(rsps, client):
    rsps.get(NAMED_QUERY_URL, json={"items": []})
    rsps.get(NAMED_QUERY_URL, json={"items": []})

    client.named_query(2, [1234, 1235])
    client.named_query(2, [1234, 1235])

    busts = {call.request.params["cacheBust"] for call in rsps.calls}
    assert all(call.request.params.keys() == {"cacheBust"} for call in rsps.calls)
    assert len(busts) == 2


def test_named_query_uses_configured_query_name(rsps, session):
    client = DlcsClient(orchestrator_url=ORCHESTRATOR, api_url=None, named_query="my-query",
                        session=session)
    rsps.get(re.compile(re.escape(f"{ORCHESTRATOR}/iiif-resource/v3/7/my-query/9?cacheBust=")),
             json={"items": []})

    assert client.named_query(7, [9]).document == {"items": []}


def test_credentials_absent_when_not_configured(rsps, anonymous):
    rsps.get(NAMED_QUERY_URL, json={"items": []})
    rsps.get(BATCH_URL, json=batch_document(1234))
    rsps.post(QUEUE_URL, json=batch_document(1234), status=201)

    anonymous.named_query(2, [1234, 1235])
    anonymous.get_batch(2, 1234)
    anonymous.queue_assets(2, assets(2))

    assert len(rsps.calls) == 3
    assert all("Authorization" not in call.request.headers for call in rsps.calls)


def test_named_query_404_means_no_assets(rsps, client):
    rsps.get(NAMED_QUERY_URL, status=404, body=b"")

    with pytest.raises(NamedQueryNotFound, match="no assets matched") as caught:
        client.named_query(2, [1234, 1235])

    assert isinstance(caught.value, DlcsError)
    assert caught.value.status == 404


@pytest.mark.parametrize("document", [
    [],
    "a manifest",
    {"type": "Manifest"},
    {"type": "Manifest", "items": {}},
    {"type": "Manifest", "items": None},
], ids=["list", "string", "no-items", "items-object", "items-null"])
def test_named_query_wrong_shape(rsps, client, document):
    rsps.get(NAMED_QUERY_URL, json=document)

    with pytest.raises(DlcsError, match="not a manifest") as caught:
        client.named_query(2, [1234, 1235])

    assert not isinstance(caught.value, NamedQueryNotFound)


@pytest.mark.parametrize("body", [b"<html>oops</html>", b"", b"\xff\xfe\x00garbage"])
def test_named_query_invalid_json(rsps, client, body):
    rsps.get(NAMED_QUERY_URL, body=body)

    with pytest.raises(DlcsError, match="not JSON") as caught:
        client.named_query(2, [1234, 1235])

    assert isinstance(caught.value.__cause__, ValueError)


@pytest.mark.parametrize("body, message", [
    pytest.param(b'{"type": "Manifest", "items": [{"width": NaN}]}',
                 "holds NaN, which is not a JSON number", id="NaN"),
    pytest.param(b'{"type": "Manifest", "items": [], "x": -Infinity}',
                 "holds -Infinity, which is not a JSON number", id="-Infinity"),
    pytest.param(b'{"type": "Manifest", "items": [{"duration": 1e400}]}',
                 "holds 1e400, which is beyond the range of a double-precision number",
                 id="1e400"),
    pytest.param(b'{"type": "Manifest", "items": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                 "nested too deeply to read", id="100000-levels"),
])
def test_named_query_answers_that_cannot_be_published_are_dlcs_errors(rsps, client, body,
                                                                       message):
    rsps.get(NAMED_QUERY_URL, body=body)

    with pytest.raises(DlcsError, match=message):
        client.named_query(2, [1234, 1235])


def test_a_deeply_nested_error_body_is_only_a_status(rsps, client):
    rsps.get(BATCH_URL, status=500, body=b"[" * 100_000 + b"]" * 100_000)

    with pytest.raises(DlcsError) as caught:
        client.get_batch(2, 1234)

    assert str(caught.value) == "batch 1234 of customer 2: the DLCS answered 500"


def test_named_query_rejects_empty_batch_list(client):
    with pytest.raises(ValueError):
        client.named_query(2, [])


@pytest.mark.parametrize("call, variable", [
    (lambda c: c.named_query(2, [1]), "DLCS_ORCHESTRATOR_URL"),
    (lambda c: c.get_batch(2, 1), "DLCS_API_URL"),
    (lambda c: c.queue_assets(2, assets(1)), "DLCS_API_URL"),
], ids=["named-query", "get-batch", "queue"])
def test_missing_url_is_reported(rsps, session, call, variable):
    client = DlcsClient(orchestrator_url=None, api_url="", session=session)

    with pytest.raises(DlcsError, match=f"^{variable} is not configured$"):
        call(client)


# --- error statuses and network faults -------------------------------------------


def test_400_surfaces_dlcs_description(rsps, client):
    rsps.get(NAMED_QUERY_URL, status=400,
             json={"@type": "Error", "description": "Could not parse argument 'x'"})

    with pytest.raises(DlcsError, match="400: Could not parse argument 'x'") as caught:
        client.named_query(2, [1234, 1235])

    assert caught.value.status == 400
    assert caught.value.description == "Could not parse argument 'x'"


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials(rsps, client, status):
    rsps.get(BATCH_URL, status=status, body=b"")

    with pytest.raises(DlcsError, match=f"refused the request \\({status}\\)") as caught:
        client.get_batch(2, 1234)

    assert caught.value.status == status
    assert caught.value.description is None


def test_get_batch_404_is_a_plain_dlcs_error(rsps, client):
    rsps.get(BATCH_URL, status=404, json={"description": "Batch not found"})

    with pytest.raises(DlcsError, match="404: Batch not found") as caught:
        client.get_batch(2, 1234)

    assert not isinstance(caught.value, NamedQueryNotFound)


def test_500_without_json_body(rsps, client):
    rsps.get(BATCH_URL, status=500, body=b"Internal Server Error")

    with pytest.raises(DlcsError, match="answered 500$") as caught:
        client.get_batch(2, 1234)

    assert caught.value.status == 500
    assert caught.value.description is None


def test_long_description_is_truncated(rsps, client):
    rsps.get(BATCH_URL, status=400, json={"description": "x" * 5000})

    with pytest.raises(DlcsError) as caught:
        client.get_batch(2, 1234)

    assert len(str(caught.value)) < 600


def test_redirect_is_not_followed(rsps, client):
    rsps.get(NAMED_QUERY_URL, status=302, headers={"Location": "https://elsewhere.example/x"})

    with pytest.raises(DlcsError, match="redirect") as caught:
        client.named_query(2, [1234, 1235])

    assert caught.value.status == 302
    assert len(rsps.calls) == 1


@pytest.mark.parametrize("fault, message", [
    (requests.ConnectionError("connection refused"), "could not be reached"),
    (requests.exceptions.SSLError("bad certificate"), "could not be reached"),
    (requests.Timeout(), "did not answer within 7.5 s"),
    (requests.ReadTimeout(), "did not answer within 7.5 s"),
])
def test_network_faults_become_dlcs_errors(rsps, client, fault, message):
    rsps.get(NAMED_QUERY_URL, body=fault)

    with pytest.raises(DlcsError, match=message) as caught:
        client.named_query(2, [1234, 1235])

    assert caught.value.__cause__ is fault
    assert caught.value.status is None


def test_oversized_answer_is_refused(rsps, session):
    client = DlcsClient(orchestrator_url=ORCHESTRATOR, api_url=API, session=session,
                        max_response_bytes=100)
    rsps.get(NAMED_QUERY_URL, json={"items": ["x" * 200]})

    with pytest.raises(DlcsError, match="larger than 100 bytes"):
        client.named_query(2, [1234, 1235])


def test_answer_at_the_size_cap_is_read(rsps, session):
    body = json.dumps({"items": []}).encode()
    client = DlcsClient(orchestrator_url=ORCHESTRATOR, api_url=API, session=session,
                        max_response_bytes=len(body))
    rsps.get(NAMED_QUERY_URL, body=body)

    assert client.named_query(2, [1234, 1235]).size == len(body)


# --- retries (responses emulates urllib3's status retries) --------------------------


def test_get_retries_503_then_succeeds(rsps, client):
    rsps.get(NAMED_QUERY_URL, status=503)
    rsps.get(NAMED_QUERY_URL, status=503)
    rsps.get(NAMED_QUERY_URL, json={"items": []})

    assert client.named_query(2, [1234, 1235]).document == {"items": []}
    assert len(rsps.calls) == 3


@pytest.mark.parametrize("retries", [0, 1, 3])
def test_get_gives_up_after_configured_retries(rsps, retries):
    session = make_session(retries=retries, backoff=0)
    client = DlcsClient(orchestrator_url=ORCHESTRATOR, api_url=API, session=session)
    for _ in range(retries + 1):
        rsps.get(BATCH_URL, status=503, json={"description": "Service busy"})

    with pytest.raises(DlcsError, match="503: Service busy") as caught:
        client.get_batch(2, 1234)

    session.close()
    assert caught.value.status == 503
    assert len(rsps.calls) == retries + 1


@pytest.mark.parametrize("status", [502, 503, 504])
def test_queue_post_is_not_retried_on_5xx(rsps, client, status):
    rsps.post(QUEUE_URL, status=status)

    with pytest.raises(DlcsError) as caught:
        client.queue_assets(2, assets(2))

    assert caught.value.status == status
    assert len(rsps.calls) == 1


def test_default_client_builds_its_own_retrying_session():
    client = DlcsClient(orchestrator_url=ORCHESTRATOR, api_url=API)
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        mock.get(BATCH_URL, status=502)
        mock.get(BATCH_URL, json=batch_document(1234))
        assert client.get_batch(2, 1234).batch_id == 1234
    client.close()


# --- batches ---------------------------------------------------------------------


def test_get_batch_parses_the_batch_shape(rsps, client):
    document = batch_document(1234, count=2, completed=1, errors=1,
                              finished="2025-02-20T13:28:01.12+01:00")
    rsps.get(BATCH_URL, json=document,
             match=[matchers.header_matcher({"Authorization": BASIC}), SENT_AS_CONFIGURED])

    state = client.get_batch(2, 1234)

    assert state == BatchState(
        batch_id=1234, count=2, completed=1, errors=1, superseded=False,
        submitted=datetime(2025, 2, 20, 12, 28, 1, 517392, tzinfo=timezone.utc),
        finished=datetime(2025, 2, 20, 12, 28, 1, 120000, tzinfo=timezone.utc))
    assert state.finished.utcoffset().total_seconds() == 0


@pytest.mark.parametrize("changes", [
    {"finished": None},
    {},
])
def test_running_batch_has_no_finish(rsps, client, changes):
    rsps.get(BATCH_URL, json=batch_document(1234, **changes))

    assert client.get_batch(2, 1234).finished is None


def test_naive_dates_are_taken_as_utc(rsps, client):
    rsps.get(BATCH_URL, json=batch_document(1234, submitted="2025-02-20T12:28:01"))

    assert client.get_batch(2, 1234).submitted == datetime(2025, 2, 20, 12, 28, 1,
                                                           tzinfo=timezone.utc)


@pytest.mark.parametrize("changes, reason", [
    ({"@id": None}, "@id"),
    ({"@id": f"{API}/customers/2/queue/batches/latest"}, "@id"),
    ({"count": None}, "count"),
    ({"count": "2"}, "count"),
    ({"completed": True}, "completed"),
    ({"errors": -1}, "errors"),
    ({"superseded": "false"}, "superseded"),
    ({"submitted": "yesterday"}, "submitted"),
    ({"finished": 1740054481}, "finished"),
])
def test_get_batch_wrong_shape(rsps, client, changes, reason):
    rsps.get(BATCH_URL, json=batch_document(1234, **changes))

    with pytest.raises(DlcsError, match=f"not a DLCS batch .*{reason}") as caught:
        client.get_batch(2, 1234)

    assert caught.value.status == 200
    assert isinstance(caught.value.__cause__, ValueError)


def test_get_batch_not_an_object(rsps, client):
    rsps.get(BATCH_URL, json=[batch_document(1234)])

    with pytest.raises(DlcsError, match="not a DLCS batch"):
        client.get_batch(2, 1234)


# --- queue -----------------------------------------------------------------------


def test_queue_sends_a_hydra_collection(rsps, client):
    request = sample("queue-request.json")
    rsps.post(QUEUE_URL, status=201, json=sample("queue-response-201.json"),
              match=[matchers.json_params_matcher(request),
                     matchers.header_matcher({"Authorization": BASIC}), SENT_AS_CONFIGURED])

    states = client.queue_assets(2, request["member"])

    assert [state.batch_id for state in states] == [1234]
    assert states[0].count == 2
    assert states[0].finished is None


def test_queue_nothing_calls_nothing(rsps, client):
    assert client.queue_assets(2, []) == []


def test_queue_chunks_by_max_batch_size(rsps, session):
    client = DlcsClient(orchestrator_url=None, api_url=API, max_batch_size=100,
                        credentials=(KEY, SECRET), session=session)
    members = assets(250)
    for number, (start, end) in enumerate([(0, 100), (100, 200), (200, 250)], start=1):
        rsps.post(QUEUE_URL, status=201, json=batch_document(1000 + number, end - start),
                  match=[matchers.json_params_matcher(hydra(members[start:end])),
                         matchers.header_matcher({"Authorization": BASIC})])

    states = client.queue_assets(2, members)

    assert [state.batch_id for state in states] == [1001, 1002, 1003]
    assert [state.count for state in states] == [100, 100, 50]
    assert len(rsps.calls) == 3


def test_queue_does_not_mutate_or_require_dicts(rsps, client):
    from types import MappingProxyType
    members = assets(2)
    frozen = [MappingProxyType(member) for member in members]
    before = copy.deepcopy(members)
    rsps.post(QUEUE_URL, status=201, json=batch_document(1),
              match=[matchers.json_params_matcher(hydra(members))])

    client.queue_assets(2, frozen)

    assert members == before


def test_queue_partial_failure_keeps_queued_batches(rsps, session):
    client = DlcsClient(orchestrator_url=None, api_url=API, max_batch_size=100,
                        session=session)
    members = assets(250)
    rsps.post(QUEUE_URL, status=201, json=batch_document(1001, 100),
              match=[matchers.json_params_matcher(hydra(members[0:100]))])
    rsps.post(QUEUE_URL, status=400, json={"description": "Asset asset-150 has no origin"},
              match=[matchers.json_params_matcher(hydra(members[100:200]))])

    with pytest.raises(QueuePartiallyFailed) as caught:
        client.queue_assets(2, members)

    failure = caught.value
    assert isinstance(failure, DlcsError)
    assert [state.batch_id for state in failure.queued] == [1001]
    assert failure.assets_queued == 100
    assert failure.status == 400
    assert failure.description == "Asset asset-150 has no origin"
    assert "queued 100 of 250 assets in batches 1001" in str(failure)
    assert "Asset asset-150 has no origin" in str(failure)
    assert isinstance(failure.__cause__, DlcsError)
    assert len(rsps.calls) == 2  # the third chunk is never sent


def test_queue_partial_failure_on_network_fault(rsps, session):
    client = DlcsClient(orchestrator_url=None, api_url=API, max_batch_size=2, session=session)
    rsps.post(QUEUE_URL, status=201, json=batch_document(1, 2))
    rsps.post(QUEUE_URL, status=201, json=batch_document(2, 2))
    rsps.post(QUEUE_URL, body=requests.ConnectionError("reset"))

    with pytest.raises(QueuePartiallyFailed) as caught:
        client.queue_assets(2, assets(5))

    assert [state.batch_id for state in caught.value.queued] == [1, 2]
    assert caught.value.assets_queued == 4
    assert caught.value.status is None


def test_queue_first_chunk_failure_is_a_plain_error(rsps, session):
    client = DlcsClient(orchestrator_url=None, api_url=API, max_batch_size=2, session=session)
    rsps.post(QUEUE_URL, status=400, json={"description": "bad asset"})

    with pytest.raises(DlcsError, match="bad asset") as caught:
        client.queue_assets(2, assets(5))

    assert not isinstance(caught.value, QueuePartiallyFailed)


def test_queue_answer_that_is_not_a_batch(rsps, client):
    rsps.post(QUEUE_URL, status=201, json={"@id": "nope"})

    with pytest.raises(DlcsError, match="not a DLCS batch"):
        client.queue_assets(2, assets(1))


@pytest.mark.parametrize("setting", [{"max_batch_size": 0}, {"timeout": 0}])
def test_rejects_bad_configuration(session, setting):
    with pytest.raises(ValueError):
        DlcsClient(orchestrator_url=None, api_url=None, session=session, **setting)


# --- logging and secrets ---------------------------------------------------------


def test_one_debug_line_per_call(rsps, client, caplog):
    caplog.set_level(logging.DEBUG, logger="webhook.dlcs")
    rsps.get(BATCH_URL, json=batch_document(1234))
    rsps.get(NAMED_QUERY_URL, body=requests.ConnectionError("refused"))

    client.get_batch(2, 1234)
    with pytest.raises(DlcsError):
        client.named_query(2, [1234, 1235])

    records = [r for r in caplog.records if r.name == "webhook.dlcs"]
    assert len(records) == 2
    assert all(r.levelno == logging.DEBUG for r in records)
    assert re.fullmatch(rf"GET {re.escape(BATCH_URL)} -> 200 in \d+ ms", records[0].getMessage())
    # Without the query string: no log line carries one (the cacheBust).
    assert re.match(r"GET https://dlcs\.example/iiif-resource/v3/2/batch-query/1234,1235"
                    r" -> ConnectionError in \d+ ms$", records[1].getMessage())


@pytest.mark.parametrize("argument", ["orchestrator_url", "api_url"])
def test_urls_with_credentials_are_refused(session, argument):
    urls = {"orchestrator_url": ORCHESTRATOR, "api_url": API,
            argument: f"https://{KEY}:{SECRET}@dlcs.example"}

    with pytest.raises(ValueError, match=argument) as caught:
        DlcsClient(**urls, session=session)

    assert SECRET not in str(caught.value) and KEY not in str(caught.value)


def _secrets_absent(error: BaseException, caplog) -> None:
    forbidden = [KEY, SECRET, BASIC, BASIC.split()[1], "Authorization"]
    seen, texts = set(), [caplog.text]
    texts += [record.getMessage() for record in caplog.records]
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts += [str(current), repr(current), repr(current.args)]
        texts += [str(getattr(current, "description", ""))]
        current = current.__cause__ or current.__context__
    for text in texts:
        for secret in forbidden:
            assert secret not in text


LEAK_SCENARIOS = {
    "connection-error": lambda r, c: (
        r.get(NAMED_QUERY_URL, body=requests.ConnectionError("refused")),
        lambda: c.named_query(2, [1234, 1235])),
    "timeout": lambda r, c: (
        r.get(BATCH_URL, body=requests.Timeout("slow")),
        lambda: c.get_batch(2, 1234)),
    "401": lambda r, c: (
        r.get(BATCH_URL, status=401, json={"description": "Invalid credentials"}),
        lambda: c.get_batch(2, 1234)),
    "400": lambda r, c: (
        r.post(QUEUE_URL, status=400, json={"description": "bad"}),
        lambda: c.queue_assets(2, assets(1))),
    "invalid-json": lambda r, c: (
        r.get(NAMED_QUERY_URL, body=b"{"),
        lambda: c.named_query(2, [1234, 1235])),
    "wrong-shape": lambda r, c: (
        r.get(BATCH_URL, json={"@id": "x"}),
        lambda: c.get_batch(2, 1234)),
    "partial": lambda r, c: (
        r.post(QUEUE_URL, status=201, json=batch_document(1, 100)),
        r.post(QUEUE_URL, status=500),
        lambda: c.queue_assets(2, assets(150))),
}


@pytest.mark.parametrize("scenario", LEAK_SCENARIOS)
def test_credentials_never_leak(rsps, client, caplog, scenario):
    caplog.set_level(logging.DEBUG)
    *_, call = LEAK_SCENARIOS[scenario](rsps, client)

    with pytest.raises(DlcsError) as caught:
        call()

    _secrets_absent(caught.value, caplog)
    assert SECRET not in repr(client)


# --- a real loopback server: urllib3's own retry path ------------------------------


@pytest.fixture
def loopback():
    """Serve scripted answers on 127.0.0.1; each request takes the next one."""
    script: deque = deque()
    hits: list[tuple[str, str | None]] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self):
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            hits.append((self.command, self.headers.get("Authorization")))
            action = script.popleft()
            if action == "drop":
                return  # close the connection without answering: a read error
            status, headers, body = action
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield SimpleNamespace(url=f"http://127.0.0.1:{server.server_port}",
                              script=script, hits=hits)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def loopback_client(loopback):
    session = make_session(retries=2, backoff=0)
    session.trust_env = False  # no proxy from the environment between us and 127.0.0.1
    yield DlcsClient(orchestrator_url=loopback.url, api_url=loopback.url, timeout=5,
                     credentials=(KEY, SECRET), session=session)
    session.close()


def _ok_batch() -> tuple[int, dict, bytes]:
    return 200, {"Content-Type": "application/json"}, json.dumps(batch_document(7)).encode()


def test_loopback_get_retries_5xx(loopback, loopback_client):
    loopback.script.extend([(503, {}, b""), (502, {}, b""), _ok_batch()])

    assert loopback_client.get_batch(2, 7).batch_id == 7
    assert [method for method, _ in loopback.hits] == ["GET"] * 3
    assert all(auth == BASIC for _, auth in loopback.hits)


def test_loopback_get_gives_up_with_last_status(loopback, loopback_client, caplog):
    caplog.set_level(logging.DEBUG)
    busy = (503, {"Content-Type": "application/json"}, b'{"description": "busy"}')
    loopback.script.extend([busy] * 3)

    with pytest.raises(DlcsError, match="503: busy") as caught:
        loopback_client.get_batch(2, 7)

    assert len(loopback.hits) == 3
    _secrets_absent(caught.value, caplog)


def test_loopback_get_retries_a_dropped_connection(loopback, loopback_client):
    loopback.script.extend(["drop", _ok_batch()])

    assert loopback_client.get_batch(2, 7).batch_id == 7
    assert len(loopback.hits) == 2


def test_loopback_post_is_not_retried_after_sending(loopback, loopback_client, caplog):
    caplog.set_level(logging.DEBUG)
    loopback.script.extend(["drop", (201, {}, b"{}")])

    with pytest.raises(DlcsError, match="could not be reached") as caught:
        loopback_client.queue_assets(2, assets(1))

    assert loopback.hits == [("POST", BASIC)]
    _secrets_absent(caught.value, caplog)
    loopback.script.clear()


def test_loopback_post_is_not_retried_on_503(loopback, loopback_client):
    loopback.script.extend([(503, {}, b"")])

    with pytest.raises(DlcsError) as caught:
        loopback_client.queue_assets(2, assets(1))

    assert caught.value.status == 503
    assert len(loopback.hits) == 1


def test_loopback_retry_after_is_respected_but_capped(loopback):
    session = make_session(retries=1, backoff=0, max_retry_after=1)
    session.trust_env = False
    client = DlcsClient(orchestrator_url=None, api_url=loopback.url, timeout=5, session=session)
    # Uncapped, this would sleep 30 s and fail the bound below rather than hang.
    loopback.script.extend([(503, {"Retry-After": "30"}, b""), _ok_batch()])

    started = time.monotonic()
    assert client.get_batch(2, 7).batch_id == 7
    elapsed = time.monotonic() - started
    session.close()

    assert 0.9 <= elapsed < 10
    assert len(loopback.hits) == 2


@pytest.mark.parametrize("retry_after", ["soon", "\u00b2", "-5"])
@pytest.mark.parametrize("deadline", [None, 30], ids=["no-deadline", "deadline"])
def test_loopback_a_malformed_retry_after_counts_as_none(loopback, loopback_client,
                                                        retry_after, deadline):
    # urllib3 raised InvalidHeader on it, which ended a rebuild as "internal error".
    sample_answer = sample_bytes("named-query-2-assets.json")
    loopback.script.extend([
        (503, {"Retry-After": retry_after}, b""),
        (200, {"Content-Type": "application/json"}, sample_answer)])

    answer = loopback_client.named_query(
        2, [1234], deadline=None if deadline is None else Deadline.after(deadline))

    assert answer.size == len(sample_answer)
    assert len(loopback.hits) == 2


def test_loopback_refused_connection_is_retried_even_for_post(caplog):
    caplog.set_level(logging.WARNING, logger="urllib3.connectionpool")
    session = make_session(retries=2, backoff=0)
    session.trust_env = False
    # A port that was just free: nothing listens there, so nothing was sent.
    with ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler) as probe:
        closed_port = probe.server_port
    client = DlcsClient(orchestrator_url=None, api_url=f"http://127.0.0.1:{closed_port}",
                        timeout=5, session=session)

    with pytest.raises(DlcsError, match="could not be reached") as caught:
        client.queue_assets(2, assets(1))
    session.close()

    assert isinstance(caught.value.__cause__, requests.ConnectionError)
    # urllib3 logs one warning per retry it makes.
    retried = [r for r in caplog.records if r.getMessage().startswith("Retrying")]
    assert len(retried) == 2


def test_loopback_retries_what_the_deadline_leaves_time_for(loopback, loopback_client):
    answer = (200, {"Content-Type": "application/json"},
              json.dumps({"type": "Manifest", "items": []}).encode())
    loopback.script.extend([(503, {}, b""), (502, {}, b""), answer])

    found = loopback_client.named_query(2, [1234], deadline=Deadline.after(10))

    assert found.document == {"type": "Manifest", "items": []}
    assert len(loopback.hits) == 3


def test_loopback_no_retry_starts_that_the_deadline_would_cut_short(loopback):
    session = make_session(retries=2, backoff=0, max_retry_after=10)
    session.trust_env = False
    client = DlcsClient(orchestrator_url=loopback.url, api_url=None, timeout=5, session=session)
    busy = (503, {"Retry-After": "5", "Content-Type": "application/json"},
            b'{"description": "busy"}')
    loopback.script.extend([busy, busy, busy])

    # Waiting 5 s as asked would leave less than a second of the 3 s deadline.
    with pytest.raises(DlcsError, match="answered 503: busy") as caught:
        client.named_query(2, [1234], deadline=Deadline.after(3))
    session.close()

    assert caught.value.status == 503
    assert len(loopback.hits) == 1
    loopback.script.clear()


def test_session_retry_policy():
    session = make_session(retries=4, backoff=0.25)
    retry = session.get_adapter("https://dlcs.example").max_retries
    session.close()

    assert session.get_adapter("http://dlcs.example").max_retries is retry
    assert (retry.total, retry.connect, retry.read, retry.status) == (4, 4, 4, 4)
    assert retry.backoff_factor == 0.25
    assert set(retry.status_forcelist) == {502, 503, 504}
    assert "GET" in retry.allowed_methods and "POST" not in retry.allowed_methods
    assert retry.respect_retry_after_header and not retry.raise_on_status
