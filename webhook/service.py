"""The use cases: receive a completion, register a manifest, rebuild, report.

This is the only module that sequences the database, the DLCS and the store.

Exactly once. A completion runs in one write transaction that holds the
manifest's row lock (PostgreSQL) or the database write lock (SQLite), so the
transition to "every batch complete" is seen by exactly one delivery. That
delivery claims the rebuild in the same transaction (``rebuild_owner`` and a
lease), then calls the DLCS and the store outside any transaction, and clears
``needs_rebuild`` only if it still holds the claim. Anyone else who finds the
manifest needing a rebuild (a redelivery, a replay, an operator) must claim it
first; a live claim answers "in progress", an expired one (a crashed worker)
can be taken over. Nothing about this lives in process memory.

The delivery's own row is that transaction's last write, inserted once with
its outcome; its unique id decides duplicates there. When the id is recorded
already (a redelivery, or a concurrent copy that committed first), the
transaction is undone and the delivery handled as a redelivery instead.
"""

from __future__ import annotations

import datetime as dt
import gc
import hashlib
import json
import logging
import tempfile
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable

import peewee

from webhook import db, metrics
from webhook.config import Settings
from webhook.dlcs import BatchState, DlcsClient, QueuePartiallyFailed
from webhook.domain import BatchCompletion
from webhook.errors import (BuildError, Conflict, DatabaseUnavailable, DlcsError, NotFound,
                            PayloadError, QueueRejected, RebuildFailed, RebuildInProgress,
                            UpstreamError)
from webhook.manifest import build_document, slim_canvas, write_manifest
from webhook.models import (BATCH_COMPLETED, COMPLETED, DUPLICATE, INGESTING, Batch,
                            CanvasPainting, Delivery, Manifest, NewDelivery, utcnow)
from webhook.schemas import Registration, parse_notification, parse_registration
from webhook.storage import ManifestStore, manifest_key

log = logging.getLogger("webhook.service")

IGNORED = "ignored"
MANIFEST_COMPLETED = "manifest-completed"
UNPROCESSABLE = "unprocessable"
FAILED = "failed"
# A delivery with one of these outcomes has nothing left to do.
FINISHED = frozenset({IGNORED, BATCH_COMPLETED, MANIFEST_COMPLETED, DUPLICATE})
REBUILD_PENDING = "rebuild pending"
EMPTY_ANSWER = {"type": "Manifest", "items": []}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What processing a delivery (or a rebuild) came to, as the webhook answers it."""

    outcome: str
    batch: int | None
    manifest: str | None


@dataclass(frozen=True, slots=True)
class _Step:
    """What the transactional part decided; the rest happens after commit."""

    outcome: Outcome
    rebuild_token: str | None = None      # set when this request holds the rebuild claim
    manifest_pk: int | None = None
    problem: PayloadError | None = None


@dataclass(frozen=True, slots=True)
class Published:
    """A manifest's public representation: the stored document, or its ingesting summary."""

    status: int
    body: bytes | dict
    etag: str | None = None


