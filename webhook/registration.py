"""Register or replace a manifest, queueing its assets at the DLCS when asked to.

A registration names the batches already ingesting its assets, or none: then
the service queues the assets itself and records the batches the DLCS creates.
When nothing is left to ingest, the manifest is rebuilt before the answer.

With ``DLCS_PROJECTION=manifest`` every asset of the manifest also carries its
id in the DLCS (``tag_assets``), since that is what the named query projects:
the assets a re-registration drops are untagged first, an asset the DLCS has
already is tagged instead of queued again (unless its painted resource says
``"reingest": true``), and the tagging happens before any rebuild. Tagging is
a set operation at the DLCS, so a PUT that failed half-way is simply repeated.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Callable

import peewee

from webhook import db
from webhook.config import Settings
from webhook.dlcs import DlcsClient
from webhook.domain import distinct_assets
from webhook.errors import (Conflict, DlcsError, InvalidRequest, PreconditionFailed,
                            QueuePartiallyFailed, QueueRejected)
from webhook.intake import Intake
from webhook.model_base import DROPPED, INGESTING, utcnow
from webhook.models import Batch, Manifest
from webhook.paintings import CanvasPainting
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
    """What a registration came to, the manifest after it, and the ETag it was given."""

    what: str
    manifest: Manifest
    etag: str


class Registrar:
    """Register manifests; queue their assets; rebuild when nothing is left to ingest."""

    def __init__(self, settings: Settings, dlcs: DlcsClient, intake: Intake,
                 rebuilder: Rebuilder, clock: Callable[[], dt.datetime] = utcnow):
        self.settings = settings
        self.dlcs = dlcs
        self.intake = intake
        self.rebuilder = rebuilder
        self.clock = clock

    def register(self, customer: int, slug: str, raw: bytes,
                 if_match: frozenset[str] | None = None) -> Registered:
        """Register or replace a manifest; rebuild at once when nothing is ingesting.

        ``if_match`` (the ``If-Match`` entity tags) makes the registration
        conditional: it happens only if one of them is the manifest's current
        ETag, or is ``*`` and the manifest exists; else PreconditionFailed.
        The check and the change happen under the manifest's lock, so of two
        registrations naming the same ETag exactly one succeeds.
        """
        registration = parse_registration(raw, customer, slug)
        self._check_dlcs(registration)
        # Checked once before any DLCS call too, so that a refused PUT changes nothing there.
        check_precondition(Manifest.find(customer, slug), if_match)
        if registration.batches is None:
            return self._register_and_queue(customer, slug, registration, if_match)
        tagging = self._tagging and bool(registration.painted)
        if self._tagging:
            self._untag_dropped(customer, slug, registration)
        with db.transaction():
            manifest, created = self._upsert_manifest(customer, slug, registration, if_match)
            self._replace_batches(manifest, customer, registration.batches)
            self._replace_paintings(manifest, registration)
            token = None
            if not tagging and Batch.count_ingesting(manifest.id) == 0:
                token = self.rebuilder.claim(manifest.id, mark=True)
        if tagging:
            token = self._tag_then_claim(manifest, registration)
        if token is not None:
            self.rebuilder.run(manifest.id, token, None)
            return Registered(NOTHING_TO_INGEST, manifest, manifest.etag)
        return Registered(CREATED if created else REPLACED, manifest, manifest.etag)

    @property
    def _tagging(self) -> bool:
        return self.settings.dlcs_projection == "manifest"

    def _check_dlcs(self, registration: Registration) -> None:
        """Refuse a registration whose assets the service could not find at the DLCS."""
        if self.settings.dlcs_api_url or not registration.painted:
            return
        if registration.batches == ():
            raise InvalidRequest("The manifest registration is invalid.", {"batches": [
                "Empty: the assets exist at the DLCS already, but DLCS_API_URL is not "
                "configured, so the service cannot find them."]})

    def _untag_dropped(self, customer: int, slug: str, registration: Registration) -> None:
        """Untag the assets the registration in force paints and this one does not."""
        existing = Manifest.find(customer, slug)
        if existing is None:
            return
        kept = {painted.asset_id for painted in registration.painted}
        dropped = [a for a in CanvasPainting.asset_ids(existing.id) if a not in kept]
        # Before anything is replaced: if the DLCS fails, the PUT changed nothing
        # and can be sent again.
        self.dlcs.untag_assets(customer, slug, dropped)

    def _tag_then_claim(self, manifest: Manifest, registration: Registration) -> str | None:
        """Tag the manifest's assets; claim the rebuild when nothing is left to ingest."""
        asset_ids = [painted.asset_id for painted in registration.painted]
        try:
            self.dlcs.tag_assets(manifest.customer, manifest.slug, asset_ids)
        except DlcsError as exc:
            self._record_error(manifest, f"Tagging the assets at the DLCS failed: {exc}")
            raise
        with db.transaction():
            current = Manifest.lock(manifest.id)
            if current is None or current.generation != manifest.generation:
                return None  # re-registered meanwhile: that registration decides
            if Batch.count_ingesting(manifest.id) == 0:
                return self.rebuilder.claim(manifest.id, mark=True)
        return None

    def _record_error(self, manifest: Manifest, error: str) -> None:
        with db.transaction():
            Manifest.update(queue_error=error, updated_at=self.clock()).where(
                (Manifest.id == manifest.id)
                & (Manifest.generation == manifest.generation)).execute()

    def _register_and_queue(self, customer: int, slug: str, registration: Registration,
                            if_match: frozenset[str] | None) -> Registered:
        """Register a manifest and queue its assets at the DLCS ourselves.

        The registration is stored, and the queueing claimed (``queueing_until``),
        before the DLCS is called; every batch the DLCS creates is recorded, even
        when a later chunk fails. An identical PUT meanwhile finds the claim and
        queues nothing; after a failure, or once the claim has run out (a worker
        that died), an identical PUT resumes where queueing stopped.
        """
        if not self.settings.dlcs_api_url:
            raise InvalidRequest("The manifest registration is invalid.", {"batches": [
                "Required: DLCS_API_URL is not configured, so the service cannot queue "
                "the assets itself."]})
        fingerprint = _fingerprint(registration)
        existing = Manifest.find(customer, slug)
        plan = None
        if self._tagging and (existing is None or existing.fingerprint != fingerprint):
            # Decided once, before the registration is stored: which assets to queue.
            self._untag_dropped(customer, slug, registration)
            plan = self._queue_plan(customer, registration)
        with db.transaction():
            # Insert-and-catch: of two PUTs of a new manifest, the second waits for
            # the first's row (PostgreSQL's unique index, SQLite's write lock) and
            # then sees its claim, instead of replacing it and queueing again.
            manifest, created = self._insert_or_lock(customer, slug, registration, if_match)
            now = self.clock()
            if not created and manifest.fingerprint == fingerprint:
                # The same registration again: queued, being queued, or to resume.
                if manifest.queueing_until is None and manifest.queue_error is None:
                    return self._queued_already(manifest, manifest.etag)
                if manifest.queueing_until is not None and manifest.queueing_until >= now:
                    return self._queued_already(manifest, manifest.etag)
                start, plan = manifest.queued_assets or 0, manifest.queue_plan
            else:
                if self._tagging and plan is None:
                    # Registered concurrently under another fingerprint; decide now.
                    raise Conflict("The manifest was registered concurrently; send it again.")
                if not created:
                    manifest = self._replace_manifest(manifest, registration)
                self._replace_batches(manifest, customer, ())
                self._replace_paintings(manifest, registration)
                start = 0
            members = _queue_members(registration.assets, plan)
            Manifest.update(fingerprint=fingerprint, queued_assets=start, queue_error=None,
                            queue_plan=plan,
                            queueing_until=now + self._queueing_lease(len(members) - start)
                            ).where(Manifest.id == manifest.id).execute()
            manifest = Manifest.get_by_id(manifest.id)
        etag = manifest.etag
        try:
            states = self.dlcs.queue_assets(customer, members[start:])
        except QueuePartiallyFailed as exc:
            self._record_queued(manifest, exc.queued, start + exc.assets_queued, str(exc))
            raise _queue_failure(exc) from exc
        except DlcsError as exc:
            self._record_queued(manifest, (), start, str(exc))
            raise _queue_failure(exc) from exc
        if self._tagging and registration.painted:
            try:
                self.dlcs.tag_assets(customer, slug, [p.asset_id for p in registration.painted])
            except DlcsError as exc:
                self._record_queued(manifest, states, len(members),
                                    f"Tagging the assets at the DLCS failed: {exc}")
                raise
        token = self._record_queued(manifest, states, len(members), None)
        if token is not None:
            self.rebuilder.run(manifest.id, token, None)
            return Registered(NOTHING_TO_INGEST, manifest, etag)
        return self._queued_already(manifest, etag)

    def _queueing_lease(self, assets: int) -> dt.timedelta:
        """How long queueing ``assets`` may take before an identical PUT takes it over."""
        chunks = max(1, -(-assets // self.settings.dlcs_max_batch_size))
        # Per chunk: a POST with its connection retries (3 connects) and one read.
        return dt.timedelta(seconds=chunks * (4 * self.settings.dlcs_timeout_seconds + 10))

    def _queue_plan(self, customer: int, registration: Registration) -> list[str]:
        """Return the ids of the assets to queue: those the DLCS lacks, and any to reingest."""
        asked = [p.asset_id for p, again in zip(registration.painted, registration.reingest)
                 if not again]
        have = {asset.asset_id for asset in self.dlcs.find_assets(customer, asked)}
        return list(dict.fromkeys(p.asset_id for p in registration.painted
                                  if p.asset_id not in have))

    def _queued_already(self, manifest: Manifest, etag: str) -> Registered:
        manifest = Manifest.get_by_id(manifest.id)
        state, _ = state_of(manifest, Batch.of_manifest(manifest.id), self.clock())
        return Registered(QUEUED if state == INGESTING else NOTHING_TO_INGEST, manifest, etag)

    def _record_queued(self, manifest: Manifest, states, queued: int,
                       error: str | None) -> str | None:
        """Record the batches the DLCS created; claim the rebuild when nothing is left.

        Nothing is recorded when the manifest was registered anew while its
        assets were being queued: those batches belong to no registration now.
        """
        with db.transaction():
            current = Manifest.lock(manifest.id)
            if current is None or current.generation != manifest.generation:
                return None
            fresh = [s.batch_id for s in states]
            if fresh:
                Batch.insert_many([{"id": i, "manifest": current.id,
                                    "customer": current.customer, "status": INGESTING,
                                    "created_at": self.clock()} for i in fresh]).execute()
                self.intake.apply_early_completions(current, fresh)
            Manifest.update(queued_assets=queued, queue_error=error, queueing_until=None,
                            updated_at=self.clock()).where(Manifest.id == current.id).execute()
            if error is None and Batch.count_ingesting(current.id) == 0:
                return self.rebuilder.claim(current.id, mark=True)
        return None

    def _upsert_manifest(self, customer: int, slug: str, registration: Registration,
                         if_match: frozenset[str] | None = None) -> tuple[Manifest, bool]:
        """Insert or replace the manifest's row, giving it a new version; tell whether it was new."""
        manifest, created = self._insert_or_lock(customer, slug, registration, if_match)
        if not created:
            manifest = self._replace_manifest(manifest, registration)
        return manifest, created

    def _insert_or_lock(self, customer: int, slug: str, registration: Registration,
                        if_match: frozenset[str] | None) -> tuple[Manifest, bool]:
        """Insert the manifest with this registration, or lock the one registered; tell which.

        Either way only if ``if_match`` allows (PreconditionFailed otherwise).
        """
        existing = Manifest.find(customer, slug)
        if existing is None:
            check_precondition(None, if_match)
            now = self.clock()
            try:
                with db.database.atomic():
                    return Manifest.create(customer=customer, slug=slug, updated_at=now,
                                           created_at=now, document=registration.document), True
            except peewee.IntegrityError:
                existing = Manifest.find(customer, slug)  # registered concurrently
        manifest = Manifest.lock(existing.id)
        check_precondition(manifest, if_match)
        return manifest, False

    def _replace_manifest(self, manifest: Manifest, registration: Registration) -> Manifest:
        """Replace a locked manifest's registration: a new generation and version, nothing claimed."""
        # A registration starts its DLCS work afresh: what an earlier one queued
        # or failed to do (or is still queueing) is no longer this manifest's story.
        Manifest.update(document=registration.document, generation=Manifest.generation + 1,
                        needs_rebuild=False, rebuild_owner=None, rebuild_lease_until=None,
                        rebuild_error=None, ingest_failed=None, fingerprint=None,
                        queued_assets=None, queue_error=None, queue_plan=None,
                        queueing_until=None, updated_at=self.clock(),
                        version=uuid.uuid4().hex).where(Manifest.id == manifest.id).execute()
        return Manifest.get_by_id(manifest.id)

    def _replace_batches(self, manifest: Manifest, customer: int, batch_ids: Iterable[int]):
        wanted = set(batch_ids)
        if wanted:
            # A dropped batch named again ingests again, whichever manifest dropped it.
            Batch.delete().where(Batch.id.in_(list(wanted)) & (Batch.status == DROPPED)).execute()
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
    if any(registration.reingest):
        content.append(list(registration.reingest))
    return hashlib.sha256(json.dumps(content, sort_keys=True, ensure_ascii=True,
                                     separators=(",", ":")).encode()).hexdigest()


def check_precondition(manifest: Manifest | None, if_match: frozenset[str] | None) -> None:
    """Refuse a conditional request whose ``If-Match`` names no current version of the manifest.

    Strong comparison (RFC 9110, 13.1.1): a weak tag (``W/"..."``) never
    matches; ``*`` matches any registered manifest and nothing else.
    """
    if if_match is None:
        return
    if manifest is None:
        raise PreconditionFailed("If-Match was given, but no manifest is registered here.")
    if "*" not in if_match and manifest.etag not in if_match:
        raise PreconditionFailed(
            "If-Match names no current version of the manifest: it was registered again "
            "since. Read its status (and its ETag) again before replacing it.")


def _queue_members(assets: Iterable[dict], plan: list[str] | None = None) -> list[dict]:
    """The distinct assets to queue, in registration order (an asset may be painted twice).

    With a ``plan`` (the manifest projection's), only the assets it names.
    """
    wanted = None if plan is None else {asset_id.split("/", 1)[1] for asset_id in plan}
    return distinct_assets(asset for asset in assets
                           if wanted is None or f"{asset['space']}/{asset['id']}" in wanted)


def _queue_failure(exc: DlcsError) -> Exception:
    """Map a failed queue request to what the registrant should see."""
    if exc.status in (400, 422):
        reason = exc.description or str(exc)
        return QueueRejected(f"The DLCS rejected the assets: {reason}")
    return exc
