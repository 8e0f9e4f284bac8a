"""Logs: one JSON line per request and per rebuild, a request id, and never a secret.

The secrets test configures every secret the service knows (webhook secret,
admin token, DLCS credentials, a database password, a metrics token), drives
every path a user can take with them (good and forged webhooks, SNS messages,
admin calls with right and wrong tokens, DLCS failures seen through
``responses``), with every logger at DEBUG, and then searches everything that
was logged: caplog's records (their messages, arguments, extra fields and
tracebacks) and the JSON lines a real handler wrote.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import io
import json
import logging
import re
import sys
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests
import responses
from cryptography.hazmat.primitives.asymmetric import rsa
from responses import matchers

from tests.conftest import ADMIN_TOKEN, ORCHESTRATOR, SECRET, sample, signed_headers
from tests.test_sns import FakeSns, envelope, make_certificate
from tests.test_sns import post as post_sns
from tests.test_sns import sign as sign_sns
from webhook import create_app, db, logs
from webhook.config import Settings

API = "https://api.dlcs.test"
TOPIC = "arn:aws:sns:eu-west-1:123456789012:dlcs-batch-completion"
DLCS_KEY = "dlcs-key-6f1c0e9a"
DLCS_SECRET = "dlcs-secret-93b27d54e1"
BASIC = base64.b64encode(f"{DLCS_KEY}:{DLCS_SECRET}".encode()).decode()
METRICS_TOKEN = "metrics-token-5d41402abc4b2a76"
WRONG_TOKEN = "wrong-token-7c4a8d09ca3762af"
DB_PASSWORD = "db-password-e4da3b7fbbce2345"
OTHER_SECRET = "whsec_c2Vjb25kLXNlY3JldA=="
NAMED_QUERY = re.compile(ORCHESTRATOR + r"/iiif-resource/v3/2/batch-query/1234\?cacheBust=.+")
REQUEST_ID = re.compile(r"[0-9a-f]{32}")


# ----------------------------------------------------------------- fixtures


def _with_password(url: str) -> tuple[str, str | None]:
    """Put a password in a PostgreSQL URL (trust authentication ignores it)."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        return url, None
    if parts.password:
        return url, parts.password
    netloc = f"{parts.username or 'postgres'}:{DB_PASSWORD}@{parts.hostname}:{parts.port or 5432}"
    return urlunsplit(parts._replace(netloc=netloc)), DB_PASSWORD


@pytest.fixture
def database(database_url):
    return _with_password(database_url)


@pytest.fixture
def settings(database, tmp_path) -> Settings:
    return Settings.from_env({
        "DATABASE_URL": database[0],
        "STORAGE_URL": f"file://{tmp_path}/manifests",
        "PUBLIC_BASE_URL": "https://presentation.example",
        "WEBHOOK_SECRETS": SECRET,
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "DLCS_ORCHESTRATOR_URL": ORCHESTRATOR,
        "DLCS_API_URL": API,
        "DLCS_API_KEY": DLCS_KEY,
        "DLCS_API_SECRET": DLCS_SECRET,
        "DLCS_TIMEOUT_SECONDS": "5",
        "METRICS_TOKEN": METRICS_TOKEN,
        "SNS_TOPIC_ARNS": TOPIC,
    })


@pytest.fixture(scope="module")
def sns_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def app(settings, sns_key):
    fake = FakeSns(make_certificate(sns_key))
    application = create_app(settings, sns_fetcher=fake.fetch, sns_confirmer=fake.confirm)
    yield application
    db.dispose()


