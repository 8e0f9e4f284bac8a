"""Operators' changes to registered manifests, and the delivery log's retention.

- ``requeue``: queue a manifest's unfinished assets at the DLCS again, in new
  batches that replace the ones still ingesting (stalled ones, typically);
- ``drop_batch``: stop waiting for one batch; the manifest completes without it;
- ``delete``: remove a registration and its published document;
- ``prune_deliveries``: forget deliveries older than the retention that
  nothing needs any more.

With ``DLCS_PROJECTION=manifest`` the assets carry the manifest's id at the
DLCS: requeue tags what it queues, and delete untags every asset first.

Requeue and delete call the DLCS or the store between two transactions, so
they hold the manifest's rebuild claim (see ``webhook.rebuild``) meanwhile:
a rebuild, another requeue or a delete of the same manifest waits for it
(``503 rebuild-in-progress``), and a registration that replaces the manifest
meanwhile takes the claim away, which the second transaction notices.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Callable

from webhook import db
from webhook.config import Settings
from webhook.deliveries import Delivery
from webhook.dlcs import DlcsClient
from webhook.domain import (BATCH_DROPPED, MANIFEST_COMPLETED, REQUEUED, DlcsAsset, Outcome,
                            distinct_assets)
from webhook.errors import (Conflict, DlcsError, NamedQueryNotFound, NotFound, QueueRejected,
                            RebuildInProgress)
from webhook.intake import Intake
from webhook.manifest import asset_id_from_canvas_id
from webhook.model_base import COMPLETED, DROPPED, INGESTING, utcnow
from webhook.models import Batch, Manifest
from webhook.paintings import CanvasPainting
from webhook.rebuild import Rebuilder
from webhook.storage import ManifestStore, published_key

log = logging.getLogger("webhook.maintenance")

# Deliveries deleted per transaction: SQLite's write lock is let go between
# chunks, so deliveries keep being recorded while a large log is pruned.
PRUNE_CHUNK = 5000


@dataclass(frozen=True, slots=True)
class Requeued:
    """What requeueing a manifest came to."""

    outcome: str            # REQUEUED, or MANIFEST_COMPLETED when nothing was left to ingest
    manifest: str
    assets: int             # assets queued again
    batches: list[int]      # the batches the DLCS created for them
    dropped: list[int]      # the batches they replace


@dataclass(frozen=True, slots=True)
class Pruned:
    """How many deliveries were pruned, received before when."""

    deleted: int
    received_before: dt.datetime


class Maintenance:
    """Requeue, drop batches, delete manifests; prune the delivery log."""

    def __init__(self, settings: Settings, dlcs: DlcsClient, store: ManifestStore,
                 intake: Intake, rebuilder: Rebuilder,
                 clock: Callable[[], dt.datetime] = utcnow):
        self.settings = settings
        self.dlcs = dlcs
        self.store = store
        self.intake = intake
        self.rebuilder = rebuilder
        self.clock = clock

    # ------------------------------------------------------------- requeue

    def requeue(self, customer: int, slug: str) -> Requeued:
        """Queue the manifest's unfinished assets again; the batches still ingesting are dropped.

        Unfinished assets are the registered ones the manifest would not be
        built with: with the batches projection, those no completed batch
        holds (the named query over the completed batches tells which it
        does); with the manifest projection, those the DLCS lacks or has not
        finished ingesting. When there are none, the batches still ingesting
        are only dropped, and the manifest is rebuilt.
        """
        with db.transaction():
            manifest = Manifest.lock(Manifest.registered(customer, slug).id)
            if manifest.queue_error is not None:
                raise Conflict("Queueing this registration at the DLCS stopped short: send "
                               "the same PUT again to resume it.")
            batches = Batch.of_manifest(manifest.id)
            unfinished = [b.id for b in batches if b.status == INGESTING]
            if not unfinished:
                raise Conflict("No batch of this manifest is ingesting: nothing to requeue.")
            token = self.rebuilder.claim(manifest.id)
            registered = list(CanvasPainting.select(CanvasPainting.asset_id, CanvasPainting.asset)
                              .where(CanvasPainting.manifest == manifest.id)
                              .order_by(CanvasPainting.position).tuples())
        if token is None:
            raise RebuildInProgress("Another request is rebuilding or changing this manifest; "
                                    "retry later.", None, manifest.key)
        try:
            if self._tagging:
                found = self._finished_at_dlcs(customer, [a for a, _ in registered])
            else:
                completed = [b.id for b in batches if b.status == COMPLETED]
                found = self._assets_in(customer, completed)
            members = distinct_assets(asset for asset_id, asset in registered
                                      if asset_id not in found)
            states = self.dlcs.queue_assets(customer, members) if members else []
            if self._tagging and members:
                # Tagging adds an id at most once: assets tagged already are unchanged.
                self.dlcs.tag_assets(customer, slug, [f"{customer}/{a['space']}/{a['id']}"
                                                      for a in members])
        except BaseException as exc:
            self._release(manifest, token)
            if isinstance(exc, DlcsError) and exc.status in (400, 422):
                reason = exc.description or str(exc)
                raise QueueRejected(f"The DLCS rejected the assets: {reason}") from exc
            raise
        fresh = [state.batch_id for state in states]
        dropped, token = self._replace_unfinished(manifest, token, unfinished, fresh)
        if token is not None:
            self.rebuilder.run(manifest.id, token, None)
            return Requeued(MANIFEST_COMPLETED, manifest.key, len(members), fresh, dropped)
        return Requeued(REQUEUED, manifest.key, len(members), fresh, dropped)

    @property
    def _tagging(self) -> bool:
        return self.settings.dlcs_projection == "manifest"

    def _finished_at_dlcs(self, customer: int, asset_ids: list[str]) -> set[str]:
        """The ids of the assets the DLCS has and has finished ingesting (or failed to)."""
        if not asset_ids:
            return set()
        return {asset.asset_id for asset in self.dlcs.find_assets(customer, asset_ids)
                if finished(asset)}

    def _assets_in(self, customer: int, batch_ids: list[int]) -> set[str]:
        """The ids of the assets the named query finds in these batches."""
        if not batch_ids:
            return set()
        try:
            answer = self.dlcs.named_query(customer, batch_ids, object_hook=_canvas_id_only)
        except NamedQueryNotFound:
            return set()
        return {asset_id for canvas in answer.document["items"] if isinstance(canvas, dict)
                if (asset_id := asset_id_from_canvas_id(canvas.get("id"))) is not None}

    def _replace_unfinished(self, manifest: Manifest, token: str, unfinished: list[int],
                            fresh: list[int]) -> tuple[list[int], str | None]:
        """Record the new batches and drop the old unfinished ones, if the claim still holds.

        Returns the batches dropped, and a rebuild claim when nothing is left
        ingesting (the claim is released otherwise).
        """
        with db.transaction():
            locked = Manifest.lock(manifest.id)
            if locked is None or locked.rebuild_owner != token:
                raise Conflict(
                    "The manifest was registered again while its assets were requeued; the new "
                    f"registration stands, and the batches queued meanwhile ({fresh}) are not "
                    "recorded.")
            now = self.clock()
            if fresh:
                Batch.insert_many([{"id": i, "manifest": manifest.id,
                                    "customer": manifest.customer, "status": INGESTING,
                                    "created_at": now} for i in fresh]).execute()
            # Only those still ingesting: one may have completed meanwhile, and stays.
            dropped = [b.id for b in Batch.select(Batch.id).where(
                Batch.id.in_(unfinished) & (Batch.status == INGESTING)).order_by(Batch.id)]
            Batch.update(status=DROPPED).where(Batch.id.in_(dropped)).execute()
            self.intake.apply_early_completions(locked, fresh)
            Manifest.release_claim(manifest.id, token)
            if Batch.count_ingesting(manifest.id) == 0:
                return dropped, self.rebuilder.claim(manifest.id, mark=True)
        return dropped, None

    def _release(self, manifest: Manifest, token: str) -> None:
        try:
            with db.transaction():
                Manifest.release_claim(manifest.id, token)
        except Exception:  # noqa: BLE001 - the lease expires instead
            log.warning("could not release the claim on %s", manifest.key)

    # ------------------------------------------------------------- drop a batch

    def drop_batch(self, customer: int, slug: str, batch_id: int) -> Outcome:
        """Stop waiting for a batch; rebuild when it was the last one ingesting.

        Dropping a batch dropped already does nothing more, except finishing a
        rebuild that dropping it could not (so the request can be repeated).
        """
        with db.transaction():
            manifest = Manifest.lock(Manifest.registered(customer, slug).id)
            batch = Batch.get_or_none((Batch.id == batch_id) & (Batch.manifest == manifest.id))
            if batch is None:
                raise NotFound(f"Manifest {manifest.key} has no batch {batch_id}.")
            if batch.status == COMPLETED:
                raise Conflict(f"Batch {batch_id} has completed: its assets are part of the "
                               "manifest. Register the manifest again to leave them out.")
            dropping = batch.status == INGESTING
            if dropping:
                Batch.update(status=DROPPED).where(Batch.id == batch_id).execute()
            # A registration whose queueing stopped short is not complete without its rest.
            rebuild = (manifest.queue_error is None and Batch.count_ingesting(manifest.id) == 0
                       and (dropping or manifest.needs_rebuild))
            token = self.rebuilder.claim(manifest.id, mark=True) if rebuild else None
        if not rebuild:
            return Outcome(BATCH_DROPPED, batch_id, manifest.key)
        if token is None:
            raise RebuildInProgress("The batch is dropped; another request is rebuilding the "
                                    "manifest. Retry later.", batch_id, manifest.key)
        self.rebuilder.run(manifest.id, token, batch_id)
        return Outcome(MANIFEST_COMPLETED, batch_id, manifest.key)

    # ------------------------------------------------------------- delete

    def delete(self, customer: int, slug: str) -> None:
        """Remove a registration, its batches and its published document.

        With the manifest projection its assets are untagged first. Later
        notifications of its batches are answered ``ignored``; deliveries that
        waited for its rebuild are settled as ``ignored`` too.
        """
        with db.transaction():
            manifest = Manifest.lock(Manifest.registered(customer, slug).id)
            token = self.rebuilder.claim(manifest.id)
            painted = CanvasPainting.asset_ids(manifest.id) if self._tagging else []
        if token is None:
            raise RebuildInProgress("Another request is rebuilding or changing this manifest; "
                                    "retry later.", None, manifest.key)
        try:
            # The DLCS and the document first: if either fails, the registration is
            # still there to delete again, and nothing is left behind unreachable.
            if painted:
                self.dlcs.untag_assets(customer, slug, painted)
            # The published version (the claim held, no rebuild can add another).
            self.store.delete(published_key(customer, slug, manifest.published_key))
        except BaseException:
            self._release(manifest, token)
            raise
        with db.transaction():
            gone = Manifest.delete().where((Manifest.id == manifest.id)
                                           & (Manifest.rebuild_owner == token)).execute()
            if not gone:
                raise Conflict("The manifest was registered again while it was deleted; the "
                               "new registration stands and is published when rebuilt.")
            Delivery.abandon_pending(manifest.key, "the manifest was deleted", self.clock())

    # ------------------------------------------------------------- retention

    def prune_deliveries(self, older_than: dt.timedelta) -> Pruned:
        """Delete deliveries received longer ago than ``older_than`` that nothing needs.

        Deliveries whose rebuild is pending (``failed``), and those of a batch
        still ingesting, are kept whatever their age (see ``Delivery.prune``).
        """
        before = self.clock() - older_than
        deleted = 0
        while True:
            with db.transaction():
                count = Delivery.prune(before, PRUNE_CHUNK)
            deleted += count
            if count < PRUNE_CHUNK:
                return Pruned(deleted, before)


def finished(asset: DlcsAsset) -> bool:
    """Tell whether the DLCS is done with an asset's ingest (successfully or not)."""
    return asset.ingesting is not True and asset.finished is not None


def _canvas_id_only(value: dict) -> dict:
    """Keep only the id of a named-query canvas (an object_hook: requeue reads nothing else)."""
    if value.get("type") == "Canvas":
        return {"id": value.get("id"), "type": "Canvas"}
    return value
