"""What a store of published manifest documents is: the interface, its keys and ETags.

The service talks to a ``ManifestStore`` and never to a file system or boto3
directly. There are two: ``FileStore`` (webhook/file_store.py) keeps documents
in a directory, ``S3Store`` (webhook/s3_store.py) in an S3 bucket; ``open_store``
(webhook/stores.py) turns a parsed ``STORAGE_URL`` into one. Both stores derive
the ETag from the stored bytes with ``etag_for``, so a GET answers the same ETag
(and the same 304) whichever store is configured, and switching stores does
not invalidate clients' caches.

A document is given to ``put`` as bytes, or as a binary file read from its
start (the service spools a large manifest to a temporary file rather than
holding its bytes in memory). ``open`` reads one back as a ``StoredStream``: its
ETag and size first, then its bytes a block at a time, so serving a large
manifest costs a block of memory per request, not the document.

Every failure of the file system or of S3 leaves a store as ``StorageError``
(translated once, ``raise ... from exc``); a malformed key or URL is a
programming or configuration error and raises ``ValueError``.

The helpers named with a leading underscore (``_validated_key``, ``_measured``,
``_quoted``, ``_IN_MEMORY``) are shared with the two store modules and with
nothing else: every store must check keys, time itself and hash as the others do.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from webhook import metrics
from webhook.domain import Deadline

JSON_LD = "application/ld+json"

# What ``put`` stores: bytes, or a seekable binary file read from its start.
Body = bytes | BinaryIO
_IN_MEMORY = (bytes, bytearray, memoryview)
# What a StoredStream yields at a time: small next to a socket's send buffer.
STREAM_BLOCK = 64 * 1024


@dataclass(frozen=True, slots=True)
class StoredDocument:
    """A stored manifest document and its strong HTTP ETag (quotes included)."""

    body: bytes
    etag: str


class StoredStream:
    """A stored document opened for reading: ``etag`` and ``length``, then its bytes.

    It is an iterator of the bytes, ``STREAM_BLOCK`` at a time, so the document
    is never whole in memory; it releases the file or connection at the end;
    ``close`` releases it sooner (a WSGI server closes the body it was given,
    read to the end or not).
    """

    def __init__(self, etag: str, length: int, source: BinaryIO):
        self.etag = etag
        self.length = length
        self._source = source  # a file, or botocore's StreamingBody: read(n), close()

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        block = self._source.read(STREAM_BLOCK)
        if not block:
            self.close()
            raise StopIteration
        return block

    def close(self) -> None:
        self._source.close()

    def __del__(self) -> None:
        # WSGI servers close what they serve; a response dropped unread (Flask's
        # test client leaves un-read bodies open) still gives back its file.
        self.close()


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

    def open(self, key: str) -> StoredStream | None:
        """Open the document stored under ``key`` for reading in blocks, or return None."""
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
    return _quoted(digest)


def _quoted(digest) -> str:
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
