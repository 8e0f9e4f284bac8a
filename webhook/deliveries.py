"""The delivery log: ``Delivery``, each authenticated notification and what became of it.

``NewDelivery`` is one not written yet. No Flask, no HTTP.

The statements every delivery runs (``Delivery.record``,
``.record_known_completion`` and ``.settle``) are written out in SQL once per
backend with ``model_base.statement``, not built by peewee on each call (see
``model_base`` for why). This module sits below ``models``, whose
``Batch.complete`` records a delivery, so it names the batch and manifest
tables only by their SQL names.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import peewee

from webhook.db import database
from webhook.domain import (DUPLICATE, FAILED, IGNORED, MANIFEST_COMPLETED, MANIFEST_FAILED,
                            BatchCompletion)
from webhook.model_base import COMPLETED, INGESTING, BaseModel, locked, statement, utcnow

# The batch table, as ``Delivery.prune`` asks which batches are still ingesting.
_BATCH = peewee.Table("batch", ("id", "status"))


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
        cursor = database.execute_sql(statement(
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
        cursor = database.execute_sql(statement(
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
        return locked(cls.select().where(cls.delivery_id == delivery_id)).get_or_none()

    @classmethod
    def settle(cls, delivery_id: str, outcome: str, error: str | None, updated_at: dt.datetime,
               batch: int | None, manifest: str | None) -> None:
        """Write what became of a delivery."""
        database.execute_sql(statement(
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
        ingesting = _BATCH.select(_BATCH.id).where(_BATCH.status == INGESTING)
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

