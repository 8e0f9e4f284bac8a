"""The stand-in DLCS over HTTP: named query, queue, batches, and signed completions sent back.

:class:`DevDlcs` serves, from a daemon thread, the DLCS calls the service
makes:

- the Orchestrator's named query, ``GET /iiif-resource/v3/{customer}/{query}/{ids}``:
  a manifest of the canvases of the assets in those batches, in a shuffled
  order (the DLCS promises none); with the ``manifest-query`` name, of the
  assets tagged with that manifest id;
- the API's queue, ``POST /customers/{c}/queue``: a Hydra Collection of assets
  becomes a new batch (``201`` with the Batch resource);
- a batch, ``GET /customers/{c}/queue/batches/{id}``: finished once its
  ingest time has passed;
- the API's assets (``webhook.devdlcs.assets``): which exist (``POST
  /customers/{c}/allImages``), tagging them with a manifest id (``PATCH``), and
  a batch's assets with their errors (``GET .../batches/{id}/assets``).

With ``ingest_seconds`` every queued batch finishes that long after it was
queued, and with a :class:`CompletionSender` it is then announced to the
service as the DLCS would: a signed "batch completed" webhook, tried again a
few times while the service is unreachable or answers 5xx. Subclasses (the
tests' ``FakeDlcs``) record calls and inject faults through :meth:`DevDlcs.before`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import requests

from webhook.devdlcs.assets import AssetStore
from webhook.devdlcs.documents import (PUBLIC_HOST, Asset, batch_document, named_query_canvas,
                                       named_query_manifest, signed_completion)
from webhook.domain import ascii_digits

log = logging.getLogger("webhook.devdlcs")

NAMED_QUERY = "named-query"
QUEUE = "queue"
BATCH = "batch"
FIND_ASSETS = "find-assets"
PATCH_ASSETS = "patch-assets"
BATCH_ASSETS = "batch-assets"
ENDPOINTS = (NAMED_QUERY, QUEUE, BATCH, FIND_ASSETS, PATCH_ASSETS, BATCH_ASSETS)

ROUTES = {
    ("GET", NAMED_QUERY): re.compile(r"^/iiif-resource/v3/([^/]+)/([^/]+)/([^/]+)$"),
    ("POST", QUEUE): re.compile(r"^/customers/([^/]+)/queue$"),
    ("GET", BATCH): re.compile(r"^/customers/([^/]+)/queue/batches/([^/]+)$"),
    ("POST", FIND_ASSETS): re.compile(r"^/customers/([0-9]+)/allImages$"),
    ("PATCH", PATCH_ASSETS): re.compile(r"^/customers/([0-9]+)/allImages$"),
    ("GET", BATCH_ASSETS): re.compile(r"^/customers/([0-9]+)/queue/batches/([0-9]+)/assets$"),
}


@dataclass
class Call:
    """One request the stand-in received, and the status it answered."""

    endpoint: str
    method: str
    path: str
    query: dict[str, list[str]]
    authorization: str | None
    status: int = 0
    body: object = None   # the parsed JSON body of a POST or PATCH, when it is JSON


@dataclass
class _Batch:
    customer: int
    batch_id: int
    assets: list[Asset]
    canvases: list[bytes]            # pre-rendered named-query canvases, in asset order
    submitted: dt.datetime
    errors: int = 0
    finished: dt.datetime | None = None
    finish_at: float | None = None   # time.monotonic() when it reports itself finished
    superseded: bool = False         # it will never finish: its assets went elsewhere


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def parse_ids(raw: str) -> frozenset[int] | None:
    """Parse a named query's ``1234,1235`` batch ids; None when they are not all numbers."""
    parts = raw.split(",")
    if not all(ascii_digits(part) for part in parts):
        return None
    return frozenset(int(part) for part in parts)


def _json_or_none(raw: bytes) -> object:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def description(text: str) -> bytes:
    """A DLCS error body: ``{"description": text}``."""
    return json.dumps({"description": text}).encode()


