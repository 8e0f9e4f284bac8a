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
bodies, no settings. Secrets cannot leak from what is never written. Libraries
are the exception: urllib3 logs the URL it retries or is redirected to, query
included, so :func:`redact_queries` puts a :class:`QueryStringFilter` on its
loggers.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass, field

from flask import Flask, Response, g, has_request_context, request

REQUEST_ID_HEADER = "X-Request-Id"
# What an incoming X-Request-Id must look like to be kept: short, and nothing a
# log viewer or a header could misread.
_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_MAX_PATH = 512
# A query string: "?" after a path character, up to a space or a quote. What
# urllib3 logs is a URL or a path (the named query's "?cacheBust=..." today; a
# token in someone's query tomorrow).
_QUERY_STRING = re.compile(r"(?<=[^\s?'\"])\?[^\s'\"]*")
#: The loggers of urllib3's modules that log URLs (a logger's filters see only
#: the records logged on it, not its children's, so each is named).
URLLIB3_LOGGERS = ("urllib3.connectionpool", "urllib3.poolmanager", "urllib3.connection",
                   "urllib3.response", "urllib3.util.retry")

request_log = logging.getLogger("webhook.request")


# One encoder for every line: json.dumps with options builds a new one per call.
_ENCODER = json.JSONEncoder(default=str, separators=(",", ":"))


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object on one line."""

    # The last second formatted, and its text (a line per request: most share it).
    _second: tuple[int, str] = (-1, "")

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self._time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        fields = getattr(record, "fields", None)
        if not isinstance(fields, dict):
            fields = None
        # The request's own line carries its id: no need to look it up.
        request_id = (fields or {}).get("request_id") or current_request_id()
        if request_id is not None:
            entry["request_id"] = request_id
        if fields:
            entry.update((key, value) for key, value in fields.items() if key not in entry)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return _ENCODER.encode(entry)

    def _time(self, created: float) -> str:
        """Return ``created`` as UTC ISO 8601 to the millisecond: 2025-02-20T12:30:15.123Z."""
        second = int(created)
        cached = self._second
        if cached[0] != second:
            cached = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
            self._second = cached  # one assignment: threads see the old pair or the new
        return f"{cached[1]}.{int((created - second) * 1000):03d}Z"


class QueryStringFilter(logging.Filter):
    """Drop every query string from a record's message (the record is kept)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = strip_query_strings(message)
        if redacted != message:
            # Formatted once here, so no argument carries the query to a handler.
            record.msg, record.args = redacted, ()
        return True


def strip_query_strings(text: str) -> str:
    """Return ``text`` with the query string of every URL or path in it removed."""
    return _QUERY_STRING.sub("", text)


_QUERY_FILTER = QueryStringFilter()


def redact_queries(names: tuple[str, ...] = URLLIB3_LOGGERS) -> None:
    """Put the query-string filter on the named loggers (once each)."""
    for name in names:
        logger = logging.getLogger(name)
        if _QUERY_FILTER not in logger.filters:
            logger.addFilter(_QUERY_FILTER)


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


@dataclass(slots=True)
class _RequestLog:
    """What the request's log line needs, kept in ``g`` as one object (one lookup each)."""

    request_id: str
    started: float | None     # None: the request was answered before it was timed
    fields: dict = field(default_factory=dict)


def _request_log() -> _RequestLog | None:
    return g.get("request_log") if has_request_context() else None


def annotate(**fields) -> None:
    """Attach fields to the current request's log line (a no-op outside a request)."""
    if not has_request_context():
        return
    state = g.get("request_log")
    if state is None:
        state = g.request_log = _RequestLog(_new_request_id(), None)
    state.fields.update(fields)


def current_request_id() -> str | None:
    """Return the id of the request being served, or None outside one."""
    state = _request_log()
    return state.request_id if state is not None else None


def _new_request_id() -> str:
    # 128 random bits as 32 hex digits, as uuid4().hex but without building a UUID.
    return os.urandom(16).hex()


def event(logger: logging.Logger, level: int, message: str, **fields) -> None:
    """Log one structured line: ``message`` plus ``fields`` as top-level JSON keys.

    The record names no source file or line: nothing prints them, and looking
    them up (``findCaller``) was a tenth of the line's cost, paid per request.
    """
    if logger.isEnabledFor(level):
        logger.handle(logger.makeRecord(logger.name, level, "(unknown file)", 0, message, (),
                                        None, "(unknown function)", {"fields": fields}))


def init_app(app: Flask) -> None:
    """Give every request an id, time it, and log one line when it is answered."""

    @app.before_request
    def _start() -> None:
        given = request.headers.get(REQUEST_ID_HEADER, "")
        g.request_log = _RequestLog(
            given if _SAFE_REQUEST_ID.fullmatch(given) else _new_request_id(),
            time.perf_counter())

    @app.after_request
    def _finish(response: Response) -> Response:
        state = g.get("request_log") or _RequestLog(_new_request_id(), None)
        response.headers[REQUEST_ID_HEADER] = state.request_id
        duration_ms = (round((time.perf_counter() - state.started) * 1000, 1)
                       if state.started is not None else None)
        fields = {"method": request.method, "path": request.path[:_MAX_PATH],
                  "status": response.status_code, "duration_ms": duration_ms,
                  "request_id": state.request_id, **state.fields}
        level = logging.WARNING if response.status_code >= 500 else logging.INFO
        event(request_log, level, "request", **fields)
        return response
