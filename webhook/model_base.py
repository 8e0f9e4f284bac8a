"""What every model module shares: the clock, the backend's SQL, the JSON column, the base model.

Times are stored as naive UTC datetimes; ``utcnow()`` is the one clock.
The tables are created and changed only by the migrations in ``migrations/``;
the model classes (``deliveries``, ``models``, ``paintings``) describe the
newest schema. The values of ``batch.status`` are here too, since both the
delivery log and the batches read them.

Every statement that differs between SQLite and PostgreSQL lives in the model
modules, so the layers above never ask which backend they run on; the one
exception is ``completion_call``, PostgreSQL's one call for the common
completions, which ``intake`` takes where it is available. Row locks:
PostgreSQL takes them with ``FOR UPDATE`` (see ``locked``); SQLite needs none,
since its write transaction (``BEGIN IMMEDIATE``, see ``db.transaction``)
excludes every other writer.

The few statements every delivery runs (``Delivery.record``,
``.record_known_completion`` and ``.settle`` in ``deliveries``;
``Batch.lock_owner``, ``.complete`` and ``.count_ingesting`` in ``models``)
are written out in SQL once per backend (see ``statement``) instead of being
built by peewee on each call: building one costs 100-200 us of Python, many
times what SQLite takes to run it, and it was most of a delivery's cost.
"""

from __future__ import annotations

import datetime as dt
import functools
import json

import peewee

from webhook.db import database, is_postgres

# The values of ``batch.status``.
INGESTING = "ingesting"
COMPLETED = "completed"
DROPPED = "dropped"      # taken out of its manifest by an operator; its completion is ignored


def utcnow() -> dt.datetime:
    """Return the current time as a naive UTC datetime (how times are stored)."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def to_naive_utc(moment: dt.datetime) -> dt.datetime:
    """Convert an aware datetime to the stored naive-UTC form."""
    return moment.astimezone(dt.timezone.utc).replace(tzinfo=None)


def statement(template: str) -> str:
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


def locked(query: peewee.ModelSelect) -> peewee.ModelSelect:
    """Add FOR UPDATE on PostgreSQL; SQLite's IMMEDIATE transaction already excludes writers."""
    return query.for_update() if is_postgres() else query
