"""GET /metrics: counters that move as users act, the switches, and several gunicorn workers.

In-process tests read the metrics the way Prometheus does, by scraping /metrics
and parsing the text, and compare before and after an action (the registry is
the process's, shared by every test). The multi-worker test runs gunicorn with
three workers from ``gunicorn.conf.py`` and checks that whichever worker answers
a scrape reports every worker's deliveries.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import re
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import responses
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ADMIN_TOKEN, ORCHESTRATOR, SECRET, sample, signed_headers
from webhook import create_app, db
from webhook.config import Settings, parse_storage_url
from webhook.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
NAMED_QUERY = re.compile(ORCHESTRATOR + r"/iiif-resource/v3/2/batch-query/1234,1235\?cacheBust=.+")
METRICS_TOKEN = "metrics-token-2b7e151628aed2a6"


# ----------------------------------------------------------------- helpers


def scrape(client, headers: dict | None = None) -> dict:
    """Return every sample /metrics reports, keyed by (name, sorted labels)."""
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.data
    assert response.mimetype == "text/plain"
    return parse(response.get_data(as_text=True))


def parse(text: str) -> dict:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def moved(before: dict, after: dict, name: str, **labels) -> float:
    """How much one sample changed between two scrapes."""
    return value(after, name, **labels) - value(before, name, **labels)


def deliver(client, body: bytes, **signing):
    return client.post("/webhooks/batch-completed", data=body, headers=signed_headers(body, **signing))


def completion(batch: int) -> bytes:
    return json.dumps({**json.loads(sample("notification-current.json")), "id": batch}).encode()


@pytest.fixture
def registered(client, admin):
    """Manifest 2/letters, ingesting in batches 1234 and 1235."""
    body = json.loads(sample("registration-2-assets.json"))
    body["batches"] = [1234, 1235]
    assert client.put("/2/manifests/letters", json=body, headers=admin).status_code == 202


# ----------------------------------------------------------------- counters move


def test_a_delivery_is_counted_by_transport_and_outcome(client, registered):
    before = scrape(client)
    assert deliver(client, completion(1234)).get_json()["outcome"] == "batch-completed"
    assert deliver(client, completion(777)).get_json()["outcome"] == "ignored"
    after = scrape(client)

    name = "webhook_deliveries_total"
    assert moved(before, after, name, transport="webhook", outcome="batch-completed") == 1
    assert moved(before, after, name, transport="webhook", outcome="ignored") == 1
    assert moved(before, after, name, transport="webhook", outcome="manifest-completed") == 0


def test_an_unprocessable_delivery_is_counted_as_such(client):
    before = scrape(client)
    assert deliver(client, b"not json").status_code == 422
    after = scrape(client)
    assert moved(before, after, "webhook_deliveries_total",
                 transport="webhook", outcome="unprocessable") == 1


@pytest.mark.parametrize("signing, reason", [
    ({"secret": "whsec_c2Vjb25kLXNlY3JldA=="}, "bad-signature"),
    ({"timestamp": 1}, "timestamp-too-old"),
    (None, "missing-header"),
])
def test_a_refused_signature_is_counted_by_reason(client, signing, reason):
    body = completion(1234)
    before = scrape(client)
    headers = signed_headers(body, **signing) if signing is not None else {}
    response = client.post("/webhooks/batch-completed", data=body, headers=headers)
    assert response.status_code == 401 and response.get_json()["reason"] == reason
    after = scrape(client)

    assert moved(before, after, "webhook_signature_failures_total",
                 transport="webhook", reason=reason) == 1
    # Refused deliveries are not deliveries.
    assert sum(moved(before, after, "webhook_deliveries_total", transport="webhook",
                     outcome=outcome)
               for outcome in ("ignored", "batch-completed", "unprocessable", "error")) == 0


def test_a_refused_sns_message_is_counted_by_reason(settings):
    topic = "arn:aws:sns:eu-west-1:123456789012:dlcs-batch-completion"
    client = create_app(dataclasses.replace(settings, sns_topic_arns=(topic,)),
                        sns_fetcher=_no_fetch, sns_confirmer=_no_fetch).test_client()
    message = {"Type": "Notification", "MessageId": "m-1", "TopicArn": topic, "Message": "{}",
               "Timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
               "SignatureVersion": "2", "Signature": "!!! not base64 !!!",
               "SigningCertURL": "https://sns.eu-west-1.amazonaws.com/cert.pem"}
    before = scrape(client)
    response = client.post("/webhooks/sns", data=json.dumps(message),
                           headers={"x-amz-sns-message-type": "Notification"})
    after = scrape(client)
    db.dispose()

    assert response.status_code == 401
    assert moved(before, after, "webhook_signature_failures_total",
                 transport="sns", reason=response.get_json()["reason"]) == 1


def _no_fetch(url: str):
    raise AssertionError(f"nothing should be fetched: {url}")


def test_a_rebuild_is_timed_with_its_dlcs_and_storage_calls(client, registered):
    assert deliver(client, completion(1235)).status_code == 200
    before = scrape(client)
    with responses.RequestsMock() as mock:
        mock.get(NAMED_QUERY, body=sample("named-query-2-assets.json"))
        assert deliver(client, completion(1234)).get_json()["outcome"] == "manifest-completed"
    after = scrape(client)

    assert moved(before, after, "webhook_rebuild_duration_seconds_count", outcome="published") == 1
    assert moved(before, after, "webhook_rebuild_duration_seconds_sum", outcome="published") > 0
    assert moved(before, after, "webhook_dlcs_request_duration_seconds_count",
                 call="named_query") == 1
    assert moved(before, after, "webhook_storage_operation_duration_seconds_count",
                 operation="put", backend="file") == 1
    assert moved(before, after, "webhook_deliveries_total",
                 transport="webhook", outcome="manifest-completed") == 1
    assert value(after, "webhook_manifests_awaiting_rebuild") == 0


@pytest.mark.parametrize("answer, reason", [
    ({"status": 500, "json": {"description": "named query failed"}}, "status-500"),
    ({"body": requests.ConnectTimeout("slow")}, "timeout"),
    ({"body": requests.ConnectionError("refused")}, "unreachable"),
])
def test_a_dlcs_failure_is_counted_and_the_manifest_awaits_a_rebuild(client, admin, registered,
                                                                     answer, reason):
    assert deliver(client, completion(1235)).status_code == 200
    before = scrape(client)
    with responses.RequestsMock() as mock:
        mock.get(NAMED_QUERY, **answer)
        assert deliver(client, completion(1234)).status_code == 503
    after = scrape(client)

    assert moved(before, after, "webhook_dlcs_errors_total", call="named_query", reason=reason) == 1
    assert moved(before, after, "webhook_rebuild_failures_total", stage="named_query") == 1
    assert moved(before, after, "webhook_rebuild_duration_seconds_count", outcome="failed") == 1
    assert moved(before, after, "webhook_deliveries_total", transport="webhook",
                 outcome="failed") == 1
    assert value(after, "webhook_manifests_awaiting_rebuild") == 1

    with responses.RequestsMock() as mock:  # the operator's rebuild clears the gauge
        mock.get(NAMED_QUERY, body=sample("named-query-2-assets.json"))
        assert client.post("/2/manifests/letters/rebuild", headers=admin).status_code == 200
    assert value(scrape(client), "webhook_manifests_awaiting_rebuild") == 0


def test_a_storage_failure_is_counted(settings, tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("a file where the store wants a directory")
    client = create_app(dataclasses.replace(
        settings, storage=parse_storage_url(f"file://{blocked}/manifests"))).test_client()
    before = scrape(client)
    assert client.get("/readyz").status_code == 503
    after = scrape(client)
    db.dispose()

    assert moved(before, after, "webhook_storage_errors_total", operation="check",
                 backend="file") == 1
    assert moved(before, after, "webhook_storage_operation_duration_seconds_count",
                 operation="check", backend="file") == 1


def test_the_exposition_is_the_prometheus_text_format(client):
    response = client.get("/metrics")
    text = response.get_data(as_text=True)
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    assert "# TYPE webhook_deliveries_total counter" in text
    assert "# TYPE webhook_rebuild_duration_seconds histogram" in text
    assert "# TYPE webhook_manifests_awaiting_rebuild gauge" in text
    assert "_created" not in text
    assert response.headers["X-Request-Id"]


# ----------------------------------------------------------------- switches


def test_metrics_off_means_no_endpoint(settings):
    client = create_app(dataclasses.replace(settings, metrics_enabled=False)).test_client()
    response = client.get("/metrics")
    db.dispose()
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"


def test_a_metrics_token_is_required_when_set(settings):
    client = create_app(dataclasses.replace(settings, metrics_token=METRICS_TOKEN)).test_client()
    missing = client.get("/metrics")
    wrong = client.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    right = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    db.dispose()

    for refused in (missing, wrong):
        assert refused.status_code == 401
        assert refused.mimetype == "application/problem+json"
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
        assert b"webhook_" not in refused.data
    assert right.status_code == 200 and b"webhook_deliveries" in right.data


def test_without_a_token_metrics_are_open(client):
    assert client.get("/metrics").status_code == 200


@pytest.mark.parametrize("environ, expected", [
    ({}, (True, None)),
    ({"METRICS": "off"}, (False, None)),
    ({"METRICS": " OFF "}, (False, None)),
    ({"METRICS": "on", "METRICS_TOKEN": METRICS_TOKEN}, (True, METRICS_TOKEN)),
])
def test_metrics_settings(environ, expected):
    settings = Settings.from_env(environ)
    assert (settings.metrics_enabled, settings.metrics_token) == expected
    assert METRICS_TOKEN not in repr(settings)


@pytest.mark.parametrize("variable, value", [
    ("METRICS", "yes"),
    ("METRICS", "0"),
    ("METRICS_TOKEN", "short-token"),
    ("METRICS_TOKEN", "a token with spaces in it"),
    ("PROMETHEUS_MULTIPROC_DIR", "/nonexistent/metrics/dir"),
])
def test_a_bad_metrics_setting_names_the_variable(variable, value):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({variable: value})
    assert caught.value.variable == variable
    if variable == "METRICS_TOKEN":
        assert value not in str(caught.value)


def test_the_multiprocess_directory_is_read(tmp_path):
    settings = Settings.from_env({"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)})
    assert settings.metrics_multiprocess_dir == str(tmp_path)


# ----------------------------------------------------------------- several workers


def _environment(tmp_path: Path) -> dict[str, str]:
    own = ("AWS_", "DLCS_", "WEBHOOK_", "SNS_", "GUNICORN_", "METRICS", "PROMETHEUS_")
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(own) and name not in {"DATABASE_URL", "STORAGE_URL",
                                                        "PUBLIC_BASE_URL", "ADMIN_TOKEN"}}
    env.update({"DATABASE_URL": f"sqlite:///{tmp_path}/webhook.db",
                "STORAGE_URL": f"file://{tmp_path}/manifests",
                "WEBHOOK_SECRETS": SECRET, "ADMIN_TOKEN": ADMIN_TOKEN,
                "GUNICORN_GRACEFUL_TIMEOUT": "5", "PYTHONUNBUFFERED": "1"})
    return env


def _send(port: int, batches: list[int]) -> list[int]:
    """POST one signed completion per batch over one keep-alive connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    statuses = []
    try:
        for batch in batches:
            body = completion(batch)
            connection.request("POST", "/webhooks/batch-completed", body=body,
                               headers=signed_headers(body))
            response = connection.getresponse()
            response.read()
            statuses.append(response.status)
    finally:
        connection.close()
    return statuses


