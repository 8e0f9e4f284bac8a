"""Prometheus metrics: what the service counts and times, and the /metrics text.

The metrics live in prometheus_client's default registry, as the library
intends: defining them does no I/O (every one has labels, so no value exists
until the first observation). Under gunicorn, ``gunicorn.conf.py`` sets
``PROMETHEUS_MULTIPROC_DIR`` before any worker imports prometheus_client, so
each worker writes its values to files there and :func:`exposition` adds up
every worker's files; whichever worker answers a scrape reports the same
totals. Outside gunicorn (tests, ``flask run``) values stay in the process.

``webhook_manifests_awaiting_rebuild`` is not kept anywhere: it is counted in
the database when /metrics is scraped, so requests never pay for it and every
worker reports the same number.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import peewee
from prometheus_client import (REGISTRY, CollectorRegistry, Counter, Histogram,
                               disable_created_metrics, generate_latest)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector

from webhook import logs
from webhook.errors import PayloadError, RebuildFailed, RebuildInProgress, WebhookError
from webhook.models import Manifest

log = logging.getLogger("webhook.metrics")
rebuild_log = logging.getLogger("webhook.rebuild")

# gunicorn's workers (multiprocess mode) export no *_created series; a single
# process would, so they are off everywhere and both expositions look alike.
disable_created_metrics()

DELIVERIES = Counter(
    "webhook_deliveries", "Authenticated deliveries processed, by transport and outcome.",
    ["transport", "outcome"])
SIGNATURE_FAILURES = Counter(
    "webhook_signature_failures",
    "Deliveries refused before processing: a webhook signature that does not verify, "
    "or an SNS message that is forged, malformed or unwanted; by reason.",
    ["transport", "reason"])
REBUILD_SECONDS = Histogram(
    "webhook_rebuild_duration_seconds",
    "Manifest rebuilds (named query, build, store, record), by outcome.",
    ["outcome"], buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300))
REBUILD_FAILURES = Counter(
    "webhook_rebuild_failures", "Rebuilds that failed, by the stage that failed.", ["stage"])
DLCS_SECONDS = Histogram(
    "webhook_dlcs_request_duration_seconds",
    "DLCS calls, retries included, by call (named_query, manifest_query, get_batch, queue, "
    "find_assets, patch_assets, batch_assets).",
    ["call"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
DLCS_ERRORS = Counter(
    "webhook_dlcs_errors",
    "DLCS calls that failed, by call and reason (timeout, unreachable, status-NNN...).",
    ["call", "reason"])
STORAGE_SECONDS = Histogram(
    "webhook_storage_operation_duration_seconds",
    "Manifest store operations (put, get, check), by backend.",
    ["operation", "backend"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
STORAGE_ERRORS = Counter(
    "webhook_storage_errors", "Manifest store operations that failed, by backend.",
    ["operation", "backend"])

AWAITING_REBUILD = "webhook_manifests_awaiting_rebuild"


# --------------------------------------------------------------- recording

@contextmanager
def delivery_outcome(transport: str) -> Iterator[Callable]:
    """Count one delivery under what processing it came to.

    The block returns ``record(outcome)``; a block that raises is counted as
    ``unprocessable`` (a bad body), ``failed`` (the rebuild is pending) or
    ``error`` (anything else, e.g. the database is down).
    """
    seen: list[str] = []

    def record(outcome):
        seen.append(outcome.outcome)
        return outcome

    try:
        yield record
    except PayloadError:
        seen.append("unprocessable")
        raise
    except (RebuildFailed, RebuildInProgress):
        seen.append("failed")
        raise
    except BaseException:
        seen.append("error")
        raise
    finally:
        DELIVERIES.labels(transport, seen[-1] if seen else "error").inc()


def signature_failure(transport: str, reason: str) -> None:
    """Count a delivery refused before processing."""
    SIGNATURE_FAILURES.labels(transport, reason).inc()


def dlcs_call(call: str, seconds: float, failure: str | None) -> None:
    """Record one DLCS call's latency, and its failure if it failed."""
    DLCS_SECONDS.labels(call).observe(seconds)
    if failure is not None:
        DLCS_ERRORS.labels(call, failure).inc()


