"""Structured logs: one JSON line per request and per rebuild, tied by a request id.

``init_app(app)`` times every request and logs one line for it on the
``webhook.request`` logger (method, path, status, duration, request id and
whatever the view attached with :func:`annotate`: delivery id, batch,
manifest, outcome...). The request id is the caller's ``X-Request-Id`` when it
is a short safe token, else a fresh one; it is answered in ``X-Request-Id`` and
stamped on every line logged while the request runs.

:func:`configure` installs the :class:`JsonFormatter` on the root logger, but
only when nothing has configured logging yet (pytest's caplog, gunicorn's
``logconfig``, an embedding application all win).

What is logged is chosen, never dumped: no headers, no query strings, no
bodies, no settings. Secrets cannot leak from what is never written.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import time
import uuid

from flask import Flask, Response, g, has_request_context, request

REQUEST_ID_HEADER = "X-Request-Id"
# What an incoming X-Request-Id must look like to be kept: short, and nothing a
# log viewer or a header could misread.
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_MAX_PATH = 512

request_log = logging.getLogger("webhook.request")


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc)
                      .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        request_id = current_request_id()
        if request_id is not None:
            entry["request_id"] = request_id
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update((key, value) for key, value in fields.items() if key not in entry)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, separators=(",", ":"))


def configure(level: int = logging.INFO) -> bool:
    """Send every log record to stderr as JSON, unless logging is configured already."""
    root = logging.getLogger()
    if root.handlers:
        return False
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    return True


def gunicorn_logconfig(accesslog: str | None) -> dict:
    """Return gunicorn's ``logconfig_dict``: its own lines as JSON too, like the service's.

    The root logger (the service's lines) and ``gunicorn.error`` write JSON to
    stderr; ``gunicorn.access`` writes JSON to ``accesslog`` (``-``: stdout) or
    nowhere, since the service logs every request itself. ``gunicorn.error``
    keeps the level gunicorn's ``--log-level`` gave it.
    """
    json_formatter = {"()": f"{__name__}.JsonFormatter"}
    handlers = {"stderr": {"class": "logging.StreamHandler", "formatter": "json",
                           "stream": "ext://sys.stderr"}}
    if accesslog == "-":
        handlers["access"] = {"class": "logging.StreamHandler", "formatter": "json",
                              "stream": "ext://sys.stdout"}
    elif accesslog:
        handlers["access"] = {"class": "logging.FileHandler", "formatter": "json",
                              "filename": accesslog}
    else:
        handlers["access"] = {"class": "logging.NullHandler"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": json_formatter},
        "handlers": handlers,
        "root": {"level": "INFO", "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"handlers": ["stderr"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["access"], "propagate": False},
        },
    }


def annotate(**fields) -> None:
    """Attach fields to the current request's log line (a no-op outside a request)."""
    if not has_request_context():
        return
    annotations = g.get("log_fields")
    if annotations is None:
        annotations = g.log_fields = {}
    annotations.update(fields)


def current_request_id() -> str | None:
    """Return the id of the request being served, or None outside one."""
    return g.get("request_id") if has_request_context() else None


def event(logger: logging.Logger, level: int, message: str, **fields) -> None:
    """Log one structured line: ``message`` plus ``fields`` as top-level JSON keys."""
    logger.log(level, message, extra={"fields": fields})


def init_app(app: Flask) -> None:
    """Give every request an id, time it, and log one line when it is answered."""

    @app.before_request
    def _start() -> None:
        g.request_started = time.perf_counter()
        given = request.headers.get(REQUEST_ID_HEADER, "")
        g.request_id = given if _SAFE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        g.log_fields = {}

    @app.after_request
    def _finish(response: Response) -> Response:
        request_id = g.get("request_id") or uuid.uuid4().hex
        response.headers[REQUEST_ID_HEADER] = request_id
        started = g.get("request_started")
        duration_ms = (round((time.perf_counter() - started) * 1000, 1)
                       if started is not None else None)
        fields = {"method": request.method, "path": request.path[:_MAX_PATH],
                  "status": response.status_code, "duration_ms": duration_ms,
                  "request_id": request_id}
        fields.update(g.get("log_fields") or {})
        level = logging.WARNING if response.status_code >= 500 else logging.INFO
        event(request_log, level, "request", **fields)
        return response
