"""Gunicorn settings, read by ``gunicorn wsgi:app`` from the working directory.

Each can be overridden from the environment (GUNICORN_* names below) or the
command line.
"""

import os

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
# Above the longest rebuild: DLCS timeout with retries, plus storing the document.
timeout = int(os.environ.get("GUNICORN_TIMEOUT",
                             str(4 * int(os.environ.get("DLCS_TIMEOUT_SECONDS", "30")) + 150)))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
keepalive = 5
# The webhook answers a hostile 100 KB signature header itself (401 problem+json).
limit_request_field_size = 131072
accesslog = os.environ.get("GUNICORN_ACCESSLOG", None)
