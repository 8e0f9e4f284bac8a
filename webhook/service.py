"""The use cases, assembled: the only place that wires the database, the DLCS and the store.

Each room has one job, and the views reach them through ``Services``:

- ``intake``        receive, replay and reconcile completions, exactly once (``intake.py``)
- ``registration``  register manifests and queue their assets (``registration.py``)
- ``rebuild``       produce and store published manifests under a claim (``rebuild.py``)
- ``reading``       states, public documents and the delivery log (``reading.py``)
- ``maintenance``   requeue, drop batches, delete manifests, prune the log (``maintenance.py``)

None of them knows HTTP: they return states and values, and raise the errors
of ``webhook.errors``; the views map both to statuses.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Callable

from webhook.config import Settings
from webhook.dlcs import DlcsClient
from webhook.failures import FailureReader
from webhook.intake import Intake
from webhook.maintenance import Maintenance
from webhook.model_base import utcnow
from webhook.reading import Reader
from webhook.rebuild import Rebuilder
from webhook.registration import Registrar
from webhook.storage import ManifestStore


@dataclass(frozen=True)
class Services:
    """The service's use cases over one database, one DLCS client and one store."""

    intake: Intake
    registration: Registrar
    rebuild: Rebuilder
    reading: Reader
    maintenance: Maintenance


def build_services(settings: Settings, dlcs: DlcsClient, store: ManifestStore,
                   clock: Callable[[], dt.datetime] = utcnow) -> Services:
    """Assemble the use cases, sharing one clock."""
    rebuild = Rebuilder(settings, dlcs, store, clock)
    intake = Intake(dlcs, rebuild, FailureReader(settings, dlcs, clock), clock,
                    stalled_after=settings.stalled_batch_seconds)
    return Services(intake=intake,
                    registration=Registrar(settings, dlcs, intake, rebuild, clock),
                    rebuild=rebuild,
                    reading=Reader(settings, store, clock),
                    maintenance=Maintenance(settings, dlcs, store, intake, rebuild, clock))
