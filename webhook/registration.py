"""Register or replace a manifest, queueing its assets at the DLCS when asked to.

A registration names the batches already ingesting its assets, or none: then
the service queues the assets itself and records the batches the DLCS creates.
When nothing is left to ingest, the manifest is rebuilt before the answer.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Callable

import peewee

from webhook import db
from webhook.config import Settings
from webhook.dlcs import DlcsClient
from webhook.errors import (Conflict, DlcsError, InvalidRequest, QueuePartiallyFailed,
                            QueueRejected)
from webhook.intake import Intake
from webhook.models import INGESTING, Batch, CanvasPainting, Manifest, utcnow
from webhook.reading import state_of
from webhook.rebuild import Rebuilder
from webhook.schemas import Registration, parse_registration

# What a registration came to.
CREATED = "created"                    # a new manifest; its batches are ingesting
REPLACED = "replaced"                  # a registered manifest, replaced; batches ingesting
QUEUED = "queued"                      # the service queued its assets; they are ingesting
NOTHING_TO_INGEST = "nothing-to-ingest"  # nothing left to ingest: rebuilt and published


@dataclass(frozen=True, slots=True)
class Registered:
    """What a registration came to, and the manifest's state after it."""

    what: str
    manifest: Manifest


class Registrar:
    """Register manifests; queue their assets; rebuild when nothing is left to ingest."""

    def __init__(self, settings: Settings, dlcs: DlcsClient, intake: Intake,
                 rebuilder: Rebuilder, clock: Callable[[], dt.datetime] = utcnow):
        self.settings = settings
        self.dlcs = dlcs
        self.intake = intake
        self.rebuilder = rebuilder
        self.clock = clock

    def register(self, customer: int, slug: str, raw: bytes) -> Registered:
        """Register or replace a manifest; rebuild at once when nothing is ingesting."""
        registration = parse_registration(raw, customer, slug)
        if registration.batches is None:
            return self._register_and_queue(customer, slug, registration)
        with db.transaction():
            manifest, created = self._upsert_manifest(customer, slug, registration)
            self._replace_batches(manifest, customer, registration.batches)
            self._replace_paintings(manifest, registration)
            token = None
            if Batch.count_ingesting(manifest.id) == 0:
                token = self.rebuilder.claim(manifest.id, mark=True)
        if token is not None:
            self.rebuilder.run(manifest.id, token, None)
            return Registered(NOTHING_TO_INGEST, manifest)
        return Registered(CREATED if created else REPLACED, manifest)

    def _register_and_queue(self, customer: int, slug: str,
                            registration: Registration) -> Registered:
        """Register a manifest and queue its assets at the DLCS ourselves.

        The registration is stored before the DLCS is called and every batch the
        DLCS creates is recorded, even when a later chunk fails; an identical PUT
        then resumes where queueing stopped instead of queueing twice.
        """
        if not self.settings.dlcs_api_url:
            raise InvalidRequest("The manifest registration is invalid.", {"batches": [
                "Required: DLCS_API_URL is not configured, so the service cannot queue "
                "the assets itself."]})
        fingerprint = _fingerprint(registration)
        with db.transaction():
            manifest = Manifest.find(customer, slug)
            manifest = Manifest.lock(manifest.id) if manifest is not None else None
            if manifest is not None and manifest.fingerprint == fingerprint:
                if manifest.queue_error is None:
                    # The same registration again: its assets are queued already.
                    return self._queued_already(manifest)
                start = manifest.queued_assets or 0
            else:
                manifest, _ = self._upsert_manifest(customer, slug, registration)
                self._replace_batches(manifest, customer, ())
                self._replace_paintings(manifest, registration)
                Manifest.update(fingerprint=fingerprint, queued_assets=0, queue_error=None).where(
                    Manifest.id == manifest.id).execute()
                start = 0
        members = _queue_members(registration.assets)
        try:
            states = self.dlcs.queue_assets(customer, members[start:])
        except QueuePartiallyFailed as exc:
            self._record_queued(manifest, exc.queued, start + exc.assets_queued, str(exc))
            raise _queue_failure(exc) from exc
        except DlcsError as exc:
            self._record_queued(manifest, (), start, str(exc))
            raise _queue_failure(exc) from exc
        token = self._record_queued(manifest, states, len(members), None)
        if token is not None:
            self.rebuilder.run(manifest.id, token, None)
            return Registered(NOTHING_TO_INGEST, manifest)
        return self._queued_already(manifest)

    def _queued_already(self, manifest: Manifest) -> Registered:
        manifest = Manifest.get_by_id(manifest.id)
        state, _ = state_of(manifest, Batch.of_manifest(manifest.id), self.clock())
        return Registered(QUEUED if state == INGESTING else NOTHING_TO_INGEST, manifest)

    def _record_queued(self, manifest: Manifest, states, queued: int,
                       error: str | None) -> str | None:
        """Record the batches the DLCS created; claim the rebuild when nothing is left."""
        with db.transaction():
            manifest = Manifest.lock(manifest.id)
            fresh = [s.batch_id for s in states]
            if fresh:
                Batch.insert_many([{"id": i, "manifest": manifest.id,
                                    "customer": manifest.customer, "status": INGESTING,
                                    "created_at": self.clock()} for i in fresh]).execute()
                self.intake.apply_early_completions(manifest, fresh)
            Manifest.update(queued_assets=queued, queue_error=error,
                            updated_at=self.clock()).where(Manifest.id == manifest.id).execute()
            if error is None and Batch.count_ingesting(manifest.id) == 0:
                return self.rebuilder.claim(manifest.id, mark=True)
        return None

    def _upsert_manifest(self, customer: int, slug: str,
                         registration: Registration) -> tuple[Manifest, bool]:
        """Insert or replace the manifest's row; tell whether it was new."""
        now = self.clock()
        existing = Manifest.find(customer, slug)
        if existing is None:
            try:
                with db.database.atomic():
                    return Manifest.create(customer=customer, slug=slug, updated_at=now,
                                           created_at=now, document=registration.document), True
            except peewee.IntegrityError:
                existing = Manifest.find(customer, slug)  # registered concurrently
        manifest = Manifest.lock(existing.id)
        Manifest.update(document=registration.document, generation=Manifest.generation + 1,
                        needs_rebuild=False, rebuild_owner=None, rebuild_lease_until=None,
                        rebuild_error=None, updated_at=now).where(
            Manifest.id == manifest.id).execute()
        return Manifest.get_by_id(manifest.id), False

    def _replace_batches(self, manifest: Manifest, customer: int, batch_ids: Iterable[int]):
        wanted = set(batch_ids)
        taken = [b.id for b in Batch.select(Batch.id).where(
            Batch.id.in_(list(wanted)) & (Batch.manifest != manifest.id))] if wanted else []
        if taken:
            raise Conflict(f"Batches {sorted(taken)} belong to another manifest.")
        Batch.delete().where((Batch.manifest == manifest.id)
                             & Batch.id.not_in(list(wanted) or [0])).execute()
        have = {b.id for b in Batch.select(Batch.id).where(Batch.manifest == manifest.id)}
        fresh = sorted(wanted - have)
        try:
            with db.database.atomic():
                if fresh:
                    Batch.insert_many([{"id": i, "manifest": manifest.id, "customer": customer,
                                        "status": INGESTING, "created_at": self.clock()}
                                       for i in fresh]).execute()
        except peewee.IntegrityError as exc:
            raise Conflict("A batch was registered to another manifest at the same time.") from exc
        self.intake.apply_early_completions(manifest, fresh)

    def _replace_paintings(self, manifest: Manifest, registration: Registration) -> None:
        CanvasPainting.delete().where(CanvasPainting.manifest == manifest.id).execute()
        rows = [{
            "manifest": manifest.id, "position": position, "canvas_id": p.canvas_id,
            "canvas_order": p.canvas_order, "choice_order": p.choice_order, "label": p.label,
            "canvas_label": p.canvas_label, "target": p.target,
            "static_width": p.static_width, "static_height": p.static_height,
            "width": p.static_width if p.static_height else None,
            "height": p.static_height if p.static_width else None,
            "asset_id": p.asset_id, "asset": asset, "ingesting": True,
        } for position, (p, asset) in enumerate(zip(registration.painted, registration.assets))]
        for start in range(0, len(rows), 500):
            CanvasPainting.insert_many(rows[start:start + 500]).execute()


def _fingerprint(registration: Registration) -> str:
    """Identify a registration's content, so an identical PUT is recognised."""
    content = [registration.document, registration.assets,
               [[p.canvas_id, p.canvas_order, p.asset_id, p.choice_order, p.label,
                 p.canvas_label, p.target, p.static_width, p.static_height]
                for p in registration.painted]]
    return hashlib.sha256(json.dumps(content, sort_keys=True, ensure_ascii=True,
                                     separators=(",", ":")).encode()).hexdigest()


def _queue_members(assets: Iterable[dict]) -> list[dict]:
    """The distinct assets to queue, in registration order (an asset may be painted twice)."""
    seen, members = set(), []
    for asset in assets:
        key = (asset["space"], asset["id"])
        if key not in seen:
            seen.add(key)
            members.append(asset)
    return members


def _queue_failure(exc: DlcsError) -> Exception:
    """Map a failed queue request to what the registrant should see."""
    if exc.status in (400, 422):
        reason = exc.description or str(exc)
        return QueueRejected(f"The DLCS rejected the assets: {reason}")
    return exc