@pytest.fixture
def json_lines():
    """What a JSON handler on the root logger writes while the test runs."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    yield stream
    root.removeHandler(handler)


@pytest.fixture
def everything(caplog, app):
    """Every logger at DEBUG, including those the app gave a level of their own."""
    caplog.set_level(logging.DEBUG)
    for name, logger in list(logging.Logger.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and logger.level != logging.NOTSET:
            caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def entries(stream: io.StringIO) -> list[dict]:
    """Parse the JSON lines; every line must be one JSON object."""
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def request_lines(stream: io.StringIO) -> list[dict]:
    return [e for e in entries(stream) if e["logger"] == "webhook.request"]


def completion(batch: int) -> bytes:
    return json.dumps({**json.loads(sample("notification-current.json")), "id": batch}).encode()


def registration(batches: list[int] | None) -> dict:
    body = json.loads(sample("registration-2-assets.json"))
    if batches is None:
        del body["batches"]
    else:
        body["batches"] = batches
    return body


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


# ----------------------------------------------------------------- the request line


def test_a_delivery_logs_one_line_with_its_fields(client, json_lines):
    body = completion(777)
    headers = {**signed_headers(body, msg_id="msg_logged"), "X-Request-Id": "trace-42.a_b"}
    response = client.post("/webhooks/batch-completed", data=body, headers=headers)

    assert response.status_code == 200
    assert response.headers["X-Request-Id"] == "trace-42.a_b"
    [line] = request_lines(json_lines)
    assert line["message"] == "request" and line["level"] == "INFO"
    assert {key: line[key] for key in ("method", "path", "status", "request_id", "transport",
                                       "delivery_id", "batch", "manifest", "outcome")} == {
        "method": "POST", "path": "/webhooks/batch-completed", "status": 200,
        "request_id": "trace-42.a_b", "transport": "webhook", "delivery_id": "msg_logged",
        "batch": 777, "manifest": None, "outcome": "ignored"}
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert isinstance(line["pid"], int) and line["time"].endswith("Z")


@pytest.mark.parametrize("given", [None, "", "has space", "x" * 65, "-leading-dash",
                                   "semi;colon", "ünïcode"])
def test_an_unsafe_request_id_is_replaced(client, json_lines, given):
    headers = {} if given is None else {"X-Request-Id": given}
    response = client.get("/healthz", headers=headers)

    request_id = response.headers["X-Request-Id"]
    assert REQUEST_ID.fullmatch(request_id)
    [line] = request_lines(json_lines)
    assert line["request_id"] == request_id
    assert (line["path"], line["status"]) == ("/healthz", 200)


def test_request_ids_differ_between_requests(client):
    ids = {client.get("/healthz").headers["X-Request-Id"] for _ in range(5)}
    assert len(ids) == 5


def test_a_refused_delivery_logs_its_reason(client, json_lines):
    body = completion(1234)
    response = client.post("/webhooks/batch-completed", data=body,
                           headers=signed_headers(body, msg_id="msg_forged", secret=OTHER_SECRET))

    assert response.status_code == 401
    [line] = request_lines(json_lines)
    assert (line["status"], line["outcome"], line["reason"], line["problem"], line["delivery_id"]) \
        == (401, "rejected", "bad-signature", "invalid-signature", "msg_forged")


def test_every_request_logs_exactly_one_line(client, admin, json_lines):
    answers = [client.get("/healthz"), client.get("/nowhere"),
               client.delete("/webhooks/batch-completed"),
               client.get("/deliveries", headers=admin),
               client.get("/metrics", headers=bearer(METRICS_TOKEN)),
               client.post("/webhooks/batch-completed", data=b"{}")]
    lines = request_lines(json_lines)
    assert [(line["path"], line["status"]) for line in lines] == [
        ("/healthz", 200), ("/nowhere", 404), ("/webhooks/batch-completed", 405),
        ("/deliveries", 200), ("/metrics", 200), ("/webhooks/batch-completed", 401)]
    assert [line["request_id"] for line in lines] == [a.headers["X-Request-Id"] for a in answers]
    assert lines[1]["problem"] == "not-found"


def test_the_query_string_is_not_logged(client, admin, json_lines):
    client.get("/deliveries?batch=1234&token=not-for-logs", headers=admin)
    [line] = request_lines(json_lines)
    assert line["path"] == "/deliveries"
    assert "not-for-logs" not in json_lines.getvalue()


# ----------------------------------------------------------------- the rebuild line


def test_a_rebuild_logs_one_line_with_its_timings(client, admin, json_lines):
    assert client.put("/2/manifests/letters", json=registration([1234]),
                      headers=admin).status_code == 202
    body = completion(1234)
    with responses.RequestsMock() as mock:
        mock.get(NAMED_QUERY, status=500, json={"description": "the DLCS is down"})
        failed = client.post("/webhooks/batch-completed", data=body,
                             headers=signed_headers(body, msg_id="msg_rebuild"))
    with responses.RequestsMock() as mock:
        mock.get(NAMED_QUERY, body=sample("named-query-2-assets.json"))
        published = client.post("/webhooks/batch-completed", data=body,
                                headers=signed_headers(body, msg_id="msg_rebuild"))
    assert (failed.status_code, published.status_code) == (503, 200)

    first, second = [e for e in entries(json_lines) if e["logger"] == "webhook.rebuild"]
    assert first["level"] == "WARNING" and first["message"] == "rebuild"
    assert (first["manifest"], first["batch"], first["outcome"], first["stage"]) == (
        "2/letters", 1234, "failed", "named_query")
    assert "500" in first["error"] and "the DLCS is down" in first["error"]
    assert first["request_id"] == failed.headers["X-Request-Id"]

    assert (second["manifest"], second["outcome"], second["canvases"],
            second["missing_assets"]) == ("2/letters", "published", 2, 0)
    for timing in ("named_query_ms", "build_ms", "store_ms", "duration_ms"):
        assert isinstance(second[timing], float) and second[timing] >= 0
    assert second["duration_ms"] >= second["named_query_ms"] + second["store_ms"]
    assert second["request_id"] == published.headers["X-Request-Id"]
    assert "error" not in second

    lines = request_lines(json_lines)
    assert (lines[-2]["status"], lines[-2]["outcome"], lines[-2]["manifest"]) == (
        503, "failed", "2/letters")
    assert (lines[-1]["status"], lines[-1]["outcome"]) == (200, "manifest-completed")


# ----------------------------------------------------------------- no secret, anywhere


class Sent:
    """Every credential-like value the test sends, to look for in the logs afterwards."""

    def __init__(self):
        self.values: set[str] = set()

    def webhook(self, client, body: bytes, **signing):
        headers = signed_headers(body, **signing)
        signature = headers["webhook-signature"]
        self.values.update({signature, signature.split(",", 1)[1]})
        return client.post("/webhooks/batch-completed", data=body, headers=headers)


def _logged_texts(caplog, stream: io.StringIO) -> list[str]:
    formatter = logs.JsonFormatter()
    texts = [caplog.text, stream.getvalue()]
    for record in caplog.records:
        texts += [record.getMessage(), repr(record.args), repr(getattr(record, "fields", None)),
                  record.exc_text or "", formatter.format(record)]
    return texts


def test_no_secret_reaches_any_log(client, admin, everything, json_lines, database, sns_key):
    sent = Sent()
    key_b64 = SECRET.removeprefix("whsec_")

    # Webhooks: good, forged, expired, unsigned, and one carrying an Authorization header.
    assert sent.webhook(client, completion(777)).status_code == 200
    assert sent.webhook(client, completion(777), secret=OTHER_SECRET).status_code == 401
    assert sent.webhook(client, completion(777), timestamp=1).status_code == 401
    assert client.post("/webhooks/batch-completed", data=completion(777),
                       headers={**bearer(ADMIN_TOKEN), "webhook-signature": "v1,"
                                + key_b64}).status_code == 401
    assert sent.webhook(client, b"not json").status_code == 422

    # Admin calls with wrong and right tokens.
    for headers in ({}, bearer(WRONG_TOKEN), {"Authorization": f"Basic {BASIC}"},
                    bearer(ADMIN_TOKEN + "x")):
        assert client.get("/deliveries", headers=headers).status_code == 401
        assert client.put("/2/manifests/letters", json=registration([1234]),
                          headers=headers).status_code == 401
    assert client.put("/2/manifests/letters", json=registration([1234]),
                      headers=admin).status_code == 202
    assert client.get("/2/manifests/letters/status", headers=admin).status_code == 200
    assert client.get("/deliveries", headers=admin).status_code == 200

    # The last batch completes while the DLCS fails; then a manual rebuild succeeds.
    with responses.RequestsMock() as mock:
        mock.get(NAMED_QUERY, status=500, json={"description": "internal error"})
        assert sent.webhook(client, completion(1234), msg_id="msg_last").status_code == 503
    with responses.RequestsMock() as mock:
        mock.get(NAMED_QUERY, body=requests.ConnectionError("refused"))
        assert client.post("/deliveries/msg_last/replay", headers=admin).status_code == 503
    with responses.RequestsMock() as mock:
        mock.get(NAMED_QUERY, body=sample("named-query-2-assets.json"))
        assert client.post("/2/manifests/letters/rebuild", headers=admin).status_code == 200

    # The service queues assets itself, with HTTP Basic credentials the DLCS refuses.
    with responses.RequestsMock() as mock:
        mock.post(f"{API}/customers/2/queue", status=401,
                  json={"description": "bad credentials"},
                  match=[matchers.header_matcher({"Authorization": f"Basic {BASIC}"})])
        assert client.put("/2/manifests/queued", json=registration(None),
                          headers=admin).status_code == 503
    # Reconciling asks the DLCS API for a batch, with the same credentials.
    assert client.put("/2/manifests/other", json=registration([4321]),
                      headers=admin).status_code == 202
    with responses.RequestsMock() as mock:
        mock.get(f"{API}/customers/2/queue/batches/4321", status=403,
                 match=[matchers.header_matcher({"Authorization": f"Basic {BASIC}"})])
        assert client.post("/2/manifests/other/reconcile", headers=admin).status_code == 503

    # SNS: an authentic notification and a forged one.
    message = sign_sns(envelope(Message=completion(888).decode()), sns_key)
    assert post_sns(client, message).status_code == 200
    forged = {**message, "MessageId": str(uuid.uuid4())}
    assert post_sns(client, forged).status_code == 401

    # Metrics with a wrong and the right token.
    assert client.get("/metrics", headers=bearer(WRONG_TOKEN)).status_code == 401
    assert client.get("/metrics", headers=bearer(METRICS_TOKEN)).status_code == 200

    forbidden = {SECRET, key_b64, ADMIN_TOKEN, WRONG_TOKEN, DLCS_KEY, DLCS_SECRET, BASIC,
                 METRICS_TOKEN, "Authorization", "Bearer", *sent.values}
    if database[1] is not None:
        forbidden.add(database[1])
    texts = _logged_texts(everything, json_lines)
    assert len(request_lines(json_lines)) == 26  # one line for each request above
    leaks = {secret for secret in forbidden for text in texts if secret in text}
    assert not leaks


def test_no_database_password_reaches_the_logs_when_the_database_is_down(
        settings, everything, json_lines):
    url = f"postgresql://webhook:{DB_PASSWORD}@127.0.0.1:1/webhook"
    client = create_app(dataclasses.replace(settings, database_url=url),
                        migrate=False).test_client()
    try:
        assert client.get("/readyz").status_code == 503
        body = completion(777)
        assert client.post("/webhooks/batch-completed", data=body,
                           headers=signed_headers(body)).status_code == 503
        assert client.get("/metrics", headers=bearer(METRICS_TOKEN)).status_code == 200
    finally:
        db.dispose()

    texts = _logged_texts(everything, json_lines)
    assert any("database unavailable" in text for text in texts)
    assert not [text for text in texts if DB_PASSWORD in text]


# ----------------------------------------------------------------- configuration


def test_configure_leaves_configured_logging_alone():
    root = logging.getLogger()
    assert root.handlers  # pytest's own capture handlers
    before = list(root.handlers)
    assert logs.configure() is False
    assert root.handlers == before


def test_configure_installs_json_on_stderr_when_nothing_is_configured(monkeypatch, capsys):
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    level = root.level
    try:
        assert logs.configure() is True
        [handler] = root.handlers
        assert isinstance(handler.formatter, logs.JsonFormatter)
        logging.getLogger("webhook.test").warning("hello %s", "world")
        assert logs.configure() is False  # once only
    finally:
        root.setLevel(level)
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert (line["level"], line["logger"], line["message"]) == ("WARNING", "webhook.test",
                                                                "hello world")


def test_the_formatter_writes_tracebacks_and_any_field_as_json():
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("webhook.test").makeRecord(
            "webhook.test", logging.ERROR, __file__, 1, "failed", (), sys.exc_info(),
            extra={"fields": {"when": dt.date(2025, 1, 2), "n": 3,
                              "message": "must not replace the message"}})
    entry = json.loads(logs.JsonFormatter().format(record))
    assert entry["message"] == "failed" and entry["n"] == 3 and entry["when"] == "2025-01-02"
    assert "ValueError: boom" in entry["exception"]
    assert "request_id" not in entry  # logged outside any request
