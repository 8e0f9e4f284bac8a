"""Peewee models and their query shortcuts (no Flask, no HTTP).

Times are stored as naive UTC datetimes; ``utcnow()`` is the one clock.
The tables are created and changed only by the migrations in ``migrations/``;
these classes describe the newest schema.

Every statement that differs between SQLite and PostgreSQL lives here, so the
layers above never ask which backend they run on. Row locks: PostgreSQL takes
them with ``FOR UPDATE``; SQLite needs none, since its write transaction
(``BEGIN IMMEDIATE``, see ``db.transaction``) excludes every other writer.

The few statements every delivery runs (``Delivery.record``,
``.record_known_completion`` and ``.settle``, ``Batch.lock_owner``,
``.complete`` and ``.count_ingesting``) are written out in
SQL once per backend (see ``_statement``) instead of being built by peewee on
each call: building one costs 100-200 us of Python, many times what SQLite
takes to run it, and it was most of a delivery's cost.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import uuid
from dataclasses import dataclass
from typing import NamedTuple

import peewee

from webhook.db import database, is_postgres
from webhook.domain import (BATCH_COMPLETED, DUPLICATE, FAILED, IGNORED, MANIFEST_COMPLETED,
                            MANIFEST_FAILED, BatchCompletion, PaintedResource)
from webhook.errors import NotFound

INGESTING = "ingesting"
COMPLETED = "completed"
DROPPED = "dropped"      # taken out of its manifest by an operator; its completion is ignored


def utcnow() -> dt.datetime:
    """Return the current time as a naive UTC datetime (how times are stored)."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def to_naive_utc(moment: dt.datetime) -> dt.datetime:
    """Convert an aware datetime to the stored naive-UTC form."""
    return moment.astimezone(dt.timezone.utc).replace(tzinfo=None)


def _statement(template: str) -> str:
    """Return a fixed statement in the bound backend's dialect.

    ``{p}`` marks a parameter and ``{lock}`` where PostgreSQL takes a row lock
    (``FOR UPDATE``); SQLite needs none, since its write transaction excludes
    every other writer.
    """
    return _render(template, is_postgres())


@functools.cache
def _render(template: str, postgres: bool) -> str:
    return template.format(p="%s" if postgres else "?",
                           lock=" FOR UPDATE OF m" if postgres else "")


class JSONField(peewee.TextField):
    """A JSON document kept as text (portable across SQLite and PostgreSQL)."""

    def db_value(self, value):
        return None if value is None else json.dumps(value, ensure_ascii=False,
                                                     separators=(",", ":"))

    def python_value(self, value):
        return None if value is None else json.loads(value)


