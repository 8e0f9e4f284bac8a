"""ServerSettings: gunicorn's own settings, from the ``GUNICORN_*`` variables, validated.

``gunicorn.conf.py`` (through ``startup.server_settings_or_exit``) calls
``ServerSettings.from_env(os.environ, settings)`` once, in gunicorn's master,
and gives gunicorn the values. This is the one other reader of the environment
beside ``Settings.from_env``, and on purpose apart from it: the ``GUNICORN_*``
variables configure the server the application runs in, not the application,
which never sees them. It looks only at names starting ``GUNICORN_``; the
worker timeout's default comes from the application's ``Settings``, whole
numbers are checked by ``config.parse_int``, and a bad value fails as the
application's do (``ConfigError`` naming the variable).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from webhook.config import Settings, parse_int
from webhook.domain import ascii_digits
from webhook.errors import ConfigError


@dataclass(frozen=True)
class ServerSettings:
    """What gunicorn.conf.py gives gunicorn, from the GUNICORN_* variables, validated."""

    bind: str = "0.0.0.0:8000"
    workers: int = 2
    threads: int = 4
    timeout: int = 270
    graceful_timeout: int = 30
    accesslog: str | None = None
    # gevent: a connection costs a greenlet, so idle and slow clients cannot
    # use a worker up; gthread: a connection holds one of `threads` threads.
    worker_class: str = "gevent"
    worker_connections: int = 1000

    @classmethod
    def from_env(cls, environ: Mapping[str, str], settings: Settings) -> "ServerSettings":
        """Read the GUNICORN_* variables; the timeout defaults to Settings.worker_timeout_seconds."""
        env = {k: v for k, v in environ.items() if k.startswith("GUNICORN_") and v != ""}
        return cls(
            bind=_bind(env.get("GUNICORN_BIND", cls.bind)),
            workers=parse_int("GUNICORN_WORKERS", env.get("GUNICORN_WORKERS", "2"), 1, 256),
            worker_class=_worker_class(env.get("GUNICORN_WORKER_CLASS", cls.worker_class)),
            worker_connections=parse_int("GUNICORN_WORKER_CONNECTIONS",
                                         env.get("GUNICORN_WORKER_CONNECTIONS", "1000"),
                                         1, 100_000),
            threads=parse_int("GUNICORN_THREADS", env.get("GUNICORN_THREADS", "4"), 1, 1024),
            timeout=parse_int("GUNICORN_TIMEOUT", env.get("GUNICORN_TIMEOUT",
                                                          str(settings.worker_timeout_seconds)),
                              1, 86_400),
            graceful_timeout=parse_int("GUNICORN_GRACEFUL_TIMEOUT",
                                       env.get("GUNICORN_GRACEFUL_TIMEOUT", "30"), 0, 86_400),
            accesslog=env.get("GUNICORN_ACCESSLOG"),
        )


def _bind(value: str) -> str:
    # gunicorn's own forms: HOST:PORT, [IPv6]:PORT, unix:PATH or fd://N.
    if value.startswith(("unix:", "fd://")):
        return value
    host, sep, port = value.rpartition(":")
    if not sep or not host or not ascii_digits(port) or not 0 <= int(port) <= 65_535:
        raise ConfigError("GUNICORN_BIND", f"expected HOST:PORT, unix:PATH or fd://N, got {value!r}")
    return value


WORKER_CLASSES = ("gevent", "gthread", "sync")


def _worker_class(value: str) -> str:
    if value not in WORKER_CLASSES:
        raise ConfigError("GUNICORN_WORKER_CLASS",
                          f"expected one of {', '.join(WORKER_CLASSES)}, got {value!r}")
    return value
