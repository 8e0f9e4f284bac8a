"""Manifest documents as objects in an S3 bucket: ``S3Store`` and its boto3 client.

The only module that talks to boto3. ``build_s3_client`` sets the timeouts
and retries of every S3 call in one place; a ``put`` given a deadline starts
no retry that might not end before it. Every botocore failure leaves this
module as ``StorageError`` (translated once, ``raise ... from exc``).
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import boto3
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from webhook.domain import Deadline
from webhook.errors import StorageError
from webhook.storage import (
    JSON_LD,
    STREAM_BLOCK,
    Body,
    StoredDocument,
    StoredStream,
    _measured,
    _quoted,
    _validated_key,
    etag_for,
)

# Bounded so that a stalled S3 endpoint turns into a 503 instead of hanging a
# worker. Manifests are small: a healthy S3 answers in well under a second.
# Retries are botocore's "standard" mode (throttling, 5xx, connection errors;
# jittered backoff sleeping at most 1 + 2 s), so one call gives up after about
# 3 x (2 + 5) + 3 = 24 s at worst, and at once when the endpoint refuses.
S3_CONNECT_TIMEOUT = 2.0
S3_READ_TIMEOUT = 5.0
S3_TOTAL_ATTEMPTS = 3
# A request streaming a document holds one pooled connection for as long as its
# client reads (botocore's default pool is 10; past it, connections are made and
# dropped with a warning each).
S3_MAX_POOL_CONNECTIONS = 64
# The ETag put() records in the object's metadata (its hex digest), so open()
# knows it before streaming the bytes.
_ETAG_METADATA = "sha256-128"
# open() of an object without that metadata reads it twice; tries if it changes between.
_OPEN_ATTEMPTS = 3


def build_s3_client(*, connect_timeout: float = S3_CONNECT_TIMEOUT,
                    read_timeout: float = S3_READ_TIMEOUT,
                    total_attempts: int = S3_TOTAL_ATTEMPTS) -> BaseClient:
    """Return a boto3 S3 client with bounded timeouts and retries.

    Endpoint, region and credentials come from boto3's own resolution
    (``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``, ``AWS_ACCESS_KEY_ID``, ...,
    or the shared config files and instance roles).
    """
    config = Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"mode": "standard", "total_max_attempts": total_attempts},
        max_pool_connections=S3_MAX_POOL_CONNECTIONS,
    )
    # A session of its own: boto3's default session is not thread-safe to
    # create clients from, and we must not share state with other code.
    return boto3.session.Session().client("s3", config=config)


class _DeadlineReached(Exception):
    """An S3 retry would not have ended before the put's deadline."""


# The deadline of the put under way in this thread, and its attempts so far.
_PUT_DEADLINE: ContextVar[list | None] = ContextVar("s3_put_deadline", default=None)


def _refuse_late_retry(request, **kwargs) -> None:
    """Stop a put's retries once one might not end before its deadline (a botocore hook)."""
    state = _PUT_DEADLINE.get()
    if state is None:
        return
    deadline, attempts = state
    state[1] = attempts + 1
    # The first attempt always runs: the document is what the rebuild is for,
    # and a healthy S3 takes milliseconds. A retry needs its full timeouts.
    if attempts and deadline.remaining() < S3_CONNECT_TIMEOUT + S3_READ_TIMEOUT:
        raise _DeadlineReached()


def _watch_deadlines(client: BaseClient) -> BaseClient:
    client.meta.events.register("before-send.s3.PutObject", _refuse_late_retry,
                                unique_id="dlcs-webhook-put-deadline")
    return client