class Service:
    """The service's use cases over one database, one DLCS client and one store."""

    def __init__(self, settings: Settings, dlcs: DlcsClient, store: ManifestStore,
                 clock: Callable[[], dt.datetime] = utcnow):
        self.settings = settings
        self.dlcs = dlcs
        self.store = store
        self.clock = clock
        # A crashed worker's claim expires after this (see Settings.rebuild_lease_seconds).
        self.lease = dt.timedelta(seconds=settings.rebuild_lease_seconds)

    # ------------------------------------------------------------- deliveries

    def receive(self, delivery_id: str, transport: str, body: bytes) -> Outcome:
        """Record an authenticated delivery and process it exactly once."""
        with metrics.delivery_outcome(transport) as counted:
            try:
                completion, problem = parse_notification(body), None
            except PayloadError as exc:
                completion, problem = None, exc
            if completion is not None:
                known = self._known_completion(delivery_id, transport, body, completion)
                if known is not None:
                    return counted(known)
            try:
                with db.transaction():
                    step = self._record_and_apply(delivery_id, transport, body, completion,
                                                  problem)
            except _AlreadyRecorded:
                # Its id was recorded first: what this transaction did is undone.
                with db.transaction():
                    step = self._redelivered(delivery_id, problem)
            return counted(self._after_commit(step, delivery_id))

    def _known_completion(self, delivery_id: str, transport: str, body: bytes,
                          completion: BatchCompletion) -> Outcome | None:
        """Answer a completion of a batch already complete without the manifest's lock.

        Senders re-notify: they retry, and SNS and the webhook both deliver.
        When the batch is complete, the customer's, and its manifest needs no
        rebuild, the locked path (``_apply``) would answer ``duplicate`` and
        change nothing but insert the delivery's row. That row is inserted
        here by one statement, ``INSERT ... SELECT`` from the batch and its
        manifest (``Delivery.record_known_completion``), in a transaction of
        its own, taking no lock but the row's unique key (and, on SQLite, the
        write lock for that statement only). When it inserts nothing (a
        condition does not hold, or the id is recorded), None: the locked path
        runs as before, and nothing has been written. (Tried inside the
        delivery's write transaction instead, it cost SQLite a tenth more
        instructions per re-notification and saved first completions nothing.)

        Why this stays exactly once. The statement's conditions and its insert
        see one snapshot, so the delivery is ordered at that snapshot: it
        behaves as if it had run, alone, just before every transaction not yet
        committed then. A ``duplicate`` changes no batch or manifest, so
        nothing anyone else does depends on it having happened or not:

        - A concurrent first completion of the same batch: until it commits
          the batch is ``ingesting`` in every snapshot, so a re-notification
          takes the locked path, waits behind it and is answered there.
        - A concurrent completion of the manifest's last batch: it marks the
          manifest ``needs_rebuild`` in the transaction that completes the
          batch. Seen: the locked path runs (and claims, or is told the
          rebuild is in progress, as before). Not seen: the re-notification is
          a duplicate ordered before that completion, as the locked path
          would have answered had it had the lock first.
        - A registration replacing the manifest's batches: committed before
          the snapshot, the statement sees its batches (a dropped batch has no
          row, so the locked path answers ``ignored``; a kept one is still
          complete, and the registration cleared ``needs_rebuild``); not yet
          committed, the delivery is ordered before it and names the manifest
          it belonged to then, which is what the locked path records when it
          wins the lock. A registration only ever re-applies ``ignored``
          deliveries (early completions), never a ``duplicate``.
        - Another copy of the same webhook-id: the unique key decides. On
          PostgreSQL the insert waits for an uncommitted copy and then inserts
          nothing; as this statement holds no other lock, it cannot deadlock
          with the locked path's order (manifest row, then delivery row).
          The copy that inserted nothing goes the locked path, finds the id
          recorded and is answered as a redelivery.
        """
        now = self.clock()
        with db.autocommit():
            key = Delivery.record_known_completion(delivery_id, transport, now, body, completion)
        return None if key is None else Outcome(DUPLICATE, completion.batch_id, key)

    def replay(self, delivery_id: str) -> Outcome:
        """Run a recorded delivery through the same processing again."""
        delivery = Delivery.get_or_none(Delivery.delivery_id == delivery_id)
        if delivery is None:
            raise NotFound(f"No delivery {delivery_id!r} is recorded.")
        completion = parse_notification(bytes(delivery.body))  # PayloadError: 422 again
        with db.transaction():
            row = Delivery.select().where(Delivery.id == delivery.id).get()
            if row.outcome == FAILED:
                step = self._resume(row)
            else:
                step = self._apply(completion, row, replay=True)
        return self._after_commit(step, delivery_id)

    def _record_and_apply(self, delivery_id, transport, body, completion, problem) -> _Step:
        # Not written yet: _set inserts the row once, with its outcome, as the
        # transaction's last write; one statement per delivery instead of two.
        delivery = NewDelivery(delivery_id, transport, self.clock(), body,
                               completion.batch_id if completion else None)
        if problem is not None:
            self._set(delivery, UNPROCESSABLE, error=_problem_text(problem))
            return _Step(Outcome(UNPROCESSABLE, None, None), problem=problem)
        return self._apply(completion, delivery)

    def _redelivered(self, delivery_id: str, problem: PayloadError | None) -> _Step:
        # Lock order: the manifest row before the delivery row, as a finishing
        # rebuild takes them; the other order deadlocks with it on PostgreSQL.
        seen = Delivery.get(Delivery.delivery_id == delivery_id)
        customer, _, slug = (seen.manifest or "").partition("/")
        manifest = Manifest.find(int(customer), slug) if customer.isdigit() else None
        if manifest is not None:
            Manifest.lock(manifest.id)
        delivery = _locked(Delivery.select().where(Delivery.delivery_id == delivery_id))
        Delivery.update(attempts=Delivery.attempts + 1).where(Delivery.id == delivery.id).execute()
        if delivery.outcome in FINISHED:
            return _Step(Outcome(DUPLICATE, delivery.batch, delivery.manifest))
        if delivery.outcome == UNPROCESSABLE:
            return _Step(Outcome(UNPROCESSABLE, None, None),
                         problem=problem or PayloadError(delivery.error or "Unprocessable."))
        return self._resume(delivery)

    def _resume(self, delivery: Delivery) -> _Step:
        """Finish the job of a delivery whose rebuild failed or was interrupted."""
        customer, _, slug = (delivery.manifest or "").partition("/")
        manifest = Manifest.find(int(customer), slug) if customer.isdigit() else None
        if manifest is None:
            self._set(delivery, IGNORED, error="the manifest is no longer registered")
            return _Step(Outcome(IGNORED, delivery.batch, None))
        manifest = Manifest.lock(manifest.id)
        outcome = Outcome(MANIFEST_COMPLETED, delivery.batch, manifest.key)
        if not manifest.needs_rebuild:
            # Someone else finished the rebuild this delivery was waiting for.
            self._set(delivery, MANIFEST_COMPLETED)
            return _Step(outcome)
        return _Step(outcome, self._claim(manifest), manifest.id)

    def _apply(self, completion: BatchCompletion, delivery: Delivery | NewDelivery,
               replay=False) -> _Step:
        """Apply a completion to its batch and manifest inside the open transaction."""
        batch_id = completion.batch_id
        # Lock order everywhere: manifest row first, then its batches.
        owner = Batch.lock_owner(batch_id)
        if owner is None or owner[1] != completion.customer:
            why = ("the batch belongs to no registered manifest" if owner is None
                   else "the batch belongs to another customer")
            self._set(delivery, IGNORED, batch=batch_id, error=why)
            return _Step(Outcome(IGNORED, batch_id, None))
        manifest = owner[0]
        # A new delivery's row goes in with the batch's completion when that is its outcome.
        record = delivery if delivery.id is None else None
        first_completion, ingesting, recorded = Batch.complete(
            batch_id, manifest.id, completion, self.clock(), record=record,
            manifest_key=manifest.key, ingesting=manifest.ingesting)
        if recorded is False:
            raise _AlreadyRecorded(delivery.delivery_id)
        if recorded:
            return _Step(Outcome(BATCH_COMPLETED, batch_id, manifest.key))
        if not first_completion:
            # Completed before, or re-registered while we waited for the lock?
            batch = Batch.get_or_none(Batch.id == batch_id)
            if batch is None or batch.manifest_id != manifest.id:
                self._set(delivery, IGNORED, batch=batch_id,
                          error="the batch was re-registered while this delivery was processed")
                return _Step(Outcome(IGNORED, batch_id, None))
        all_complete = ingesting == 0
        if all_complete and (first_completion or manifest.needs_rebuild):
            token = self._claim(manifest, mark=True)
            self._set(delivery, FAILED, batch=batch_id, manifest=manifest.key,
                      error=REBUILD_PENDING)
            return _Step(Outcome(MANIFEST_COMPLETED, batch_id, manifest.key), token, manifest.id)
        outcome = BATCH_COMPLETED if first_completion else DUPLICATE
        if replay and not first_completion:
            return _Step(Outcome(DUPLICATE, batch_id, manifest.key))
        self._set(delivery, outcome, batch=batch_id, manifest=manifest.key)
        return _Step(Outcome(outcome, batch_id, manifest.key))

    def _claim(self, manifest: Manifest, mark: bool = False) -> str | None:
        """Take the manifest's rebuild claim inside the open transaction, if free.

        Returns the claim token, or None when a live claim is held elsewhere.
        ``mark`` also records that the manifest needs a rebuild.
        """
        now = self.clock()
        token = uuid.uuid4().hex
        free = (Manifest.rebuild_lease_until.is_null()) | (Manifest.rebuild_lease_until < now)
        changes = {Manifest.rebuild_owner: token,
                   Manifest.rebuild_lease_until: now + self.lease}
        if mark:
            changes[Manifest.needs_rebuild] = True
        taken = Manifest.update(changes).where((Manifest.id == manifest.id) & free).execute()
        if not taken and mark:
            Manifest.update(needs_rebuild=True).where(Manifest.id == manifest.id).execute()
        return token if taken else None

    def _after_commit(self, step: _Step, delivery_id: str) -> Outcome:
        if step.problem is not None:
            raise step.problem
        if step.manifest_pk is None:
            return step.outcome
        if step.rebuild_token is None:
            raise RebuildInProgress("Another request is rebuilding this manifest; retry later.",
                                    step.outcome.batch, step.outcome.manifest)
        self._rebuild(step.manifest_pk, step.rebuild_token, step.outcome.batch)
        return step.outcome

    def _set(self, delivery: Delivery | NewDelivery, outcome: str, error: str | None = None, *,
             batch: int | None = None, manifest: str | None = None) -> None:
        """Record a delivery's outcome (and its batch and manifest, when given).

        A delivery not written yet (no ``id``) is inserted here, unless its id is
        recorded already: then ``_AlreadyRecorded`` undoes the transaction.
        """
        batch = delivery.batch if batch is None else batch
        manifest = delivery.manifest if manifest is None else manifest
        if delivery.id is not None:
            Delivery.settle(delivery.delivery_id, outcome, error, self.clock(), batch, manifest)
        elif not Delivery.record(delivery.delivery_id, delivery.transport, delivery.received_at,
                                 self.clock(), delivery.body, batch, manifest, outcome, error):
            raise _AlreadyRecorded(delivery.delivery_id)

    # ------------------------------------------------------------- rebuilding

    def rebuild_now(self, customer: int, slug: str) -> Outcome:
        """Rebuild and store a manifest on an operator's request."""
        with db.transaction():
            manifest = self._find(customer, slug)
            manifest = Manifest.lock(manifest.id)
            if Batch.count_ingesting(manifest.id):
                raise Conflict("Batches of this manifest are still ingesting.")
            token = self._claim(manifest, mark=True)
        if token is None:
            raise RebuildInProgress("Another request is rebuilding this manifest; retry later.",
                                    None, manifest.key)
        self._rebuild(manifest.id, token, None)
        return Outcome(MANIFEST_COMPLETED, None, manifest.key)

    def _rebuild(self, manifest_pk: int, token: str, batch: int | None) -> None:
        """Build and store the manifest while holding the claim ``token``."""
        manifest = Manifest.get_by_id(manifest_pk)
        # The report logs the rebuild's one line and times it, whichever way it ends.
        with metrics.RebuildReport(manifest.key, batch) as report:
            try:
                etag, updates = self._build_and_store(manifest, report)
            except Exception as exc:  # noqa: BLE001 - every failure must release the claim
                message = _failure_text(exc)
                if not isinstance(exc, (UpstreamError, BuildError)):
                    log.exception("rebuild of %s failed unexpectedly", manifest.key)
                self._record_failure(manifest, token, message)
                raise RebuildFailed(message, batch, manifest.key) from exc
            try:
                self._finish(manifest, token, batch, etag, updates)
            except RebuildFailed:
                raise
            except Exception as exc:  # noqa: BLE001 - the claim must not outlive the request
                # The document is stored; release the claim if the database lets us,
                # so a retry can finish now instead of after the lease expires.
                message = _failure_text(exc)
                try:
                    self._record_failure(manifest, token, message)
                except Exception:  # noqa: BLE001 - the lease will expire instead
                    log.warning("could not release the rebuild claim of %s", manifest.key)
                raise RebuildFailed(message, batch, manifest.key) from exc

    def _finish(self, manifest: Manifest, token: str, batch: int | None, etag: str,
                updates: list[tuple]) -> None:
        """Mark the rebuild done, if this request still holds the claim ``token``."""
        with db.transaction():
            now = self.clock()
            finished = Manifest.update(
                needs_rebuild=False, rebuild_owner=None, rebuild_lease_until=None,
                rebuild_error=None, last_processed=now, published_etag=etag,
                published_at=now, updated_at=now,
            ).where((Manifest.id == manifest.id) & (Manifest.rebuild_owner == token)).execute()
            if not finished:
                raise RebuildFailed("The manifest was re-registered during the rebuild; "
                                    "its new registration will be rebuilt.",
                                    batch, manifest.key)
            _apply_row_updates(updates, now)
            Delivery.update(outcome=MANIFEST_COMPLETED, error=None, updated_at=now).where(
                (Delivery.manifest == manifest.key) & (Delivery.outcome == FAILED)).execute()

    def _build_and_store(self, manifest: Manifest, report: metrics.RebuildReport):
        # Peak memory is the parsed named-query answer (slim_canvas keeps only
        # what the build reads) with the document built on it (which shares
        # its bodies). The document is written to a temporary file a block at
        # a time and stored from there, so its text never exists whole.
        with tempfile.TemporaryFile(prefix="manifest-") as spool:
            with _collector_paused():
                try:
                    painted, findings = CanvasPainting.for_rebuild(manifest.id)
                    batch_ids = [b.id for b in Batch.of_manifest(manifest.id)]
                except (peewee.OperationalError, peewee.InterfaceError) as exc:
                    # An outage, not a bug: no traceback, and the rebuild is retried.
                    raise DatabaseUnavailable(
                        f"database unavailable: {type(exc).__name__}") from exc
                with report.stage("named_query"):
                    answer = (self.dlcs.named_query(manifest.customer, batch_ids,
                                                    object_hook=slim_canvas).document
                              if batch_ids else EMPTY_ANSWER)
                with report.stage("build"):
                    built = build_document(manifest.document, painted, answer,
                                           base_url=self.settings.public_base_url,
                                           customer=manifest.customer,
                                           manifest_id=manifest.slug)
                    del answer
                    write_manifest(built.document, spool)
                    report.canvases = len(built.document.get("items", ()))
                    report.missing_assets = len(built.missing_assets)
                    changes = _row_changes(findings, built.row_updates)
                    # Gone before the collector resumes, or its first pass would walk it all.
                    del built
            with report.stage("store"):
                etag = self.store.put(manifest_key(manifest.customer, manifest.slug), spool)
        return etag, changes

    def _record_failure(self, manifest: Manifest, token: str, message: str) -> None:
        now = self.clock()
        with db.transaction():
            Manifest.update(rebuild_error=message, rebuild_owner=None, rebuild_lease_until=None,
                            updated_at=now).where(
                (Manifest.id == manifest.id) & (Manifest.rebuild_owner == token)).execute()
            Delivery.update(error=message, updated_at=now).where(
                (Delivery.manifest == manifest.key) & (Delivery.outcome == FAILED)).execute()

    # ------------------------------------------------------------- registration

    def register(self, customer: int, slug: str, raw: bytes) -> tuple[int, dict]:
        """Register or replace a manifest; rebuild at once when nothing is ingesting."""
        registration = parse_registration(raw, customer, slug)
        if registration.batches is None:
            return self._register_and_queue(customer, slug, registration)
        with db.transaction():
            manifest = self._upsert_manifest(customer, slug, registration)
            self._replace_batches(manifest, customer, registration.batches)
            self._replace_paintings(manifest, registration)
            token = None
            if Batch.count_ingesting(manifest.id) == 0:
                token = self._claim(manifest, mark=True)
        if token is not None:
            self._rebuild(manifest.id, token, None)
            return 200, self.status(customer, slug)
        return 202, self.status(customer, slug)

    def _register_and_queue(self, customer: int, slug: str,
                            registration: Registration) -> tuple[int, dict]:
        """Register a manifest and queue its assets at the DLCS ourselves.

        The registration is stored before the DLCS is called and every batch the
        DLCS creates is recorded, even when a later chunk fails; an identical PUT
        then resumes where queueing stopped instead of queueing twice.
        """
        if not self.settings.dlcs_api_url:
            raise PayloadError("The manifest registration is invalid.", {"batches": [
                "Required: DLCS_API_URL is not configured, so the service cannot queue "
                "the assets itself."]})
        fingerprint = _fingerprint(registration)
        with db.transaction():
            manifest = Manifest.find(customer, slug)
            manifest = Manifest.lock(manifest.id) if manifest is not None else None
            if manifest is not None and manifest.fingerprint == fingerprint:
                if manifest.queue_error is None:
                    # The same registration again: its assets are queued already.
                    return self._answer(customer, slug)
                start = manifest.queued_assets or 0
            else:
                manifest = self._upsert_manifest(customer, slug, registration)
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
            self._rebuild(manifest.id, token, None)
        return self._answer(customer, slug)

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
                self._apply_early_completions(manifest, fresh)
            Manifest.update(queued_assets=queued, queue_error=error,
                            updated_at=self.clock()).where(Manifest.id == manifest.id).execute()
            if error is None and Batch.count_ingesting(manifest.id) == 0:
                return self._claim(manifest, mark=True)
        return None

    def _answer(self, customer: int, slug: str) -> tuple[int, dict]:
        status = self.status(customer, slug)
        return (202 if status["state"] == "ingesting" else 200), status

    def _upsert_manifest(self, customer: int, slug: str, registration: Registration) -> Manifest:
        now = self.clock()
        existing = Manifest.find(customer, slug)
        if existing is None:
            try:
                with db.database.atomic():
                    return Manifest.create(customer=customer, slug=slug, updated_at=now,
                                           created_at=now, document=registration.document)
            except peewee.IntegrityError:
                existing = Manifest.find(customer, slug)  # registered concurrently
        manifest = Manifest.lock(existing.id)
        Manifest.update(document=registration.document, generation=Manifest.generation + 1,
                        needs_rebuild=False, rebuild_owner=None, rebuild_lease_until=None,
                        rebuild_error=None, updated_at=now).where(
            Manifest.id == manifest.id).execute()
        return Manifest.get_by_id(manifest.id)

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
                Batch.insert_many([{"id": i, "manifest": manifest.id, "customer": customer,
                                    "status": INGESTING, "created_at": self.clock()}
                                   for i in fresh]).execute() if fresh else None
        except peewee.IntegrityError as exc:
            raise Conflict("A batch was registered to another manifest at the same time.") from exc
        self._apply_early_completions(manifest, fresh)

    def _apply_early_completions(self, manifest: Manifest, batch_ids: list[int]) -> None:
        """Apply completions that arrived (and were ignored) before the registration."""
        if not batch_ids:
            return
        early = (Delivery.select().where(Delivery.batch.in_(batch_ids)
                                         & (Delivery.outcome == IGNORED))
                 .order_by(Delivery.received_at, Delivery.id))
        applied = set()
        for delivery in early:
            completion = parse_notification(bytes(delivery.body))
            if completion.customer != manifest.customer:
                continue
            if completion.batch_id in applied:  # the first completion wins, as it does later
                self._set(delivery, DUPLICATE, manifest=manifest.key)
                continue
            applied.add(completion.batch_id)
            Batch.complete(completion.batch_id, manifest.id, completion, self.clock())
            self._set(delivery, BATCH_COMPLETED, manifest=manifest.key,
                      error="applied when the manifest was registered")

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

    # ------------------------------------------------------------- reconciling

    def reconcile(self, customer: int, slug: str) -> tuple[Outcome, list[int]]:
        """Complete the batches the DLCS reports finished, as their webhooks would have."""
        manifest = self._find(customer, slug)
        ingesting = [b.id for b in Batch.of_manifest(manifest.id) if b.status == INGESTING]
        outcome, completed = None, []
        for batch_id in ingesting:
            state = self.dlcs.get_batch(customer, batch_id)
            if state.finished is None:
                continue
            # One id per batch and registration: reconciling twice is a duplicate,
            # and a failed rebuild is resumed by the next reconcile.
            delivery_id = f"reconcile-{batch_id}-g{manifest.generation}"
            outcome = self.receive(delivery_id, "reconcile", _notification_body(customer, state))
            completed.append(batch_id)
        if outcome is None:
            manifest = Manifest.get_by_id(manifest.id)
            if manifest.needs_rebuild and not Batch.count_ingesting(manifest.id):
                return self.rebuild_now(customer, slug), completed
            outcome = Outcome("unchanged", None, manifest.key)
        return outcome, completed

    def stale_manifests(self, older_than: dt.timedelta) -> list[tuple[int, str]]:
        """List manifests with a batch ingesting for longer than ``older_than``."""
        cutoff = self.clock() - older_than
        query = (Manifest.select(Manifest.customer, Manifest.slug).join(Batch)
                 .where((Batch.status == INGESTING)
                        & (Batch.created_at.is_null() | (Batch.created_at < cutoff)))
                 .distinct().order_by(Manifest.customer, Manifest.slug))
        return [(m.customer, m.slug) for m in query]

    # ------------------------------------------------------------- reading

    def status(self, customer: int, slug: str) -> dict:
        """Describe a manifest's state, batches and last rebuild."""
        manifest = self._find(customer, slug)
        batches = Batch.of_manifest(manifest.id)
        missing = []
        if manifest.published_at is not None:
            missing = [r.asset_id for r in CanvasPainting.select(CanvasPainting.asset_id).where(
                (CanvasPainting.manifest == manifest.id) & CanvasPainting.ingesting)]
        state, error = self._state(manifest, batches)
        return {"state": state, "batches": batches, "last_processed": manifest.last_processed,
                "error": error, "missing_assets": missing}

    def _state(self, manifest: Manifest, batches: list[Batch]) -> tuple[str, str | None]:
        if manifest.queue_error is not None:
            return "ingesting", f"Queueing at the DLCS stopped: {manifest.queue_error}"
        if any(b.status == INGESTING for b in batches):
            return "ingesting", manifest.rebuild_error
        if not manifest.needs_rebuild:
            return "complete", None
        if manifest.rebuild_error:
            return "rebuild-failed", manifest.rebuild_error
        lease = manifest.rebuild_lease_until
        if lease is not None and lease < self.clock():
            return "rebuild-failed", "The rebuild was interrupted before it finished."
        return "ingesting", None

    def published(self, customer: int, slug: str,
                  if_none_match: frozenset[str] = frozenset()) -> Published:
        """Return the stored manifest, or the registration with its ingesting summary.

        A revalidation whose tag matches the published one is answered (304)
        from the database alone, without reading the store.
        """
        manifest = self._find(customer, slug)
        etag = manifest.published_etag
        if etag is not None and (etag in if_none_match or "*" in if_none_match):
            return Published(304, b"", etag)
        if etag is not None:
            stored = self.store.get(manifest_key(customer, slug))
            if stored is not None:
                return Published(200, stored.body, stored.etag)
        return Published(202, self._ingesting_view(manifest))

    def _ingesting_view(self, manifest: Manifest) -> dict:
        batches = Batch.of_manifest(manifest.id)
        total = CanvasPainting.select().where(CanvasPainting.manifest == manifest.id).count()
        done = [b for b in batches if b.status == COMPLETED]
        finished = sum((b.completed or 0) + (b.errors or 0) for b in done)
        return {
            "@context": "http://iiif.io/api/presentation/3/context.json",
            "id": f"{self.settings.public_base_url}/{manifest.customer}/manifests/{manifest.slug}",
            **manifest.document,
            "ingesting": {"total": total, "finished": min(finished, total),
                          "errors": sum(b.errors or 0 for b in done)},
        }

    def deliveries(self, batch: int | None, outcome: str | None, limit: int) -> list[Delivery]:
        """List recorded deliveries, most recent first."""
        query = Delivery.select(Delivery.delivery_id, Delivery.transport, Delivery.received_at,
                                Delivery.batch, Delivery.manifest, Delivery.outcome,
                                Delivery.error)
        if batch is not None:
            query = query.where(Delivery.batch == batch)
        if outcome is not None:
            query = query.where(Delivery.outcome == outcome)
        return list(query.order_by(Delivery.received_at.desc(), Delivery.id.desc()).limit(limit))

    def _find(self, customer: int, slug: str) -> Manifest:
        manifest = Manifest.find(customer, slug)
        if manifest is None:
            raise NotFound(f"No manifest {customer}/{slug} is registered.")
        return manifest


