"""Settings.from_env: defaults, parsing, and a clear error naming each bad variable."""

import base64
from pathlib import Path

import pytest

from webhook.config import Settings, parse_storage_url
from webhook.errors import ConfigError
from webhook.secret import new_secret, parse_secret
from webhook.server_settings import ServerSettings

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SECOND_SECRET = "whsec_" + base64.b64encode(b"second-secret-of-24-bytes").decode()
PROJECT = Path(__file__).resolve().parent.parent


def test_defaults_serve_on_embedded_storage_in_the_project_folder():
    # In the project's var/, whatever the working directory.
    settings = Settings.from_env({})
    assert settings.database_url == f"sqlite:///{PROJECT}/var/webhook.db"
    assert settings.storage == parse_storage_url(f"file://{PROJECT}/var/manifests")
    assert settings.public_base_url == "http://localhost:8000"
    assert settings.webhook_keys == ()
    assert settings.webhook_tolerance_seconds == 300
    assert settings.admin_token is None
    assert settings.dlcs_projection == "batches"
    assert settings.dlcs_named_query == "batch-query"
    assert settings.dlcs_timeout_seconds == 30
    assert settings.dlcs_max_batch_size == 100
    assert settings.dlcs_credentials is None
    assert settings.body_timeout_seconds == 10
    assert settings.stalled_batch_seconds == 6 * 3600
    assert settings.delivery_retention_days == 30


def test_reads_every_variable():
    settings = Settings.from_env({
        "DATABASE_URL": "postgresql://u:p@db.example:5433/hooks",
        "STORAGE_URL": "s3://bucket/prefix",
        "PUBLIC_BASE_URL": "https://iiif.example/",
        "WEBHOOK_SECRETS": f"{SECRET} {SECOND_SECRET}",
        "WEBHOOK_TOLERANCE_SECONDS": "60",
        "ADMIN_TOKEN": "a" * 32,
        "DLCS_API_URL": "https://api.dlcs.example",
        "DLCS_ORCHESTRATOR_URL": "https://dlcs.example",
        "DLCS_API_KEY": "key", "DLCS_API_SECRET": "secret",
        "DLCS_PROJECTION": "manifest",
        "DLCS_NAMED_QUERY": "my-query",
        "DLCS_TIMEOUT_SECONDS": "12",
        "BODY_TIMEOUT_SECONDS": "25",
        "DLCS_MAX_BATCH_SIZE": "250",
        "SNS_TOPIC_ARNS": "arn:aws:sns:eu-west-1:123456789012:dlcs-batch-completion",
        "STALLED_BATCH_SECONDS": "3600",
        "DELIVERY_RETENTION_DAYS": "90",
        "DATABASE_POOL_SIZE": "4",
    })
    assert settings.database_pool_size == 4
    assert settings.stalled_batch_seconds == 3600
    assert settings.delivery_retention_days == 90
    assert settings.public_base_url == "https://iiif.example"  # trailing slash dropped
    assert len(settings.webhook_keys) == 2 and settings.webhook_keys[1] == b"second-secret-of-24-bytes"
    assert settings.webhook_tolerance_seconds == 60
    assert settings.dlcs_credentials == ("key", "secret")
    assert (settings.dlcs_projection, settings.dlcs_named_query) == ("manifest", "my-query")
    assert settings.dlcs_timeout_seconds == 12.0
    assert settings.body_timeout_seconds == 25.0
    assert settings.dlcs_max_batch_size == 250
    assert settings.sns_topic_arns == ("arn:aws:sns:eu-west-1:123456789012:dlcs-batch-completion",)


