"""Liveness and readiness probes."""

from __future__ import annotations

from flask import Blueprint

from webhook import db
from webhook.answer_schemas import HealthSchema, ReadySchema
from webhook.errors import UpstreamError
from webhook.routes.http import answer, settings, store

bp = Blueprint("health", __name__)
_HEALTH = HealthSchema()
_READY = ReadySchema()


@bp.get("/healthz")
def healthz():
    return answer(_HEALTH, {"status": "ok"})


@bp.get("/readyz")
def readyz():
    checks = {"database": _check(db.ping), "storage": _check(store().check)}
    ready = all(value == "ok" for value in checks.values())
    # What the configuration leaves off or to its defaults, as logged at start-up.
    configured = settings()
    return answer(_READY, {"status": "ok" if ready else "unavailable", "checks": checks,
                           "disabled": configured.disabled(),
                           "defaulted": list(configured.defaulted)},
                  200 if ready else 503)


def _check(probe) -> str:
    try:
        probe()
    except UpstreamError as exc:
        return f"failed: {exc}"
    return "ok"
