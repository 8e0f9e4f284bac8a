"""Settings.from_env: defaults, parsing, and a clear error naming each bad variable."""

import pytest

from webhook.config import Settings, parse_storage_url
from webhook.errors import ConfigError

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_defaults_serve_on_embedded_storage():
    settings = Settings.from_env({})
    assert settings.database_url == "sqlite:///var/webhook.db"
    assert settings.storage == parse_storage_url("file://var/manifests")
    assert settings.public_base_url == "http://localhost:8000"
    assert settings.webhook_keys == ()
    assert settings.webhook_tolerance_seconds == 300
    assert settings.admin_token is None
    assert settings.dlcs_named_query == "batch-query"
    assert settings.dlcs_timeout_seconds == 30
    assert settings.dlcs_max_batch_size == 100
    assert settings.dlcs_credentials is None


def test_reads_every_variable():
    settings = Settings.from_env({
        "DATABASE_URL": "postgresql://u:p@db.example:5433/hooks",
        "STORAGE_URL": "s3://bucket/prefix",
        "PUBLIC_BASE_URL": "https://iiif.example/",
        "WEBHOOK_SECRETS": f"{SECRET} whsec_c2Vjb25kLXNlY3JldA==",
        "WEBHOOK_TOLERANCE_SECONDS": "60",
        "ADMIN_TOKEN": "a" * 32,
        "DLCS_API_URL": "https://api.dlcs.example",
        "DLCS_ORCHESTRATOR_URL": "https://dlcs.example",
        "DLCS_API_KEY": "key", "DLCS_API_SECRET": "secret",
        "DLCS_NAMED_QUERY": "my-query",
        "DLCS_TIMEOUT_SECONDS": "12",
        "DLCS_MAX_BATCH_SIZE": "250",
        "SNS_TOPIC_ARNS": "arn:aws:sns:eu-west-1:123456789012:dlcs-batch-completion",
    })
    assert settings.public_base_url == "https://iiif.example"  # trailing slash dropped
    assert len(settings.webhook_keys) == 2 and settings.webhook_keys[1] == b"second-secret"
    assert settings.webhook_tolerance_seconds == 60
    assert settings.dlcs_credentials == ("key", "secret")
    assert settings.dlcs_timeout_seconds == 12.0
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
    ("DLCS_TIMEOUT_SECONDS", "1.5"),
    ("DLCS_TIMEOUT_SECONDS", "0"),
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
])
def test_bad_value_names_the_variable(variable, value):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({variable: value})
    assert caught.value.variable == variable
    assert str(caught.value).startswith(f"{variable}: ")


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
    assert settings.database_url == "sqlite:///var/webhook.db"


def test_start_up_stops_with_a_message_naming_the_variable(tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", "import wsgi"], cwd=str(__import__("pathlib").Path(__file__).parents[1]),
        env={"PATH": "/usr/bin:/bin", "DLCS_TIMEOUT_SECONDS": "soon",
             "DATABASE_URL": f"sqlite:///{tmp_path}/x.db"},
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 3
    assert "DLCS_TIMEOUT_SECONDS" in result.stderr
    assert "Traceback" not in result.stderr
