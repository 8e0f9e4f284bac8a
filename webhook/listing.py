"""Manifests and deliveries as pages of typed rows, for the admin listing and the console.

Pages are cut by keyset cursors (the last row's sort key, see
``webhook.domain.ManifestKey`` and ``DeliveryKey``), so a page costs the same
wherever it starts and rows written meanwhile shift nothing. A page of
manifests is three statements whatever its size: the manifests (their state
worked out in SQL, so that a state filter pages correctly), then the page's
batches, then its canvas counts. A page of deliveries is one.

A manifest's state follows the rules of ``reading.state_of`` (``_state``
below writes them in SQL, so that the database can filter on it);
``tests/test_listing.py`` checks that both agree for every state.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass

from peewee import SQL, Case, fn

from webhook.deliveries import Delivery
from webhook.domain import (PAGE_DEFAULT, PAGE_MOST, QUEUEING_INTERRUPTED, QUEUEING_STOPPED,
                            DeliveryKey, ManifestKey)
from webhook.model_base import COMPLETED, INGESTING
from webhook.models import Batch, Manifest
from webhook.paintings import CanvasPainting

INTERRUPTED = "The rebuild was interrupted before it finished."


@dataclass(frozen=True, slots=True)
class BatchProgress:
    """One batch of a listed manifest: counts are known once the batch completed."""

    id: int
    status: str
    count: int | None
    completed: int | None
    errors: int | None
    created_at: dt.datetime | None
    finished: dt.datetime | None


@dataclass(frozen=True, slots=True)
class BatchCounts:
    total: int
    complete: int


@dataclass(frozen=True, slots=True)
class AssetCounts:
    """A manifest's painted assets: ``finished`` as the completed batches report them.

    ``missing`` counts the assets the last published build did not find at the
    DLCS (zero before the first publication, as ``status`` says).
    """

    total: int
    finished: int
    errors: int
    missing: int


@dataclass(frozen=True, slots=True)
class ManifestRow:
    """One manifest as listed: its state, progress and last rebuild."""

    customer: int
    slug: str
    label: str | None
    state: str
    error: str | None
    batches: BatchCounts
    assets: AssetCounts
    batch_list: tuple[BatchProgress, ...]
    last_processed: dt.datetime | None
    published: bool
    updated_at: dt.datetime

    @property
    def key(self) -> str:
        return f"{self.customer}/{self.slug}"


@dataclass(frozen=True, slots=True)
class ManifestPage:
    rows: list[ManifestRow]
    next: ManifestKey | None  # None: this was the last page


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    delivery_id: str
    transport: str
    received_at: dt.datetime
    batch: int | None
    manifest: str | None
    outcome: str
    error: str | None
    attempts: int


@dataclass(frozen=True, slots=True)
class DeliveryPage:
    rows: list[DeliveryRow]
    next: DeliveryKey | None


def _state(now: dt.datetime) -> Case:
    """The manifest's state in SQL, rule for rule as ``reading.state_of`` decides it."""
    batch = Batch.alias("ingesting_batch")
    ingesting = fn.EXISTS(batch.select(SQL("1")).where(
        (batch.manifest == Manifest.id) & (batch.status == INGESTING)))
    errored = Batch.alias("errored_batch")
    with_errors = fn.EXISTS(errored.select(SQL("1")).where(
        (errored.manifest == Manifest.id) & (errored.errors > 0)))
    settled = Manifest.needs_rebuild == False  # noqa: E712 - SQL, not Python
    return Case(None, [
        (Manifest.queue_error.is_null(False), "ingesting"),
        # A request is queueing the assets (or was, until it was interrupted).
        (Manifest.queueing_until.is_null(False), "ingesting"),
        (ingesting, "ingesting"),
        (settled & Manifest.ingest_failed.is_null(False) & (Manifest.ingest_failed != ""),
         "failed"),
        (settled & with_errors, "complete-with-errors"),
        (settled, "complete"),
        (Manifest.rebuild_error.is_null(False) & (Manifest.rebuild_error != ""),
         "rebuild-failed"),
        (Manifest.rebuild_lease_until < now, "rebuild-failed"),
    ], "ingesting")


def list_manifests(*, now: dt.datetime, customer: int | None = None,
                   states: Collection[str] | None = None, limit: int = PAGE_DEFAULT,
                   after: ManifestKey | None = None) -> ManifestPage:
    """Return a page of manifests (of one customer, or all) sorted by customer and id.

    ``states`` keeps only manifests in those states; ``after`` continues
    behind a previous page's ``next``. ``now`` decides whether a rebuild's
    claim has expired (an interrupted rebuild).
    """
    if not 1 <= limit <= PAGE_MOST:
        raise ValueError(f"limit must be 1 to {PAGE_MOST}")
    state = _state(now)
    query = Manifest.select(Manifest.id, Manifest.customer, Manifest.slug, Manifest.document,
                            Manifest.queue_error, Manifest.queueing_until,
                            Manifest.rebuild_error, Manifest.last_processed,
                            Manifest.published_at, Manifest.updated_at, state.alias("state"))
    conditions = []
    if customer is not None:
        conditions.append(Manifest.customer == customer)
    if states is not None:
        conditions.append(state.in_(sorted(states)))
    if after is not None:
        conditions.append((Manifest.customer > after.customer)
                          | ((Manifest.customer == after.customer)
                             & (Manifest.slug > after.slug)))
    if conditions:
        query = query.where(*conditions)
    # One more than asked tells whether another page follows.
    found = list(query.order_by(Manifest.customer, Manifest.slug).limit(limit + 1))
    more = len(found) > limit
    rows = _manifest_rows(found[:limit], now)
    last = rows[-1] if more else None
    return ManifestPage(rows, ManifestKey(last.customer, last.slug) if last else None)


