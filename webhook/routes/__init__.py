"""Thin views: parse, verify, call the service, shape the response."""

from flask import Flask

from webhook.routes import console, deliveries, docs, health, manifests, problems, sns, webhooks
from webhook.routes import metrics as metrics_routes


def init_app(app: Flask) -> None:
    """Register every blueprint and the error handlers."""
    problems.init_app(app)
    for module in (webhooks, sns, manifests, deliveries, health, docs):
        app.register_blueprint(module.bp)
    console.init_app(app)
    # METRICS=off: no such endpoint at all (404), rather than one that refuses.
    if app.extensions["webhook.settings"].metrics_enabled:
        app.register_blueprint(metrics_routes.bp)
