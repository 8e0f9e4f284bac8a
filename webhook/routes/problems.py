"""Problem Details (RFC 9457) responses and the one mapping from errors to statuses."""

from __future__ import annotations

import logging

import peewee
from flask import Flask, Response, json
from werkzeug.exceptions import HTTPException

from webhook import logs, metrics
from webhook.errors import (Conflict, NotFound, PayloadError, RebuildFailed, RebuildInProgress,
                            SignatureError, UpstreamError)

log = logging.getLogger("webhook.http")

# A URN, not a URL: the types name problems; there is no page to fetch.
PROBLEM_TYPE = "urn:dlcs-webhook:problem:"


def problem(status: int, slug: str, title: str, detail: str, *,
            headers: dict | None = None, **extra) -> Response:
    """Build an application/problem+json response."""
    body = {"type": PROBLEM_TYPE + slug, "title": title, "status": status, "detail": detail}
    logs.annotate(problem=slug)
    body.update({k: v for k, v in extra.items() if v is not None})
    response = Response(json.dumps(body), status=status,
                        mimetype="application/problem+json")
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def invalid_body(exc: PayloadError, status: int) -> Response:
    """Answer a payload that failed validation, with its field messages."""
    slug, title = (("invalid-body", "Invalid request body") if status == 400
                   else ("unprocessable-body", "Unprocessable notification"))
    return problem(status, slug, title, exc.detail, errors=exc.errors or None)


def init_app(app: Flask) -> None:
    """Register the error handlers: every error leaves as problem+json."""

    @app.errorhandler(SignatureError)
    def _signature(exc: SignatureError):
        metrics.signature_failure("webhook", exc.reason)
        logs.annotate(outcome="rejected", reason=exc.reason)
        return problem(401, "invalid-signature", "Invalid webhook signature", exc.detail,
                       reason=exc.reason)

    @app.errorhandler(PayloadError)
    def _payload(exc: PayloadError):
        logs.annotate(outcome="unprocessable")
        return invalid_body(exc, 422)

    @app.errorhandler(NotFound)
    def _not_found(exc: NotFound):
        return problem(404, "not-found", "Not found", str(exc))

    @app.errorhandler(Conflict)
    def _conflict(exc: Conflict):
        return problem(409, "conflict", "Conflict", str(exc))

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
