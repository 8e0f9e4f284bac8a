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
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
# Above the longest rebuild: DLCS timeout with retries, plus storing the document;
# and above the rebuild lease when REBUILD_LEASE_SECONDS makes it longer.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", str(max(
    # "" means the default, as in webhook.config
    4 * int(os.environ.get("DLCS_TIMEOUT_SECONDS") or "30") + 150,
    int(os.environ.get("REBUILD_LEASE_SECONDS") or "0") + 30))))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
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
