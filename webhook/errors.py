"""The project's exception tree.

Each boundary translates its library's errors into one of these exactly once
(``raise ... from exc``); the HTTP layer maps them to problem+json responses in
``webhook.routes.problems``::

    WebhookError
    ├── ConfigError           a bad environment variable (stops start-up)
    ├── SignatureError        a delivery whose signature does not verify (401)
    ├── PayloadError          an authentic body we cannot process (422 / 400)
    │   └── QueueRejected     the DLCS refused to queue a registration's assets (422)
    ├── NotFound              an unknown manifest or delivery (404)
    ├── Conflict              a state that forbids the request (409)
    ├── UpstreamError         something outside failed; retry later (503)
    │   ├── DlcsError         the DLCS answered badly or not at all
    │   ├── StorageError      the manifest store failed
    │   ├── DatabaseUnavailable
    │   ├── RebuildFailed     a manifest could not be rebuilt; recorded, retryable
    │   └── RebuildInProgress another request holds the manifest's rebuild
    └── BuildError            the DLCS answer cannot make a valid manifest
"""

from __future__ import annotations


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


class PayloadError(WebhookError):
    """A body that is authentic (or authorised) but does not fit its schema."""

    def __init__(self, detail: str, errors: dict | None = None):
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or {}


class QueueRejected(PayloadError):
    """The DLCS refused to queue a registration's assets (its validation failed)."""


class NotFound(WebhookError):
    """The addressed resource does not exist."""


class Conflict(WebhookError):
    """The request contradicts the current state (e.g. batch owned elsewhere)."""


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


class StorageError(UpstreamError):
    """Reading or writing a manifest document failed."""


class DatabaseUnavailable(UpstreamError):
    """The database cannot be reached right now."""

    retry_after_seconds = 5


class BuildError(WebhookError):
    """The named-query answer cannot be turned into a published manifest."""


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