def storage_operation(operation: str, backend: str, seconds: float, failed: bool) -> None:
    """Record one store operation's latency, and its failure if it failed."""
    STORAGE_SECONDS.labels(operation, backend).observe(seconds)
    if failed:
        STORAGE_ERRORS.labels(operation, backend).inc()


class RebuildReport:
    """Time a rebuild's stages; log its one line and record its metrics when it ends.

    Use as ``with RebuildReport(key, batch) as report:`` around the whole
    rebuild and ``with report.stage("store"):`` around each stage. A block that
    raises is reported as failed in the stage that was running.
    """

    def __init__(self, manifest: str, batch: int | None = None):
        self.manifest = manifest
        self.batch = batch
        self.canvases: int | None = None
        self.missing_assets: int | None = None
        self._stages: dict[str, float] = {}
        self._running: str | None = None
        self._started = 0.0

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time one stage (named_query, build, store) of the rebuild."""
        self._running = name
        started = time.perf_counter()
        try:
            yield
        finally:
            self._stages[name] = time.perf_counter() - started
        self._running = None

    def __enter__(self) -> "RebuildReport":
        self._started = time.perf_counter()
        return self

    def __exit__(self, kind, exc, traceback) -> None:
        seconds = time.perf_counter() - self._started
        fields = {"manifest": self.manifest, "batch": self.batch, "canvases": self.canvases,
                  "missing_assets": self.missing_assets}
        fields.update({f"{name}_ms": round(spent * 1000, 1)
                       for name, spent in self._stages.items()})
        fields["duration_ms"] = round(seconds * 1000, 1)
        if exc is None:
            REBUILD_SECONDS.labels("published").observe(seconds)
            logs.event(rebuild_log, logging.INFO, "rebuild", outcome="published", **fields)
            return
        # Outside the timed stages a rebuild only reads and writes the database.
        stage = self._running or "database"
        REBUILD_SECONDS.labels("failed").observe(seconds)
        REBUILD_FAILURES.labels(stage).inc()
        logs.event(rebuild_log, logging.WARNING, "rebuild", outcome="failed", stage=stage,
                   error=_error_text(exc), **fields)


def _error_text(exc: BaseException) -> str:
    # The project's own errors carry messages written to be shown; anything
    # else might carry anything, so only its type is told.
    if isinstance(exc, WebhookError):
        return str(exc)[:2000]
    return f"internal error ({type(exc).__name__})"


# --------------------------------------------------------------- exposition

class _AwaitingRebuild:
    """The number of manifests whose rebuild is pending, counted at scrape time."""

    def describe(self):
        return [GaugeMetricFamily(AWAITING_REBUILD, self.collect.__doc__)]

    def collect(self):
        """Manifests whose batches are all complete but whose rebuild has not succeeded."""
        try:
            count = Manifest.select().where(Manifest.needs_rebuild == True).count()  # noqa: E712
        except (peewee.OperationalError, peewee.InterfaceError) as exc:
            log.warning("cannot count manifests awaiting a rebuild: %s", type(exc).__name__)
            return
        yield GaugeMetricFamily(AWAITING_REBUILD, self.collect.__doc__, value=count)


_SCRAPE_TIME = CollectorRegistry(auto_describe=False)
_SCRAPE_TIME.register(_AwaitingRebuild())


def exposition(multiprocess_dir: str | None) -> bytes:
    """Return every metric in the Prometheus text format.

    With ``multiprocess_dir`` (gunicorn's workers), the sum of every worker's
    files there; without, this process's own registry.
    """
    if multiprocess_dir:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=multiprocess_dir)
    else:
        registry = REGISTRY
    return generate_latest(registry) + generate_latest(_SCRAPE_TIME)
