"""gunicorn.conf.py: its settings come from the environment, its timeout outlasts a rebuild."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

from webhook.config import Settings

CONF = Path(__file__).resolve().parent.parent / "gunicorn.conf.py"
VARIABLES = ("GUNICORN_BIND", "GUNICORN_WORKERS", "GUNICORN_THREADS", "GUNICORN_TIMEOUT",
             "GUNICORN_GRACEFUL_TIMEOUT", "GUNICORN_ACCESSLOG", "DLCS_TIMEOUT_SECONDS",
             "REBUILD_LEASE_SECONDS")


def load(monkeypatch, **environ) -> dict:
    """Evaluate gunicorn.conf.py as gunicorn does, with only ``environ`` set."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(CONF))


def test_defaults(monkeypatch):
    conf = load(monkeypatch)
    assert (conf["bind"], conf["workers"], conf["threads"]) == ("0.0.0.0:8000", 2, 4)
    assert (conf["timeout"], conf["graceful_timeout"]) == (270, 30)
    assert conf["accesslog"] is None


def test_every_setting_comes_from_the_environment(monkeypatch):
    conf = load(monkeypatch, GUNICORN_BIND="127.0.0.1:9000", GUNICORN_WORKERS="5",
                GUNICORN_THREADS="8", GUNICORN_TIMEOUT="600", GUNICORN_GRACEFUL_TIMEOUT="90",
                GUNICORN_ACCESSLOG="-")
    assert (conf["bind"], conf["workers"], conf["threads"]) == ("127.0.0.1:9000", 5, 8)
    assert (conf["timeout"], conf["graceful_timeout"], conf["accesslog"]) == (600, 90, "-")


@pytest.mark.parametrize("dlcs_timeout", ["1", "5", "30", "120", "600", ""])
def test_the_worker_timeout_outlasts_the_rebuild_lease(monkeypatch, dlcs_timeout):
    # The lease is longer than any rebuild can take; a worker killed before it ran
    # out would cut rebuilds short. "" is the default, as for the service.
    conf = load(monkeypatch, DLCS_TIMEOUT_SECONDS=dlcs_timeout)
    settings = Settings.from_env({"DLCS_TIMEOUT_SECONDS": dlcs_timeout})
    lease = settings.rebuild_lease_seconds
    assert conf["timeout"] >= lease + 30


@pytest.mark.parametrize("lease", ["5", "600", "3600"])
def test_the_worker_timeout_outlasts_a_configured_lease(monkeypatch, lease):
    conf = load(monkeypatch, DLCS_TIMEOUT_SECONDS="5", REBUILD_LEASE_SECONDS=lease)
    settings = Settings.from_env({"DLCS_TIMEOUT_SECONDS": "5", "REBUILD_LEASE_SECONDS": lease})
    assert conf["timeout"] >= settings.rebuild_lease_seconds + 30