_collector = {"lock": threading.Lock(), "pauses": 0, "resume": False}


@contextmanager
def _collector_paused():
    """Keep the cyclic garbage collector off while a rebuild reads, parses and builds.

    A large rebuild allocates millions of containers and no reference cycles;
    every full collection they trigger walks all of them again, which cost
    about half of a 10,000-canvas rebuild. Reference counting still frees
    everything as usual. Rebuilds in other threads of the worker share the
    pause; the collector comes back when the last one ends (if it was on).
    """
    with _collector["lock"]:
        if _collector["pauses"] == 0:
            _collector["resume"] = gc.isenabled()
            gc.disable()
        _collector["pauses"] += 1
    try:
        yield
    finally:
        with _collector["lock"]:
            _collector["pauses"] -= 1
            if _collector["pauses"] == 0 and _collector["resume"]:
                gc.enable()


class _AlreadyRecorded(Exception):
    """A delivery's id is recorded already (a redelivery, or a concurrent duplicate)."""


def _locked(query):
    """Add FOR UPDATE on PostgreSQL (SQLite's IMMEDIATE transaction already excludes)."""
    return (query.for_update() if db.is_postgres() else query).get()


def _problem_text(problem: PayloadError) -> str:
    if not problem.errors:
        return problem.detail
    return f"{problem.detail} {problem.errors}"[:2000]


