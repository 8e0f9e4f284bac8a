"""Receive batch completions exactly once: deliveries, replays and reconciling with the DLCS.

A completion runs in one write transaction that holds the manifest's row lock
(PostgreSQL) or the database write lock (SQLite), so the transition to "every
batch complete" is seen by exactly one delivery. That delivery claims the
rebuild in the same transaction and runs it after commit (see
``webhook.rebuild``); anyone else who finds the manifest needing a rebuild (a
redelivery, a replay, an operator) must claim it first.

The delivery's own row is that transaction's last write, inserted once with
its outcome; its unique id decides duplicates there. When the id is recorded
already (a redelivery, or a concurrent copy that committed first), the
transaction is undone and the delivery handled as a redelivery instead.

Two common cases are answered before that path (``_common_completion``): a
re-notification of a batch already complete, and on PostgreSQL a first
completion that leaves other batches ingesting, which one call to a database
function (``webhook.completion_call``) applies under the same lock.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Callable

from webhook import completion_call, db, metrics
from webhook.deliveries import Delivery, NewDelivery
from webhook.dlcs import DlcsClient
from webhook.domain import (BATCH_COMPLETED, DUPLICATE, FAILED, FINISHED, IGNORED,
                            MANIFEST_COMPLETED, MANIFEST_FAILED, UNPROCESSABLE, BatchCompletion,
                            Outcome)
from webhook.errors import NotFound, PayloadError, RebuildFailed, RebuildInProgress
from webhook.failures import FailureReader
from webhook.model_base import DROPPED, INGESTING, utcnow
from webhook.models import Batch, Manifest
from webhook.reading import StalledBatch, stalled_batches
from webhook.rebuild import Rebuilder
from webhook.schemas import notification_body, parse_notification

REBUILD_PENDING = "rebuild pending"
UNCHANGED = "unchanged"


@dataclass(frozen=True, slots=True)
class _Step:
    """What the transactional part decided; the rest happens after commit."""

    outcome: Outcome
    rebuild_token: str | None = None      # set when this request holds the rebuild claim
    manifest_pk: int | None = None
    problem: PayloadError | None = None
    # (manifest pk, customer, batch) of a batch that finished with errors: whose
    # failed assets are read from the DLCS after commit.
    failures: tuple[int, int, int] | None = None


@dataclass(frozen=True, slots=True)
class Reconciled:
    """What reconciling a manifest came to, the batches it completed, and those stalled."""

    outcome: Outcome
    completed: list[int]
    stalled: list[StalledBatch]


class Intake:
    """Record authenticated completions and apply each exactly once."""

    def __init__(self, dlcs: DlcsClient, rebuilder: Rebuilder, failures: FailureReader,
                 clock: Callable[[], dt.datetime] = utcnow, *, stalled_after: float = 21_600):
        self.dlcs = dlcs
        self.rebuilder = rebuilder
        self.failures = failures
        self.clock = clock
        # Seconds after which a batch still ingesting is reported stalled.
        self.stalled_after = stalled_after

    def receive(self, delivery_id: str, transport: str, body: bytes) -> Outcome:
        """Record an authenticated delivery and process it exactly once."""
        try:
            completion, problem = parse_notification(body), None
        except PayloadError as exc:
            completion, problem = None, exc
        return self._process(delivery_id, transport, body, completion, problem)

    def replay(self, delivery_id: str) -> Outcome:
        """Run a recorded delivery through the same processing again."""
        delivery = Delivery.get_or_none(Delivery.delivery_id == delivery_id)
        if delivery is None:
            raise NotFound(f"No delivery {delivery_id!r} is recorded.")
        completion = parse_notification(bytes(delivery.body))  # PayloadError: 422 again
        with db.transaction():
            row = Delivery.get_or_none(Delivery.id == delivery.id)
            if row is None:  # pruned meanwhile
                raise NotFound(f"No delivery {delivery_id!r} is recorded.")
            if row.outcome == FAILED:
                step = self._resume(row)
            else:
                step = self._apply(completion, row, replay=True)
        return self._after_commit(step)

    def reconcile(self, customer: int, slug: str) -> Reconciled:
        """Complete the batches the DLCS reports finished, as their webhooks would have.

        Batches the DLCS reports superseded are recorded so; with those
        ingesting for longer than ``stalled_after``, they are reported stalled.
        """
        manifest = Manifest.registered(customer, slug)
        ingesting = [b for b in Batch.of_manifest(manifest.id) if b.status == INGESTING]
        outcome, completed = None, []
        for batch in ingesting:
            batch_id = batch.id
            state = self.dlcs.get_batch(customer, batch_id)
            if state.finished is None:
                # A superseded batch never finishes: its assets were queued again
                # elsewhere. It waits for an operator, who sees it in `stalled`.
                if state.superseded and not batch.superseded:
                    with db.transaction():
                        Batch.mark_superseded(batch_id)
                continue
            # One id per batch and registration: reconciling twice is a duplicate,
            # and a failed rebuild is resumed by the next reconcile.
            completion = state.completion(customer)
            outcome = self._process(f"reconcile-{batch_id}-g{manifest.generation}", "reconcile",
                                    notification_body(completion), completion, None)
            completed.append(batch_id)
        # What an outage kept from earlier completions: their failed assets.
        for batch in Batch.unchecked(manifest.id):
            self.failures.read(manifest.id, customer, batch.id)
        stalled = stalled_batches(Batch.of_manifest(manifest.id), self.clock(),
                                  self.stalled_after)
        if outcome is None:
            manifest = Manifest.get_by_id(manifest.id)
            if manifest.needs_rebuild and not Batch.count_ingesting(manifest.id):
                return Reconciled(self.rebuilder.rebuild_now(customer, slug), completed, stalled)
            outcome = Outcome(UNCHANGED, None, manifest.key)
        return Reconciled(outcome, completed, stalled)

    def apply_early_completions(self, manifest: Manifest, batch_ids: list[int]) -> None:
        """Apply completions that arrived (and were ignored) before the registration.

        Runs inside the registration's transaction, holding the manifest's lock.
        """
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

    # ------------------------------------------------------------- one delivery

    def _process(self, delivery_id: str, transport: str, body: bytes,
                 completion: BatchCompletion | None, problem: PayloadError | None) -> Outcome:
        """Record and apply one delivery; count it under what it came to."""
        counted = "error"
        try:
            step = (self._common_completion(delivery_id, transport, body, completion)
                    if completion is not None else None)
            if step is None:
                step = self._record_or_redeliver(delivery_id, transport, body, completion,
                                                 problem)
            outcome = self._after_commit(step)
            counted = outcome.outcome
            return outcome
        except PayloadError:
            counted = UNPROCESSABLE
            raise
        except (RebuildFailed, RebuildInProgress):
            counted = FAILED
            raise
        finally:
            metrics.delivery(transport, counted)

    def _common_completion(self, delivery_id: str, transport: str, body: bytes,
                           completion: BatchCompletion) -> _Step | None:
        """Answer the common cases in one statement, outside the locked path.

        On PostgreSQL one call (``completion_call``) answers both a first
        completion that leaves other batches ingesting and a re-notification
        of a batch already complete; on SQLite, whose write lock makes the
        locked path cheap, only the re-notification is answered here, by a
        read and then one statement. None: nothing was written, and the
        locked path runs.
        """
        if not completion_call.available():
            known = self._known_completion(delivery_id, transport, body, completion)
            return None if known is None else _Step(known)
        with db.autocommit():
            answered = completion_call.complete_batch(delivery_id, transport, self.clock(),
                                                      body, completion)
        if answered is None:
            return None
        outcome = Outcome(answered.outcome, completion.batch_id, answered.manifest_key)
        if answered.outcome == BATCH_COMPLETED and completion.errors:
            return _Step(outcome, failures=(answered.manifest_pk, answered.manifest_customer,
                                            completion.batch_id))
        return _Step(outcome)

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
          the snapshot, the statement sees its batches (a batch it no longer
          names has no row, so the locked path answers ``ignored``; a kept one
          is still complete, and the registration cleared ``needs_rebuild``);
          not yet committed, the delivery is ordered before it and names the
          manifest it belonged to then, which is what the locked path records
          when it wins the lock. A registration only ever re-applies
          ``ignored`` deliveries (early completions), never a ``duplicate``.
          An operator dropping the batch (status ``dropped``, not
          ``completed``) or deleting the manifest is the same case.
        - Another copy of the same webhook-id: the unique key decides. On
          PostgreSQL the insert waits for an uncommitted copy and then inserts
          nothing; as this statement holds no other lock, it cannot deadlock
          with the locked path's order (manifest row, then delivery row).
          The copy that inserted nothing goes the locked path, finds the id
          recorded and is answered as a redelivery.
        """
        # On SQLite an INSERT takes the database's write lock even when it
        # inserts nothing, so a first completion would queue for that lock
        # twice. A read takes none (WAL): only a batch it finds complete is
        # tried; the insert checks everything again, so a batch completed
        # meanwhile is still answered, by the locked path.
        if not Batch.is_completed(completion.batch_id):
            return None
        now = self.clock()
        with db.autocommit():
            key = Delivery.record_known_completion(delivery_id, transport, now, body, completion)
        return None if key is None else Outcome(DUPLICATE, completion.batch_id, key)

    def _record_or_redeliver(self, delivery_id, transport, body, completion, problem) -> _Step:
        """Record and apply a delivery, or handle it as a redelivery when its id is recorded."""
        try:
            # The common write of a first completion: on SQLite it may share its
            # commit with other deliveries of this process (group commit).
            return db.in_transaction(lambda: self._record_and_apply(
                delivery_id, transport, body, completion, problem))
        except _AlreadyRecorded:
            pass
        try:
            # Its id was recorded first: what this transaction did is undone.
            with db.transaction():
                return self._redelivered(delivery_id, problem)
        except _Pruned:
            # Pruned between the two transactions (it was old): record it afresh. Only
            # old deliveries are pruned, so the fresh record cannot vanish the same way.
            return self._record_or_redeliver(delivery_id, transport, body, completion, problem)

    def _record_and_apply(self, delivery_id, transport, body, completion, problem) -> _Step:
        # Not written yet: _set inserts the row once, with its outcome, as the
        # transaction's last write; one statement per delivery instead of two.
        delivery = NewDelivery(delivery_id, transport, self.clock(), body,
                               completion.batch_id if completion else None,
                               (completion.errors or None) if completion else None)
        if problem is not None:
            self._set(delivery, UNPROCESSABLE, error=_problem_text(problem))
            return _Step(Outcome(UNPROCESSABLE, None, None), problem=problem)
        return self._apply(completion, delivery)

    def _redelivered(self, delivery_id: str, problem: PayloadError | None) -> _Step:
        # Lock order: the manifest row before the delivery row, as a finishing
        # rebuild takes them; the other order deadlocks with it on PostgreSQL.
        seen = Delivery.get_or_none(Delivery.delivery_id == delivery_id)
        if seen is None:
            raise _Pruned(delivery_id)
        manifest = _manifest_named(seen.manifest)
        if manifest is not None:
            Manifest.lock(manifest.id)
        delivery = Delivery.lock(delivery_id)
        if delivery is None:
            raise _Pruned(delivery_id)
        Delivery.update(attempts=Delivery.attempts + 1).where(Delivery.id == delivery.id).execute()
        if delivery.outcome in FINISHED:
            return _Step(Outcome(DUPLICATE, delivery.batch, delivery.manifest))
        if delivery.outcome == UNPROCESSABLE:
            return _Step(Outcome(UNPROCESSABLE, None, None),
                         problem=problem or PayloadError(delivery.error or "Unprocessable."))
        return self._resume(delivery)

    def _resume(self, delivery: Delivery) -> _Step:
        """Finish the job of a delivery whose rebuild failed or was interrupted."""
        manifest = _manifest_named(delivery.manifest)
        if manifest is None:
            self._set(delivery, IGNORED, error="the manifest is no longer registered")
            return _Step(Outcome(IGNORED, delivery.batch, None))
        manifest = Manifest.lock(manifest.id)
        outcome = Outcome(MANIFEST_COMPLETED, delivery.batch, manifest.key)
        if not manifest.needs_rebuild and manifest.ingest_failed:
            self._set(delivery, MANIFEST_FAILED, error=manifest.ingest_failed)
            return _Step(Outcome(MANIFEST_FAILED, delivery.batch, manifest.key))
        if not manifest.needs_rebuild:
            # Someone else finished the rebuild this delivery was waiting for.
            self._set(delivery, MANIFEST_COMPLETED)
            return _Step(outcome)
        return _Step(outcome, self.rebuilder.claim(manifest.id), manifest.id)

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
            failures = ((manifest.id, manifest.customer, batch_id)
                        if completion.errors else None)
            return _Step(Outcome(BATCH_COMPLETED, batch_id, manifest.key), failures=failures)
        if not first_completion:
            # Completed before, or re-registered while we waited for the lock?
            batch = Batch.get_or_none(Batch.id == batch_id)
            if batch is None or batch.manifest_id != manifest.id:
                self._set(delivery, IGNORED, batch=batch_id,
                          error="the batch was re-registered while this delivery was processed")
                return _Step(Outcome(IGNORED, batch_id, None))
            if batch.status == DROPPED:
                self._set(delivery, IGNORED, batch=batch_id,
                          error=f"the batch was dropped from manifest {manifest.key}")
                return _Step(Outcome(IGNORED, batch_id, None))
        failures = ((manifest.id, manifest.customer, batch_id)
                    if first_completion and completion.errors else None)
        if ingesting == 0 and (first_completion or manifest.needs_rebuild):
            token = self.rebuilder.claim(manifest.id, mark=True)
            self._set(delivery, FAILED, batch=batch_id, manifest=manifest.key,
                      error=REBUILD_PENDING)
            return _Step(Outcome(MANIFEST_COMPLETED, batch_id, manifest.key), token, manifest.id,
                         failures=failures)
        outcome = BATCH_COMPLETED if first_completion else DUPLICATE
        if replay and not first_completion:
            return _Step(Outcome(DUPLICATE, batch_id, manifest.key))
        self._set(delivery, outcome, batch=batch_id, manifest=manifest.key)
        return _Step(Outcome(outcome, batch_id, manifest.key), failures=failures)

    def _after_commit(self, step: _Step) -> Outcome:
        if step.problem is not None:
            raise step.problem
        if step.failures is not None:
            # Best effort, before the rebuild so the manifest's state names them;
            # a reconcile reads them if this cannot.
            self.failures.read(*step.failures)
        if step.manifest_pk is None:
            return step.outcome
        if step.rebuild_token is None:
            raise RebuildInProgress("Another request is rebuilding this manifest; retry later.",
                                    step.outcome.batch, step.outcome.manifest)
        if not self.rebuilder.run(step.manifest_pk, step.rebuild_token, step.outcome.batch):
            return dataclasses.replace(step.outcome, outcome=MANIFEST_FAILED)
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
                                 self.clock(), delivery.body, batch, manifest, outcome, error,
                                 delivery.failed_assets):
            raise _AlreadyRecorded(delivery.delivery_id)


class _AlreadyRecorded(Exception):
    """A delivery's id is recorded already (a redelivery, or a concurrent duplicate)."""


class _Pruned(Exception):
    """A delivery found recorded was pruned before it could be read again."""


def _manifest_named(key: str | None) -> Manifest | None:
    """The manifest a delivery names as ``customer/slug``, if it is still registered."""
    customer, _, slug = (key or "").partition("/")
    return Manifest.find(int(customer), slug) if customer.isdigit() else None


def _problem_text(problem: PayloadError) -> str:
    if not problem.errors:
        return problem.detail
    return f"{problem.detail} {problem.errors}"[:2000]

