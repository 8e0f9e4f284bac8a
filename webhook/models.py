"""Manifests and their DLCS ingest batches, and their query shortcuts (no Flask, no HTTP).

The statements every delivery runs here (``Batch.lock_owner``, ``.complete``
and ``.count_ingesting``) are written out in SQL once per backend with
``model_base.statement``, not built by peewee on each call (see
``model_base`` for why).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import NamedTuple

import peewee

from webhook.db import database, is_postgres
from webhook.deliveries import Delivery, NewDelivery
from webhook.domain import BATCH_COMPLETED, BatchCompletion
from webhook.errors import NotFound
from webhook.model_base import (COMPLETED, INGESTING, BaseModel, JSONField, locked, statement,
                                to_naive_utc, utcnow)


class Manifest(BaseModel):
    """A registered manifest and the state of its publication."""

    customer = peewee.IntegerField()
    slug = peewee.CharField(max_length=64)
    document = JSONField()                       # the registration without items/batches
    generation = peewee.IntegerField(default=1)  # bumped by each registration
    needs_rebuild = peewee.BooleanField(default=False)
    rebuild_owner = peewee.CharField(max_length=64, null=True)
    rebuild_lease_until = peewee.DateTimeField(null=True)
    rebuild_error = peewee.TextField(null=True)
    last_processed = peewee.DateTimeField(null=True)
    published_etag = peewee.CharField(max_length=80, null=True)
    published_at = peewee.DateTimeField(null=True)
    created_at = peewee.DateTimeField(default=utcnow)
    updated_at = peewee.DateTimeField(default=utcnow)
    fingerprint = peewee.CharField(max_length=64, null=True)   # of the registered content
    queued_assets = peewee.IntegerField(null=True)  # assets the service queued at the DLCS
    queue_error = peewee.TextField(null=True)       # why the DLCS work stopped short
    # The ids of the assets this registration queues (all of them, unless
    # DLCS_PROJECTION=manifest found some in the DLCS); None: every asset.
    queue_plan = JSONField(null=True)
    ingest_failed = peewee.TextField(null=True)     # why nothing could be built, if so
    # Replaced by every registration; a PUT's If-Match names it (see ``etag``).
    version = peewee.CharField(max_length=32, null=True, default=lambda: uuid.uuid4().hex)
    published_key = peewee.CharField(max_length=300, null=True)  # the served document's key
    queueing_until = peewee.DateTimeField(null=True)  # a request is queueing assets until then

    class Meta:
        indexes = ((("customer", "slug"), True),)

    @property
    def etag(self) -> str:
        """Return the registration's strong ETag: its version, quoted."""
        return f'"{self.version}"'

    @property
    def key(self) -> str:
        """Return ``"{customer}/{slug}"``, how deliveries name a manifest."""
        return f"{self.customer}/{self.slug}"

    @classmethod
    def find(cls, customer: int, slug: str) -> "Manifest | None":
        """Return the manifest registered under (customer, slug), if any."""
        return cls.get_or_none((cls.customer == customer) & (cls.slug == slug))

    @classmethod
    def registered(cls, customer: int, slug: str) -> "Manifest":
        """Return the manifest registered under (customer, slug); NotFound if there is none."""
        manifest = cls.find(customer, slug)
        if manifest is None:
            raise NotFound(f"No manifest {customer}/{slug} is registered.")
        return manifest

    @classmethod
    def lock(cls, pk: int) -> "Manifest | None":
        """Re-read a manifest row holding its lock to the end of the transaction."""
        return locked(cls.select().where(cls.id == pk)).get_or_none()

    @classmethod
    def claim_rebuild(cls, pk: int, now: dt.datetime, lease: dt.timedelta,
                      mark: bool = False) -> str | None:
        """Take the manifest's rebuild claim inside the open transaction, if it is free.

        Returns the claim token, or None when a live claim is held elsewhere (an
        expired one, left by a worker that died, is taken over). ``mark`` also
        records that the manifest needs a rebuild, whether or not the claim is taken.
        """
        token = uuid.uuid4().hex
        free = cls.rebuild_lease_until.is_null() | (cls.rebuild_lease_until < now)
        changes = {cls.rebuild_owner: token, cls.rebuild_lease_until: now + lease}
        if mark:
            changes[cls.needs_rebuild] = True
        taken = cls.update(changes).where((cls.id == pk) & free).execute()
        if not taken and mark:
            cls.update(needs_rebuild=True).where(cls.id == pk).execute()
        return token if taken else None

    @classmethod
    def finish_rebuild(cls, pk: int, token: str, etag: str, key: str,
                       now: dt.datetime) -> "Manifest | None":
        """Publish the document stored at ``key`` and release the claim, if ``token`` still holds it.

        The one statement both checks the claim and records the key, so only
        the claim's owner can change what is served. Returns the row as it was
        before (with the published key it replaces), or None when the claim was
        lost. Call it inside a transaction: the row stays locked until it ends.
        """
        before = cls.lock(pk)
        if before is None or before.rebuild_owner != token:
            return None
        published = cls.update(
            needs_rebuild=False, rebuild_owner=None, rebuild_lease_until=None,
            rebuild_error=None, ingest_failed=None, last_processed=now, published_etag=etag,
            published_key=key,
            published_at=now, updated_at=now,
        ).where((cls.id == pk) & (cls.rebuild_owner == token)).execute()
        return before if published else None

    @classmethod
    def finish_failed(cls, pk: int, token: str, reason: str, now: dt.datetime) -> bool:
        """Record that nothing could be built, and release the claim, if ``token`` holds it.

        Not retried: the manifest no longer needs a rebuild until it is
        registered again or an operator rebuilds it.
        """
        return bool(cls.update(
            needs_rebuild=False, rebuild_owner=None, rebuild_lease_until=None,
            rebuild_error=None, ingest_failed=reason, last_processed=now, updated_at=now,
        ).where((cls.id == pk) & (cls.rebuild_owner == token)).execute())

    @classmethod
    def fail_rebuild(cls, pk: int, token: str, error: str, now: dt.datetime) -> bool:
        """Record why a rebuild failed and release the claim, if ``token`` still holds it."""
        return bool(cls.update(
            rebuild_error=error, rebuild_owner=None, rebuild_lease_until=None, updated_at=now,
        ).where((cls.id == pk) & (cls.rebuild_owner == token)).execute())

    @classmethod
    def release_claim(cls, pk: int, token: str) -> None:
        """Give up the rebuild claim ``token`` without recording anything else."""
        cls.update(rebuild_owner=None, rebuild_lease_until=None).where(
            (cls.id == pk) & (cls.rebuild_owner == token)).execute()

    @classmethod
    def count_awaiting_rebuild(cls) -> int:
        """Count manifests whose batches are all complete but whose rebuild has not succeeded."""
        return cls.select().where(cls.needs_rebuild == True).count()  # noqa: E712


