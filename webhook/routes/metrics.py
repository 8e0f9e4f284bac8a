"""GET /metrics: the Prometheus scrape endpoint (METRICS=off removes it)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST

from webhook import metrics
from webhook.routes.auth import bearer_matches
from webhook.routes.problems import problem

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def scrape():
    settings = current_app.extensions["webhook.settings"]
    if settings.metrics_token is not None and not bearer_matches(settings.metrics_token):
        return problem(401, "unauthorized", "Unauthorized",
                       "A valid 'Authorization: Bearer <METRICS_TOKEN>' header is required.",
                       headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    body = metrics.exposition(settings.metrics_multiprocess_dir)
    return Response(body, content_type=CONTENT_TYPE_LATEST,
                    headers={"Cache-Control": "no-store"})
