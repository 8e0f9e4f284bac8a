"""Tests of the stores: FileStore (``webhook.file_store``) on a temporary directory, S3Store
(``webhook.s3_store``) over HTTP against moto's server."""

from __future__ import annotations

import errno
import os
import socket
import stat
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest
from botocore.exceptions import BotoCoreError, ClientError

# moto_server is imported for pytest, which finds fixtures by name in the
# module; drop it from this import once tests/conftest.py provides it, or the
# session would start a second server for this module.
from tests.servers import free_port
from webhook.config import parse_storage_url
from webhook.domain import Deadline
from webhook.errors import StorageError
from webhook.file_store import FileStore
from webhook.s3_store import S3Store, build_s3_client
from webhook.storage import (
    StoredDocument,
    etag_for,
    manifest_key,
    published_key,
    version_key,
)
from webhook.stores import open_store

SECRET = "not-a-real-secret-but-never-echo-me"
DOCUMENT = b'{"id": "https://example.org/7/manifests/m1", "type": "Manifest"}'
IIIF_MEDIA_TYPE = 'application/ld+json;profile="http://iiif.io/api/presentation/3/context.json"'


@pytest.fixture
def aws_env(monkeypatch, tmp_path, moto_server):
    """Configure boto3 the way a deployment does, through the standard variables only."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_ENDPOINT_URL_S3",
                 "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"):
        monkeypatch.delenv(name, raising=False)
    # A developer's ~/.aws files must not change what the tests talk to.
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "absent-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "absent-aws-credentials"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return moto_server


@pytest.fixture
def s3(aws_env):
    """An S3 client for arranging and inspecting, with the endpoint given explicitly."""
    return boto3.client("s3", endpoint_url=aws_env.url, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture
def bucket(s3) -> str:
    """Create a bucket no other test uses and return its name."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture(params=["file", "s3"])
