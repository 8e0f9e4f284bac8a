"""Peewee models and their query shortcuts (no Flask, no HTTP).

Times are stored as naive UTC datetimes; ``utcnow()`` is the one clock.
The tables are created and changed only by the migrations in ``migrations/``;
these classes describe the newest schema.

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
from dataclasses import dataclass
from typing import NamedTuple

import peewee

from webhook.db import database
from webhook.domain import BatchCompletion, PaintedResource

INGESTING = "ingesting"
COMPLETED = "completed"
# Outcomes of deliveries written here (the service names the others).
BATCH_COMPLETED = "batch-completed"
DUPLICATE = "duplicate"


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
    return _render(template, isinstance(database.obj, peewee.PostgresqlDatabase))


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
    queue_error = peewee.TextField(null=True)       # why queueing stopped short

    class Meta:
        indexes = ((("customer", "slug"), True),)

    @property
    def key(self) -> str:
        """Return ``"{customer}/{slug}"``, how deliveries name a manifest."""
        return f"{self.customer}/{self.slug}"

    @classmethod
    def find(cls, customer: int, slug: str) -> "Manifest | None":
        """Return the manifest registered under (customer, slug), if any."""
        return cls.get_or_none((cls.customer == customer) & (cls.slug == slug))

    @classmethod
    def lock(cls, pk: int) -> "Manifest | None":
        """Re-read a manifest row holding its lock to the end of the transaction."""
        query = cls.select().where(cls.id == pk)
        if isinstance(database.obj, peewee.PostgresqlDatabase):
            query = query.for_update()
        return query.get_or_none()


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

    @classmethod
    def of_manifest(cls, manifest_pk: int) -> list["Batch"]:
        """Return a manifest's batches in id order."""
        return list(cls.select().where(cls.manifest == manifest_pk).order_by(cls.id))

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
        if isinstance(database.obj, peewee.PostgresqlDatabase):
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
        if not isinstance(database.obj, peewee.PostgresqlDatabase):
            completed = database.execute_sql(update, values).rowcount == 1
            if ingesting is None:
                ingesting = cls.count_ingesting(manifest_pk)
            else:
                ingesting -= completed
            if record is None or not completed or not ingesting:
                return completed, ingesting, None
            return completed, ingesting, Delivery.record(
                record.delivery_id, record.transport, record.received_at, processed,
                record.body, batch_id, manifest_key, BATCH_COMPLETED, None)
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
                '"attempts", "body") SELECT %s, %s, %s, %s, %s, %s, %s, NULL, 1, %s '
                'FROM done, rest WHERE rest.n > 0 '
                'ON CONFLICT ("delivery_id") DO NOTHING RETURNING 1)')
            inserted = "(SELECT count(*) FROM recorded)"
            parameters += (record.delivery_id, record.transport, record.received_at,
                           processed, batch_id, manifest_key, BATCH_COMPLETED, record.body)
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
        painted, findings = [], []
        labels = cls.label.python_value
        for (canvas_id, canvas_order, asset_id, choice_order, label, canvas_label, target,
             static_width, static_height, row_id, ingesting,
             *found) in cls._meta.database.execute(query):
            painted.append(PaintedResource(
                canvas_id, canvas_order, asset_id, choice_order, labels(label),
                labels(canvas_label), target, static_width, static_height))
            # SQLite has no boolean type: ingesting comes back as 0 or 1.
            findings.append((row_id, bool(ingesting), *found))
        return painted, findings

    def painted_resource(self) -> PaintedResource:
        """Return the registered painted resource this row stands for."""
        return PaintedResource(
            canvas_id=self.canvas_id, canvas_order=self.canvas_order, asset_id=self.asset_id,
            choice_order=self.choice_order, label=self.label, canvas_label=self.canvas_label,
            target=self.target, static_width=self.static_width,
            static_height=self.static_height)


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

    @classmethod
    def record(cls, delivery_id: str, transport: str, received_at: dt.datetime,
               updated_at: dt.datetime, body: bytes, batch: int | None, manifest: str | None,
               outcome: str, error: str | None) -> bool:
        """Insert a delivery unless its id is recorded already; tell whether it was new.

        The unique key decides, in one statement: no savepoint around an insert
        that may fail, which would cost two more round trips per delivery.
        """
        cursor = database.execute_sql(_statement(
            'INSERT INTO "delivery" ("delivery_id", "transport", "received_at", "updated_at", '
            '"batch", "manifest", "outcome", "error", "attempts", "body") '
            'VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}, 1, {p}) '
            'ON CONFLICT ("delivery_id") DO NOTHING'),
            (delivery_id, transport, received_at, updated_at, batch, manifest, outcome, error,
             body))
        return cursor.rowcount == 1

    @classmethod
    def record_known_completion(cls, delivery_id: str, transport: str, now: dt.datetime,
                                body: bytes, completion: BatchCompletion) -> str | None:
        """Record a completion of a batch already complete as a duplicate, in one statement.

        Inserts the row, outcome ``duplicate``, only if the batch is complete,
        the customer's, and its manifest needs no rebuild, all as one
        statement sees them, and only if the id is new; returns the manifest's
        key, or None when nothing was inserted. It needs no lock (see
        ``Service._known_completion`` for why).
        """
        cursor = database.execute_sql(_statement(
            'INSERT INTO "delivery" ("delivery_id", "transport", "received_at", "updated_at", '
            '"batch", "manifest", "outcome", "error", "attempts", "body") '
            "SELECT {p}, {p}, {p}, {p}, b.\"id\", CAST(m.\"customer\" AS TEXT) || '/' || "
            "m.\"slug\", {p}, NULL, 1, {p} "
            'FROM "batch" AS b JOIN "manifest" AS m ON m."id" = b."manifest_id" '
            'WHERE b."id" = {p} AND b."customer" = {p} AND b."status" = {p} '
            'AND NOT m."needs_rebuild" '
            'ON CONFLICT ("delivery_id") DO NOTHING RETURNING "manifest"'),
            (delivery_id, transport, now, now, DUPLICATE, body, completion.batch_id,
             completion.customer, COMPLETED))
        # Read to the end: with RETURNING, SQLite finishes the statement only then.
        rows = cursor.fetchall()
        return rows[0][0] if rows else None

    @classmethod
    def settle(cls, delivery_id: str, outcome: str, error: str | None, updated_at: dt.datetime,
               batch: int | None, manifest: str | None) -> None:
        """Write what became of a delivery."""
        database.execute_sql(_statement(
            'UPDATE "delivery" SET "outcome" = {p}, "error" = {p}, "updated_at" = {p}, '
            '"batch" = {p}, "manifest" = {p} WHERE "delivery_id" = {p}'),
            (outcome, error, updated_at, batch, manifest, delivery_id))


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
    manifest: str | None = None
    id: None = None


MODELS = (Manifest, Batch, CanvasPainting, Delivery)