class Batch(BaseModel):
    """A DLCS ingest batch of one manifest. The primary key is the DLCS batch id."""

    id = peewee.BigIntegerField(primary_key=True)
    manifest = peewee.ForeignKeyField(Manifest, backref="batches", on_delete="CASCADE")
    customer = peewee.IntegerField()
    status = peewee.CharField(max_length=16, default=INGESTING)
    count = peewee.IntegerField(null=True)
    completed = peewee.IntegerField(null=True)
    errors = peewee.IntegerField(null=True)
    superseded = peewee.BooleanField(default=False)
    submitted = peewee.DateTimeField(null=True)
    finished = peewee.DateTimeField(null=True)
    processed = peewee.DateTimeField(null=True)
    created_at = peewee.DateTimeField(null=True, default=utcnow)
    assets_checked = peewee.DateTimeField(null=True)  # when its failed assets were read

    @classmethod
    def unchecked(cls, manifest_pk: int) -> list["Batch"]:
        """Return the manifest's completed batches with errors whose assets were not read yet."""
        return list(cls.select().where(
            (cls.manifest == manifest_pk) & (cls.status == COMPLETED) & (cls.errors > 0)
            & cls.assets_checked.is_null()).order_by(cls.id))

    @classmethod
    def of_manifest(cls, manifest_pk: int) -> list["Batch"]:
        """Return a manifest's batches in id order."""
        return list(cls.select().where(cls.manifest == manifest_pk).order_by(cls.id))

    @classmethod
    def mark_superseded(cls, batch_id: int) -> None:
        """Record that the DLCS superseded a batch still ingesting (it will never finish)."""
        cls.update(superseded=True).where((cls.id == batch_id)
                                          & (cls.status == INGESTING)).execute()

    @classmethod
    def is_completed(cls, batch_id: int) -> bool:
        """Tell whether a batch is recorded complete (one read, no lock)."""
        return database.execute_sql(statement(
            'SELECT 1 FROM "batch" WHERE "id" = {p} AND "status" = {p}'),
            (batch_id, COMPLETED)).fetchone() is not None

    @classmethod
    def count_ingesting(cls, manifest_pk: int) -> int:
        """Count the manifest's batches not yet complete."""
        return database.execute_sql(statement(
            'SELECT count(*) FROM "batch" WHERE "manifest_id" = {p} AND "status" = {p}'),
            (manifest_pk, INGESTING)).fetchone()[0]

    @classmethod
    def lock_owner(cls, batch_id: int) -> tuple[LockedManifest, int] | None:
        """Lock the manifest a batch belongs to; return what was read of it, and the batch customer.

        The manifest is read as it is once the lock is held. The batch itself
        is not locked: its state is settled by ``complete``. None when no
        manifest has the batch.
        """
        if is_postgres():
            # The count would come from the snapshot taken before the lock was
            # granted, missing completions committed meanwhile: complete() counts.
            ingesting = "NULL"
        else:
            # SQLite's write transaction already excludes every other writer.
            ingesting = ('(SELECT count(*) FROM "batch" AS i WHERE i."manifest_id" = m."id" '
                         f"AND i.\"status\" = '{INGESTING}')")
        row = database.execute_sql(statement(
            f'SELECT m."id", m."customer", m."slug", m."needs_rebuild", {ingesting}, '
            'b."customer" FROM "batch" AS b JOIN "manifest" AS m ON m."id" = b."manifest_id" '
            'WHERE b."id" = {p}{lock}'), (batch_id,)).fetchone()
        if row is None:
            return None
        return LockedManifest(row[0], row[1], row[2], bool(row[3]), row[4]), row[5]

    @classmethod
    def complete(cls, batch_id: int, manifest_pk: int, completion: BatchCompletion,
                 processed: dt.datetime, *, record: NewDelivery | None = None,
                 manifest_key: str | None = None,
                 ingesting: int | None = None) -> tuple[bool, int, bool | None]:
        """Complete a batch still ingesting for this manifest.

        Returns whether it was still ingesting, how many of the manifest's
        batches still are, and whether ``record`` was inserted. ``record``, a
        delivery not written yet, is inserted as ``batch-completed`` (naming
        ``manifest_key``) when this completes the batch and leaves others
        ingesting, the common case, in the same round trip on PostgreSQL;
        False then means its id is recorded already, None that it was not
        tried. ``ingesting``: the manifest's batches still ingesting before,
        when ``lock_owner`` could tell (SQLite), which saves counting again.
        Call it holding the manifest's lock (``lock_owner``).
        """
        update = statement(
            'UPDATE "batch" SET "status" = {p}, "count" = {p}, "completed" = {p}, '
            '"errors" = {p}, "superseded" = {p}, "submitted" = {p}, "finished" = {p}, '
            '"processed" = {p} WHERE "id" = {p} AND "manifest_id" = {p} AND "status" = {p}')
        values = (COMPLETED, completion.count, completion.completed, completion.errors,
                  completion.superseded, to_naive_utc(completion.submitted),
                  to_naive_utc(completion.finished), processed, batch_id, manifest_pk,
                  INGESTING)
        if not is_postgres():
            completed = database.execute_sql(update, values).rowcount == 1
            if ingesting is None:
                ingesting = cls.count_ingesting(manifest_pk)
            else:
                ingesting -= completed
            if record is None or not completed or not ingesting:
                return completed, ingesting, None
            return completed, ingesting, Delivery.record(
                record.delivery_id, record.transport, record.received_at, processed,
                record.body, batch_id, manifest_key, BATCH_COMPLETED, None,
                record.failed_assets)
        # One round trip instead of two or three. Every part of the statement
        # sees the snapshot it started with: taken after the manifest's lock was
        # granted, so it holds every completion committed before, and the count
        # still sees this batch as ingesting when the update completes it.
        insert, inserted = "", "NULL"
        parameters = (*values, manifest_pk, INGESTING)
        if record is not None:
            insert = (
                ', recorded AS (INSERT INTO "delivery" ("delivery_id", "transport", '
                '"received_at", "updated_at", "batch", "manifest", "outcome", "error", '
                '"attempts", "body", "failed_assets") '
                'SELECT %s, %s, %s, %s, %s, %s, %s, NULL, 1, %s, %s FROM done, rest '
                'WHERE rest.n > 0 ON CONFLICT ("delivery_id") DO NOTHING RETURNING 1)')
            inserted = "(SELECT count(*) FROM recorded)"
            parameters += (record.delivery_id, record.transport, record.received_at,
                           processed, batch_id, manifest_key, BATCH_COMPLETED, record.body,
                           record.failed_assets)
        done, ingesting, recorded = database.execute_sql(
            f"WITH done AS ({update} RETURNING 1), "
            'rest AS (SELECT count(*) - (SELECT count(*) FROM done) AS n FROM "batch" '
            f'WHERE "manifest_id" = %s AND "status" = %s){insert} '
            f"SELECT (SELECT count(*) FROM done), (SELECT n FROM rest), {inserted}",
            parameters).fetchone()
        tried = record is not None and done == 1 and ingesting > 0
        return done == 1, ingesting, (recorded == 1) if tried else None


class LockedManifest(NamedTuple):
    """What ``Batch.lock_owner`` read of a manifest, holding its lock."""

    id: int
    customer: int
    slug: str
    needs_rebuild: bool
    ingesting: int | None   # its batches still ingesting; None: not counted (PostgreSQL)

    @property
    def key(self) -> str:
        """Return ``"{customer}/{slug}"``, how deliveries name a manifest."""
        return f"{self.customer}/{self.slug}"
