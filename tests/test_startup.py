"""Start-up as an operator sees it: real gunicorn and flask processes, their exit status and stderr.

A bad setting (the service's or gunicorn.conf.py's own) stops gunicorn's master
with one JSON line naming the variable and exit status 3, before any worker
starts; an unreachable database with one line naming host and port, exit 69;
a good start logs JSON only, with one line naming what is off. The CLI behaves
the same from any folder and never creates a database to answer a question.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.conftest import ADMIN_TOKEN, SECRET
from tests.servers import start_gunicorn
from webhook.config import Settings
from webhook.secret import parse_secret

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "gunicorn.conf.py"
PASSWORD = "pg-password-8c1f6d2b"
SHORT_SECRET = "whsec_c2hvcnQtc2VjcmV0"  # 12 bytes


def json_lines(text: str) -> list[dict]:
    """Parse every line; each must be one JSON object."""
    return [json.loads(line) for line in text.splitlines()]


def run_gunicorn(tmp_path: Path, *args: str, **environ: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": f"sqlite:///{tmp_path}/webhook.db",
           "STORAGE_URL": f"file://{tmp_path}/manifests", "GUNICORN_BIND": "127.0.0.1:0",
           **environ}
    return subprocess.run([sys.executable, "-m", "gunicorn", *args, "--no-control-socket",
                           "wsgi:app"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("variable, value", [
    ("DLCS_TIMEOUT_SECONDS", "soon"),
    ("REBUILD_LEASE_SECONDS", "2m"),
    ("DATABASE_URL", "mysql://db/webhook"),
    ("ADMIN_TOKEN", "tok3n-9f2"),
    ("WEBHOOK_SECRETS", SHORT_SECRET),
    ("GUNICORN_WORKERS", "two"),
    ("GUNICORN_THREADS", "0"),
    ("GUNICORN_TIMEOUT", "4.5"),
    ("GUNICORN_GRACEFUL_TIMEOUT", "-1"),
    ("GUNICORN_BIND", "8000"),
])
def test_a_bad_value_stops_the_master_with_one_line_and_status_3(tmp_path, variable, value):
    result = run_gunicorn(tmp_path, "-c", str(CONF), **{variable: value})

    assert result.returncode == 3
    [line] = json_lines(result.stderr)
    assert line["level"] == "CRITICAL" and line["variable"] == variable
    assert line["message"].startswith(f"bad configuration: {variable}: ")
    assert result.stdout == ""
    if variable == "ADMIN_TOKEN":
        assert value not in result.stderr
    if variable == "WEBHOOK_SECRETS":
        assert value.removeprefix("whsec_") not in result.stderr
    # Stopped before anything else: no database, no worker.
    assert not (tmp_path / "webhook.db").exists()


def test_every_start_with_a_bad_value_ends_the_same_way(tmp_path):
    # Not "sometimes 1 with a HaltServer traceback": the master never starts a worker.
    results = [run_gunicorn(tmp_path, "-c", str(CONF), GUNICORN_WORKERS="4",
                            DLCS_TIMEOUT_SECONDS="0") for _ in range(3)]
    assert [r.returncode for r in results] == [3, 3, 3]
    assert [len(json_lines(r.stderr)) for r in results] == [1, 1, 1]


def test_an_unreachable_database_stops_the_master_with_one_line_naming_it(tmp_path):
    result = run_gunicorn(tmp_path, "-c", str(CONF), GUNICORN_WORKERS="3",
                          DATABASE_URL=f"postgresql://webhook:{PASSWORD}@127.0.0.1:1/hooks")

    assert result.returncode == 69
    lines = json_lines(result.stderr)  # gunicorn's own "Starting gunicorn" line is JSON too
    [failure] = [line for line in lines if line["level"] == "CRITICAL"]
    assert failure["message"].startswith("database unreachable at 127.0.0.1:1/hooks: ")
    assert failure["database"] == "127.0.0.1:1/hooks"
    assert PASSWORD not in result.stderr
    assert "Traceback" not in result.stderr and "Booting worker" not in result.stderr
    assert len(lines) <= 2


def test_a_good_start_logs_json_only_and_names_what_is_off_once(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": f"sqlite:///{tmp_path}/webhook.db",
           "STORAGE_URL": f"file://{tmp_path}/manifests", "ADMIN_TOKEN": ADMIN_TOKEN,
           "METRICS": "off", "GUNICORN_ACCESSLOG": "-"}
    # From a folder that is not the project, with the file named by its full path.
    server = start_gunicorn(env, cwd=tmp_path, config=str(CONF), workers=2)
    try:
        ready = requests.get(f"{server.url}/readyz", timeout=10)
        assert ready.status_code == 200
        body = ready.json()
        assert body["status"] == "ok" and body["checks"] == {"database": "ok", "storage": "ok"}
        assert body["disabled"] == {"webhook": "WEBHOOK_SECRETS", "sns": "SNS_TOPIC_ARNS",
                                    "dlcs-orchestrator": "DLCS_ORCHESTRATOR_URL",
                                    "dlcs-api": "DLCS_API_URL", "metrics": "METRICS"}
        assert body["defaulted"] == ["PUBLIC_BASE_URL"]
    finally:
        status = server.stop()
        log = server.log()
        server.cleanup()   # before any assertion: a failed one would leave its folder behind

    # A server that would not stop was killed after stop()'s 15 s (-9): its log says why.
    assert status == 0, log[-4000:]
    lines = json_lines(log)
    loggers = {line["logger"] for line in lines}
    # gunicorn's own lines (its access log too: on stdout, here in the same file) are JSON.
    assert {"gunicorn.error", "gunicorn.access", "webhook.startup", "webhook.request"} <= loggers
    [configuration] = [line for line in lines if line["logger"] == "webhook.startup"]
    assert configuration["level"] == "WARNING"
    assert configuration["disabled"] == body["disabled"]
    assert configuration["defaulted"] == ["PUBLIC_BASE_URL"]
    assert "PUBLIC_BASE_URL=http://localhost:8000" in configuration["message"]
    assert ADMIN_TOKEN not in log


def test_gunicorn_without_the_project_file_refuses_to_serve(tmp_path):
    # --chdir does not make gunicorn read the project's gunicorn.conf.py: refuse loudly
    # rather than serve with one sync worker killed after 30 s.
    result = run_gunicorn(tmp_path, "--chdir", str(ROOT), "--bind", "127.0.0.1:0")

    assert result.returncode == 3
    [refusal] = [json.loads(line) for line in result.stderr.splitlines()
                 if line.startswith("{")]
    assert refusal["message"] == ("gunicorn started without this project's gunicorn.conf.py: "
                                  f"start it with -c {CONF}")


# ----------------------------------------------------------------- the CLI


@pytest.fixture
def project(tmp_path) -> Path:
    """A copy of the project's code, so its default var/ is this test's own."""
    copy = tmp_path / "project"
    shutil.copytree(ROOT / "webhook", copy / "webhook",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("wsgi.py", "gunicorn.conf.py"):
        shutil.copy(ROOT / name, copy / name)
    return copy


def flask(project: Path, cwd: Path, *args: str, **environ: str) -> subprocess.CompletedProcess:
    cwd.mkdir(exist_ok=True)
    return subprocess.run([sys.executable, "-m", "flask", "--app", str(project / "wsgi.py"),
                           *args], cwd=cwd, env={"PATH": "/usr/bin:/bin", **environ},
                          capture_output=True, text=True, timeout=60)


def test_read_only_commands_from_another_folder_never_create_a_database(project, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    for command in (["status", "2", "letters"], ["db", "version"], ["rebuild", "2", "letters"]):
        result = flask(project, elsewhere, *command)
        assert result.returncode == 69, result.stderr
        [line] = json_lines(result.stderr)
        assert line["message"].startswith(
            f"database unreachable at {project}/var/webhook.db: no such file")
    assert not (project / "var").exists() and list(elsewhere.iterdir()) == []

    upgraded = flask(project, elsewhere, "db", "upgrade")
    assert upgraded.returncode == 0 and upgraded.stdout.startswith("applied: 0001_initial")
    assert (project / "var" / "webhook.db").is_file()
    status = flask(project, elsewhere, "status", "2", "letters")
    assert status.returncode == 1
    assert "No manifest 2/letters is registered" in status.stderr
    assert list(elsewhere.iterdir()) == []


def test_the_cli_names_an_unreachable_database_in_one_line(project, tmp_path):
    result = flask(project, tmp_path, "status", "2", "letters",
                   DATABASE_URL=f"postgresql://webhook:{PASSWORD}@127.0.0.1:1/hooks")
    assert result.returncode == 69
    [line] = json_lines(result.stderr)
    assert line["database"] == "127.0.0.1:1/hooks"
    assert PASSWORD not in result.stderr


def test_the_cli_refuses_a_bad_value_with_one_line(project, tmp_path):
    result = flask(project, tmp_path, "status", "2", "letters", WEBHOOK_SECRETS=SHORT_SECRET)
    assert result.returncode == 3
    [line] = json_lines(result.stderr)
    assert line["variable"] == "WEBHOOK_SECRETS" and SHORT_SECRET not in result.stderr


def test_secret_prints_a_new_secret_and_token_the_service_accepts(project, tmp_path):
    printed = [flask(project, tmp_path, "secret") for _ in range(2)]
    assert [p.returncode for p in printed] == [0, 0]
    values = []
    for result in printed:
        lines = result.stdout.splitlines()
        assert [line.split("=", 1)[0] for line in lines] == ["export WEBHOOK_SECRETS",
                                                              "export ADMIN_TOKEN"]
        secret, token = (line.split("=", 1)[1] for line in lines)
        assert secret.startswith("whsec_") and len(parse_secret(secret)) == 32
        settings = Settings.from_env({"WEBHOOK_SECRETS": f"{secret} {SECRET}",
                                      "ADMIN_TOKEN": token})
        assert settings.admin_token == token and len(token) >= 32
        values.append((secret, token))
    assert values[0][0] != values[1][0] and values[0][1] != values[1][1]
    # Nothing else happened: no database to make a secret.
    assert not (project / "var").exists()
