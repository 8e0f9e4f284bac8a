"""Gunicorn settings: ``gunicorn -c gunicorn.conf.py wsgi:app`` (from any working directory).

This file runs in gunicorn's master before any worker starts. The service's
settings and the GUNICORN_* variables below are validated here, once, by
``webhook.config`` and ``webhook.server_settings`` (a bad value: one JSON line
naming the variable, exit status 3); ``on_starting`` then reaches and migrates the database (unreachable:
one line naming its host and port, exit status 69) and logs one line naming
what is disabled and what is defaulted. The workers inherit the validated
settings. A command-line option overrides what is set here, except the worker
class: choose it with GUNICORN_WORKER_CLASS, which decides what is patched below.
"""

import os

# gevent workers: patch the standard library before anything else is imported.
# This file imports the service (and so requests, urllib3, botocore and their
# ssl contexts) in the master, and the workers inherit those modules; patched
# only later, in the worker, every HTTPS call would fail (ssl's RecursionError,
# gevent issue 1016). Read raw here; ServerSettings validates it below.
if os.environ.get("GUNICORN_WORKER_CLASS") in (None, "", "gevent"):
    from gevent import monkey

    monkey.patch_all()

import atexit
import glob  # noqa: E402 - after the patch above
import shutil
import sys
import tempfile
from pathlib import Path

# Metrics from every worker: prometheus_client's multiprocess mode has each
# worker write its values to files in PROMETHEUS_MULTIPROC_DIR, and /metrics
# (answered by any worker) adds them up. prometheus_client reads the variable
# when it is first imported, which importing webhook below does, so it is set
# first; without one from the operator, to a private temporary directory.
_METRICS_DIR_PREFIX = "dlcs-webhook-metrics-"
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix=_METRICS_DIR_PREFIX)
os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
_MASTER = os.getpid()


@atexit.register
def _remove_own_metrics_dir():
    """When the master exits, however (a refused setting too), remove the directory it made."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    if (os.getpid() == _MASTER  # not a worker: they exit through here as well
            and os.path.dirname(directory) == tempfile.gettempdir()
            and os.path.basename(directory).startswith(_METRICS_DIR_PREFIX)):
        shutil.rmtree(directory, ignore_errors=True)


# gunicorn puts only its working directory on sys.path; the project's modules
# are found from wherever it starts.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from webhook import logs, startup  # noqa: E402 - needs the two above

_settings = startup.settings_or_exit(os.environ)
_server = startup.server_settings_or_exit(os.environ, _settings)
startup.hand_over(_settings)

bind = _server.bind
workers = _server.workers
# gevent: a connection costs a greenlet, not a thread, so idle and slow clients
# (a body trickling in) cannot take every worker's capacity; BODY_TIMEOUT_SECONDS
# and keepalive bound how long each may stay.
worker_class = _server.worker_class
worker_connections = _server.worker_connections
threads = _server.threads
# Above the longest rebuild and the rebuild lease: Settings.worker_timeout_seconds.
timeout = _server.timeout
graceful_timeout = _server.graceful_timeout
# Also, under gevent, how long a connection may take to send a request's headers.
keepalive = 5
# The webhook answers a hostile 100 KB signature header itself (401 problem+json).
limit_request_field_size = 131072
accesslog = _server.accesslog
# gunicorn's own lines (and the service's) as one JSON object per line.
logconfig_dict = logs.gunicorn_logconfig(accesslog)
# ... which gunicorn would take as a request for access lines even without one.
logger_class = "webhook.access_log.AccessLogWhenAsked"
# gunicorn 27's runtime control socket defaults to one path per user
# (~/.gunicorn/gunicorn.ctl), so two instances on a host would fight over it;
# the service does not use it.
control_socket_disable = True


def on_starting(server):
    """Migrate the database (or exit), empty the metrics directory, say what is off."""
    startup.migrate_or_exit(_settings)
    for path in glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], "*.db")):
        os.remove(path)
    startup.log_configuration(_settings)


def post_fork(server, worker):
    """Under gevent, make psycopg2 wait for PostgreSQL by letting other requests run."""
    if worker_class != "gevent":
        return
    import psycopg2.extensions

    psycopg2.extensions.set_wait_callback(_wait_for_postgresql)


def post_worker_init(worker):
    """Say when a worker can serve: its app is loaded and its signal handlers are its own.

    Until then a worker still has the master's handlers, and a SIGTERM (a stop
    while it boots) is lost: the master waits GUNICORN_GRACEFUL_TIMEOUT for it.
    """
    worker.log.info("Worker ready (pid: %s)", worker.pid)


def _wait_for_postgresql(connection):
    """psycopg2's wait callback: poll the connection, yielding to gevent while it waits."""
    import psycopg2
    from gevent.socket import wait_read, wait_write
    from psycopg2 import extensions

    # libpq ignores connect_timeout when it is polled, so the wait has its own
    # bound while connecting (webhook.db's connect_timeout).
    timeout = _CONNECT_TIMEOUT if connection.status == extensions.STATUS_SETUP else None
    while True:
        state = connection.poll()
        if state == extensions.POLL_OK:
            return
        try:
            if state == extensions.POLL_READ:
                wait_read(connection.fileno(), timeout=timeout)
            elif state == extensions.POLL_WRITE:
                wait_write(connection.fileno(), timeout=timeout)
            else:
                raise psycopg2.OperationalError(f"unexpected connection state {state}")
        except TimeoutError as exc:  # gevent's socket.timeout
            connection.close()
            raise psycopg2.OperationalError("timed out connecting to PostgreSQL") from exc


_CONNECT_TIMEOUT = 5.0


def child_exit(server, worker):
    """Drop a dead worker's live gauges (its counters keep counting in the totals)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
