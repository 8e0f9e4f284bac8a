"""Start-up: settings validated once, the database reached, one line saying what is off.

Under gunicorn, ``gunicorn.conf.py`` calls these in the master before any worker
is forked: a bad variable stops start-up with one JSON line naming it (exit
status ``EXIT_CONFIG``), an unreachable database with one line naming its host
and port (``EXIT_DATABASE``), once, however many workers there are. The
workers inherit the validated ``Settings`` through the fork (:func:`handed_over`)
and never parse the environment again. ``wsgi.py`` does the same steps itself
for any other server; the CLI reaches the database only when a command needs it,
without ever creating one (:func:`reach_database_or_exit`).

Each failure line is a JSON log line (``webhook.logs``) and never holds a
secret: ConfigError messages never repeat secret values, and a database error
names the host, port and database, with any password in the driver's message
masked.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Mapping, NoReturn
from urllib.parse import unquote, urlsplit

import peewee

from webhook import db, logs
from webhook.config import Settings
from webhook.errors import ConfigError, DatabaseUnavailable
from webhook.server_settings import ServerSettings

#: A variable has a value the service cannot use.
EXIT_CONFIG = 3
#: The database cannot be reached (sysexits.h's EX_UNAVAILABLE).
EXIT_DATABASE = 69

log = logging.getLogger("webhook.startup")

# Filled in by gunicorn's master (gunicorn.conf.py) before it forks the workers.
_handed_over: Settings | None = None


def fail(status: int, message: str, **fields) -> NoReturn:
    """Log one critical JSON line and exit with ``status``."""
    logs.configure()
    logs.event(log, logging.CRITICAL, message, exit_status=status, **fields)
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.exit(status)


def settings_or_exit(environ: Mapping[str, str]) -> Settings:
    """Read and validate the service's settings, or exit naming the bad variable."""
    try:
        return Settings.from_env(environ)
    except ConfigError as exc:
        fail(EXIT_CONFIG, f"bad configuration: {exc}", variable=exc.variable)


def server_settings_or_exit(environ: Mapping[str, str], settings: Settings) -> ServerSettings:
    """Read and validate the GUNICORN_* variables, or exit naming the bad one."""
    try:
        return ServerSettings.from_env(environ, settings)
    except ConfigError as exc:
        fail(EXIT_CONFIG, f"bad configuration: {exc}", variable=exc.variable)


def hand_over(settings: Settings) -> None:
    """Keep the validated settings for the workers gunicorn's master forks next."""
    global _handed_over
    _handed_over = settings


def handed_over() -> Settings | None:
    """Return the settings gunicorn's master validated, or None outside such a worker."""
    return _handed_over


def database_location(url: str) -> str:
    """Name where a DATABASE_URL points, without credentials: ``host:port/db`` or the file."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        return unquote(url[len("sqlite:///"):])
    return f"{parts.hostname}:{parts.port or 5432}/{unquote(parts.path.lstrip('/'))}"


def _reason(url: str, exc: BaseException) -> str:
    """The first line of the driver's own message, with any password masked."""
    cause = exc.__cause__ if isinstance(exc, DatabaseUnavailable) and exc.__cause__ else exc
    text = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    password = urlsplit(url).password
    if password:
        text = text.replace(password, "***").replace(unquote(password), "***")
    return text


def database_failed(settings: Settings, exc: BaseException) -> NoReturn:
    """Exit with EXIT_DATABASE and one line naming where the database is and why it failed."""
    where = database_location(settings.database_url)
    if settings.database_url.startswith("sqlite:") and not os.path.exists(where):
        fail(EXIT_DATABASE, f"database unreachable at {where}: no such file (`flask --app wsgi "
             "db upgrade` or starting the service creates it)", database=where)
    fail(EXIT_DATABASE, f"database unreachable at {where}: {_reason(settings.database_url, exc)}",
         database=where)


_DATABASE_ERRORS = (peewee.OperationalError, peewee.InterfaceError, DatabaseUnavailable, OSError)


def migrate_or_exit(settings: Settings) -> list[str]:
    """Create or upgrade the schema (making an embedded SQLite file if needed), or exit.

    Return the migrations applied. No connection is left open: gunicorn forks
    its workers after this.
    """
    try:
        db.bind(db.open_database(settings.database_url, create=True))
        return db.migrate()
    except _DATABASE_ERRORS as exc:
        database_failed(settings, exc)
    finally:
        db.dispose()


def reach_database_or_exit(settings: Settings) -> None:
    """Check that the bound database answers (never creating one), or exit."""
    try:
        db.ping()
    except _DATABASE_ERRORS as exc:
        database_failed(settings, exc)


def log_configuration(settings: Settings) -> None:
    """Log one line naming the features switched off and the variables left to defaults."""
    disabled, defaulted = settings.disabled(), list(settings.defaulted)
    parts = [f"{feature} (set {variable})" for feature, variable in disabled.items()]
    message = "configuration: disabled " + (", ".join(parts) or "nothing")
    message += "; defaulted " + (", ".join(
        f"{name}={'<embedded>' if name != 'PUBLIC_BASE_URL' else settings.public_base_url}"
        for name in defaulted) or "nothing")
    level = logging.WARNING if disabled or defaulted else logging.INFO
    logs.event(log, level, message, disabled=disabled, defaulted=defaulted)


def prepare_or_exit(settings: Settings) -> None:
    """What a server does once before serving: migrate, then say what is off."""
    migrate_or_exit(settings)
    log_configuration(settings)