def store(request, tmp_path):
    """Each store, empty; the S3 one builds its client from the environment."""
    if request.param == "file":
        return FileStore(tmp_path / "manifests")
    return S3Store(request.getfixturevalue("bucket"), prefix="pre/fix")


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on: connections are refused at once."""
    return free_port()


# -- shared behaviour ---------------------------------------------------------

def test_put_then_get_returns_the_bytes_and_the_etag(store):
    etag = store.put("7/manifests/m1", DOCUMENT)

    assert store.get("7/manifests/m1") == StoredDocument(body=DOCUMENT, etag=etag)
    assert etag == etag_for(DOCUMENT)


@pytest.mark.parametrize("size", [0, 5, 3 * 1024 * 1024 + 7])
def test_put_of_a_file_stores_its_bytes_from_the_start(store, tmp_path, size):
    body = os.urandom(size)
    with open(tmp_path / "spool", "w+b") as spool:
        spool.write(body)  # left at its end, as a writer leaves it
        etag = store.put("7/manifests/big", spool)

    assert etag == etag_for(body)
    assert store.get("7/manifests/big") == StoredDocument(body=body, etag=etag)


def test_put_overwrites_and_changes_the_etag(store):
    first = store.put("7/manifests/m1", DOCUMENT)
    second = store.put("7/manifests/m1", b'{"replaced": true}')

    assert second != first
    assert store.get("7/manifests/m1") == StoredDocument(b'{"replaced": true}', second)


@pytest.mark.parametrize("key", ["7/manifests/absent", "8/manifests/m1", "7/manifests"])
def test_get_without_a_document_returns_none(store, key):
    store.put("7/manifests/m1", DOCUMENT)

    assert store.get(key) is None


def test_delete_removes_the_document_and_nothing_else(store):
    store.put("7/manifests/m1", DOCUMENT)
    store.put("7/manifests/m2", b"{}")

    store.delete("7/manifests/m1")

    assert store.get("7/manifests/m1") is None
    assert store.get("7/manifests/m2").body == b"{}"


@pytest.mark.parametrize("key", ["7/manifests/absent", "8/manifests/m1"])
def test_delete_of_a_key_with_no_document_is_no_error(store, key):
    store.put("7/manifests/m1", DOCUMENT)
    store.delete(key)
    store.delete(key)
    assert store.get("7/manifests/m1").body == DOCUMENT


def test_a_deleted_document_can_be_stored_again(store):
    store.put("7/manifests/m1", DOCUMENT)
    store.delete("7/manifests/m1")
    etag = store.put("7/manifests/m1", DOCUMENT)
    assert store.get("7/manifests/m1") == StoredDocument(DOCUMENT, etag)


def test_s3_delete_removes_the_object_under_the_prefix(s3, bucket):
    store = S3Store(bucket, prefix="pre/fix")
    store.put("7/manifests/m1", DOCUMENT)
    store.delete("7/manifests/m1")
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_file_store_delete_of_what_it_cannot_remove_is_a_storage_error(tmp_path):
    store = FileStore(tmp_path)
    (tmp_path / "7" / "manifests" / "m1").mkdir(parents=True)  # a directory, not a document
    with pytest.raises(StorageError, match="cannot delete 7/manifests/m1"):
        store.delete("7/manifests/m1")


def test_empty_document_round_trips(store):
    etag = store.put("7/manifests/empty", b"")

    assert store.get("7/manifests/empty") == StoredDocument(b"", etag)


def test_delete_removes_a_document_and_an_absent_one_is_no_error(store):
    store.put("7/manifests/m1.v1.json", DOCUMENT)
    store.put("7/manifests/m1.v2.json", DOCUMENT)

    store.delete("7/manifests/m1.v1.json")
    store.delete("7/manifests/m1.v1.json")

    assert store.get("7/manifests/m1.v1.json") is None
    assert store.get("7/manifests/m1.v2.json") == StoredDocument(DOCUMENT, etag_for(DOCUMENT))


def test_check_passes_on_a_usable_store(store):
    store.check()


@pytest.mark.parametrize("key", [
    "", "/etc/passwd", "../escape", "7/../../escape", "7/manifests/..", "./7/m",
    "7//m", "7/manifests/", "7\\..\\m", "7/m\0", "..",
])
def test_keys_that_could_escape_are_rejected(store, tmp_path, key):
    before = sorted(tmp_path.rglob("*"))

    with pytest.raises(ValueError, match="storage key"):
        store.put(key, DOCUMENT)
    with pytest.raises(ValueError, match="storage key"):
        store.get(key)
    with pytest.raises(ValueError, match="storage key"):
        store.delete(key)
    assert sorted(tmp_path.rglob("*")) == before


# -- ETag -----------------------------------------------------------------------

def test_etag_is_a_quoted_truncated_sha256():
    # Known answer: SHA-256 of the empty string.
    assert etag_for(b"") == '"e3b0c44298fc1c149afbf4c8996fb924"'
    assert etag_for(DOCUMENT) != etag_for(DOCUMENT + b" ")


def test_file_and_s3_stores_give_the_same_etag_for_the_same_bytes(tmp_path, bucket):
    file_store, s3_store = FileStore(tmp_path), S3Store(bucket)

    assert file_store.put("7/manifests/m1", DOCUMENT) == s3_store.put("7/manifests/m1", DOCUMENT)
    assert file_store.get("7/manifests/m1").etag == s3_store.get("7/manifests/m1").etag


# -- key layout ---------------------------------------------------------------

@pytest.mark.parametrize(("customer", "manifest_id", "key"), [
    (7, "m1", "7/manifests/m1"),
    (12345, "A-b_9", "12345/manifests/A-b_9"),
])
def test_manifest_key(customer, manifest_id, key):
    assert manifest_key(customer, manifest_id) == key


@pytest.mark.parametrize(("customer", "manifest_id"), [
    (0, "m1"), (-1, "m1"), (True, "m1"), ("7", "m1"), (7, "a/b"), (7, ".."), (7, ""),
])
def test_manifest_key_rejects_what_is_not_a_customer_and_id(customer, manifest_id):
    with pytest.raises(ValueError):
        manifest_key(customer, manifest_id)


def test_version_keys_sit_beside_the_manifest_key():
    assert version_key(7, "m1", "0f3a9c") == "7/manifests/m1.0f3a9c.json"
    # Beside, not below: a folder may hold a document at 7/manifests/m1 already.
    assert not version_key(7, "m1", "ab12").startswith(manifest_key(7, "m1") + "/")


@pytest.mark.parametrize("version", ["", "a/b", "a.b", "../x", "v 1"])
def test_version_keys_take_letters_and_digits_only(version):
    with pytest.raises(ValueError):
        version_key(7, "m1", version)


def test_the_published_key_is_the_recorded_one_or_the_manifest_key_before_versions():
    assert published_key(7, "m1", "7/manifests/m1.ab12.json") == "7/manifests/m1.ab12.json"
    assert published_key(7, "m1", None) == "7/manifests/m1"


@pytest.fixture
def failing_s3():
    """An S3 endpoint on loopback that answers every request 500 (which S3 clients retry)."""
    puts = []

    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            puts.append(self.path)
            body = (b"<?xml version=\"1.0\"?><Error><Code>InternalError</Code>"
                    b"<Message>try again</Message></Error>")
            self.send_response(500)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", puts
    server.shutdown()
    server.server_close()


def test_an_s3_retry_that_the_deadline_could_cut_short_does_not_start(aws_env, monkeypatch,
                                                                       failing_s3):
    url, puts = failing_s3
    monkeypatch.setenv("AWS_ENDPOINT_URL", url)
    store = open_store(parse_storage_url("s3://some-bucket"))

    # A retry needs 7 s of timeouts (2 s to connect, 5 s to read): 3 s leave none.
    with pytest.raises(StorageError, match="no time was left for a retry within 3 s"):
        store.put("7/manifests/m1.v1.json", DOCUMENT, deadline=Deadline.after(3))
    assert len(puts) == 1

    # Without a deadline the same store retries (3 attempts in all).
    with pytest.raises(StorageError, match="InternalError"):
        store.put("7/manifests/m1.v1.json", DOCUMENT)
    assert len(puts) == 1 + 3


def test_file_store_keeps_a_document_at_its_key_path(tmp_path):
    FileStore(tmp_path / "docs").put(manifest_key(7, "m1"), DOCUMENT)

    assert (tmp_path / "docs" / "7" / "manifests" / "m1").read_bytes() == DOCUMENT


def test_s3_store_keeps_a_document_under_the_prefix(s3, bucket):
    S3Store(bucket, prefix="/a/b/").put(manifest_key(7, "m1"), DOCUMENT)

    listing = s3.list_objects_v2(Bucket=bucket)
    assert [obj["Key"] for obj in listing["Contents"]] == ["a/b/7/manifests/m1"]


def test_s3_store_without_prefix_uses_the_bare_key(s3, bucket):
    S3Store(bucket).put(manifest_key(7, "m1"), DOCUMENT)

    assert s3.get_object(Bucket=bucket, Key="7/manifests/m1")["Body"].read() == DOCUMENT


# -- S3 specifics ---------------------------------------------------------------

def test_s3_object_has_the_json_ld_content_type(s3, bucket):
    S3Store(bucket, "p").put("7/manifests/m1", DOCUMENT)

    head = s3.head_object(Bucket=bucket, Key="p/7/manifests/m1")
    assert head["ContentType"] == "application/ld+json"
    assert head["ContentLength"] == len(DOCUMENT)


def test_s3_object_keeps_a_given_content_type(s3, bucket):
    S3Store(bucket).put("7/manifests/m1", DOCUMENT, content_type=IIIF_MEDIA_TYPE)

    assert s3.head_object(Bucket=bucket, Key="7/manifests/m1")["ContentType"] == IIIF_MEDIA_TYPE


def test_open_store_uses_aws_endpoint_url_from_the_environment(s3, bucket):
    store = open_store(parse_storage_url(f"s3://{bucket}/a/b"))
    store.put("7/manifests/m1", DOCUMENT)

    assert s3.get_object(Bucket=bucket, Key="a/b/7/manifests/m1")["Body"].read() == DOCUMENT
    assert store.get("7/manifests/m1").body == DOCUMENT


@pytest.mark.parametrize("operation", ["put", "get", "delete", "check"])
def test_missing_bucket_is_a_storage_error(aws_env, operation):
    store = S3Store(f"missing-{uuid.uuid4().hex[:16]}", prefix="p")

    with pytest.raises(StorageError, match="s3://missing-") as caught:
        _call(store, operation)
    assert isinstance(caught.value.__cause__, ClientError)
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize("operation", ["put", "get", "delete", "check"])
def test_refused_endpoint_is_a_quick_storage_error(aws_env, monkeypatch, closed_port, operation):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port}")
    client = build_s3_client(connect_timeout=0.5, read_timeout=0.5, total_attempts=1)
    store = S3Store("some-bucket", client=client)

    started = time.monotonic()
    with pytest.raises(StorageError, match=f"127.0.0.1:{closed_port}") as caught:
        _call(store, operation)
    assert time.monotonic() - started < 2
    assert isinstance(caught.value.__cause__, BotoCoreError)
    assert SECRET not in str(caught.value)


def test_default_client_gives_up_on_a_refused_endpoint_within_seconds(aws_env, monkeypatch, closed_port):
    # Three attempts with jittered backoff sleep at most ~3 s in all.
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port}")
    store = open_store(parse_storage_url("s3://some-bucket"))

    started = time.monotonic()
    with pytest.raises(StorageError):
        store.check()
    assert time.monotonic() - started < 10


def test_silent_endpoint_is_a_storage_error_after_the_read_timeout(aws_env, monkeypatch):
    # The kernel completes the handshake of a listening socket nobody accepts
    # from, so the request is sent and no answer ever comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{silent.getsockname()[1]}")
        store = S3Store("some-bucket", client=build_s3_client(read_timeout=0.3, total_attempts=1))

        started = time.monotonic()
        with pytest.raises(StorageError, match="[Tt]imeout|timed out"):
            store.get("7/manifests/m1")
        assert time.monotonic() - started < 3


# -- FileStore specifics ------------------------------------------------------

def test_file_store_leaves_only_documents_behind(tmp_path):
    store = FileStore(tmp_path)
    for manifest_id in ("a", "b", "a"):
        store.put(manifest_key(7, manifest_id), DOCUMENT)

    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert files == ["7/manifests/a", "7/manifests/b"]


def test_failed_write_keeps_the_old_document_and_no_temporary_file(tmp_path, monkeypatch):
    store = FileStore(tmp_path)
    etag = store.put("7/manifests/m1", DOCUMENT)

    def failing_fsync(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(StorageError, match="Input/output error") as caught:
        store.put("7/manifests/m1", b"new")
    monkeypatch.undo()

    assert isinstance(caught.value.__cause__, OSError)
    assert store.get("7/manifests/m1") == StoredDocument(DOCUMENT, etag)
    assert sorted(p.name for p in (tmp_path / "7" / "manifests").iterdir()) == ["m1"]


def test_readers_never_see_a_partly_written_document(tmp_path):
    store = FileStore(tmp_path)
    versions = (b"a" * 512 * 1024, b"b" * 768 * 1024)
    store.put("7/manifests/m1", versions[0])
    stop = threading.Event()

    def write_alternately():
        i = 0
        while not stop.is_set():
            i += 1
            store.put("7/manifests/m1", versions[i % 2])

    writer = threading.Thread(target=write_alternately)
    writer.start()
    try:
        seen = set()
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            seen.add(store.get("7/manifests/m1").body)
    finally:
        stop.set()
        writer.join()
    assert seen <= set(versions)


def test_file_store_documents_are_readable_by_others(tmp_path):
    FileStore(tmp_path).put("7/manifests/m1", DOCUMENT)

    assert stat.S_IMODE((tmp_path / "7" / "manifests" / "m1").stat().st_mode) == 0o644


def test_file_store_creates_its_directory_on_first_use_not_before(tmp_path):
    store = FileStore(tmp_path / "a" / "b")
    assert not (tmp_path / "a").exists()

    store.check()

    assert (tmp_path / "a" / "b").is_dir()


@pytest.mark.parametrize("directory", ["taken", "taken/below"])
def test_file_store_on_a_file_is_a_storage_error(tmp_path, directory):
    # Running as root defeats permission bits, so a regular file in the way
    # stands in for a directory that cannot be used.
    (tmp_path / "taken").write_bytes(b"not a directory")
    store = FileStore(tmp_path / directory)

    with pytest.raises(StorageError, match="not a writable directory"):
        store.check()
    with pytest.raises(StorageError, match="cannot write"):
        store.put("7/manifests/m1", DOCUMENT)
    assert store.get("7/manifests/m1") is None


def test_file_store_get_of_a_document_it_cannot_read_is_a_storage_error(tmp_path):
    store = FileStore(tmp_path)
    (tmp_path / "7" / "manifests").mkdir(parents=True)
    (tmp_path / "7" / "manifests" / "loop").symlink_to("loop")  # ELOOP on open

    with pytest.raises(StorageError, match="cannot read 7/manifests/loop"):
        store.get("7/manifests/loop")


# -- open_store -------------------------------------------------------------------

@pytest.mark.parametrize(("url", "kind", "description"), [
    ("file://var/manifests", FileStore, "file://{cwd}/var/manifests"),
    ("file://./var/../manifests", FileStore, "file://{cwd}/manifests"),
    ("file:///srv/manifests", FileStore, "file:///srv/manifests"),
    ("file:///srv/manifests/", FileStore, "file:///srv/manifests"),
    ("FILE:///srv/manifests", FileStore, "file:///srv/manifests"),
    ("s3://bucket-1", S3Store, "s3://bucket-1"),
    ("s3://bucket-1/", S3Store, "s3://bucket-1"),
    ("s3://bucket-1/a/b", S3Store, "s3://bucket-1/a/b"),
    ("s3://my.bucket.1/a/b/", S3Store, "s3://my.bucket.1/a/b"),
    (" s3://bucket-1/a\n", S3Store, "s3://bucket-1/a"),
])
def test_open_store_accepts(monkeypatch, tmp_path, url, kind, description):
    monkeypatch.chdir(tmp_path)

    store = open_store(parse_storage_url(url))

    assert type(store) is kind
    assert store.describe() == description.format(cwd=tmp_path)


@pytest.mark.parametrize(("url", "message"), [
    ("", "expected file://DIR or s3://"),
    ("var/manifests", "expected file://DIR or s3://"),
    ("/srv/manifests", "expected file://DIR or s3://"),
    ("file:var/manifests", "expected file://DIR or s3://"),
    ("http://example.org/manifests", "unsupported scheme 'http'"),
    ("gs://bucket/manifests", "unsupported scheme 'gs'"),
    ("file://", "file:// needs a directory"),
    ("s3://", "needs a bucket name"),
    ("s3:///manifests", "needs a bucket name"),
    ("s3://Bucket", "invalid S3 bucket name"),
    ("s3://ab", "invalid S3 bucket name"),
    ("s3://bucket_1", "invalid S3 bucket name"),
    ("s3://-bucket", "invalid S3 bucket name"),
    ("s3://my..bucket", "invalid S3 bucket name"),
    ("s3://bucket:9000/p", "must not carry credentials or a port"),
    ("s3://bucket/a//b", "invalid S3 prefix"),
    ("s3://bucket/a/../b", "invalid S3 prefix"),
    ("s3://bucket?region=eu-west-1", "takes no query"),
])
def test_open_store_rejects(url, message):
    with pytest.raises(ValueError, match=message):
        parse_storage_url(url)


@pytest.mark.parametrize("url", [
    f"s3://AKIAEXAMPLE:{SECRET}@bucket/p",
    f"https://user:{SECRET}@storage.example.org/p",
    f"user:{SECRET}@storage.example.org",
])
def test_open_store_never_repeats_what_may_be_a_credential(url):
    with pytest.raises(ValueError) as caught:
        parse_storage_url(url)
    assert SECRET not in str(caught.value)


def test_open_store_does_no_io(tmp_path, monkeypatch):
    # No credentials, no endpoint and no directory: opening still succeeds,
    # failures belong to check() and the first put/get.
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)

    open_store(parse_storage_url("s3://bucket-1/a"))
    open_store(parse_storage_url(f"file://{tmp_path}/not/yet"))

    assert not (tmp_path / "not").exists()


def _call(store, operation: str):
    if operation == "put":
        return store.put("7/manifests/m1", DOCUMENT)
    if operation == "get":
        return store.get("7/manifests/m1")
    if operation == "delete":
        return store.delete("7/manifests/m1")
    return store.check()
