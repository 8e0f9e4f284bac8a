"""Where published manifest documents live: a directory or an S3 bucket.

The service talks to a ``ManifestStore`` and never to a file system or boto3
directly; ``open_store`` turns a parsed ``STORAGE_URL`` into one. Both stores derive the
ETag from the stored bytes in the same way, so a GET answers the same ETag (and
the same 304) whichever store is configured, and switching stores does not
invalidate clients' caches.

A document is given to ``put`` as bytes, or as a binary file read from its
start (the service spools a large manifest to a temporary file rather than
holding its bytes in memory).

Every failure of the file system or of S3 leaves this module as
``StorageError`` (translated once, ``raise ... from exc``); a malformed key or
URL is a programming or configuration error and raises ``ValueError``.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import boto3
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from webhook import metrics
from webhook.config import StorageLocation
from webhook.domain import Deadline
from webhook.errors import StorageError

JSON_LD = "application/ld+json"

# What ``put`` stores: bytes, or a seekable binary file read from its start.
Body = bytes | BinaryIO
_IN_MEMORY = (bytes, bytearray, memoryview)
_COPY_BLOCK = 1024 * 1024

# Bounded so that a stalled S3 endpoint turns into a 503 instead of hanging a
# worker. Manifests are small: a healthy S3 answers in well under a second.
# Retries are botocore's "standard" mode (throttling, 5xx, connection errors;
# jittered backoff sleeping at most 1 + 2 s), so one call gives up after about
# 3 x (2 + 5) + 3 = 24 s at worst, and at once when the endpoint refuses.
S3_CONNECT_TIMEOUT = 2.0
S3_READ_TIMEOUT = 5.0
S3_TOTAL_ATTEMPTS = 3

# Current S3 bucket naming rules (3-63 lowercase letters, digits, dots and
# hyphens, starting and ending with a letter or digit).


@dataclass(frozen=True, slots=True)
class StoredDocument:
    """A stored manifest document and its strong HTTP ETag (quotes included)."""

    body: bytes
    etag: str


class ManifestStore(Protocol):
    """The interface the service uses to keep manifest documents."""

    def put(self, key: str, body: Body, content_type: str = JSON_LD, *,
            deadline: Deadline | None = None) -> str:
        """Store ``body`` under ``key``, replacing any previous one; return its ETag.

        With a ``deadline``, no retry starts that might not end before it.
        """
        ...

    def get(self, key: str) -> StoredDocument | None:
        """Return the document stored under ``key``, or None when there is none."""
        ...

    def delete(self, key: str) -> None:
        """Remove the document stored under ``key``; nothing there is no error."""
        ...

    def check(self) -> None:
        """Raise StorageError unless the store can be used right now."""
        ...

    def describe(self) -> str:
        """Return where documents go, as a URL without credentials."""
        ...


def etag_for(body: Body) -> str:
    """Return the strong ETag of ``body``: a quoted, truncated SHA-256 hex digest."""
    if isinstance(body, _IN_MEMORY):
        digest = hashlib.sha256(body)
    else:
        # A file is hashed from its start and left there, ready to be stored.
        body.seek(0)
        digest = hashlib.file_digest(body, "sha256")
        body.seek(0)
    # 128 bits of SHA-256 is plenty to tell versions of one document apart.
    return '"' + digest.hexdigest()[:32] + '"'


def manifest_key(customer: int, manifest_id: str) -> str:
    """Return the storage key of a manifest: ``{customer}/manifests/{manifest_id}``."""
    if isinstance(customer, bool) or not isinstance(customer, int) or customer < 1:
        raise ValueError(f"customer must be a positive int, got {customer!r}")
    if "/" in manifest_id:
        raise ValueError(f"manifest id must not contain '/', got {manifest_id!r}")
    return _validated_key(f"{customer}/manifests/{manifest_id}")


def version_key(customer: int, manifest_id: str, version: str) -> str:
    """Return the storage key of one published version of a manifest.

    ``{customer}/manifests/{manifest_id}.{version}.json``: each rebuild stores
    its document under a key of its own, and the database records which one is
    published (see docs/design.md). Beside the key of ``manifest_key`` rather
    than under it: a file store may hold a document at that key already.
    """
    if not version.isalnum():
        raise ValueError(f"a version is letters and digits, got {version!r}")
    return _validated_key(f"{manifest_key(customer, manifest_id)}.{version}.json")


def published_key(customer: int, manifest_id: str, recorded: str | None) -> str:
    """Return the key of a manifest's published document, given the one the database records.

    Manifests published before versioned keys record none: theirs is at
    ``manifest_key``, until their next rebuild replaces it.
    """
    return recorded if recorded is not None else manifest_key(customer, manifest_id)


def _validated_key(key: str) -> str:
    """Return ``key`` if it is a relative, normalised, slash-separated path; else raise ValueError."""
    # Rejecting rather than normalising: a key with "..", "." or "//" in it
    # never comes from manifest_key(), so it is a bug or an attack, and a
    # normalised key could silently address another customer's document.
    if not isinstance(key, str) or not key:
        raise ValueError("storage key must be a non-empty string")
    if "\\" in key or "\0" in key:
        raise ValueError(f"storage key must not contain backslashes or NUL: {key!r}")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise ValueError(
            f"storage key must be relative with no empty, '.' or '..' parts: {key!r}")
    return key


def _measured(operation: str):
    """Time a store method and count its failures, as ``operation`` of ``self.backend``."""

    def decorate(method):
        @functools.wraps(method)
        def measured(self, *args, **kwargs):
            started, failed = time.perf_counter(), True
            try:
                result = method(self, *args, **kwargs)
                failed = False
                return result
            finally:
                metrics.storage_operation(operation, self.backend,
                                          time.perf_counter() - started, failed)
        return measured

    return decorate


class FileStore:
    """Manifest documents as files under one directory.

    The directory is created on the first ``put`` or ``check`` rather than in
    the constructor, so ``open_store`` does no I/O and an unusable directory
    shows up as a StorageError from the readiness probe instead of a crash.
    The file system keeps no content type; ``put`` accepts one for interface
    compatibility and ignores it (the GET view sets the IIIF media type).
    """

    backend = "file"

    def __init__(self, directory: Path | str):
        # abspath, not resolve(): no file system access, but "var/x" is pinned
        # to the working directory at start-up, not wherever we chdir later.
        self.directory = Path(os.path.abspath(directory))

    def describe(self) -> str:
        return self.directory.as_uri()

    def _path(self, key: str) -> Path:
        return self.directory.joinpath(*_validated_key(key).split("/"))

    @_measured("put")
    def put(self, key: str, body: Body, content_type: str = JSON_LD, *,
            deadline: Deadline | None = None) -> str:
        # A local write has nothing to retry; the deadline is for remote stores.
        etag = etag_for(body)
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_atomically(path, body)
        except OSError as exc:
            raise StorageError(f"cannot write {key} in {self.describe()}: {exc.strerror or exc}") from exc
        return etag

    @_measured("get")
    def get(self, key: str) -> StoredDocument | None:
        path = self._path(key)
        try:
            body = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            # No document at that key (a directory, or a file where a
            # directory should be, is "no object" in S3 terms too).
            return None
        except OSError as exc:
            raise StorageError(f"cannot read {key} in {self.describe()}: {exc.strerror or exc}") from exc
        return StoredDocument(body=body, etag=etag_for(body))

    @_measured("delete")
    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            return  # nothing stored there, as S3 answers a delete of an absent key
        except OSError as exc:
            raise StorageError(f"cannot delete {key} in {self.describe()}: "
                               f"{exc.strerror or exc}") from exc
        _fsync_directory(path.parent)

    @_measured("check")
    def check(self) -> None:
        # Actually creating a file is the only reliable writability test:
        # os.access() is wrong for root, ACLs and read-only mounts.
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.directory, prefix=".check-"):
                pass
        except OSError as exc:
            raise StorageError(f"{self.describe()} is not a writable directory: {exc.strerror or exc}") from exc


def _write_atomically(path: Path, body: Body) -> None:
    """Replace ``path`` with ``body`` so that readers see the old or the new file, never a part."""
    # The temporary file must be in the same directory: os.replace is only
    # atomic within one file system. Its name starts with "." and ends with
    # ".tmp" so that it is recognisable should the process die mid-write.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            if isinstance(body, _IN_MEMORY):
                file.write(body)
            else:
                shutil.copyfileobj(body, file, _COPY_BLOCK)
            file.flush()
            # mkstemp makes the file 0600; documents are public, and a web
            # server running as another user may serve the directory.
            os.fchmod(file.fileno(), 0o644)
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (the new entry survives a crash)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
                    Bucket=self.bucket, Key=object_key, Body=body, ContentType=content_type)
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
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=object_key)
            except ClientError as exc:
                if _error_code(exc) == "NoSuchKey":
                    return None
                raise
            with response["Body"] as stream:
                body = stream.read()
        # The ETag is recomputed rather than read back from object metadata:
        # the whole body is in memory anyway and hashing a manifest costs
        # microseconds, while stored metadata could disagree with the content
        # if anything else ever writes the object. S3's own ETag will not do:
        # it is not a content hash for multipart or KMS-encrypted objects and
        # would differ from FileStore's for the same bytes.
        return StoredDocument(body=body, etag=etag_for(body))

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


def _error_code(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    # HEAD requests have no body, so head_bucket only has the status code.
    return str(error.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?"))


def _error_message(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Message") or "no message"


def open_store(location: StorageLocation) -> ManifestStore:
    """Return the store for a parsed ``STORAGE_URL`` (see ``config.parse_storage_url``); no I/O."""
    if location.scheme == "file":
        return FileStore(location.directory)
    return S3Store(location.bucket, location.prefix)
