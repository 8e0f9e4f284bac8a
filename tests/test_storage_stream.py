"""ManifestStore.open: a stored document read back a block at a time, from a directory and from S3.

S3 runs as moto's server over HTTP (the fixtures of tests/test_storage.py).
"""

from __future__ import annotations

import os

import pytest

from tests.test_storage import aws_env, bucket, s3, store  # noqa: F401 - fixtures
from webhook.s3_store import S3Store
from webhook.storage import STREAM_BLOCK, etag_for

DOCUMENT = b'{"id": "https://example.org/7/manifests/m1", "type": "Manifest"}'


@pytest.mark.parametrize("size", [0, 5, STREAM_BLOCK, 3 * 1024 * 1024 + 7])
def test_open_gives_the_etag_the_length_then_the_bytes_in_blocks(store, size):  # noqa: F811
    body = os.urandom(size)
    etag = store.put("7/manifests/big", body)

    stream = store.open("7/manifests/big")
    blocks = list(stream)

    assert (stream.etag, stream.length) == (etag, size)
    assert b"".join(blocks) == body
    assert all(0 < len(block) <= STREAM_BLOCK for block in blocks)
    assert stream.etag == store.get("7/manifests/big").etag


@pytest.mark.parametrize("key", ["7/manifests/absent", "8/manifests/m1", "7/manifests"])
def test_open_without_a_document_returns_none(store, key):  # noqa: F811
    store.put("7/manifests/m1", DOCUMENT)

    assert store.open(key) is None


def test_a_stream_opened_before_a_put_reads_the_document_it_opened(store):  # noqa: F811
    old = os.urandom(3 * STREAM_BLOCK)
    old_etag = store.put("7/manifests/m1", old)
    stream = store.open("7/manifests/m1")
    first = next(iter(stream))

    store.put("7/manifests/m1", b'{"replaced": true}')
    rest = b"".join(stream)

    assert (stream.etag, first + rest) == (old_etag, old)
    assert store.get("7/manifests/m1").body == b'{"replaced": true}'


def test_a_stream_closed_unread_can_be_opened_again(store):  # noqa: F811
    etag = store.put("7/manifests/m1", DOCUMENT)
    for _ in range(3):
        store.open("7/manifests/m1").close()

    stream = store.open("7/manifests/m1")
    assert (stream.etag, b"".join(stream)) == (etag, DOCUMENT)


def test_s3_records_the_etag_with_the_object(s3, bucket):  # noqa: F811
    etag = S3Store(bucket).put("7/manifests/m1", DOCUMENT)

    metadata = s3.head_object(Bucket=bucket, Key="7/manifests/m1")["Metadata"]
    assert metadata == {"sha256-128": etag.strip('"')}


@pytest.mark.parametrize("metadata", [{}, {"sha256-128": "not-a-digest"}])
def test_s3_opens_an_object_written_by_another_writer(s3, bucket, metadata):  # noqa: F811
    # Written without (or with a broken) recorded ETag: the ETag is the content's all the same.
    body = os.urandom(2 * STREAM_BLOCK + 1)
    s3.put_object(Bucket=bucket, Key="7/manifests/m1", Body=body, Metadata=metadata)

    stream = S3Store(bucket).open("7/manifests/m1")

    assert (stream.etag, stream.length, b"".join(stream)) == (etag_for(body), len(body), body)