@pytest.mark.parametrize("variable, value", [
    ("DATABASE_URL", "mysql://localhost/db"),
    ("DATABASE_URL", "sqlite:///"),
    ("DATABASE_URL", "postgresql://host:notaport/db"),
    ("DATABASE_URL", "postgresql://host"),
    ("STORAGE_URL", "ftp://somewhere"),
    ("STORAGE_URL", "s3://"),
    ("STORAGE_URL", "s3://Bad_Bucket"),
    ("PUBLIC_BASE_URL", "localhost:8000"),
    ("PUBLIC_BASE_URL", "https://user:pw@iiif.example"),
    ("PUBLIC_BASE_URL", "https://iiif.example/?q=1"),
    ("WEBHOOK_SECRETS", "not-a-secret"),
    ("WEBHOOK_SECRETS", "whsec_!!!"),
    ("WEBHOOK_TOLERANCE_SECONDS", "five"),
    ("WEBHOOK_TOLERANCE_SECONDS", "0"),
    ("WEBHOOK_TOLERANCE_SECONDS", "-5"),
    ("ADMIN_TOKEN", "short"),
    ("ADMIN_TOKEN", "has spaces in the token value"),
    ("DLCS_API_URL", "api.dlcs.example"),
    ("DLCS_ORCHESTRATOR_URL", "ftp://dlcs.example"),
    ("DLCS_NAMED_QUERY", "bad/name"),
    ("DLCS_PROJECTION", "batch"),
    ("DLCS_PROJECTION", "manifests"),
    ("DLCS_PROJECTION", "batches manifest"),
    ("DLCS_TIMEOUT_SECONDS", "1.5"),
    ("DLCS_TIMEOUT_SECONDS", "0"),
    ("BODY_TIMEOUT_SECONDS", "0"),
    ("DATABASE_POOL_SIZE", "0"),
    ("DATABASE_POOL_SIZE", "many"),
    ("BODY_TIMEOUT_SECONDS", "2.5"),
    ("BODY_TIMEOUT_SECONDS", "601"),
    ("DLCS_MAX_BATCH_SIZE", "lots"),
    ("DLCS_MAX_BATCH_SIZE", "0"),
    ("REBUILD_LEASE_SECONDS", "0"),
    ("REBUILD_LEASE_SECONDS", "2m"),
    ("REBUILD_DEADLINE_SECONDS", "0"),
    ("REBUILD_DEADLINE_SECONDS", "1.5"),
    ("REBUILD_DEADLINE_SECONDS", "3601"),
    # The default lease is 4 x 30 + 120 = 240 s: a deadline must end before it.
    ("REBUILD_DEADLINE_SECONDS", "240"),
    ("SNS_TOPIC_ARNS", "not-an-arn"),
    ("STALLED_BATCH_SECONDS", "59"),
    ("STALLED_BATCH_SECONDS", "6h"),
    ("DELIVERY_RETENTION_DAYS", "0"),
    ("DELIVERY_RETENTION_DAYS", "30d"),
])
def test_bad_value_names_the_variable(variable, value):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({variable: value})
    assert caught.value.variable == variable
    assert str(caught.value).startswith(f"{variable}: ")


API_URL = {"DLCS_API_URL": "https://api.dlcs.example"}


@pytest.mark.parametrize("environ, projection, query", [
    ({"DLCS_PROJECTION": "batches"}, "batches", "batch-query"),
    ({"DLCS_PROJECTION": "manifest"}, "manifest", "manifest-query"),
    ({"DLCS_PROJECTION": " Manifest "}, "manifest", "manifest-query"),
    ({"DLCS_PROJECTION": "manifest", "DLCS_NAMED_QUERY": "mq"}, "manifest", "mq"),
    ({"DLCS_NAMED_QUERY": "bq"}, "batches", "bq"),
])
def test_the_projection_chooses_the_default_named_query(environ, projection, query):
    settings = Settings.from_env({**API_URL, **environ})
    assert (settings.dlcs_projection, settings.dlcs_named_query) == (projection, query)


def test_the_manifest_projection_needs_the_api():
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"DLCS_PROJECTION": "manifest"})
    assert caught.value.variable == "DLCS_PROJECTION"
    assert "DLCS_API_URL" in str(caught.value)


@pytest.mark.parametrize("environ, lease", [
    ({}, 4 * 30 + 120),                                       # outlasts the DLCS retries
    ({"DLCS_TIMEOUT_SECONDS": "5"}, 4 * 5 + 120),
    ({"DLCS_TIMEOUT_SECONDS": "5", "REBUILD_LEASE_SECONDS": "20"}, 20),
])
def test_the_rebuild_lease_follows_the_dlcs_timeout_unless_set(environ, lease):
    assert Settings.from_env(environ).rebuild_lease_seconds == lease