def _failure_text(exc: Exception) -> str:
    if isinstance(exc, (UpstreamError, BuildError)):
        return str(exc)[:2000]
    return f"internal error during the rebuild ({type(exc).__name__})"


def _row_changes(findings: list[tuple], updates) -> list[tuple]:
    """Pair rows' findings (see CanvasPainting.for_rebuild) with the build's, keeping changes."""
    changes = []
    for (row_id, *old), update in zip(findings, updates):
        if update is None:
            continue
        new = (False, update.thumbnail, update.width, update.height, update.duration)
        if new != tuple(old):
            changes.append((row_id, *new))
    return changes


def _apply_row_updates(changes: list[tuple], now: dt.datetime) -> None:
    """Write the changed rows in as few round trips as the backend allows."""
    if not changes:
        return
    if db.is_postgres():
        # One statement, the changes as one JSON parameter: psycopg2 quoting
        # tens of thousands of values one by one into VALUES lists cost a third
        # of the write-back of a 10,000-canvas rebuild.
        db.database.execute_sql(
            'UPDATE "canvas_painting" AS c SET ingesting = v.ing, thumbnail = v.thumb, '
            "width = v.w, height = v.h, duration = v.dur, modified = %s "
            "FROM (SELECT (r->>0)::bigint AS id, (r->>1)::boolean AS ing, r->>2 AS thumb, "
            "(r->>3)::integer AS w, (r->>4)::integer AS h, (r->>5)::real AS dur "
            "FROM jsonb_array_elements(%s::jsonb) AS r) AS v WHERE c.id = v.id",
            [now, json.dumps(changes)])
        return
    cursor = db.database.cursor()
    cursor.executemany(
        'UPDATE "canvas_painting" SET ingesting = ?, thumbnail = ?, width = ?, '
        "height = ?, duration = ?, modified = ? WHERE id = ?",
        [(*change[1:], now, change[0]) for change in changes])


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


def _notification_body(customer: int, state: BatchState) -> bytes:
    """Write a DLCS batch state as a current-format completion notification."""
    def stamp(moment):
        return moment.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")
    return json.dumps({
        "id": state.batch_id, "customer": customer, "count": state.count,
        "completed": state.completed, "errors": state.errors, "superseded": state.superseded,
        "submitted": stamp(state.submitted or state.finished), "finished": stamp(state.finished),
    }, separators=(",", ":")).encode()
