"""The API description, generated once per process from the schemas."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from webhook.openapi import build_spec
from webhook.routes.http import settings

bp = Blueprint("docs", __name__)


@bp.get("/openapi.json")
def openapi():
    spec = current_app.extensions.get("webhook.openapi")
    if spec is None:
        # Built on first use, when every blueprint is registered; a race builds it twice.
        spec = build_spec(current_app, settings().public_base_url)
        current_app.extensions["webhook.openapi"] = spec
    return jsonify(spec)
