"""gunicorn's logger, building an access line only when GUNICORN_ACCESSLOG asks for one.

``gunicorn.conf.py`` gives gunicorn a logging configuration (so that its own
lines are JSON, like the service's), and gunicorn takes any logging
configuration as a request for access lines: for every request it gathered the
line's fields and logged it, to a handler that drops it unless
``GUNICORN_ACCESSLOG`` names where it goes. The service logs every request
itself (``webhook.logs``), so by default nobody reads that line; under gevent
building it was about a twentieth of a worker's time per delivery (py-spy,
docs/performance.md).
"""

from __future__ import annotations

from gunicorn.glogging import Logger


class AccessLogWhenAsked(Logger):
    """gunicorn's Logger, whose access lines exist only when ``accesslog`` is set."""

    @property
    def access_log_enabled(self) -> bool:
        return bool(self.cfg.accesslog)

    def access(self, resp, req, environ, request_time) -> None:
        if self.cfg.accesslog:
            super().access(resp, req, environ, request_time)
