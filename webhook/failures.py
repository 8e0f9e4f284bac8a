"""Which assets of a finished batch failed at the DLCS, and why.

A batch that finishes with errors is still a finished batch: its completion is
applied at once, and the errors are read afterwards, from the DLCS API's record
of the batch's assets (``DlcsClient.batch_assets``), onto the manifest's
painted resources. Reading them is best effort: without ``DLCS_API_URL``, or
while the API fails, the completion goes on and the batch stays unchecked
(``Batch.assets_checked`` empty) for the next reconcile to read.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Callable

import peewee

from webhook import db, logs
from webhook.config import Settings
from webhook.dlcs import DlcsClient
from webhook.errors import DlcsError
from webhook.model_base import utcnow
from webhook.models import Batch
from webhook.paintings import CanvasPainting

log = logging.getLogger("webhook.failures")


class FailureReader:
    """Read a finished batch's failed assets from the DLCS API onto a manifest's rows."""

    def __init__(self, settings: Settings, dlcs: DlcsClient,
                 clock: Callable[[], dt.datetime] = utcnow):
        self.settings = settings
        self.dlcs = dlcs
        self.clock = clock

    def read(self, manifest_pk: int, customer: int, batch_id: int) -> bool:
        """Record each of the batch's assets' errors; tell whether they could be read."""
        if not self.settings.dlcs_api_url:
            return False
        try:
            assets = self.dlcs.batch_assets(customer, batch_id)
        except DlcsError as exc:
            logs.event(log, logging.WARNING, "failed assets unread", batch=batch_id,
                       error=str(exc)[:500])
            return False
        # Every asset of the batch, failed or not: one re-ingested successfully
        # since an earlier failure loses its old error.
        errors = {asset.asset_id: asset.error for asset in assets}
        try:
            with db.transaction():
                CanvasPainting.record_errors(manifest_pk, errors)
                Batch.update(assets_checked=self.clock()).where(
                    (Batch.id == batch_id) & (Batch.manifest == manifest_pk)).execute()
        except (peewee.OperationalError, peewee.InterfaceError) as exc:
            # The completion is committed already; the next reconcile reads them again.
            logs.event(log, logging.WARNING, "failed assets unrecorded", batch=batch_id,
                       error=type(exc).__name__)
            return False
        return True
