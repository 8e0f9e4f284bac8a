"""Produce and store a manifest's published document while holding its rebuild claim.

The claim (``Manifest.rebuild_owner`` with a lease) is what makes a rebuild
happen once: whoever finds a manifest needing one takes the claim in the same
transaction (``claim``), then calls the DLCS and the store outside any
transaction (``run``), and records the result only if it still holds the claim.
A live claim elsewhere answers "in progress"; an expired one (a worker that
died) can be taken over. See docs/design.md for the lease and lock order.

Fencing: each rebuild stores its document under a key of its own, and the
statement that checks the claim also records that key as the published one
(``Manifest.finish_rebuild``). A rebuild that lost its claim may still store,
but never where anything is served from, and deletes what it stored; the
document a finish replaces is deleted after it. So whatever the interleaving,
GET serves the document whose ETag the database records.

Every rebuild has one deadline (``REBUILD_DEADLINE_SECONDS``) for the named
query with its retries, reading the answer and storing the document.

A large rebuild is mostly memory traffic: the named-query answer is parsed
keeping only what the build reads, the document is written to a temporary file
a block of canvases at a time, and the cyclic garbage collector is paused while
millions of short-lived containers come and go (``_collector_paused``).
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
import tempfile
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import peewee

from webhook import cpu, db, logs, metrics
from webhook.config import Settings
from webhook.deliveries import Delivery
from webhook.dlcs import DlcsClient
from webhook.domain import (MANIFEST_COMPLETED, MANIFEST_FAILED, Deadline, Outcome,
                            PaintedResource, storable)
from webhook.errors import (BuildError, Conflict, DatabaseUnavailable, DlcsError,
                            NamedQueryNotFound, RebuildFailed, RebuildInProgress, UpstreamError,
                            WebhookError)
from webhook.manifest import SlimAnswer, write_document
from webhook.model_base import COMPLETED, DROPPED, utcnow
from webhook.models import Batch, Manifest
from webhook.paintings import CanvasPainting
from webhook.storage import ManifestStore, published_key, version_key

log = logging.getLogger("webhook.rebuild")

# What a manifest with no batches is built from: nothing the DLCS holds.
EMPTY_ANSWER = {"type": "Manifest", "items": []}


class Rebuilder:
    """Claim, build, store and record the rebuilds of manifests."""

    def __init__(self, settings: Settings, dlcs: DlcsClient, store: ManifestStore,
                 clock: Callable[[], dt.datetime] = utcnow):
        self.settings = settings
        self.dlcs = dlcs
        self.store = store
        self.clock = clock
        # A crashed worker's claim expires after this (see Settings.rebuild_lease_seconds).
        self.lease = dt.timedelta(seconds=settings.rebuild_lease_seconds)

    def claim(self, manifest_pk: int, mark: bool = False) -> str | None:
        """Take the rebuild claim inside the open transaction; None when held elsewhere."""
        return Manifest.claim_rebuild(manifest_pk, self.clock(), self.lease, mark)

    def rebuild_now(self, customer: int, slug: str) -> Outcome:
        """Rebuild and store a manifest on an operator's request."""
        with db.transaction():
            manifest = Manifest.lock(Manifest.registered(customer, slug).id)
            if Batch.count_ingesting(manifest.id):
                raise Conflict("Batches of this manifest are still ingesting.")
            token = self.claim(manifest.id, mark=True)
        if token is None:
            raise RebuildInProgress("Another request is rebuilding this manifest; retry later.",
                                    None, manifest.key)
        published = self.run(manifest.id, token, None)
        return Outcome(MANIFEST_COMPLETED if published else MANIFEST_FAILED, None, manifest.key)

    def run(self, manifest_pk: int, token: str, batch: int | None) -> bool:
        """Build and store the manifest while holding the claim ``token``.

        The document goes to a key of this claim's own (``version_key``), and is
        published by recording that key in the statement that checks the claim:
        a rebuild that lost its claim stores nothing that is served. The whole
        rebuild has ``REBUILD_DEADLINE_SECONDS``. Returns True once published,
        False when the DLCS has none of the manifest's assets (recorded as the
        manifest's failure, not retried). Raises RebuildFailed (the failure
        recorded, the claim released) when any step fails or the claim was lost
        to a re-registration or to a rebuild that took over its lease.
        """
        manifest = Manifest.get_by_id(manifest_pk)
        deadline = Deadline.after(self.settings.rebuild_deadline_seconds)
        key = version_key(manifest.customer, manifest.slug, token)
        stored = False
        with RebuildReport(manifest.key, batch) as report:
            try:
                with tempfile.TemporaryFile(prefix="manifest-") as spool:
                    changes = self._build(manifest, spool, deadline, report)
                    with report.stage("store"):
                        etag = self.store.put(key, spool, deadline=deadline)
                    # From here on a failure leaves a document nothing serves. (A put
                    # that failed leaves none, unless only its answer was lost.)
                    stored = True
                superseded = self._finish(manifest, token, etag, key, changes)
            except NothingIngested as exc:
                report.nothing_ingested = True
                self._record_nothing(manifest, token, str(exc), batch)
                return False
            except Exception as exc:  # noqa: BLE001 - every failure must release the claim
                raise self._failed(manifest, token, batch, key if stored else None,
                                   exc) from exc
        if superseded is not None:
            self._delete_quietly(superseded, "superseded")
        return True

    def _build(self, manifest: Manifest, spool, deadline: Deadline,
               report: RebuildReport) -> list[tuple]:
        """Write the manifest's document to ``spool``; return the rows' changed findings."""
        # Peak memory is the parsed named-query answer (SlimAnswer keeps only
        # what the build reads, each repeated value once) with a block of
        # canvases built on it (which share its bodies). The document is
        # written to a temporary file a block at a time and stored from there,
        # so neither it nor its text ever exists whole.
        with _collector_paused():
            try:
                painted, findings = CanvasPainting.for_rebuild(manifest.id)
                registered = Batch.of_manifest(manifest.id)
                # A dropped batch leaves the projection: built from the others.
                batches = [b for b in registered if b.status != DROPPED]
                batch_ids = [b.id for b in batches]
            except (peewee.DatabaseError, peewee.InterfaceError) as exc:
                if not db.connection_lost(exc):
                    raise
                # An outage, not a bug: no traceback, and the rebuild is retried.
                raise DatabaseUnavailable(
                    f"database unavailable: {type(exc).__name__}") from exc
            with report.stage("named_query"):
                try:
                    answer = self._project(manifest, batch_ids, painted, deadline,
                                           named_batches=bool(registered))
                except NamedQueryNotFound as exc:
                    # A 404 also answers an unknown query name: only batches that
                    # say every asset failed make it the manifest's final failure.
                    if not (painted and _all_failed(batches)):
                        raise
                    raise NothingIngested(_nothing_reason(batches)) from exc
            with report.stage("build"):
                try:
                    # Off the gevent hub (the worker's other requests go on meanwhile), and
                    # built and written a block of canvases at a time (see write_document).
                    built = cpu.run(write_document, manifest.document, painted, answer, spool,
                                    base_url=self.settings.public_base_url,
                                    customer=manifest.customer, manifest_id=manifest.slug)
                    del answer
                except RecursionError:
                    # The registration's nesting is bounded (schemas), so the
                    # answer's is what ran past Python's recursion limit.
                    raise DlcsError(f"the named-query answer for {manifest.key} is nested "
                                    "too deeply to publish") from None
                report.canvases = built.canvases
                report.missing_assets = len(built.missing_assets)
                if (painted and _all_failed(batches) and len(built.missing_assets)
                        == len({row.asset_id for row in painted})):
                    raise NothingIngested(_nothing_reason(batches))
                changes = _row_changes(findings, built.row_updates)
                # Gone before the collector resumes, or its first pass would walk it all.
                del built
        return changes

    def _project(self, manifest: Manifest, batch_ids: list[int],
                 painted: list[PaintedResource], deadline: Deadline, *,
                 named_batches: bool) -> dict:
        """Ask the DLCS's named query for the manifest's assets, as DLCS_PROJECTION says.

        ``named_batches`` tells a registration that named batches (all of them
        dropped, when ``batch_ids`` is empty) from one with ``"batches": []``.
        """
        customer = manifest.customer
        if self.settings.dlcs_projection == "manifest":
            if not painted:
                return EMPTY_ANSWER
            return self.dlcs.manifest_query(customer, manifest.slug,
                                            object_hook=SlimAnswer().object_hook,
                                            deadline=deadline).document
        if not batch_ids and painted and not named_batches:
            # Registered with "batches": []: the assets are in the DLCS already, in
            # batches of their own, which the DLCS names for each of them.
            found = self.dlcs.find_assets(customer, [row.asset_id for row in painted],
                                          deadline=deadline)
            batch_ids = sorted({asset.batch for asset in found if asset.batch is not None})
        if not batch_ids:
            return EMPTY_ANSWER
        return self.dlcs.named_query(customer, batch_ids,
                                     object_hook=SlimAnswer().object_hook,
                                     deadline=deadline).document

    def _finish(self, manifest: Manifest, token: str, etag: str, key: str,
                changes: list[tuple]) -> str | None:
        """Publish the stored document, if this request still holds the claim ``token``.

        Returns the key of the document it replaces, which nothing serves any more.
        """
        with db.transaction():
            now = self.clock()
            before = Manifest.finish_rebuild(manifest.id, token, etag, key, now)
            if before is None:
                raise _ClaimLost()
            CanvasPainting.record_findings(changes, now)
            Delivery.complete_pending(manifest.key, now)
        if before.published_etag is None:
            return None
        return published_key(before.customer, before.slug, before.published_key)

    def _record_nothing(self, manifest: Manifest, token: str, reason: str,
                        batch: int | None) -> None:
        """Record that the manifest could not be built at all; settle who waited for it."""
        with db.transaction():
            now = self.clock()
            if not Manifest.finish_failed(manifest.id, token, reason, now):
                raise RebuildFailed(str(_ClaimLost()), batch, manifest.key)
            Delivery.fail_pending(manifest.key, reason, now)

    def _failed(self, manifest: Manifest, token: str, batch: int | None, key: str | None,
                exc: Exception) -> RebuildFailed:
        """Record a failed rebuild and release its claim; return the error to raise.

        ``key`` is where the rebuild may have stored a document: deleted
        (best effort) once it is certain that nothing publishes it.
        """
        message = _failure_text(exc)
        if isinstance(exc, _ClaimLost):
            # Someone else owns the manifest's rebuild now: nothing of ours to record.
            if key is not None:
                self._delete_quietly(key, "unpublished")
            return RebuildFailed(message, batch, manifest.key)
        if not isinstance(exc, (UpstreamError, BuildError)):
            log.exception("rebuild of %s failed unexpectedly", manifest.key)

        def record() -> str | None:
            now = self.clock()
            Manifest.fail_rebuild(manifest.id, token, message, now)
            Delivery.explain_pending(manifest.key, message, now)
            return Manifest.get_by_id(manifest.id).published_key

        try:
            # On a new connection if need be: the one that failed the rebuild
            # may be dead, and the claim must not wait for its lease to expire.
            published = db.in_transaction_retried_once(record)
        except Exception:  # noqa: BLE001 - the lease will expire instead
            log.warning("could not record the failed rebuild of %s; its claim ends with "
                        "its lease", manifest.key)
            return RebuildFailed(message, batch, manifest.key)
        # The claim is released (or was lost): only a finish that committed
        # before its connection died can have published this key.
        if key is not None and published != key:
            self._delete_quietly(key, "unpublished")
        return RebuildFailed(message, batch, manifest.key)

    def _delete_quietly(self, key: str, what: str) -> None:
        """Delete a stored document nothing serves; a failure only leaves it behind."""
        try:
            self.store.delete(key)
        except Exception as exc:  # noqa: BLE001 - the rebuild's outcome does not depend on it
            log.warning("could not delete the %s document %s: %s", what, key,
                        _report_text(exc))


