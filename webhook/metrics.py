"""Prometheus metrics: what the service counts and times, and the /metrics text.

The metrics live in prometheus_client's default registry, as the library
intends: defining them does no I/O (every one has labels, so no value exists
until the first observation). Under gunicorn, ``gunicorn.conf.py`` sets
``PROMETHEUS_MULTIPROC_DIR`` before any worker imports prometheus_client, so
each worker writes its values to files there and :func:`exposition` adds up
every worker's files; whichever worker answers a scrape reports the same
totals. Outside gunicorn (tests, ``flask run``) values stay in the process.

This module records and exposes values and knows nothing else of the service
(it imports only prometheus_client): the callers decide the labels. Gauges
counted in the database at scrape time (``webhook_manifests_awaiting_rebuild``)
live beside the /metrics view and are handed to :func:`exposition`.
"""

from __future__ import annotations

from prometheus_client import (REGISTRY, CollectorRegistry, Counter, Histogram,
                               disable_created_metrics, generate_latest)
from prometheus_client.multiprocess import MultiProcessCollector

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



# --------------------------------------------------------------- recording

def delivery(transport: str, outcome: str) -> None:
    """Count one authenticated delivery under what processing it came to."""
    DELIVERIES.labels(transport, outcome).inc()


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


def rebuild(outcome: str, seconds: float, failed_stage: str | None = None) -> None:
    """Record one rebuild's duration (``published`` or ``failed``) and the stage that failed."""
    REBUILD_SECONDS.labels(outcome).observe(seconds)
    if failed_stage is not None:
        REBUILD_FAILURES.labels(failed_stage).inc()


# --------------------------------------------------------------- exposition

def exposition(multiprocess_dir: str | None, scrape_time: CollectorRegistry) -> bytes:
    """Return every metric in the Prometheus text format.

    With ``multiprocess_dir`` (gunicorn's workers), the sum of every worker's
    files there; without, this process's own registry. ``scrape_time`` holds
    collectors that are computed afresh for each scrape.
    """
    if multiprocess_dir:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=multiprocess_dir)
    else:
        registry = REGISTRY
    return generate_latest(registry) + generate_latest(scrape_time)
