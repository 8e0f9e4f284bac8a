"""Peewee models and their query shortcuts (no Flask, no HTTP).

Times are stored as naive UTC datetimes; ``utcnow()`` is the one clock.
The tables are created and changed only by the migrations in ``migrations/``;
these classes describe the newest schema.
"""

from __future__ import annotations

import datetime as dt
import json

import peewee

from webhook.db import database
from webhook.domain import PaintedResource

INGESTING = "ingesting"
COMPLETED = "completed"


def utcnow() -> dt.datetime:
    """Return the current time as a naive UTC datetime (how times are stored)."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def to_naive_utc(moment: dt.datetime) -> dt.datetime:
    """Convert an aware datetime to the stored naive-UTC form."""
    return moment.astimezone(dt.timezone.utc).replace(tzinfo=None)


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
        return (cls.select()
                .where((cls.manifest == manifest_pk) & (cls.status == INGESTING))
                .count())


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


MODELS = (Manifest, Batch, CanvasPainting, Delivery)