def manifest_row(customer: int, slug: str, *, now: dt.datetime) -> ManifestRow | None:
    """Return one manifest as the listing shows it, or None when it is not registered."""
    found = list(Manifest.select(
        Manifest.id, Manifest.customer, Manifest.slug, Manifest.document,
        Manifest.queue_error, Manifest.queueing_until, Manifest.rebuild_error,
        Manifest.last_processed, Manifest.published_at, Manifest.updated_at,
        _state(now).alias("state"),
    ).where((Manifest.customer == customer) & (Manifest.slug == slug)))
    rows = _manifest_rows(found, now)
    return rows[0] if rows else None


def _manifest_rows(manifests: list[Manifest], now: dt.datetime) -> list[ManifestRow]:
    """Add the batches and canvas counts of a page of manifests: two statements in all."""
    if not manifests:
        return []
    ids = [m.id for m in manifests]
    batches: dict[int, list[BatchProgress]] = {pk: [] for pk in ids}
    for (manifest_pk, *values) in (
            Batch.select(Batch.manifest, Batch.id, Batch.status, Batch.count, Batch.completed,
                         Batch.errors, Batch.created_at, Batch.finished)
            .where(Batch.manifest.in_(ids)).order_by(Batch.manifest, Batch.id).tuples()):
        batches[manifest_pk].append(BatchProgress(*values))
    painting = CanvasPainting
    counts = {manifest_pk: (total, int(ingesting or 0)) for manifest_pk, total, ingesting in (
        painting.select(painting.manifest, fn.COUNT(painting.id),
                        fn.SUM(Case(None, [(painting.ingesting == True, 1)], 0)))  # noqa: E712
        .where(painting.manifest.in_(ids)).group_by(painting.manifest).tuples())}
    return [_row(m, batches[m.id], *counts.get(m.id, (0, 0)), now) for m in manifests]


def _row(manifest: Manifest, batches: list[BatchProgress], total: int, ingesting: int,
         now: dt.datetime) -> ManifestRow:
    done = [b for b in batches if b.status == COMPLETED]
    finished = sum((b.completed or 0) + (b.errors or 0) for b in done)
    published = manifest.published_at is not None
    return ManifestRow(
        customer=manifest.customer, slug=manifest.slug, label=_label(manifest.document),
        state=manifest.state, error=_reason(manifest, now),
        batches=BatchCounts(total=len(batches), complete=len(done)),
        assets=AssetCounts(total=total, finished=min(finished, total),
                           errors=sum(b.errors or 0 for b in done),
                           missing=ingesting if published else 0),
        batch_list=tuple(batches), last_processed=manifest.last_processed,
        published=published, updated_at=manifest.updated_at)


def _reason(manifest: Manifest, now: dt.datetime) -> str | None:
    """Say why, as ``status`` does: the queueing error, the rebuild's, or an interruption."""
    if manifest.queue_error is not None:
        return f"{QUEUEING_STOPPED}: {manifest.queue_error}"
    if manifest.queueing_until is not None:
        return QUEUEING_INTERRUPTED if manifest.queueing_until < now else None
    if manifest.state in ("complete", "complete-with-errors"):
        return None
    if manifest.state == "failed":
        return manifest.ingest_failed
    if manifest.state == "rebuild-failed" and not manifest.rebuild_error:
        return INTERRUPTED
    return manifest.rebuild_error or None


def _label(document: dict | None) -> str | None:
    """The first text of the registration's ``label`` language map, if it has one."""
    label = (document or {}).get("label")
    if isinstance(label, dict):
        for values in label.values():
            if isinstance(values, list) and values and isinstance(values[0], str):
                return values[0]
    return None


def list_deliveries(*, batch: int | None = None, outcome: str | None = None,
                    limit: int = PAGE_DEFAULT, after: DeliveryKey | None = None) -> DeliveryPage:
    """Return a page of the delivery log, most recent first, in one statement."""
    if not 1 <= limit <= PAGE_MOST:
        raise ValueError(f"limit must be 1 to {PAGE_MOST}")
    query = Delivery.select(Delivery.id, Delivery.delivery_id, Delivery.transport,
                            Delivery.received_at, Delivery.batch, Delivery.manifest,
                            Delivery.outcome, Delivery.error, Delivery.attempts)
    conditions = []
    if batch is not None:
        conditions.append(Delivery.batch == batch)
    if outcome is not None:
        conditions.append(Delivery.outcome == outcome)
    if after is not None:
        conditions.append((Delivery.received_at < after.received_at)
                          | ((Delivery.received_at == after.received_at)
                             & (Delivery.id < after.id)))
    if conditions:
        query = query.where(*conditions)
    found = list(query.order_by(Delivery.received_at.desc(), Delivery.id.desc())
                 .limit(limit + 1))
    more = len(found) > limit
    rows = [DeliveryRow(d.delivery_id, d.transport, d.received_at, d.batch, d.manifest,
                        d.outcome, d.error, d.attempts) for d in found[:limit]]
    last = found[limit - 1] if more else None
    return DeliveryPage(rows, DeliveryKey(last.received_at, last.id) if last else None)

