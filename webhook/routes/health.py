"""Liveness and readiness probes."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from webhook import db
from webhook.errors import UpstreamError

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz():
    checks = {"database": _check(db.ping),
              "storage": _check(current_app.extensions["webhook.store"].check)}
    ready = all(value == "ok" for value in checks.values())
    settings = current_app.extensions["webhook.settings"]
    # What the configuration leaves off or to its defaults, as logged at start-up.
    response = jsonify({"status": "ok" if ready else "unavailable", "checks": checks,
                        "disabled": settings.disabled(), "defaulted": list(settings.defaulted)})
    response.status_code = 200 if ready else 503
    return response


def _check(probe) -> str:
    try:
        probe()
    except UpstreamError as exc:
        return f"failed: {exc}"
    return "ok"
