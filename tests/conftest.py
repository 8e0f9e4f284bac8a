"""Fixtures: settings, app, client, a database per backend, a signer, servers.

The backend is chosen by ``WEBHOOK_TEST_DATABASE`` (``sqlite``, the default,
or ``postgresql``). PostgreSQL tests get a database of their own, created for
the session on the server at ``WEBHOOK_TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``) and dropped afterwards, so runs
never see each other's rows.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from tests.fake_dlcs import FakeDlcs
from tests.servers import AWS, moto_server, scratch_postgres  # noqa: F401 - a fixture
from webhook import create_app, db
from webhook.config import Settings
from webhook.secret import parse_secret
from webhook.signature import sign

SAMPLES = Path(__file__).parent / "samples"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ADMIN_TOKEN = "admin-token-0123456789abcdef"
ORCHESTRATOR = "https://dlcs.test"
BACKEND = os.environ.get("WEBHOOK_TEST_DATABASE", "")
POSTGRES_SERVER = os.environ.get("WEBHOOK_TEST_POSTGRES_URL",
                                 "postgresql://postgres@127.0.0.1:5432/test")
TABLES = ("delivery", "canvas_painting", "batch", "manifest")


@pytest.fixture(scope="session")
def postgres_database():
    """Create a fresh PostgreSQL database for this session, or None when unreachable."""
    if BACKEND == "sqlite":
        yield None
        return
    database = contextlib.ExitStack()
    try:
        url = database.enter_context(scratch_postgres(POSTGRES_SERVER, "webhook_test"))
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        if BACKEND == "postgresql":
            pytest.fail(f"WEBHOOK_TEST_DATABASE=postgresql but {POSTGRES_SERVER} is "
                        f"unreachable: {exc}")
        yield None
        return
    with database:
        try:
            yield url
        finally:
            db.dispose()


@pytest.fixture
def postgres_url(postgres_database):
    """A clean PostgreSQL database URL; skips when no server is reachable."""
    if postgres_database is None:
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES_SERVER} (or "
                    "WEBHOOK_TEST_DATABASE=sqlite); CI runs these with WEBHOOK_TEST_DATABASE=postgresql")
    _truncate(postgres_database)
    return postgres_database


@pytest.fixture
def empty_postgres_url(postgres_database):
    """A PostgreSQL database of this test's own, with no tables at all."""
    if postgres_database is None:
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES_SERVER} (or "
                    "WEBHOOK_TEST_DATABASE=sqlite)")
    with scratch_postgres(POSTGRES_SERVER, "webhook_empty") as url:
        yield url


def _truncate(url: str) -> None:
    import psycopg2

    with psycopg2.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('manifest')")
        if cursor.fetchone()[0] is not None:
            cursor.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
    connection.close()


@pytest.fixture
def database_url(request, tmp_path):
    """The database the test runs against: SQLite by default, PostgreSQL when selected."""
    if BACKEND == "postgresql":
        return request.getfixturevalue("postgres_url")
    return f"sqlite:///{tmp_path}/webhook.db"


@pytest.fixture
def settings(database_url, tmp_path) -> Settings:
    return Settings.from_env({
        "DATABASE_URL": database_url,
        "STORAGE_URL": f"file://{tmp_path}/manifests",
        "PUBLIC_BASE_URL": "https://presentation.example",
        "WEBHOOK_SECRETS": SECRET,
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "DLCS_ORCHESTRATOR_URL": ORCHESTRATOR,
        "DLCS_TIMEOUT_SECONDS": "5",
    })


@pytest.fixture
def app(settings):
    application = create_app(settings)
    yield application
    db.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def admin():
    """Headers that authorise an admin request."""
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def signed_headers(body: bytes, msg_id: str | None = None, timestamp: int | None = None,
                   secret: str = SECRET) -> dict:
    """Return the three webhook headers for ``body``, signed with ``secret``."""
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    timestamp = int(time.time()) if timestamp is None else timestamp
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(parse_secret(secret), msg_id, timestamp, body)}


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


@pytest.fixture
def statements():
    """The SQL of every statement the app runs from here on (peewee's query hooks; the bound database), in order."""
    ran = []

    def record(event):
        ran.append(event.sql)

    db.database.obj.query_hooks.append(record)
    yield ran
    db.database.obj.query_hooks.remove(record)


@pytest.fixture
def fake_dlcs() -> Iterator[FakeDlcs]:
    """A fake DLCS on a loopback port; fails the test if one of its handlers crashed."""
    with FakeDlcs() as fake:
        yield fake
    assert not fake.errors, f"the fake DLCS failed: {fake.errors!r}"


@pytest.fixture
def bucket(moto_server):
    """A new, empty bucket in the session's moto server, and a client to read it."""
    client = boto3.session.Session().client("s3", endpoint_url=moto_server.url,
                                            region_name=AWS["AWS_DEFAULT_REGION"],
                                            aws_access_key_id=AWS["AWS_ACCESS_KEY_ID"],
                                            aws_secret_access_key=AWS["AWS_SECRET_ACCESS_KEY"])
    name = f"manifests-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    yield name, client
    client.close()
