"""Thin views: parse, verify, call the service, shape the response."""

from flask import Flask

from webhook.routes import deliveries, health, manifests, problems, sns, webhooks


def init_app(app: Flask) -> None:
    """Register every blueprint and the error handlers."""
    problems.init_app(app)
    for module in (webhooks, sns, manifests, deliveries, health):
        app.register_blueprint(module.bp)
