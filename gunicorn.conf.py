"""Gunicorn settings, read by ``gunicorn wsgi:app`` from the working directory.

Each can be overridden from the environment (GUNICORN_* names below) or the
command line.
"""

import glob
import os
import shutil
import tempfile

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
# gevent: a connection costs a greenlet, not a thread, so idle and slow clients
# (a body trickling in) cannot take every worker's capacity; the body deadline
# (BODY_TIMEOUT_SECONDS) and keepalive below bound how long each may stay.
# "gthread" (threads per worker) remains available.
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gevent")
# Connections one gevent worker serves at once (idle, slow or working).
worker_connections = int(os.environ.get("GUNICORN_WORKER_CONNECTIONS", "1000"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
# Above the longest rebuild: DLCS timeout with retries, plus storing the document;
# and above the rebuild lease when REBUILD_LEASE_SECONDS makes it longer.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", str(max(
    # "" means the default, as in webhook.config
    4 * int(os.environ.get("DLCS_TIMEOUT_SECONDS") or "30") + 150,
    int(os.environ.get("REBUILD_LEASE_SECONDS") or "0") + 30))))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
# Also, under gevent, how long a connection may take to send a request's headers.
keepalive = 5
# The webhook answers a hostile 100 KB signature header itself (401 problem+json).
limit_request_field_size = 131072
accesslog = os.environ.get("GUNICORN_ACCESSLOG", None)
# gunicorn 27's runtime control socket defaults to one path per user
# (~/.gunicorn/gunicorn.ctl), so two instances on a host would fight over it;
# the service does not use it.
control_socket_disable = True

# Metrics from every worker: prometheus_client's multiprocess mode has each
# worker write its values to files in PROMETHEUS_MULTIPROC_DIR, and /metrics
# (answered by any worker) adds them up. The variable must be set before a
# worker imports prometheus_client: on_starting sets it in the master, before
# the first fork; without one from the operator, to a private temporary directory.
_METRICS_DIR_PREFIX = "dlcs-webhook-metrics-"


def on_starting(server):
    """Give the workers a metrics directory, emptied of a previous run's files."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        directory = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(
            prefix=_METRICS_DIR_PREFIX)
    os.makedirs(directory, exist_ok=True)
    for path in glob.glob(os.path.join(directory, "*.db")):
        os.remove(path)


def post_fork(server, worker):
    """Under gevent, make psycopg2 wait for PostgreSQL by letting other requests run."""
    if "gevent" not in server.cfg.worker_class_str:
        return
    # Nothing of the service is imported here: gevent patches the worker after
    # this hook, and modules that use ssl or sockets must be imported after it.
    import psycopg2.extensions

    psycopg2.extensions.set_wait_callback(_wait_for_postgresql)


def _wait_for_postgresql(connection):
    """psycopg2's wait callback: poll the connection, yielding to gevent while it waits."""
    import psycopg2
    from psycopg2 import extensions
    from gevent.socket import wait_read, wait_write

    # libpq ignores connect_timeout when it is polled, so the wait has its own
    # bound while connecting (the pool's, webhook.db's connect_timeout).
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


def on_exit(server):
    """Remove the temporary metrics directory, if this file created it."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    if (os.path.dirname(directory) == tempfile.gettempdir()
            and os.path.basename(directory).startswith(_METRICS_DIR_PREFIX)):
        shutil.rmtree(directory, ignore_errors=True)
