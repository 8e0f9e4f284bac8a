"""Typed values shared by the schemas, the models, the builder and the service.

Raw dicts stop at the edges: a registration payload becomes ``PaintedResource``
values in ``schemas``, database rows become them again in ``paintings``, and the
pure builder in ``manifest`` consumes them.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PaintedResource:
    """One DLCS asset painted on one canvas of a registered manifest.

    ``label`` and ``canvas_label`` are IIIF language maps
    (``{"en": ["Front"]}``) or None. ``asset_id`` is ``"{customer}/{space}/{asset}"``.
    ``static_width``/``static_height`` are the sizes given at registration, never
    the ones filled in by a build.
    """

    canvas_id: str
    canvas_order: int
    asset_id: str
    choice_order: int | None = None
    label: dict | None = None
    canvas_label: dict | None = None
    target: str | None = None
    static_width: int | None = None
    static_height: int | None = None


@dataclass(frozen=True, slots=True)
class BatchCompletion:
    """A DLCS "batch completed" notification, whatever format it arrived in."""

    batch_id: int
    customer: int
    count: int
    completed: int
    errors: int
    superseded: bool
    submitted: dt.datetime  # aware, UTC
    finished: dt.datetime   # aware, UTC


@dataclass(frozen=True, slots=True)
class BatchState:
    """A DLCS API Batch: how far the ingest of one batch has got."""

    batch_id: int
    count: int
    completed: int
    errors: int
    superseded: bool
    submitted: dt.datetime | None  # aware, UTC
    finished: dt.datetime | None   # aware, UTC; None while the batch is running

    def completion(self, customer: int) -> BatchCompletion:
        """The completion a finished batch's webhook would have carried."""
        return BatchCompletion(
            batch_id=self.batch_id, customer=customer, count=self.count,
            completed=self.completed, errors=self.errors, superseded=self.superseded,
            submitted=self.submitted or self.finished, finished=self.finished)


def distinct_assets(assets: Iterable[Mapping]) -> list[Mapping]:
    """Return the distinct assets to queue, in order (an asset may be painted twice).

    Assets are the registered ``{"id", "space", ...}`` objects; two with the
    same space and id are the same DLCS asset.
    """
    seen, members = set(), []
    for asset in assets:
        key = (asset["space"], asset["id"])
        if key not in seen:
            seen.add(key)
            members.append(asset)
    return members


@dataclass(frozen=True, slots=True)
class Deadline:
    """When a piece of work must be over: ``seconds`` after it began, at ``at`` (monotonic)."""

    at: float
    seconds: float

    @classmethod
    def after(cls, seconds: float) -> "Deadline":
        """A deadline ``seconds`` from now."""
        return cls(time.monotonic() + seconds, seconds)

    def remaining(self) -> float:
        """Seconds left before the deadline (negative once it has passed)."""
        return self.at - time.monotonic()


@dataclass(frozen=True, slots=True)
class DlcsAsset:
    """What the DLCS API says about one asset (a Hydra ``Image``)."""

    asset_id: str                # "{customer}/{space}/{id}"
    error: str | None            # why its ingest failed; None when it did not
    ingesting: bool | None       # None when the DLCS did not say
    finished: dt.datetime | None  # aware, UTC
    manifests: tuple[str, ...]   # the manifest ids the asset is tagged with
    batch: int | None = None     # the batch it was last ingested in, if any


# The largest value of the database's integer columns (customers, batch counts,
# canvas orders) and of the DLCS's own ints.
MAX_INT32 = 2**31 - 1
# The largest DLCS batch id (a 64-bit column) and delivery-log row id.
MAX_INT64 = 2**63 - 1
# The longest duration a row can record: its column is a 4-byte float on
# PostgreSQL (REAL), whose largest finite value this is.
MAX_DURATION = 3.4028234663852886e38


def ascii_digits(text: str) -> bool:
    """Tell whether ``text`` is one or more ASCII digits, as ``int()`` reads them.

    ``str.isdigit()`` alone also takes "²" (which ``int()`` refuses) and other
    scripts' digits ("٨٠", which it reads as 80).
    """
    return text.isascii() and text.isdigit()