class S3Store:
    """Manifest documents as objects in an S3 bucket, under an optional prefix.

    The client is built on first use (not at construction) so that building
    the app does no network or credential lookup; pass ``client`` to control
    it, e.g. in tests. boto3 clients are thread-safe, so one is shared.
    """

    backend = "s3"

    def __init__(self, bucket: str, prefix: str = "", client: BaseClient | None = None):
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:
            _validated_key(self.prefix)
        self._client = _watch_deadlines(client) if client is not None else None
        self._client_lock = threading.Lock()

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    @property
    def client(self) -> BaseClient:
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = _watch_deadlines(build_s3_client())
        return self._client

    def object_key(self, key: str) -> str:
        """Return the S3 object key of storage key ``key`` (the prefix applied)."""
        _validated_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    @_measured("put")
    def put(self, key: str, body: Body, content_type: str = JSON_LD, *,
            deadline: Deadline | None = None) -> str:
        etag = etag_for(body)
        object_key = self.object_key(key)
        reset = _PUT_DEADLINE.set(None if deadline is None else [deadline, 0])
        try:
            with _storage_errors(f"cannot write {key} to {self.describe()}"):
                self.client.put_object(
                    Bucket=self.bucket, Key=object_key, Body=body, ContentType=content_type,
                    Metadata={_ETAG_METADATA: etag.strip('"')})
        except _DeadlineReached:
            raise StorageError(f"cannot write {key} to {self.describe()}: no time was left "
                               f"for a retry within {deadline.seconds:g} s") from None
        finally:
            _PUT_DEADLINE.reset(reset)
        return etag

    @_measured("get")
    def get(self, key: str) -> StoredDocument | None:
        object_key = self.object_key(key)
        with _storage_errors(f"cannot read {key} from {self.describe()}"):
            response = self._get_object(object_key)
            if response is None:
                return None
            with response["Body"] as stream:
                body = stream.read()
        # The ETag is recomputed rather than read back from object metadata:
        # the whole body is in memory anyway and hashing a manifest costs
        # microseconds, while stored metadata could disagree with the content
        # if anything else ever writes the object. S3's own ETag will not do:
        # it is not a content hash for multipart or KMS-encrypted objects and
        # would differ from FileStore's for the same bytes.
        return StoredDocument(body=body, etag=etag_for(body))

    @_measured("open")
    def open(self, key: str) -> StoredStream | None:
        object_key = self.object_key(key)
        with _storage_errors(f"cannot read {key} from {self.describe()}"):
            for _ in range(_OPEN_ATTEMPTS):
                response = self._get_object(object_key)
                if response is None:
                    return None
                etag = _recorded_etag(response)
                if etag is None:
                    # Not written by put() (or before it recorded the ETag): hash a
                    # first read, then read the same version again to stream it.
                    digest = hashlib.sha256()
                    with response["Body"] as stream:
                        while block := stream.read(STREAM_BLOCK):
                            digest.update(block)
                    etag = _quoted(digest)
                    response = self._get_object(object_key, if_match=response["ETag"])
                    if response is None:
                        continue  # replaced or deleted between the two reads
                return StoredStream(etag, response["ContentLength"], response["Body"])
        raise StorageError(f"cannot read {key} from {self.describe()}: "
                           f"it changed during {_OPEN_ATTEMPTS} reads")

    def _get_object(self, object_key: str, *, if_match: str | None = None) -> dict | None:
        """GET an object; None when there is none (or it is no longer ``if_match``)."""
        conditions = {"IfMatch": if_match} if if_match is not None else {}
        try:
            return self.client.get_object(Bucket=self.bucket, Key=object_key, **conditions)
        except ClientError as exc:
            if _error_code(exc) in ("NoSuchKey", "PreconditionFailed", "412"):
                return None
            raise
    @_measured("delete")
    def delete(self, key: str) -> None:
        object_key = self.object_key(key)
        with _storage_errors(f"cannot delete {key} from {self.describe()}"):
            # S3 answers 204 whether or not the object was there.
            self.client.delete_object(Bucket=self.bucket, Key=object_key)

    @_measured("check")
    def check(self) -> None:
        with _storage_errors(f"{self.describe()} is not usable"):
            self.client.head_bucket(Bucket=self.bucket)


@contextmanager
def _storage_errors(context: str) -> Iterator[None]:
    """Turn botocore's exceptions raised in the block into StorageError."""
    try:
        yield
    except ClientError as exc:
        raise StorageError(f"{context}: {_error_code(exc)} ({_error_message(exc)})") from exc
    except BotoCoreError as exc:
        # Connection refused, timeouts, missing credentials, a broken response
        # stream...: the messages name the endpoint, never the credentials.
        raise StorageError(f"{context}: {exc}") from exc


def _recorded_etag(response: dict) -> str | None:
    """Return the ETag put() recorded in an object's metadata, if it is there and well-formed."""
    digest = response.get("Metadata", {}).get(_ETAG_METADATA, "")
    return f'"{digest}"' if re.fullmatch(r"[0-9a-f]{32}", digest) else None


def _error_code(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    # HEAD requests have no body, so head_bucket only has the status code.
    return str(error.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?"))


def _error_message(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Message") or "no message"

