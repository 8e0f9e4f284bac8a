"""Typed values shared by the schemas, the models, the builder and the service.

Raw dicts stop at the edges: a registration payload becomes ``PaintedResource``
values in ``schemas``, database rows become them again in ``models``, and the
pure builder in ``manifest`` consumes them.
"""

from __future__ import annotations

import datetime as dt
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


#: What ``status`` and the manifest listing call a manifest's state.
MANIFEST_STATES = ("ingesting", "complete", "rebuild-failed")


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
