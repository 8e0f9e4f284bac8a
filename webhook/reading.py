"""The read side: a manifest's state, its public representation, the delivery log.

Nothing here writes: these answer operators and viewers from the database and
the store.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Callable

from webhook.config import Settings
from webhook.deliveries import Delivery
from webhook.domain import (QUEUEING_INTERRUPTED, QUEUEING_STOPPED, SUPERSEDED, UNFINISHED,
                            DeliveryKey)
from webhook.errors import RebuildFailed
from webhook.model_base import COMPLETED, INGESTING, utcnow
from webhook.models import Batch, Manifest
from webhook.paintings import CanvasPainting
from webhook.storage import ManifestStore, StoredStream, published_key

PRESENTATION_CONTEXT = "http://iiif.io/api/presentation/3/context.json"
# How many times a GET reads the manifest's row when rebuilds keep replacing its document.
_LOOKS = 3
COMPLETE = "complete"
COMPLETE_WITH_ERRORS = "complete-with-errors"   # published; some assets failed at the DLCS
FAILED = "failed"                               # every asset failed: nothing to publish
REBUILD_FAILED = "rebuild-failed"


@dataclass(frozen=True, slots=True)
class StalledBatch:
    """A batch still ingesting that will not, or has not for too long, finish."""

    batch: int
    reason: str                   # SUPERSEDED or UNFINISHED
    age: int                      # whole seconds since the batch was recorded
    since: dt.datetime | None     # when it was recorded (naive UTC)


@dataclass(frozen=True, slots=True)
class Status:
    """A manifest's state, its batches and its last rebuild, as operators see them."""

    state: str
    batches: list[Batch]
    last_processed: dt.datetime | None
    error: str | None
    missing_assets: list[str]
    failed_assets: list[dict]   # {"asset", "canvas", "error"} per painted resource
    stalled: list[StalledBatch]
    etag: str                   # the registration's version (a PUT's If-Match)


@dataclass(frozen=True, slots=True)
class DeliveryPage:
    """A page of the delivery log, and where the next one starts (None: this is the last)."""

    rows: list[Delivery]
    next: DeliveryKey | None


@dataclass(frozen=True, slots=True)
class PublishedDocument:
    """The stored published manifest, opened for streaming (the caller closes it), and its ETag."""

    body: StoredStream
    etag: str


@dataclass(frozen=True, slots=True)
class NotModified:
    """The client's cached copy is the published one."""

    etag: str


@dataclass(frozen=True, slots=True)
class NotPublishedYet:
    """Never published: the registration as it stands, with how far ingest has got."""

    summary: dict
    # Set when the first rebuild failed: seconds before asking again is worth it.
    retry_after: int | None = None