def _scrape_over_new_connection(port: int) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        assert response.status == 200
        return parse(response.read().decode())
    finally:
        connection.close()


def _delivery_workers(log: str) -> dict[int, int]:
    """Count the answered deliveries per worker pid, from the JSON request lines."""
    workers: dict[int, int] = {}
    for line in log.splitlines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        if entry.get("message") == "request" and entry.get("path") == "/webhooks/batch-completed":
            workers[entry["pid"]] = workers.get(entry["pid"], 0) + 1
    return workers


@pytest.mark.e2e
def test_every_worker_reports_the_deliveries_of_all(tmp_path):
    from tests.servers import start_gunicorn

    server = start_gunicorn(_environment(tmp_path), cwd=ROOT, workers=3, threads=1)
    try:
        sent, connections, per_connection = 0, 6, 5
        # Connections go to whichever worker accepts them first; send until
        # more than one worker has answered, so the total is really a sum.
        for attempt in range(10):
            batches = [[10_000 + sent + c * per_connection + n for n in range(per_connection)]
                       for c in range(connections)]
            with ThreadPoolExecutor(connections) as pool:
                results = list(pool.map(lambda b: _send(server.port, b), batches))
            assert all(status == 200 for statuses in results for status in statuses)
            sent += connections * per_connection
            if len(_delivery_workers(server.log())) >= 2:
                break
        workers = _delivery_workers(server.log())
        assert len(workers) >= 2, workers
        assert sum(workers.values()) == sent

        def reported(samples):
            return value(samples, "webhook_deliveries_total", transport="webhook",
                         outcome="ignored")

        # Each scrape may be answered by any worker; every one reports the sum.
        assert [reported(_scrape_over_new_connection(server.port)) for _ in range(6)] == [sent] * 6

        # A worker that dies takes none of its counts with it.
        victim = max(workers, key=workers.get)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while server.log().count("Booting worker") < 4:
            assert time.monotonic() < deadline, server.log()[-3000:]
            time.sleep(0.1)
        assert [reported(_scrape_over_new_connection(server.port)) for _ in range(6)] == [sent] * 6
    finally:
        status = server.stop()
        print(f"--- gunicorn exited with {status}; its log:\n{server.log()[-20000:]}")
        server.cleanup()
