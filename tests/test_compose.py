"""compose.yaml: its structure only, since no container engine runs here.

What is checked: the file parses; every service a service depends on exists
(and has a health check when it must be healthy); the service and the stand-in
DLCS are configured with variables the service reads, and those values pass
``Settings.from_env``; they point at the compose services that exist; the
bucket the service stores in is the one the set-up job creates; images are
pinned. With ``docker-compose`` installed (Debian's package) it also validates
the file against the Compose schema. Whether the containers start and talk is
NOT verified here (README, "Containers").
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from webhook.config import Settings

ROOT = Path(__file__).resolve().parent.parent
SECRETS = {"WEBHOOK_SECRETS": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
           "ADMIN_TOKEN": "admin-token-0123456789abcdef"}
# What the service reads: its README table, plus boto3's own variables for S3.
_README_ROW = re.compile(r"^\| ([^|]+) \|", re.M)
_NAME = re.compile(r"`([A-Z][A-Z0-9_]+)`")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def interpolated(environment: dict) -> dict[str, str]:
    """The environment as compose hands it over, with the required secrets set."""
    values = {}
    for name, value in environment.items():
        text = str(value)
        if text.startswith("${"):
            variable = text[2:].split(":", 1)[0].rstrip("}")
            assert ":?" in text, f"{name}: a secret must be required, not defaulted"
            text = SECRETS[variable]
        values[name] = text
    return values


def test_services_and_their_dependencies(compose):
    services = compose["services"]
    assert {"webhook", "dlcs", "postgres", "s3", "bucket"} <= set(services)
    for name, service in services.items():
        depends = service.get("depends_on", {})
        for other in depends:
            assert other in services, f"{name} depends on an unknown service {other}"
        if isinstance(depends, dict):
            for other, rule in depends.items():
                assert rule["condition"] in ("service_started", "service_healthy",
                                             "service_completed_successfully")
                if rule["condition"] == "service_healthy":
                    assert "healthcheck" in services[other], f"{other} has no health check"
    webhook = services["webhook"]
    assert webhook["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert webhook["depends_on"]["bucket"]["condition"] == "service_completed_successfully"
    assert webhook["ports"] == ["127.0.0.1:8000:8000"]


def test_the_service_and_the_stand_in_read_only_known_variables_that_validate(compose):
    readme = (ROOT / "README.md").read_text()
    known = {name for cell in _README_ROW.findall(readme) for name in _NAME.findall(cell)}
    services = compose["services"]
    for name in ("webhook", "dlcs"):
        environment = interpolated(services[name]["environment"])
        unknown = {v for v in environment if v not in known and not v.startswith("AWS_")}
        assert not unknown, f"{name} sets variables the service does not read: {unknown}"
        settings = Settings.from_env(environment)  # raises ConfigError on a bad value
        assert settings.disabled() == {"sns": "SNS_TOPIC_ARNS"}
        for url in (settings.database_url, settings.dlcs_api_url,
                    settings.dlcs_orchestrator_url, environment["AWS_ENDPOINT_URL"]):
            assert urlsplit(url).hostname in services, f"{url} names no compose service"


def test_the_bucket_job_creates_the_bucket_the_service_uses(compose):
    services = compose["services"]
    bucket = urlsplit(services["webhook"]["environment"]["STORAGE_URL"]).hostname
    script = services["bucket"]["command"][-1]
    compile(script, "bucket", "exec")
    assert f'create_bucket(Bucket="{bucket}")' in script
    endpoint = services["bucket"]["environment"]["AWS_ENDPOINT_URL"]
    assert endpoint == services["webhook"]["environment"]["AWS_ENDPOINT_URL"]
    assert urlsplit(endpoint).port == 5000  # moto's server listens there


def test_the_stand_in_posts_to_the_service_and_listens_where_the_service_calls(compose):
    services = compose["services"]
    command = services["dlcs"]["command"]
    assert command[:3] == ["python", "-m", "webhook.devdlcs"]
    options = dict(zip(command[3::2], command[4::2]))
    assert urlsplit(options["--webhook-url"]).hostname == "webhook"
    assert options["--host"] == "0.0.0.0"
    assert urlsplit(services["webhook"]["environment"]["DLCS_API_URL"]).port == int(
        options["--port"])


def test_images_are_pinned(compose):
    for name, service in compose["services"].items():
        image = service["image"]
        if "build" in service:
            assert service["build"] == "."
            continue
        tag = image.rpartition(":")[2]
        assert ":" in image and tag not in ("", "latest"), f"{name}: {image} is not pinned"


@pytest.mark.skipif(shutil.which("docker-compose") is None,
                    reason="docker-compose is not installed (Debian package docker-compose)")
def test_docker_compose_validates_the_file(tmp_path):
    result = subprocess.run(["docker-compose", "-f", str(ROOT / "compose.yaml"), "config",
                             "--quiet"], env={"PATH": "/usr/bin:/bin", **SECRETS},
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
