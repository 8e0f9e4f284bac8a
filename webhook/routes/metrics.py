"""GET /metrics: the Prometheus scrape endpoint (METRICS=off removes it).

``webhook_manifests_awaiting_rebuild`` is not kept anywhere: it is counted in
the database when /metrics is scraped, so requests never pay for it and every
worker reports the same number.
"""

from __future__ import annotations

import logging

import peewee
from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from prometheus_client.core import GaugeMetricFamily

from webhook import metrics
from webhook.models import Manifest
from webhook.routes.http import bearer_matches, problem, settings

log = logging.getLogger("webhook.metrics")
bp = Blueprint("metrics", __name__)

AWAITING_REBUILD = "webhook_manifests_awaiting_rebuild"


class _AwaitingRebuild:
    """The number of manifests whose rebuild is pending, counted at scrape time."""

    def describe(self):
        return [GaugeMetricFamily(AWAITING_REBUILD, self.collect.__doc__)]

    def collect(self):
        """Manifests whose batches are all complete but whose rebuild has not succeeded."""
        try:
            count = Manifest.count_awaiting_rebuild()
        except (peewee.OperationalError, peewee.InterfaceError) as exc:
            log.warning("cannot count manifests awaiting a rebuild: %s", type(exc).__name__)
            return
        yield GaugeMetricFamily(AWAITING_REBUILD, self.collect.__doc__, value=count)


_SCRAPE_TIME = CollectorRegistry(auto_describe=False)
_SCRAPE_TIME.register(_AwaitingRebuild())


@bp.get("/metrics")
def scrape():
    token = settings().metrics_token
    if token is not None and not bearer_matches(token):
        return problem(401, "unauthorized", "Unauthorized",
                       "A valid 'Authorization: Bearer <METRICS_TOKEN>' header is required.",
                       headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    body = metrics.exposition(settings().metrics_multiprocess_dir, _SCRAPE_TIME)
    return Response(body, content_type=CONTENT_TYPE_LATEST,
                    headers={"Cache-Control": "no-store"})