class _ClaimLost(WebhookError):
    """The rebuild's claim was taken: by a re-registration, or by a rebuild after its lease."""

    def __init__(self):
        super().__init__("Another request took this manifest's rebuild over (it was "
                         "re-registered, or this rebuild outlived its lease); this rebuild's "
                         "document was not published.")


class NothingIngested(Exception):
    """The DLCS has none of the manifest's assets: every one failed, or never was ingested."""


def _all_failed(batches: list[Batch]) -> bool:
    """Tell whether the manifest's batches all finished without ingesting a single asset."""
    return bool(batches) and all(
        batch.status == COMPLETED and not batch.completed and (batch.errors or 0) > 0
        for batch in batches)


def _nothing_reason(batches: list[Batch]) -> str:
    errors = sum(batch.errors or 0 for batch in batches)
    where = f"{len(batches)} batch" + ("es" if len(batches) != 1 else "")
    return (f"Every asset failed at the DLCS ({errors} errors in {where}), so "
            f"there is nothing to publish; failedAssets says why. Register the manifest "
            f"again, or rebuild it once the assets are in the DLCS.")


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
        self.nothing_ingested = False
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

    def __enter__(self) -> RebuildReport:
        self._started = time.perf_counter()
        return self

    def __exit__(self, kind, exc, traceback) -> None:
        seconds = time.perf_counter() - self._started
        fields = {"manifest": self.manifest, "batch": self.batch, "canvases": self.canvases,
                  "missing_assets": self.missing_assets}
        fields.update({f"{name}_ms": round(spent * 1000, 1)
                       for name, spent in self._stages.items()})
        fields["duration_ms"] = round(seconds * 1000, 1)
        if exc is None and self.nothing_ingested:
            metrics.rebuild("failed", seconds, "named_query")
            logs.event(log, logging.WARNING, "rebuild", outcome="manifest-failed", **fields)
            return
        if exc is None:
            metrics.rebuild("published", seconds)
            logs.event(log, logging.INFO, "rebuild", outcome="published", **fields)
            return
        # Outside the timed stages a rebuild only reads and writes the database.
        stage = self._running or "database"
        metrics.rebuild("failed", seconds, stage)
        logs.event(log, logging.WARNING, "rebuild", outcome="failed", stage=stage,
                   error=_report_text(exc), **fields)


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


def _failure_text(exc: Exception) -> str:
    """The reason recorded (and shown to operators) for a failed rebuild."""
    if isinstance(exc, (UpstreamError, BuildError, _ClaimLost)):
        # Storable: the message may quote the DLCS (a description, a canvas id),
        # and a reason the database refuses would leave the failure unrecorded.
        return storable(str(exc)[:2000])
    return f"internal error during the rebuild ({type(exc).__name__})"


def _report_text(exc: BaseException) -> str:
    # The project's own errors carry messages written to be shown; anything
    # else might carry anything, so only its type is told.
    if isinstance(exc, WebhookError):
        return str(exc)[:2000]
    return f"internal error ({type(exc).__name__})"