@pytest.mark.parametrize("environ, deadline", [
    ({}, 20),                                                 # well under a sender's 30 s
    ({"DLCS_TIMEOUT_SECONDS": "5"}, 10),                      # twice the DLCS timeout
    ({"DLCS_TIMEOUT_SECONDS": "1"}, 2),
    ({"DLCS_TIMEOUT_SECONDS": "5", "REBUILD_DEADLINE_SECONDS": "25"}, 25),
    ({"REBUILD_LEASE_SECONDS": "3", "REBUILD_DEADLINE_SECONDS": "2"}, 2),
    ({"REBUILD_LEASE_SECONDS": "8"}, 6),                      # below a short lease
])
def test_the_rebuild_deadline_follows_the_dlcs_timeout_unless_set(environ, deadline):
    assert Settings.from_env(environ).rebuild_deadline_seconds == deadline


def test_a_deadline_at_or_past_a_short_lease_is_refused():
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"REBUILD_LEASE_SECONDS": "10", "REBUILD_DEADLINE_SECONDS": "10"})
    assert str(caught.value) == ("REBUILD_DEADLINE_SECONDS: must be shorter than the rebuild "
                                 "lease (10 s)")


@pytest.mark.parametrize("present, missing", [
    ("DLCS_API_KEY", "DLCS_API_SECRET"), ("DLCS_API_SECRET", "DLCS_API_KEY")])
def test_dlcs_credentials_come_in_pairs(present, missing):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({present: "value"})
    assert caught.value.variable == missing


def test_secrets_stay_out_of_messages_and_repr():
    settings = Settings.from_env({"WEBHOOK_SECRETS": SECRET, "ADMIN_TOKEN": "t0ken-" + "x" * 20,
                                  "DLCS_API_KEY": "the-key", "DLCS_API_SECRET": "the-secret",
                                  "DATABASE_URL": "postgresql://u:dbpass@h/db"})
    text = repr(settings)
    for secret in ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "t0ken-", "the-key", "the-secret", "dbpass"):
        assert secret not in text
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"WEBHOOK_SECRETS": f"{SECRET} whsec_!!!sneaky"})
    assert "sneaky" not in str(caught.value) and "MfKQ9r8" not in str(caught.value)
    assert "#2" in str(caught.value)


def test_empty_values_mean_unset():
    settings = Settings.from_env({"ADMIN_TOKEN": "", "DATABASE_URL": ""})
    assert settings.admin_token is None
    assert settings.database_url == f"sqlite:///{PROJECT}/var/webhook.db"


@pytest.mark.parametrize("length", [1, 16, 23])
def test_a_webhook_secret_shorter_than_24_bytes_is_refused_without_showing_it(length):
    short = "whsec_" + base64.b64encode(b"k" * length).decode()
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"WEBHOOK_SECRETS": f"{SECRET} {short}"})
    assert caught.value.variable == "WEBHOOK_SECRETS"
    assert f"#2 is {length} bytes; at least 24" in str(caught.value)
    assert short[6:] not in str(caught.value) and "kkkk" not in str(caught.value)


def test_a_24_byte_secret_and_a_new_one_are_accepted():
    assert len(parse_secret(SECRET)) == 24
    fresh = new_secret()
    assert fresh != new_secret()
    settings = Settings.from_env({"WEBHOOK_SECRETS": f"{SECRET} {fresh}"})
    assert [len(key) for key in settings.webhook_keys] == [24, 32]


def test_disabled_features_and_defaulted_variables_are_named():
    settings = Settings.from_env({"METRICS": "off"})
    assert settings.disabled() == {
        "webhook": "WEBHOOK_SECRETS", "sns": "SNS_TOPIC_ARNS", "admin": "ADMIN_TOKEN",
        "dlcs-orchestrator": "DLCS_ORCHESTRATOR_URL", "dlcs-api": "DLCS_API_URL",
        "metrics": "METRICS"}
    assert settings.defaulted == ("PUBLIC_BASE_URL", "DATABASE_URL", "STORAGE_URL")

    configured = Settings.from_env({
        "WEBHOOK_SECRETS": SECRET, "SNS_TOPIC_ARNS": "arn:aws:sns:eu-west-1:123456789012:t",
        "ADMIN_TOKEN": "x" * 20, "DLCS_ORCHESTRATOR_URL": "https://dlcs.example",
        "DLCS_API_URL": "https://api.dlcs.example", "PUBLIC_BASE_URL": "https://iiif.example",
        "DATABASE_URL": "sqlite:////srv/webhook.db", "STORAGE_URL": "s3://bucket"})
    assert configured.disabled() == {} and configured.defaulted == ()
    # An empty value is unset, so it is defaulted too.
    assert Settings.from_env({"PUBLIC_BASE_URL": ""}).defaulted[0] == "PUBLIC_BASE_URL"


