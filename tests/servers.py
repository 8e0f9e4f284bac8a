"""Real servers on loopback ports for tests: moto's S3 and helpers to run others.

Import the fixture into a conftest (``from tests.servers import moto_server``)
or load this module as a plugin (``pytest_plugins = ["tests.servers"]``).
Nothing here touches the environment: tests pass ``moto_server.url`` as
``endpoint_url`` or set ``AWS_ENDPOINT_URL`` themselves with ``monkeypatch``.

moto runs in a subprocess rather than a thread of the test process, so that
its state, its warnings and its werkzeug request log stay out of the tests
(``filterwarnings = error`` would otherwise turn a moto deprecation warning
into a 500 answered by the server thread), and so that the same helper can
serve a gunicorn-run app in end-to-end tests.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit
from dataclasses import dataclass, field
from pathlib import Path

import pytest

LOOPBACK = "127.0.0.1"
# Credentials moto accepts; tests pass them explicitly instead of touching the environment.
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
       "AWS_DEFAULT_REGION": "us-east-1"}


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port on ``host`` that nothing listens on right now."""
    # The port is free when we close the socket; another process could take
    # it before the caller binds it, so start_moto_server retries on a clash.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float = 10.0, *,
                  process: subprocess.Popen | None = None) -> None:
    """Block until ``host:port`` accepts TCP connections; raise TimeoutError after ``timeout`` seconds.

    With ``process``, raise RuntimeError as soon as that process exits, instead of
    waiting out the timeout for a server that has already died.
    """
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"{process.args!r} exited with status {process.returncode} "
                f"before listening on {host}:{port}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s") from None
            time.sleep(0.05)


@dataclass
class LoopbackProcess:
    """A server subprocess on a loopback port, logging to a file of its own."""

    host: str
    port: int
    process: subprocess.Popen
    log_path: Path
    _log_dir: tempfile.TemporaryDirectory = field(repr=False)

    @property
    def url(self) -> str:
        """The server's base URL."""
        return f"http://{self.host}:{self.port}"

    def log(self) -> str:
        """Return what the server wrote so far (its request log and tracebacks)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 15.0) -> int | None:
        """Stop gracefully (SIGTERM), kill after ``timeout`` s; return the exit status."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def cleanup(self) -> None:
        """Stop the server and remove its log; safe to call twice."""
        self.stop()
        self._log_dir.cleanup()


@dataclass
class MotoServer(LoopbackProcess):
    """A running ``python -m moto.server``; its ``url`` is the endpoint to give boto3."""

    def stop(self, timeout: float = 5.0) -> int | None:
        """Stop the server and remove its log; safe to call twice."""
        status = super().stop(timeout)
        self._log_dir.cleanup()
        return status


def start_moto_server(*, timeout: float = 30.0, attempts: int = 3) -> MotoServer:
    """Start moto's S3-capable server on a free 127.0.0.1 port and wait until it listens."""
    failures = []
    for _ in range(attempts):
        port = free_port()
        log_dir = tempfile.TemporaryDirectory(prefix="moto-")
        log_path = Path(log_dir.name) / "moto.log"
        # The log goes to a file, never to a pipe: nobody reads a pipe while
        # tests run, and a full pipe would block the server mid-request.
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(port)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        server = MotoServer(LOOPBACK, port, process, log_path, log_dir)
        try:
            wait_for_port(LOOPBACK, port, timeout, process=process)
        except (RuntimeError, TimeoutError) as exc:
            # Most likely someone took the port between free_port() and bind.
            failures.append(f"{exc}\n{server.log()[-2000:]}")
            server.stop()
            continue
        return server
    raise RuntimeError("moto server did not start:\n" + "\n".join(failures))


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """Yield a moto server shared by the session; create a uniquely named bucket per test."""
    server = start_moto_server()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class GunicornServer(LoopbackProcess):
    """A running ``gunicorn -c gunicorn.conf.py wsgi:app`` on a loopback port."""


def _answers_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start_gunicorn(env: dict[str, str], *, cwd: Path | str, workers: int = 2, threads: int = 4,
                   app: str = "wsgi:app", config: str = "gunicorn.conf.py",
                   ready_path: str = "/readyz", timeout: float = 30.0, attempts: int = 3,
                   args: tuple[str, ...] = ("--no-control-socket",)) -> GunicornServer:
    """Start gunicorn from ``cwd`` on a free 127.0.0.1 port; return once ``ready_path`` is 200.

    ``env`` is the whole environment of the server (pass ``os.environ`` entries
    through yourself); GUNICORN_BIND, GUNICORN_WORKERS and GUNICORN_THREADS are
    set here. ``sys.executable -m gunicorn`` keeps the server in this virtualenv.
    ``args`` go on the command line; by default no control socket, since every
    server would otherwise share the one in the user's home directory.
    """
    failures = []
    for _ in range(attempts):
        port = free_port()
        log_dir = tempfile.TemporaryDirectory(prefix="gunicorn-")
        log_path = Path(log_dir.name) / "gunicorn.log"
        environment = {**env, "GUNICORN_BIND": f"{LOOPBACK}:{port}",
                       "GUNICORN_WORKERS": str(workers), "GUNICORN_THREADS": str(threads)}
        # A file, not a pipe: nobody reads a pipe while the tests run.
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", config, *args, app], cwd=str(cwd),
                env=environment, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        server = GunicornServer(LOOPBACK, port, process, log_path, log_dir)
        deadline = time.monotonic() + timeout
        try:
            wait_for_port(LOOPBACK, port, timeout, process=process)
            # The master listens before its workers have imported the app; and a
            # worker that is still booting loses a SIGTERM (gunicorn.conf.py's
            # post_worker_init), so a test stopping the server at once would wait
            # out the graceful timeout: return once every worker is ready.
            while not (_answers_ok(server.url + ready_path)
                       and server.log().count("Worker ready") >= workers):
                if process.poll() is not None:
                    raise RuntimeError(f"gunicorn exited with status {process.returncode}")
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"{ready_path} did not answer 200 within {timeout} s, "
                                       f"or not every worker was ready")
                time.sleep(0.1)
        except (RuntimeError, TimeoutError) as exc:
            failures.append(f"{exc}\n{server.log()[-3000:]}")
            server.cleanup()
            if "Address already in use" not in failures[-1]:
                break  # not a port clash: trying again would fail the same way
            continue
        return server
    raise RuntimeError("gunicorn did not start:\n" + "\n".join(failures))


@contextlib.contextmanager
def scratch_postgres(server_url: str, prefix: str) -> Iterator[str]:
    """Create an empty database ``{prefix}_{random}`` on a PostgreSQL server; yield its URL.

    The database is dropped afterwards, connections still open to it included.
    Raises psycopg2's error when the server cannot be reached.
    """
    import psycopg2

    admin = psycopg2.connect(server_url, connect_timeout=5)
    admin.autocommit = True
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        try:
            yield urlunsplit(urlsplit(server_url)._replace(path="/" + name))
        finally:
            with admin.cursor() as cursor:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()
