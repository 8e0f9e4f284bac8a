"""The operator commands, through Flask's CLI runner."""

import dataclasses
import json
import re
import shlex
import time

import responses

from tests.conftest import ORCHESTRATOR, sample
from webhook import create_app, db
from webhook.schemas import parse_notification
from webhook.signature import verify

WEBHOOK_URL = "https://presentation.example/webhooks/batch-completed"


def _register(client, admin):
    response = client.put("/2/manifests/letters", data=sample("registration-2-assets.json"),
                          headers=admin)
    assert response.status_code == 202


def test_db_version_and_upgrade(app):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["db", "version"])
    assert result.exit_code == 0
    latest = sorted(p.stem for p in db.MIGRATIONS_DIR.glob("[0-9]*.py"))[-1]
    assert result.output.splitlines() == [f"current: {latest}", "pending: none"]
    result = runner.invoke(args=["db", "upgrade"])
    assert result.exit_code == 0 and f"up to date at {latest}" in result.output


def test_status_prints_the_same_json_as_the_endpoint(app, client, admin):
    _register(client, admin)
    result = app.test_cli_runner().invoke(args=["status", "2", "letters"])
    assert result.exit_code == 0
    assert json.loads(result.output) == client.get("/2/manifests/letters/status",
                                                   headers=admin).json


def test_status_of_an_unknown_manifest_fails(app):
    result = app.test_cli_runner().invoke(args=["status", "2", "nope"])
    assert result.exit_code == 1
    assert "No manifest 2/nope is registered" in result.output


def test_rebuild_refuses_while_ingesting_then_rebuilds(app, client, admin):
    _register(client, admin)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["rebuild", "2", "letters"])
    assert result.exit_code == 1 and "still ingesting" in result.output

    body = sample("notification-current.json")
    with responses.RequestsMock() as mock:
        mock.get(re.compile(ORCHESTRATOR + r"/iiif-resource/v3/2/batch-query/1234\?cacheBust=.+"),
                 body=sample("named-query-2-assets.json"))
        mock.get(re.compile(ORCHESTRATOR + r"/iiif-resource/v3/2/batch-query/1234\?cacheBust=.+"),
                 body=sample("named-query-2-assets.json"))
        from tests.conftest import signed_headers
        assert client.post("/webhooks/batch-completed", data=body,
                           headers=signed_headers(body)).json["outcome"] == "manifest-completed"
        result = runner.invoke(args=["rebuild", "2", "letters"])
    assert result.exit_code == 0
    assert json.loads(result.output) == {"outcome": "manifest-completed", "batch": None,
                                         "manifest": "2/letters"}


def test_completion_curl_prints_a_signed_request_the_service_accepts(app, settings):
    result = app.test_cli_runner().invoke(
        args=["completion-curl", "1234", "--customer", "2", "--count", "3", "--errors", "1"])
    assert result.exit_code == 0
    words = shlex.split(result.output)
    assert words[:5] == ["curl", "-sS", "-X", "POST", WEBHOOK_URL]
    headers = dict(words[i + 1].split(": ", 1) for i, w in enumerate(words) if w == "-H")
    body = words[words.index("--data-binary") + 1].encode()
    verified = verify(settings.webhook_keys, headers, body, now=time.time())
    assert verified.msg_id == headers["webhook-id"]
    completion = parse_notification(body)
    assert (completion.batch_id, completion.customer, completion.count, completion.completed,
            completion.errors) == (1234, 2, 3, 2, 1)


def test_send_completion_posts_it_and_prints_the_answer(app, client, admin):
    _register(client, admin)

    def into_the_app(request):
        answer = client.post("/webhooks/batch-completed", data=request.body,
                             headers=dict(request.headers))
        return answer.status_code, {}, answer.get_data()

    with responses.RequestsMock() as mock:
        mock.add_callback(responses.POST, WEBHOOK_URL, callback=into_the_app)
        mock.get(re.compile(ORCHESTRATOR + r"/iiif-resource/v3/2/batch-query/1234\?cacheBust=.+"),
                 body=sample("named-query-2-assets.json"))
        result = app.test_cli_runner().invoke(
            args=["send-completion", "1234", "--customer", "2", "--count", "2"])
    assert result.exit_code == 0, result.output
    status, _, text = result.output.strip().partition(" ")
    assert status == "200"
    assert json.loads(text) == {"outcome": "manifest-completed", "batch": 1234,
                                "manifest": "2/letters"}


def test_send_completion_exits_non_zero_on_a_rejection(app):
    with responses.RequestsMock() as mock:
        mock.post(WEBHOOK_URL, status=401, json={"title": "Invalid webhook signature"})
        result = app.test_cli_runner().invoke(args=["send-completion", "9", "--customer", "2"])
    assert result.exit_code == 1
    assert result.output.startswith("401 ")


def test_commands_have_help(app):
    runner = app.test_cli_runner()
    for command in (["db", "upgrade"], ["db", "version"], ["status"], ["rebuild"],
                    ["completion-curl"], ["send-completion"], ["secret"], ["dev-dlcs"],
                    ["reconcile"], ["requeue"], ["prune-deliveries"]):
        result = runner.invoke(args=[*command, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output


def test_requeue_prints_what_it_queued(settings, admin, fake_dlcs):
    application = create_app(dataclasses.replace(settings, dlcs_api_url=fake_dlcs.url))
    _register(application.test_client(), admin)
    runner = application.test_cli_runner()

    result = runner.invoke(args=["requeue", "2", "letters"])

    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert answer["outcome"] == "requeued" and answer["dropped"] == [1234]
    assert answer["assets"] == 2 and len(answer["batches"]) == 1
    assert [call.status for call in fake_dlcs.requests("queue")] == [201]
    again = runner.invoke(args=["requeue", "2", "nope"])
    assert again.exit_code == 1 and "No manifest 2/nope is registered" in again.output
    db.dispose()