# What no text column holds: NUL (PostgreSQL refuses it) and lone surrogates
# (they have no UTF-8 encoding, so neither database takes them). JSON can
# carry both ("\u0000", "\ud800"), and the DLCS's texts are JSON.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str) -> str:
    """Return ``text`` with what no database column can hold (NUL, lone surrogates) as U+FFFD."""
    return text if is_storable(text) else _UNSTORABLE.sub("\ufffd", text)


def is_storable(text: str) -> bool:
    """Tell whether a database column can hold ``text`` as it is (see ``storable``)."""
    # ASCII has no surrogates: most texts (every URL) are told by two C scans.
    if text.isascii():
        return "\x00" not in text
    return _UNSTORABLE.search(text) is None

# Body limits: a notification is a few hundred bytes, a registration of
# thousands of painted resources a few MB.
MAX_NOTIFICATION_BYTES = 64 * 1024
MAX_REGISTRATION_BYTES = 64 * 1024 * 1024
# Deepest nesting of arrays and objects accepted in a body: a registration is
# about 6 levels deep and a published manifest a dozen; deeper bodies are faults
# or attacks, and make the steps after parsing recurse past Python's limit.
MAX_JSON_DEPTH = 64

# What processing a delivery came to: the webhook's answer and the delivery log's
# ``outcome`` column. The query schema, the OpenAPI document and the service share these.
IGNORED = "ignored"
BATCH_COMPLETED = "batch-completed"
MANIFEST_COMPLETED = "manifest-completed"
# Every batch finished but the DLCS has none of the manifest's assets: nothing a
# redelivery could change; a new registration or a rebuild starts again.
MANIFEST_FAILED = "manifest-failed"
DUPLICATE = "duplicate"
UNPROCESSABLE = "unprocessable"
FAILED = "failed"            # the rebuild is pending: a redelivery or replay resumes it
WEBHOOK_OUTCOMES = (IGNORED, BATCH_COMPLETED, MANIFEST_COMPLETED, MANIFEST_FAILED, DUPLICATE)
DELIVERY_OUTCOMES = (*WEBHOOK_OUTCOMES, UNPROCESSABLE, FAILED)
# A delivery with one of these outcomes has nothing left to do.
FINISHED = frozenset(WEBHOOK_OUTCOMES)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What processing a delivery (or a rebuild) came to, as the webhook answers it."""

    outcome: str
    batch: int | None
    manifest: str | None


# Outcomes of an operator's changes to a manifest's batches (besides MANIFEST_COMPLETED).
BATCH_DROPPED = "batch-dropped"      # the batch no longer counts; others still ingest
REQUEUED = "requeued"                # unfinished assets queued again in new batches

# Why reconcile and status call a batch stalled.
SUPERSEDED = "superseded"            # the DLCS says so: it will never finish
UNFINISHED = "unfinished"            # still ingesting after STALLED_BATCH_SECONDS


#: What ``status`` and the manifest listing call a manifest's state.
# Why a manifest is stuck ingesting when registering its assets at the DLCS failed.
QUEUEING_STOPPED = "Registering the assets at the DLCS stopped"
QUEUEING_INTERRUPTED = ("Registering the assets at the DLCS was interrupted; the same "
                        "registration again resumes it.")
MANIFEST_STATES = ("ingesting", "complete", "complete-with-errors", "failed", "rebuild-failed")
# Rows per page of a listing, unless the query asks for fewer or more (up to the most).
PAGE_DEFAULT = 50
PAGE_MOST = 200


@dataclass(frozen=True, slots=True)
class ManifestKey:
    """Where a page of manifests stops: manifests sort by customer, then id."""

    customer: int
    slug: str


@dataclass(frozen=True, slots=True)
class DeliveryKey:
    """Where a page of the delivery log stops: deliveries sort newest first."""

    received_at: dt.datetime  # naive UTC, as stored
    id: int                   # the row id breaks ties between equal times
