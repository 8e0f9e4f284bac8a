"""The project's exception tree: every error raised on purpose, and the status it earns.

Each boundary translates its library's errors into one of these exactly once
(``raise ... from exc``); ``webhook.routes.problems`` turns them into
problem+json answers, reading ``status`` and ``slug`` from the class::

    WebhookError
    ├── ConfigError              a bad environment variable (stops start-up)
    ├── SignatureError           a delivery whose signature does not verify (401)
    ├── SnsRejected              a forged, malformed or unwanted SNS message (400/401/403)
    ├── PayloadError             an authentic notification we cannot process (422)
    │   ├── InvalidRequest       a registration or query that fails its schema (400)
    │   └── QueueRejected        the DLCS refused to queue a registration's assets (422)
    ├── NotFound                 an unknown manifest or delivery (404)
    ├── Conflict                 a state that forbids the request (409)
    ├── PreconditionFailed       an If-Match that names no current version (412)
    ├── BuildError               the DLCS answer cannot make a valid manifest
    └── UpstreamError            something outside failed; retry later (503)
        ├── DlcsError            the DLCS answered badly or not at all
        │   ├── NamedQueryNotFound   the named query matched nothing (404)
        │   └── QueuePartiallyFailed some chunks of a queue request were queued
        ├── StorageError         the manifest store failed
        ├── DatabaseUnavailable
        ├── CertificateUnavailable   an SNS signing certificate cannot be fetched
        ├── ConfirmationFailed   SNS did not take a subscription confirmation
        ├── RebuildFailed        a manifest could not be rebuilt; recorded, retryable
        └── RebuildInProgress    another request holds the manifest's rebuild
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for annotations: errors stays the bottom floor
    from webhook.domain import BatchState


class WebhookError(Exception):
    """Base of every error the project raises on purpose."""


class ConfigError(WebhookError):
    """An environment variable has a value the service cannot use."""

    def __init__(self, variable: str, reason: str):
        super().__init__(f"{variable}: {reason}")
        self.variable = variable
        self.reason = reason


class SignatureError(WebhookError):
    """A webhook delivery failed signature verification.

    ``reason`` is a short stable code (``missing-header``, ``bad-signature``...)
    safe to show to the sender and to count in metrics; it never contains
    secrets or expected signatures.
    """

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class SnsRejected(WebhookError):
    """A forged, malformed or unwanted SNS message: answered 4xx, which SNS never retries.

    ``status`` is 400 (malformed), 401 (not authentic or too old) or 403 (refused);
    ``reason`` is a short stable code safe to show to the sender.
    """

    def __init__(self, status: int, reason: str, detail: str):
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail


class PayloadError(WebhookError):
    """A body that is authentic (or authorised) but does not fit its schema."""

    status = 422

    def __init__(self, detail: str, errors: dict | None = None):
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or {}


class InvalidRequest(PayloadError):
    """An admin request (a registration, a query string) that fails its schema."""

    status = 400


class QueueRejected(PayloadError):
    """The DLCS refused to queue a registration's assets (its validation failed)."""


class NotFound(WebhookError):
    """The addressed resource does not exist."""


class Conflict(WebhookError):
    """The request contradicts the current state (e.g. batch owned elsewhere)."""


class PreconditionFailed(WebhookError):
    """A conditional request (``If-Match``) whose condition does not hold now."""


class BuildError(WebhookError):
    """The named-query answer cannot be turned into a published manifest."""


class UpstreamError(WebhookError):
    """A dependency failed; the request may succeed later."""

    retry_after_seconds = 30


class DlcsError(UpstreamError):
    """The DLCS answered with an error, garbage, or not at all.

    ``status`` is the HTTP status when there was a response; ``description`` the
    DLCS's own ``description`` field when it sent one.
    """

    def __init__(self, message: str, status: int | None = None,
                 description: str | None = None):
        super().__init__(message)
        self.status = status
        self.description = description


class NamedQueryNotFound(DlcsError):
    """The named query matched no asset (or its name is unknown): the DLCS answered 404."""


class QueuePartiallyFailed(DlcsError):
    """A queue request failed after earlier chunks were queued.

    ``queued`` holds the batches the DLCS created before the failure and
    ``assets_queued`` how many of the submitted assets they hold (always the
    leading ones), so the caller can record those batches and resubmit
    ``assets[assets_queued:]``.
    """

    def __init__(self, message: str, *, queued: Sequence[BatchState], assets_queued: int,
                 status: int | None = None, description: str | None = None):
        super().__init__(message, status=status, description=description)
        self.queued = tuple(queued)
        self.assets_queued = assets_queued


class StorageError(UpstreamError):
    """Reading or writing a manifest document failed."""


class DatabaseUnavailable(UpstreamError):
    """The database cannot be reached right now."""

    retry_after_seconds = 5


class CertificateUnavailable(UpstreamError):
    """The SNS signing certificate cannot be fetched or read now; a 503 makes SNS retry."""


class ConfirmationFailed(UpstreamError):
    """SNS did not accept the subscription confirmation; a 503 makes SNS resend it."""


class RebuildFailed(UpstreamError):
    """A rebuild failed; the completion is recorded and the rebuild can be retried."""

    def __init__(self, message: str, batch: int | None = None, manifest: str | None = None):
        super().__init__(message)
        self.batch = batch
        self.manifest = manifest


class RebuildInProgress(UpstreamError):
    """Another request is rebuilding this manifest right now."""

    retry_after_seconds = 10

    def __init__(self, message: str, batch: int | None = None, manifest: str | None = None):
        super().__init__(message)
        self.batch = batch
        self.manifest = manifest