class BaseModel(peewee.Model):
    class Meta:
        database = database
        legacy_table_names = False


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
        return _locked(cls.select().where(cls.id == pk)).get_or_none()

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
    def count_ingesting(cls, manifest_pk: int) -> int:
        """Count the manifest's batches not yet complete."""
        return database.execute_sql(_statement(
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
        row = database.execute_sql(_statement(
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
        update = _statement(
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


class CanvasPainting(BaseModel):
    """One painted resource of a manifest, with what the last build learned about it."""

    manifest = peewee.ForeignKeyField(Manifest, backref="paintings", on_delete="CASCADE")
    position = peewee.IntegerField()            # order in the registration
    canvas_id = peewee.CharField(max_length=64)
    canvas_order = peewee.IntegerField()
    choice_order = peewee.IntegerField(null=True)
    label = JSONField(null=True)
    canvas_label = JSONField(null=True)
    target = peewee.TextField(null=True)
    static_width = peewee.IntegerField(null=True)    # as registered
    static_height = peewee.IntegerField(null=True)
    asset_id = peewee.CharField(max_length=300)      # "{customer}/{space}/{asset}"
    asset = JSONField()                              # the registered asset object
    ingesting = peewee.BooleanField(default=True)
    thumbnail = peewee.TextField(null=True)
    width = peewee.IntegerField(null=True)           # statics, or filled by a build
    height = peewee.IntegerField(null=True)
    duration = peewee.FloatField(null=True)
    modified = peewee.DateTimeField(null=True)
    error = peewee.TextField(null=True)              # why the DLCS failed to ingest the asset

    class Meta:
        indexes = ((("manifest", "position"), True),)

    @classmethod
    def for_rebuild(cls, manifest_pk: int) -> tuple[list[PaintedResource], list[tuple]]:
        """Return a manifest's painted resources in order, and each row's last build findings.

        The findings are ``(id, ingesting, thumbnail, width, height, duration)``.
        Only these columns are read, into tuples: a model instance of every
        column (the registered asset included) costs about 2 KB a row, which
        is much of a large rebuild's memory. The rows come straight from the
        cursor: peewee's conversion of every column of every row took 0.2 s of
        a 10,000-row rebuild (0.13 s without it).
        """
        query = (cls.select(cls.canvas_id, cls.canvas_order, cls.asset_id, cls.choice_order,
                            cls.label, cls.canvas_label, cls.target, cls.static_width,
                            cls.static_height, cls.id, cls.ingesting, cls.thumbnail, cls.width,
                            cls.height, cls.duration)
                 .where(cls.manifest == manifest_pk).order_by(cls.position))
        rows = cls._meta.database.execute(query).fetchall()
        # Every label of every row parsed by one json.loads of one array: a
        # call per label was a third of reading a large manifest's rows.
        labels = iter(json.loads("[" + ",".join(
            text if text is not None else "null"
            for row in rows for text in (row[4], row[5])) + "]"))
        painted, findings = [], []
        for (canvas_id, canvas_order, asset_id, choice_order, _, _, target,
             static_width, static_height, row_id, ingesting, *found) in rows:
            painted.append(PaintedResource(
                canvas_id, canvas_order, asset_id, choice_order, next(labels), next(labels),
                target, static_width, static_height))
            # SQLite has no boolean type: ingesting comes back as 0 or 1.
            findings.append((row_id, bool(ingesting), *found))
        return painted, findings

    @classmethod
    def asset_ids(cls, manifest_pk: int) -> list[str]:
        """Return the distinct assets a manifest paints, in registration order."""
        rows = cls.select(cls.asset_id).where(cls.manifest == manifest_pk).order_by(cls.position)
        return list(dict.fromkeys(row.asset_id for row in rows))

    @classmethod
    def record_errors(cls, manifest_pk: int, errors: dict[str, str | None]) -> None:
        """Set each asset's ingest error (None: it succeeded) on the manifest's rows."""
        for error in set(errors.values()):
            assets = [asset for asset, text in errors.items() if text == error]
            for start in range(0, len(assets), 500):
                cls.update(error=error).where(
                    (cls.manifest == manifest_pk)
                    & cls.asset_id.in_(assets[start:start + 500])).execute()

    @classmethod
    def failed(cls, manifest_pk: int) -> list["CanvasPainting"]:
        """Return the manifest's rows whose asset failed, in registration order."""
        return list(cls.select(cls.asset_id, cls.canvas_id, cls.error).where(
            (cls.manifest == manifest_pk) & cls.error.is_null(False)).order_by(cls.position))

    @classmethod
    def record_findings(cls, changes: list[tuple], now: dt.datetime) -> None:
        """Write what a build learned about rows, in as few round trips as the backend allows.

        Each change is ``(id, ingesting, thumbnail, width, height, duration)``.
        """
        if not changes:
            return
        if is_postgres():
            # One statement, the changes as one JSON parameter: psycopg2 quoting
            # tens of thousands of values one by one into VALUES lists cost a third
            # of the write-back of a 10,000-canvas rebuild.
            database.execute_sql(
                'UPDATE "canvas_painting" AS c SET ingesting = v.ing, thumbnail = v.thumb, '
                "width = v.w, height = v.h, duration = v.dur, modified = %s "
                "FROM (SELECT (r->>0)::bigint AS id, (r->>1)::boolean AS ing, r->>2 AS thumb, "
                "(r->>3)::integer AS w, (r->>4)::integer AS h, (r->>5)::real AS dur "
                "FROM jsonb_array_elements(%s::jsonb) AS r) AS v WHERE c.id = v.id",
                [now, json.dumps(changes)])
            return
        database.cursor().executemany(
            'UPDATE "canvas_painting" SET ingesting = ?, thumbnail = ?, width = ?, '
            "height = ?, duration = ?, modified = ? WHERE id = ?",
            [(*change[1:], now, change[0]) for change in changes])


class Delivery(BaseModel):
    """One authenticated notification as received, and what became of it."""

    delivery_id = peewee.CharField(max_length=256, unique=True)
    transport = peewee.CharField(max_length=16)
    received_at = peewee.DateTimeField(default=utcnow)
    updated_at = peewee.DateTimeField(default=utcnow)
    batch = peewee.BigIntegerField(null=True, index=True)
    manifest = peewee.CharField(max_length=100, null=True)
    outcome = peewee.CharField(max_length=32, index=True)
    error = peewee.TextField(null=True)
    attempts = peewee.IntegerField(default=1)
    body = peewee.BlobField()
    failed_assets = peewee.IntegerField(null=True)   # the notification's errors, when any

    @classmethod
    def record(cls, delivery_id: str, transport: str, received_at: dt.datetime,
               updated_at: dt.datetime, body: bytes, batch: int | None, manifest: str | None,
               outcome: str, error: str | None, failed_assets: int | None = None) -> bool:
        """Insert a delivery unless its id is recorded already; tell whether it was new.

        The unique key decides, in one statement: no savepoint around an insert
        that may fail, which would cost two more round trips per delivery.
        """
        cursor = database.execute_sql(_statement(
            'INSERT INTO "delivery" ("delivery_id", "transport", "received_at", "updated_at", '
            '"batch", "manifest", "outcome", "error", "attempts", "body", "failed_assets") '
            'VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, 1, {p}, {p}) '
            'ON CONFLICT ("delivery_id") DO NOTHING'),
            (delivery_id, transport, received_at, updated_at, batch, manifest, outcome, error,
             body, failed_assets))
        return cursor.rowcount == 1

    @classmethod
    def record_known_completion(cls, delivery_id: str, transport: str, now: dt.datetime,
                                body: bytes, completion: BatchCompletion) -> str | None:
        """Record a completion of a batch already complete as a duplicate, in one statement.

        Inserts the row, outcome ``duplicate``, only if the batch is complete,
        the customer's, and its manifest needs no rebuild, all as one
        statement sees them, and only if the id is new; returns the manifest's
        key, or None when nothing was inserted. It needs no lock (see
        ``Intake._known_completion`` for why).
        """
        cursor = database.execute_sql(_statement(
            'INSERT INTO "delivery" ("delivery_id", "transport", "received_at", "updated_at", '
            '"batch", "manifest", "outcome", "error", "attempts", "body", "failed_assets") '
            "SELECT {p}, {p}, {p}, {p}, b.\"id\", CAST(m.\"customer\" AS TEXT) || '/' || "
            "m.\"slug\", {p}, NULL, 1, {p}, {p} "
            'FROM "batch" AS b JOIN "manifest" AS m ON m."id" = b."manifest_id" '
            'WHERE b."id" = {p} AND b."customer" = {p} AND b."status" = {p} '
            'AND NOT m."needs_rebuild" '
            'ON CONFLICT ("delivery_id") DO NOTHING RETURNING "manifest"'),
            (delivery_id, transport, now, now, DUPLICATE, body, completion.errors or None,
             completion.batch_id, completion.customer, COMPLETED))
        # Read to the end: with RETURNING, SQLite finishes the statement only then.
        rows = cursor.fetchall()
        return rows[0][0] if rows else None

    @classmethod
    def complete_pending(cls, manifest_key: str, now: dt.datetime) -> None:
        """Mark the manifest's deliveries that waited for its rebuild as completed."""
        cls.update(outcome=MANIFEST_COMPLETED, error=None, updated_at=now).where(
            (cls.manifest == manifest_key) & (cls.outcome == FAILED)).execute()

    @classmethod
    def fail_pending(cls, manifest_key: str, reason: str, now: dt.datetime) -> None:
        """Settle the manifest's deliveries that waited for its rebuild: nothing could be built."""
        cls.update(outcome=MANIFEST_FAILED, error=reason, updated_at=now).where(
            (cls.manifest == manifest_key) & (cls.outcome == FAILED)).execute()

    @classmethod
    def explain_pending(cls, manifest_key: str, error: str, now: dt.datetime) -> None:
        """Tell the manifest's deliveries that wait for its rebuild why it failed."""
        cls.update(error=error, updated_at=now).where(
            (cls.manifest == manifest_key) & (cls.outcome == FAILED)).execute()

    @classmethod
    def lock(cls, delivery_id: str) -> "Delivery | None":
        """Read a recorded delivery holding its row lock to the end of the transaction.

        None when it is not recorded (any more: pruning may have removed it).
        """
        return _locked(cls.select().where(cls.delivery_id == delivery_id)).get_or_none()

    @classmethod
    def settle(cls, delivery_id: str, outcome: str, error: str | None, updated_at: dt.datetime,
               batch: int | None, manifest: str | None) -> None:
        """Write what became of a delivery."""
        database.execute_sql(_statement(
            'UPDATE "delivery" SET "outcome" = {p}, "error" = {p}, "updated_at" = {p}, '
            '"batch" = {p}, "manifest" = {p} WHERE "delivery_id" = {p}'),
            (outcome, error, updated_at, batch, manifest, delivery_id))

    @classmethod
    def prune(cls, received_before: dt.datetime, limit: int) -> int:
        """Delete up to ``limit`` of the oldest deliveries received before a time; count them.

        Whatever their age, two kinds are kept: ``failed`` ones, whose rebuild
        is pending (a redelivery or a replay finishes it), and those of a batch
        still ingesting, which a replay could complete.
        """
        ingesting = Batch.select(Batch.id).where(Batch.status == INGESTING)
        doomed = (cls.select(cls.id)
                  .where((cls.received_at < received_before) & (cls.outcome != FAILED)
                         & (cls.batch.is_null() | cls.batch.not_in(ingesting)))
                  .order_by(cls.received_at, cls.id).limit(limit))
        return cls.delete().where(cls.id.in_(doomed)).execute()

    @classmethod
    def abandon_pending(cls, manifest_key: str, error: str, now: dt.datetime) -> None:
        """Settle the deliveries that waited for a deleted manifest's rebuild as ignored."""
        cls.update(outcome=IGNORED, error=error, updated_at=now).where(
            (cls.manifest == manifest_key) & (cls.outcome == FAILED)).execute()


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


@dataclass(slots=True)
class NewDelivery:
    """A delivery not written yet: what its row will hold once its outcome is known.

    It stands in for a ``Delivery`` (``id`` None) on the intake path, where
    building a model instance cost a fortieth of a delivery.
    """

    delivery_id: str
    transport: str
    received_at: dt.datetime
    body: bytes
    batch: int | None
    failed_assets: int | None     # the notification's errors, when any
    manifest: str | None = None
    id: None = None


def _locked(query: peewee.ModelSelect) -> peewee.ModelSelect:
    """Add FOR UPDATE on PostgreSQL; SQLite's IMMEDIATE transaction already excludes writers."""
    return query.for_update() if is_postgres() else query
