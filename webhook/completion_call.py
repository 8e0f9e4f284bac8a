"""Answer the common batch completions in one call to PostgreSQL.

``webhook_complete_batch`` (created by migration 0007, where its statements
and the cases it answers are explained; redefined by 0009, which asks whether
another batch is ingesting instead of counting them) records a first
completion that leaves other batches ingesting, or a re-notification of a
batch already complete, in one round trip with plans PostgreSQL keeps.
Everything else is left to the locked path in ``webhook.intake``, with
nothing written.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import peewee

from webhook.db import database, is_postgres
from webhook.domain import BatchCompletion
from webhook.model_base import to_naive_utc

# Raised by the function, having undone what it did, should a batch change under its lock.
NOT_ANSWERED = "WH001"

_CALL = ("SELECT outcome, manifest_id, manifest_customer, manifest_key "
         "FROM webhook_complete_batch(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)")


@dataclass(frozen=True, slots=True)
class Answered:
    """What the call recorded: the delivery's outcome and the manifest it names."""

    outcome: str                    # "batch-completed" or "duplicate"
    manifest_pk: int
    manifest_customer: int | None   # read only with the lock, for a first completion
    manifest_key: str


def available() -> bool:
    """Tell whether the bound database has the function (PostgreSQL)."""
    return is_postgres()


def complete_batch(delivery_id: str, transport: str, received: dt.datetime, body: bytes,
                   completion: BatchCompletion) -> Answered | None:
    """Record a delivery of a common completion in one transaction of its own.

    None when the case is not one the function answers: nothing was written,
    and the caller takes the locked path. Call it outside any transaction.
    """
    parameters = (delivery_id, transport, received, body, completion.batch_id,
                  completion.customer, completion.count, completion.completed,
                  completion.errors, completion.superseded,
                  to_naive_utc(completion.submitted), to_naive_utc(completion.finished))
    try:
        row = database.execute_sql(_CALL, parameters).fetchone()
    except peewee.DatabaseError as exc:
        if _sqlstate(exc) == NOT_ANSWERED:
            return None
        raise
    return None if row[0] is None else Answered(*row)


def _sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of the driver's error that peewee's wraps (its ``__context__``)."""
    for error in (exc, exc.__cause__, exc.__context__):
        code = getattr(error, "pgcode", None)
        if code is not None:
            return code
    return None

