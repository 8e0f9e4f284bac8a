"""The one mapping from errors to statuses: every error leaves as problem+json (RFC 9457)."""

from __future__ import annotations

import logging

import peewee
from flask import Flask
from playhouse.pool import MaxConnectionsExceeded
from werkzeug.exceptions import HTTPException

from webhook import logs, metrics
from webhook.errors import (Conflict, InvalidRequest, NotFound, PayloadError,
                            PreconditionFailed, QueueRejected, RebuildFailed, RebuildInProgress,
                            SignatureError, SnsRejected, UpstreamError)
from webhook.routes.http import problem

log = logging.getLogger("webhook.http")

_SNS_PROBLEMS = {
    400: ("invalid-sns-message", "Invalid SNS message"),
    401: ("invalid-sns-signature", "Invalid SNS message signature"),
    403: ("sns-message-refused", "SNS message refused"),
}


def init_app(app: Flask) -> None:
    """Register the error handlers."""

    @app.errorhandler(SignatureError)
    def _signature(exc: SignatureError):
        metrics.signature_failure("webhook", exc.reason)
        logs.annotate(outcome="rejected", reason=exc.reason)
        return problem(401, "invalid-signature", "Invalid webhook signature", exc.detail,
                       reason=exc.reason)

    @app.errorhandler(SnsRejected)
    def _sns_rejected(exc: SnsRejected):
        # SNS counts every 4xx as delivered, so a forged message is never retried.
        slug, title = _SNS_PROBLEMS[exc.status]
        metrics.signature_failure("sns", exc.reason)
        logs.annotate(outcome="rejected", reason=exc.reason)
        return problem(exc.status, slug, title, exc.detail, reason=exc.reason)

    @app.errorhandler(PayloadError)
    def _payload(exc: PayloadError):
        if isinstance(exc, QueueRejected):
            return problem(422, "dlcs-rejected", "The DLCS rejected the assets", exc.detail)
        if isinstance(exc, InvalidRequest):
            return problem(400, "invalid-body", "Invalid request body", exc.detail,
                           errors=exc.errors or None)
        logs.annotate(outcome="unprocessable")
        return problem(422, "unprocessable-body", "Unprocessable notification", exc.detail,
                       errors=exc.errors or None)

    @app.errorhandler(NotFound)
    def _not_found(exc: NotFound):
        return problem(404, "not-found", "Not found", str(exc))

    @app.errorhandler(Conflict)
    def _conflict(exc: Conflict):
        return problem(409, "conflict", "Conflict", str(exc))

    @app.errorhandler(PreconditionFailed)
    def _precondition(exc: PreconditionFailed):
        return problem(412, "precondition-failed", "Precondition failed", str(exc))

    @app.errorhandler(UpstreamError)
    def _upstream(exc: UpstreamError):
        retry = {"Retry-After": str(exc.retry_after_seconds)}
        if isinstance(exc, (RebuildFailed, RebuildInProgress)):
            slug = "rebuild-failed" if isinstance(exc, RebuildFailed) else "rebuild-in-progress"
            logs.annotate(outcome="failed", batch=exc.batch, manifest=exc.manifest)
            return problem(503, slug, "The manifest could not be rebuilt now", str(exc),
                           headers=retry, outcome="failed", batch=exc.batch,
                           manifest=exc.manifest)
        log.warning("upstream failure: %s", exc)
        return problem(503, "unavailable", "Service unavailable", str(exc), headers=retry)

    @app.errorhandler(peewee.OperationalError)
    @app.errorhandler(peewee.InterfaceError)
    def _database(exc):
        log.warning("database unavailable: %s", type(exc).__name__)
        return problem(503, "unavailable", "Service unavailable",
                       "The database is unavailable.", headers={"Retry-After": "5"})

    @app.errorhandler(MaxConnectionsExceeded)
    def _no_free_connection(exc):
        # DATABASE_POOL_SIZE connections, all busy for the pool's whole wait: a
        # burst this worker cannot serve now, not a fault. Nothing was recorded.
        log.warning("no free database connection (DATABASE_POOL_SIZE)")
        return problem(503, "unavailable", "Service unavailable",
                       "Every database connection is in use; try again shortly.",
                       headers={"Retry-After": "1"})

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        headers = {}
        if exc.code == 405 and exc.valid_methods:
            headers["Allow"] = ", ".join(exc.valid_methods)
        slug = (exc.name or "error").lower().replace(" ", "-")
        return problem(exc.code or 500, slug, exc.name, exc.description or exc.name,
                       headers=headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return problem(500, "internal-error", "Internal server error",
                       "The service failed unexpectedly; the error has been logged.")