@pytest.mark.parametrize("environ, timeout", [
    ({}, 4 * 30 + 120 + 30),
    ({"DLCS_TIMEOUT_SECONDS": "5"}, 4 * 5 + 120 + 30),
    ({"DLCS_TIMEOUT_SECONDS": "5", "REBUILD_LEASE_SECONDS": "20"}, 4 * 5 + 120 + 30),
    ({"DLCS_TIMEOUT_SECONDS": "5", "REBUILD_LEASE_SECONDS": "3600"}, 3600 + 30),
])
def test_the_worker_timeout_is_one_formula_over_the_rebuild_and_the_lease(environ, timeout):
    settings = Settings.from_env(environ)
    assert settings.worker_timeout_seconds == timeout
    assert settings.worker_timeout_seconds >= max(settings.rebuild_lease_seconds,
                                                  settings.rebuild_budget_seconds) + 30
    assert ServerSettings.from_env({}, settings).timeout == timeout


def test_server_settings_default_and_read_every_gunicorn_variable():
    settings = Settings.from_env({})
    assert ServerSettings.from_env({}, settings) == ServerSettings(
        bind="0.0.0.0:8000", workers=2, threads=4, timeout=270, graceful_timeout=30,
        accesslog=None)
    assert ServerSettings.from_env({
        "GUNICORN_BIND": "127.0.0.1:9000", "GUNICORN_WORKERS": "5", "GUNICORN_THREADS": "8",
        "GUNICORN_TIMEOUT": "600", "GUNICORN_GRACEFUL_TIMEOUT": "90", "GUNICORN_ACCESSLOG": "-",
    }, settings) == ServerSettings("127.0.0.1:9000", 5, 8, 600, 90, "-")
    assert ServerSettings.from_env({"GUNICORN_BIND": "unix:/run/webhook.sock"},
                                   settings).bind == "unix:/run/webhook.sock"
    # Connections cost greenlets by default; the threaded worker on request.
    assert (ServerSettings.from_env({}, settings).worker_class,
            ServerSettings.from_env({}, settings).worker_connections) == ("gevent", 1000)
    threaded = ServerSettings.from_env({"GUNICORN_WORKER_CLASS": "gthread",
                                        "GUNICORN_WORKER_CONNECTIONS": "200"}, settings)
    assert (threaded.worker_class, threaded.worker_connections) == ("gthread", 200)
    # One request per process, for deployments behind a buffering proxy (bench/intake.py).
    assert ServerSettings.from_env({"GUNICORN_WORKER_CLASS": "sync"},
                                   settings).worker_class == "sync"


@pytest.mark.parametrize("variable, value", [
    ("GUNICORN_BIND", "8000"),
    ("GUNICORN_BIND", "localhost:http"),
    ("GUNICORN_BIND", "127.0.0.1:70000"),
    # str.isdigit() takes both: "²" then failed int() (a traceback, not this
    # error), and Arabic-Indic digits read as port 80.
    ("GUNICORN_BIND", "127.0.0.1:\u00b2"),
    ("GUNICORN_BIND", "127.0.0.1:\u0668\u0660"),
    ("GUNICORN_WORKERS", "two"),
    ("GUNICORN_WORKER_CLASS", "eventlet"),
    ("GUNICORN_WORKER_CLASS", "Gevent"),
    ("GUNICORN_WORKER_CONNECTIONS", "0"),
    ("GUNICORN_WORKERS", "0"),
    ("GUNICORN_THREADS", "-1"),
    ("GUNICORN_TIMEOUT", "1.5"),
    ("GUNICORN_TIMEOUT", "0"),
    ("GUNICORN_GRACEFUL_TIMEOUT", "soon"),
])
def test_a_bad_gunicorn_value_names_its_variable(variable, value):
    with pytest.raises(ConfigError) as caught:
        ServerSettings.from_env({variable: value}, Settings.from_env({}))
    assert caught.value.variable == variable