class CompletionSender:
    """Post signed "batch completed" webhooks to the service, as the DLCS does."""

    def __init__(self, url: str, key: bytes, *, attempts: int = 5, timeout: float = 60.0):
        self.url = url
        self._key = key
        self._attempts = attempts
        self._timeout = timeout
        self._session = requests.Session()

    def send(self, batch: _Batch) -> int | None:
        """Deliver one completion; return the service's last status (None: unreachable)."""
        count = len(batch.assets)
        headers, body = signed_completion(
            self._key, batch=batch.batch_id, customer=batch.customer, count=count,
            completed=count - batch.errors, errors=batch.errors, submitted=batch.submitted,
            finished=batch.finished or _now())
        status = None
        for attempt in range(self._attempts):
            try:
                response = self._session.post(self.url, data=body, headers=headers,
                                              timeout=self._timeout, allow_redirects=False)
                status = response.status_code
            except requests.RequestException as exc:
                log.warning("completion of batch %s not delivered: %s", batch.batch_id,
                            type(exc).__name__)
            else:
                log.info("completion of batch %s answered %s", batch.batch_id, status)
                if status < 500:
                    return status
            time.sleep(min(2 ** attempt, 10))
        return status


class DevDlcs:
    """A stand-in DLCS Orchestrator and API; use as a context manager or start()/stop()."""

    def __init__(self, *, named_query: str = "batch-query",
                 manifest_query: str = "manifest-query", host: str = "127.0.0.1",
                 port: int = 0, seed: int = 0, first_batch_id: int = 90_000,
                 ingest_seconds: float | None = None, sender: CompletionSender | None = None):
        self.named_query = named_query
        self.manifest_query = manifest_query
        #: The API's record of every asset: existence, manifests, errors.
        self.assets = AssetStore(PUBLIC_HOST)
        self.errors: list[BaseException] = []
        self._address = (host, port)
        self._ingest_seconds = ingest_seconds
        self._sender = sender
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._batches: dict[tuple[int, int], _Batch] = {}
        self._canvas_numbers: Counter = Counter()
        self._next_batch_id = first_batch_id
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """The root to configure as DLCS_ORCHESTRATOR_URL and DLCS_API_URL."""
        if self._server is None:
            raise RuntimeError("the stand-in DLCS is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "DevDlcs":
        """Listen on the address given (port 0: a free one) and serve from a daemon thread."""
        handler = type("Handler", (_Handler,), {"dlcs": self})
        self._server = _Server(self._address, handler, self)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name="dev-dlcs", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket; safe to call twice."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=10)
            self._server = None

    def __enter__(self) -> "DevDlcs":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # ------------------------------------------------------------ batches

    def add_batch(self, customer: int, batch_id: int,
                  assets: Iterable[Asset | tuple[int, str]]) -> list[Asset]:
        """Register a batch's assets; named queries over the batch answer their canvases."""
        assets = [a if isinstance(a, Asset) else Asset(*a) for a in assets]
        with self._lock:
            canvases = []
            for asset in assets:
                self._canvas_numbers[customer] += 1
                canvas = named_query_canvas(customer, asset, self._canvas_numbers[customer])
                canvases.append(json.dumps(canvas, separators=(",", ":")).encode())
            self._batches[(customer, batch_id)] = _Batch(customer, batch_id, assets, canvases,
                                                         _now())
        self.assets.add(customer, assets, canvases, batch_id)
        return assets

    def add_assets(self, customer: int, assets: Iterable[Asset | tuple[int, str]]) -> list[Asset]:
        """Hold assets ingested before, in no batch of the stand-in's: they exist, untagged."""
        assets = [a if isinstance(a, Asset) else Asset(*a) for a in assets]
        with self._lock:
            canvases = []
            for asset in assets:
                self._canvas_numbers[customer] += 1
                canvas = named_query_canvas(customer, asset, self._canvas_numbers[customer])
                canvases.append(json.dumps(canvas, separators=(",", ":")).encode())
        self.assets.add(customer, assets, canvases)
        return assets

    def finish_batch(self, customer: int, batch_id: int, *, errors: int = 0,
                     after: float = 0.0, failed: dict[str, str] | None = None) -> None:
        """Make a batch report itself finished, now or ``after`` seconds from now.

        ``failed`` maps asset ids (``"{c}/{s}/{id}"``) to their error text: they
        count as errors, show the text among the batch's assets and leave the
        named queries. With a sender, the completion is then posted to the service.
        """
        if failed:
            self.assets.fail(failed)
        with self._lock:
            batch = self._batches[(customer, batch_id)]
            batch.errors = max(errors, len(failed or ()))
            batch.finish_at = time.monotonic() + after
        if self._sender is not None:
            timer = threading.Timer(after, self._announce, (customer, batch_id))
            timer.daemon = True
            timer.start()

    def supersede_batch(self, customer: int, batch_id: int) -> None:
        """Make a batch report itself superseded, as the DLCS does when its assets are
        queued again in another batch: it stays unfinished, and no completion is sent."""
        with self._lock:
            self._batches[(customer, batch_id)].superseded = True

    def _announce(self, customer: int, batch_id: int) -> None:
        with self._lock:
            batch = self._settled(customer, batch_id)
        self._sender.send(batch)

    def _settled(self, customer: int, batch_id: int) -> _Batch | None:
        """The batch, marked finished once its time has come (the lock is held)."""
        batch = self._batches.get((customer, batch_id))
        if (batch is not None and batch.finish_at is not None and batch.finished is None
                and time.monotonic() >= batch.finish_at):
            batch.finished = _now()
        return batch

    # ------------------------------------------------------------ answers

    def before(self, call: Call) -> tuple[int, bytes, dict[str, str]] | None:
        """Answer a call before the DLCS logic does (None: let it); for subclasses."""
        return None

    def answer_named_query(self, customer: str, name: str, ids: str) -> tuple[int, bytes]:
        if name == self.manifest_query and ascii_digits(customer):
            return self.manifest_query_document(int(customer), ids)
        parsed = parse_ids(ids)
        if not ascii_digits(customer) or parsed is None:
            return 400, description(f"cannot parse {ids!r}")
        if name != self.named_query:
            return 404, b""
        return self.named_query_document(int(customer), parsed)

    def named_query_document(self, customer: int, ids: frozenset[int]) -> tuple[int, bytes]:
        """The named query's answer over exactly these batches of ``customer``."""
        failed = self.assets.failed()
        with self._lock:
            canvases = [canvas for batch_id in sorted(ids)
                        if (batch := self._batches.get((customer, batch_id)))
                        for asset, canvas in zip(batch.assets, batch.canvases)
                        if not failed or asset.asset_id(customer) not in failed]
            self._random.shuffle(canvases)
        if not canvases:
            return 404, b""
        return 200, named_query_manifest(customer, self.named_query,
                                         ",".join(map(str, sorted(ids))), canvases)

    def manifest_query_document(self, customer: int, manifest_id: str) -> tuple[int, bytes]:
        """The ``manifest-query`` answer: the assets tagged with ``manifest_id``, not failed."""
        canvases = self.assets.tagged(customer, manifest_id)
        with self._lock:
            self._random.shuffle(canvases)
        if not canvases:
            return 404, b""
        return 200, named_query_manifest(customer, self.manifest_query, manifest_id, canvases)

    def answer_queue(self, customer: str, raw: bytes) -> tuple[int, bytes]:
        if not ascii_digits(customer):
            return 404, b""
        try:
            document = json.loads(raw)
        except ValueError:
            return 400, description("the body is not JSON")
        members = document.get("member") if isinstance(document, dict) else None
        if not isinstance(members, list) or not members:
            return 400, description("the body is not a Hydra Collection of assets")
        assets = []
        for member in members:
            if (not isinstance(member, dict) or not isinstance(member.get("id"), str)
                    or not isinstance(member.get("space"), int)):
                return 400, description("every member needs a string id and an int space")
            assets.append(Asset(member["space"], member["id"]))
        with self._lock:
            batch_id = self._next_batch_id
            self._next_batch_id += 1
        self.add_batch(int(customer), batch_id, assets)
        if self._ingest_seconds is not None:
            self.finish_batch(int(customer), batch_id, after=self._ingest_seconds)
        log.info("queued batch %s: %s assets of customer %s", batch_id, len(assets), customer)
        return 201, self.answer_batch(customer, str(batch_id))[1]

    def answer_assets(self, endpoint: str, customer: str, document: object,
                      batch_id: str | None = None,
                      query: dict[str, list[str]] | None = None) -> tuple[int, bytes]:
        """Answer the asset calls: which exist, (un)tagging, a batch's assets."""
        if endpoint == BATCH_ASSETS:
            return self.assets.batch_page(int(customer), int(batch_id), query or {}, self.url)
        if document is None:
            return 400, description("the body is not JSON")
        act = self.assets.lookup if endpoint == FIND_ASSETS else self.assets.patch
        return act(int(customer), document, self.url)

    def answer_batch(self, customer: str, batch_id: str) -> tuple[int, bytes]:
        if not (ascii_digits(customer) and ascii_digits(batch_id)):
            return 404, b""
        with self._lock:
            batch = self._settled(int(customer), int(batch_id))
            if batch is None:
                return 404, b""
            return 200, batch_document(self.url, batch.customer, batch.batch_id,
                                       len(batch.assets), batch.errors, batch.submitted,
                                       batch.finished, superseded=batch.superseded)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Do not wait for keep-alive connections of clients that are still running.
    block_on_close = False

    def __init__(self, address, handler, dlcs: DevDlcs):
        self.dlcs = dlcs
        super().__init__(address, handler)

    def handle_error(self, request, client_address):
        error = sys.exc_info()[1]
        # A client that hangs up (a timeout on its side) is not a fault of the stand-in.
        if not isinstance(error, (ConnectionError, TimeoutError)):
            self.dlcs.errors.append(error)
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    dlcs: DevDlcs
    protocol_version = "HTTP/1.1"
    timeout = 30  # drop idle keep-alive connections eventually

    def log_message(self, format, *args):  # noqa: A002 - the signature is http.server's
        pass  # quiet: subclasses record the calls instead

    def do_GET(self):  # noqa: N802 - http.server's naming
        self._dispatch("GET")

    def do_POST(self):  # noqa: N802
        self._dispatch("POST")

    def do_PATCH(self):  # noqa: N802
        self._dispatch("PATCH")

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        endpoint, match = next(((name, found) for (verb, name), pattern in ROUTES.items()
                                if verb == method and (found := pattern.match(parts.path))),
                               ("other", None))
        call = Call(endpoint, method, parts.path, parse_qs(parts.query),
                    self.headers.get("Authorization"))
        if method in ("POST", "PATCH"):
            call.body = _json_or_none(raw)
        early = self.dlcs.before(call)
        if early is not None:
            return self._answer(call, *early)
        if endpoint == NAMED_QUERY:
            return self._answer(call, *self.dlcs.answer_named_query(*match.groups()))
        if endpoint == QUEUE:
            return self._answer(call, *self.dlcs.answer_queue(match.group(1), raw))
        if endpoint == BATCH:
            return self._answer(call, *self.dlcs.answer_batch(*match.groups()))
        if endpoint in (FIND_ASSETS, PATCH_ASSETS, BATCH_ASSETS):
            return self._answer(call, *self.dlcs.answer_assets(
                endpoint, match.group(1), call.body, *match.groups()[1:], query=call.query))
        self._answer(call, 404, b"")

    def _answer(self, call: Call, status: int, body: bytes,
                headers: dict[str, str] | None = None) -> None:
        call.status = status
        self.send_response(status)
        if body:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(body)