class Reader:
    """Answer questions about manifests and deliveries."""

    def __init__(self, settings: Settings, store: ManifestStore,
                 clock: Callable[[], dt.datetime] = utcnow):
        self.settings = settings
        self.store = store
        self.clock = clock

    def status(self, customer: int, slug: str) -> Status:
        """Describe a manifest's state, batches and last rebuild."""
        manifest = Manifest.registered(customer, slug)
        batches = Batch.of_manifest(manifest.id)
        missing = []
        if manifest.published_at is not None:
            missing = [r.asset_id for r in CanvasPainting.select(CanvasPainting.asset_id).where(
                (CanvasPainting.manifest == manifest.id) & CanvasPainting.ingesting)]
        now = self.clock()
        state, error = state_of(manifest, batches, now)
        failed = [{"asset": row.asset_id, "canvas": row.canvas_id, "error": row.error}
                  for row in CanvasPainting.failed(manifest.id)]
        return Status(state, batches, manifest.last_processed, error, missing, failed,
                      stalled_batches(batches, now, self.settings.stalled_batch_seconds),
                      manifest.etag)

    def published(self, customer: int, slug: str, if_none_match: frozenset[str] = frozenset()
                  ) -> PublishedDocument | NotModified | NotPublishedYet:
        """Return the stored manifest, or the registration with its ingesting summary.

        A revalidation whose tag matches the published one is answered from the
        database alone, without reading the store. The document served is the
        one stored at the key the database records with that tag.
        """
        manifest = Manifest.registered(customer, slug)
        for _ in range(_LOOKS):
            etag = manifest.published_etag
            if etag is None:
                break
            if etag in if_none_match or "*" in if_none_match:
                return NotModified(etag)
            key = manifest.published_key
            stored = self.store.open(published_key(customer, slug, key))
            if stored is not None:
                return PublishedDocument(stored, stored.etag)
            # A rebuild that finished since the row was read deletes the
            # document it replaced: read the row again for the new one.
            manifest = Manifest.registered(customer, slug)
            if manifest.published_key == key:
                break
        view = self._ingesting_view(manifest)
        failed = view["ingesting"]["state"] == REBUILD_FAILED
        return NotPublishedYet(view, RebuildFailed.retry_after_seconds if failed else None)

    def _ingesting_view(self, manifest: Manifest) -> dict:
        batches = Batch.of_manifest(manifest.id)
        total = CanvasPainting.select().where(CanvasPainting.manifest == manifest.id).count()
        done = [b for b in batches if b.status == COMPLETED]
        finished = sum((b.completed or 0) + (b.errors or 0) for b in done)
        # A viewer must tell a manifest that is stuck from one making progress.
        state, error = state_of(manifest, batches, self.clock())
        summary = {"state": REBUILD_FAILED if state == REBUILD_FAILED else INGESTING,
                   "total": total, "finished": min(finished, total),
                   "errors": sum(b.errors or 0 for b in done)}
        if state == REBUILD_FAILED:
            summary["reason"] = error
        return {
            "@context": PRESENTATION_CONTEXT,
            "id": f"{self.settings.public_base_url}/{manifest.customer}/manifests/{manifest.slug}",
            # "items" holds only what registered canvases lend the build (rule 9).
            **{key: value for key, value in manifest.document.items() if key != "items"},
            "ingesting": summary,
        }

    def deliveries(self, batch: int | None, outcome: str | None, limit: int,
                   cursor: DeliveryKey | None = None) -> DeliveryPage:
        """List recorded deliveries, most recent first, from ``cursor`` on.

        The page is cut by its last row's sort key (keyset paging), so a page
        costs the same wherever it starts, and deliveries recorded meanwhile
        neither repeat nor skip a row of the pages that follow.
        """
        query = Delivery.select(Delivery.id, Delivery.delivery_id, Delivery.transport,
                                Delivery.received_at, Delivery.batch, Delivery.manifest,
                                Delivery.outcome, Delivery.error, Delivery.failed_assets)
        if batch is not None:
            query = query.where(Delivery.batch == batch)
        if outcome is not None:
            query = query.where(Delivery.outcome == outcome)
        if cursor is not None:
            query = query.where((Delivery.received_at < cursor.received_at)
                                | ((Delivery.received_at == cursor.received_at)
                                   & (Delivery.id < cursor.id)))
        # One more than asked tells whether another page follows.
        rows = list(query.order_by(Delivery.received_at.desc(), Delivery.id.desc())
                    .limit(limit + 1))
        if len(rows) <= limit:
            return DeliveryPage(rows, None)
        last = rows[limit - 1]
        return DeliveryPage(rows[:limit], DeliveryKey(last.received_at, last.id))

    def stale_manifests(self, older_than: dt.timedelta) -> list[tuple[int, str]]:
        """List manifests with a batch ingesting for longer than ``older_than``."""
        cutoff = self.clock() - older_than
        query = (Manifest.select(Manifest.customer, Manifest.slug).join(Batch)
                 .where((Batch.status == INGESTING)
                        & (Batch.created_at.is_null() | (Batch.created_at < cutoff)))
                 .distinct().order_by(Manifest.customer, Manifest.slug))
        return [(m.customer, m.slug) for m in query]


def stalled_batches(batches: list[Batch], now: dt.datetime,
                    stalled_after: float) -> list[StalledBatch]:
    """Pick the batches still ingesting that the DLCS superseded or that are too old.

    A superseded batch never finishes (the DLCS moved its assets to another
    one); an unfinished one has been ingesting for more than ``stalled_after``
    seconds since it was recorded. Either waits for an operator to requeue
    the manifest's assets or drop the batch.
    """
    stalled = []
    for batch in batches:
        if batch.status != INGESTING:
            continue
        age = max(0, int((now - batch.created_at).total_seconds())) if batch.created_at else 0
        if batch.superseded:
            stalled.append(StalledBatch(batch.id, SUPERSEDED, age, batch.created_at))
        elif age > stalled_after:
            stalled.append(StalledBatch(batch.id, UNFINISHED, age, batch.created_at))
    return stalled


def state_of(manifest: Manifest, batches: list[Batch],
             now: dt.datetime) -> tuple[str, str | None]:
    """Tell a manifest's state and why, if it is stuck or failed.

    ingesting, complete, complete-with-errors, failed (every asset failed) or
    rebuild-failed.
    """
    if manifest.queue_error is not None:
        return INGESTING, f"{QUEUEING_STOPPED}: {manifest.queue_error}"
    if manifest.queueing_until is not None:
        # A request is queueing the assets: nothing is recorded as ingesting yet.
        if manifest.queueing_until < now:
            return INGESTING, QUEUEING_INTERRUPTED
        return INGESTING, None
    if any(b.status == INGESTING for b in batches):
        return INGESTING, manifest.rebuild_error
    if not manifest.needs_rebuild and manifest.ingest_failed:
        return FAILED, manifest.ingest_failed
    if not manifest.needs_rebuild:
        # The batches' own counts say so even before their failed assets are read.
        if any((b.errors or 0) > 0 for b in batches):
            return COMPLETE_WITH_ERRORS, None
        return COMPLETE, None
    if manifest.rebuild_error:
        return REBUILD_FAILED, manifest.rebuild_error
    lease = manifest.rebuild_lease_until
    if lease is not None and lease < now:
        return REBUILD_FAILED, "The rebuild was interrupted before it finished."
    return INGESTING, None
