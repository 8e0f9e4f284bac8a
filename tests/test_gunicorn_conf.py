"""gunicorn.conf.py as gunicorn reads it: settings from Settings and GUNICORN_*, one timeout formula.

Each test runs ``gunicorn -c gunicorn.conf.py --print-config wsgi:app`` (gunicorn
loads the file, prints the settings it ended with, and exits) from a folder that
is not the project, so the values are the ones a real start would use.
"""

from __future__ import annotations

import ast
import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest

from webhook import logs
from webhook.access_log import AccessLogWhenAsked
from webhook.config import Settings

CONF = Path(__file__).resolve().parent.parent / "gunicorn.conf.py"


def gunicorn_settings(tmp_path, **environ) -> dict:
    """The settings gunicorn prints after loading gunicorn.conf.py with only ``environ`` set."""
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": f"sqlite:///{tmp_path}/webhook.db",
           "STORAGE_URL": f"file://{tmp_path}/manifests", **environ}
    result = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", str(CONF), "--print-config", "wsgi:app"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    printed = {}
    for line in result.stdout.splitlines():
        name, sep, value = line.partition(" = ")
        if sep:
            printed[name.strip()] = value.strip()
    return printed


def test_defaults(tmp_path):
    conf = gunicorn_settings(tmp_path)
    assert conf["bind"] == "['0.0.0.0:8000']"
    assert (conf["workers"], conf["threads"]) == ("2", "4")
    # A connection costs a greenlet, not one of a few threads (tests/test_body_deadline.py).
    assert (conf["worker_class"], conf["worker_connections"]) == ("gevent", "1000")
    assert (conf["timeout"], conf["graceful_timeout"], conf["keepalive"]) == ("270", "30", "5")
    assert conf["accesslog"] == "None"
    # No access line is built unless GUNICORN_ACCESSLOG asks for one (tests/test_logs.py).
    assert conf["logger_class"] == "webhook.access_log.AccessLogWhenAsked"


def test_every_setting_comes_from_the_environment(tmp_path):
    conf = gunicorn_settings(tmp_path, GUNICORN_BIND="127.0.0.1:9000", GUNICORN_WORKERS="5",
                             GUNICORN_THREADS="8", GUNICORN_TIMEOUT="600",
                             GUNICORN_GRACEFUL_TIMEOUT="90", GUNICORN_ACCESSLOG="-",
                             GUNICORN_WORKER_CLASS="gthread", GUNICORN_WORKER_CONNECTIONS="200")
    assert conf["bind"] == "['127.0.0.1:9000']"
    assert (conf["worker_class"], conf["worker_connections"]) == ("gthread", "200")
    assert (conf["workers"], conf["threads"]) == ("5", "8")
    assert (conf["timeout"], conf["graceful_timeout"], conf["accesslog"]) == ("600", "90", "-")


@pytest.mark.parametrize("environ", [
    {"DLCS_TIMEOUT_SECONDS": "1"}, {"DLCS_TIMEOUT_SECONDS": "120"}, {"DLCS_TIMEOUT_SECONDS": ""},
    {"DLCS_TIMEOUT_SECONDS": "5", "REBUILD_LEASE_SECONDS": "5"},
    {"DLCS_TIMEOUT_SECONDS": "5", "REBUILD_LEASE_SECONDS": "3600"},
])
def test_the_worker_timeout_is_the_settings_formula(tmp_path, environ):
    # One formula (Settings.worker_timeout_seconds): past the longest rebuild and the lease.
    conf = gunicorn_settings(tmp_path, **environ)
    settings = Settings.from_env(environ)
    assert int(conf["timeout"]) == settings.worker_timeout_seconds
    assert int(conf["timeout"]) >= settings.rebuild_lease_seconds + 30


def test_gunicorn_logs_through_the_json_formatter(tmp_path):
    logconfig = ast.literal_eval(gunicorn_settings(tmp_path)["logconfig_dict"])
    assert logconfig["formatters"]["json"] == {"()": "webhook.logs.JsonFormatter"}
    assert logconfig["loggers"]["gunicorn.error"]["handlers"] == ["stderr"]
    assert logconfig["handlers"]["stderr"]["formatter"] == "json"


class _Unread:
    """A request or response whose every attribute read fails the test."""

    def __getattr__(self, name):
        raise AssertionError(f"the access line read {name!r}")


def _access_logger(accesslog: str | None) -> AccessLogWhenAsked:
    from gunicorn.config import Config

    cfg = Config()
    # What gunicorn.conf.py sets, which the stock Logger takes as asking for access lines.
    cfg.set("logconfig_dict", logs.gunicorn_logconfig(accesslog))
    cfg.set("accesslog", accesslog)
    # Not __init__: it would apply that logging configuration to this test process.
    logger = object.__new__(AccessLogWhenAsked)
    logger.cfg = cfg
    return logger


def test_no_access_line_is_built_unless_accesslog_asks_for_one():
    quiet = _access_logger(None)
    assert quiet.access_log_enabled is False
    quiet.access(_Unread(), _Unread(), {}, dt.timedelta(milliseconds=3))  # reads nothing
    assert _access_logger("-").access_log_enabled is True
