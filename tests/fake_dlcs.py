"""A DLCS on a loopback port for end-to-end tests and the benchmark.

``FakeDlcs`` plays the two DLCS services the webhook talks to, over real HTTP
(``http.server.ThreadingHTTPServer`` in a daemon thread of the test process):

- the Orchestrator's named query,
  ``GET /iiif-resource/v3/{customer}/{query}/{batch ids}?cacheBust=...``, answered
  with a named-query manifest generated from the assets a test registered per
  batch (``add_batch``), shaped like ``tests/samples/named-query-2-assets.json``
  and with its canvases in a shuffled order, since the DLCS promises none;
- the API's queue, ``POST /customers/{c}/queue`` and
  ``GET /customers/{c}/queue/batches/{id}``.

It counts named-query calls per ``(customer, ids)`` under a lock, so tests can
assert that a manifest was rebuilt exactly once, optionally insists on HTTP
Basic credentials, and can be told to misbehave: fail the next N calls (a
status, a delay, a body that is not JSON), delay every named query, or hold
named queries until the test releases them.

Canvas bodies are rendered once, when a batch is registered, so a named query
over 50,000 assets costs the fake a shuffle and a join, not a JSON encoding:
the benchmark times the service, not this module.
"""

from __future__ import annotations

import base64
import collections
import datetime as dt
import hmac
import json
import random
import re
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from tests.servers import LOOPBACK

#: Host of every id in the generated documents (the DLCS's public host, not ours).
PUBLIC_HOST = "https://dlcs.test"
PRESENTATION_3 = "http://iiif.io/api/presentation/3/context.json"
NAMED_QUERY = "named-query"
QUEUE = "queue"
BATCH = "batch"
ENDPOINTS = (NAMED_QUERY, QUEUE, BATCH)
# How long a held named query waits for release() before answering anyway, so a
# test that forgets to release cannot hang a server thread forever.
HOLD_LIMIT_SECONDS = 30.0

_NAMED_QUERY_PATH = re.compile(r"^/iiif-resource/v3/([^/]+)/([^/]+)/([^/]+)$")
_QUEUE_PATH = re.compile(r"^/customers/([^/]+)/queue$")
_BATCH_PATH = re.compile(r"^/customers/([^/]+)/queue/batches/([^/]+)$")
_DLCS_METADATA = [("String 1", ""), ("String 2", ""), ("String 3", ""), ("Number 1", "0"),
                  ("Number 2", "0"), ("Number 3", "0"), ("Tags", ""), ("Roles", "")]
_THUMBNAIL_SIDES = (1024, 400, 200, 100)


@dataclass(frozen=True)
class FakeAsset:
    """An image the fake DLCS has ingested: its space, id and full size."""

    space: int
    id: str
    width: int = 4000
    height: int = 3000

    def asset_id(self, customer: int) -> str:
        """Return ``"{customer}/{space}/{id}"``, how the webhook names the asset."""
        return f"{customer}/{self.space}/{self.id}"


@dataclass(frozen=True)
class Fault:
    """How to misbehave on one call: wait, then answer ``status`` or a body that is not JSON."""

    status: int | None = None
    delay: float = 0.0
    invalid_json: bool = False


@dataclass
class _Batch:
    customer: int
    batch_id: int
    assets: list[FakeAsset]
    canvases: list[bytes]            # pre-rendered named-query canvases, in asset order
    submitted: dt.datetime
    errors: int = 0
    finished: dt.datetime | None = None
    finish_at: float | None = None   # time.monotonic() when it reports itself finished


@dataclass
class Call:
    """One request the fake received."""

    endpoint: str
    method: str
    path: str
    query: dict[str, list[str]]
    authorization: str | None
    status: int = 0


@dataclass
class _State:
    batches: dict[tuple[int, int], _Batch] = field(default_factory=dict)
    documents: dict[tuple[int, frozenset[int]], bytes] = field(default_factory=dict)
    faults: dict[str, collections.deque] = field(
        default_factory=lambda: {name: collections.deque() for name in ENDPOINTS})
    named_query_calls: collections.Counter = field(default_factory=collections.Counter)
    calls: list[Call] = field(default_factory=list)
    canvas_numbers: collections.Counter = field(default_factory=collections.Counter)


def canvas_id(customer: int, asset: FakeAsset, number: int) -> str:
    """Return the DLCS canvas id of an asset: ``.../iiif-img/{c}/{s}/{a}/canvas/c/{n}``."""
    return f"{PUBLIC_HOST}/iiif-img/{customer}/{asset.space}/{asset.id}/canvas/c/{number}"


def _scaled(width: int, height: int, side: int) -> tuple[int, int]:
    """Fit (width, height) into a ``side`` x ``side`` box, keeping the aspect ratio."""
    scale = min(1.0, side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _label(text: str) -> dict:
    return {"none": [text]}


def named_query_canvas(customer: int, asset: FakeAsset, number: int) -> dict:
    """Return the named-query canvas the DLCS answers for an image asset."""
    path = f"{customer}/{asset.space}/{asset.id}"
    canvas = canvas_id(customer, asset, number)
    sizes = [dict(zip(("width", "height"), _scaled(asset.width, asset.height, side)))
             for side in _THUMBNAIL_SIDES]
    thumb_w, thumb_h = _scaled(asset.width, asset.height, 200)
    body_w, body_h = _scaled(asset.width, asset.height, 1024)
    return {
        "id": canvas,
        "type": "Canvas",
        "label": {"en": [f"Canvas {number}"]},
        "width": asset.width,
        "height": asset.height,
        "metadata": [{"label": _label(name), "value": _label(value)}
                     for name, value in _DLCS_METADATA],
        "thumbnail": [{
            "id": f"{PUBLIC_HOST}/thumbs/{path}/full/{thumb_w},{thumb_h}/0/default.jpg",
            "type": "Image",
            "format": "image/jpeg",
            "service": [
                {"@context": "http://iiif.io/api/image/2/context.json",
                 "@id": f"{PUBLIC_HOST}/thumbs/v2/{path}", "@type": "ImageService2",
                 "profile": "http://iiif.io/api/image/2/level0.json", "sizes": sizes},
                {"@context": "http://iiif.io/api/image/3/context.json",
                 "id": f"{PUBLIC_HOST}/thumbs/{path}", "type": "ImageService3",
                 "profile": "level0", "sizes": sizes},
            ],
        }],
        "items": [{
            "id": f"{canvas}/page",
            "type": "AnnotationPage",
            "items": [{
                "id": f"{canvas}/page/image",
                "type": "Annotation",
                "motivation": "painting",
                "body": {
                    "id": f"{PUBLIC_HOST}/iiif-img/{path}/full/{body_w},{body_h}/0/default.jpg",
                    "type": "Image",
                    "format": "image/jpeg",
                    "width": body_w,
                    "height": body_h,
                    "service": [
                        {"@context": "http://iiif.io/api/image/2/context.json",
                         "@id": f"{PUBLIC_HOST}/iiif-img/v2/{path}", "@type": "ImageService2",
                         "profile": "http://iiif.io/api/image/2/level2.json",
                         "width": asset.width, "height": asset.height},
                        {"@context": "http://iiif.io/api/image/3/context.json",
                         "id": f"{PUBLIC_HOST}/iiif-img/{path}", "type": "ImageService3",
                         "profile": "level2", "width": asset.width, "height": asset.height},
                    ],
                },
                "target": canvas,
            }],
        }],
    }


def image_service_id(customer: int, asset: FakeAsset) -> str:
    """Return the ImageService3 id the fake gives an asset (to recognise it in a manifest)."""
    return f"{PUBLIC_HOST}/iiif-img/{customer}/{asset.space}/{asset.id}"


def _ids_key(ids: Iterable[int]) -> frozenset[int]:
    return frozenset(int(i) for i in ids)


def _utc(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class FakeDlcs:
    """A fake DLCS Orchestrator and API on a loopback port; use as a context manager."""

    def __init__(self, *, named_query: str = "batch-query",
                 credentials: tuple[str, str] | None = None, seed: int = 0,
                 first_batch_id: int = 90_000):
        self.named_query = named_query
        self.credentials = credentials
        #: Seconds every named query waits before answering (widens race windows).
        self.delay = 0.0
        self.errors: list[BaseException] = []
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._state = _State()
        self._released = threading.Event()
        self._released.set()
        self._next_batch_id = first_batch_id
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """The root to configure as DLCS_ORCHESTRATOR_URL and DLCS_API_URL."""
        if self._server is None:
            raise RuntimeError("the fake DLCS is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeDlcs":
        """Listen on a free loopback port and serve from a daemon thread."""
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = _Server((LOOPBACK, 0), handler, self)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name="fake-dlcs", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket; safe to call twice."""
        self._released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=10)
            self._server = None

    def __enter__(self) -> "FakeDlcs":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # ------------------------------------------------------------ set-up

    def add_batch(self, customer: int, batch_id: int,
                  assets: Iterable[FakeAsset | tuple[int, str]]) -> list[FakeAsset]:
        """Register a batch's assets; named queries over the batch answer them."""
        assets = [a if isinstance(a, FakeAsset) else FakeAsset(*a) for a in assets]
        with self._lock:
            canvases = []
            for asset in assets:
                self._state.canvas_numbers[customer] += 1
                canvas = named_query_canvas(customer, asset, self._state.canvas_numbers[customer])
                canvases.append(json.dumps(canvas, separators=(",", ":")).encode())
            self._state.batches[(customer, batch_id)] = _Batch(
                customer, batch_id, assets, canvases, dt.datetime.now(dt.timezone.utc))
        return assets

    def serve_document(self, customer: int, batch_ids: Iterable[int], document: dict) -> None:
        """Answer the named query over exactly these batches with ``document``, verbatim."""
        with self._lock:
            self._state.documents[(customer, _ids_key(batch_ids))] = json.dumps(document).encode()

    def freeze(self, customer: int, batch_ids: Iterable[int]) -> int:
        """Render the answer over exactly these batches once and serve those bytes from now on.

        For large answers (the benchmarks): a 50,000-canvas answer is then
        sent as soon as it is asked for, at the speed of the socket, instead
        of being shuffled and joined per request. Returns its size in bytes.
        """
        key = _ids_key(batch_ids)
        status, body = self._named_query(customer, key)
        if status != 200:
            raise ValueError(f"no canvases in batches {sorted(key)} of customer {customer}")
        with self._lock:
            self._state.documents[(customer, key)] = body
        return len(body)

    def fail_next(self, count: int = 1, *, status: int | None = None, delay: float = 0.0,
                  invalid_json: bool = False, endpoint: str = NAMED_QUERY) -> None:
        """Make the next ``count`` calls to ``endpoint`` wait ``delay`` s, then fail.

        With neither ``status`` nor ``invalid_json`` the calls are only slow.
        """
        if endpoint not in ENDPOINTS:
            raise ValueError(f"endpoint must be one of {ENDPOINTS}")
        with self._lock:
            self._state.faults[endpoint].extend(
                [Fault(status, delay, invalid_json)] * count)

    def hold(self) -> None:
        """Make named queries wait (up to HOLD_LIMIT_SECONDS) until ``release()``."""
        self._released.clear()

    def release(self) -> None:
        """Let held named queries answer."""
        self._released.set()

    def finish_batch(self, customer: int, batch_id: int, *, errors: int = 0,
                     after: float = 0.0) -> None:
        """Make a queued batch report itself finished, now or ``after`` seconds from now."""
        with self._lock:
            batch = self._state.batches[(customer, batch_id)]
            batch.errors = errors
            batch.finish_at = time.monotonic() + after

    # ------------------------------------------------------------ what happened

    def calls(self, customer: int, batch_ids: Iterable[int]) -> int:
        """Count named-query calls for exactly these batches of ``customer``, in any order."""
        wanted = _ids_key(batch_ids)
        with self._lock:
            return sum(n for (c, ids), n in self._state.named_query_calls.items()
                       if c == customer and _parse_ids(ids) == wanted)

    def named_query_counts(self) -> dict[tuple[int, str], int]:
        """Return every named-query call count, keyed by (customer, ids as sent)."""
        with self._lock:
            return dict(self._state.named_query_calls)

    @property
    def total_named_queries(self) -> int:
        with self._lock:
            return sum(self._state.named_query_calls.values())

    def requests(self, endpoint: str | None = None) -> list[Call]:
        """Return the calls received so far, optionally only those to ``endpoint``."""
        with self._lock:
            return [c for c in self._state.calls if endpoint is None or c.endpoint == endpoint]

    def wait_for_named_queries(self, count: int, timeout: float = 10.0) -> None:
        """Block until at least ``count`` named queries arrived; raise TimeoutError."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while sum(self._state.named_query_calls.values()) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"fewer than {count} named queries after {timeout} s")
                self._changed.wait(left)

    # ------------------------------------------------------------ serving

    def _record(self, call: Call, key: tuple[int, str] | None = None) -> Fault | None:
        with self._changed:
            self._state.calls.append(call)
            if key is not None:
                self._state.named_query_calls[key] += 1
                self._changed.notify_all()
            faults = self._state.faults[call.endpoint]
            return faults.popleft() if faults else None

    def _authorised(self, header: str | None) -> bool:
        if self.credentials is None:
            return True
        expected = "Basic " + base64.b64encode(":".join(self.credentials).encode()).decode()
        return hmac.compare_digest((header or "").encode(), expected.encode())

    def _named_query(self, customer: int, ids: frozenset[int]) -> tuple[int, bytes]:
        with self._lock:
            fixed = self._state.documents.get((customer, ids))
            if fixed is not None:
                return 200, fixed
            canvases = [canvas for batch_id in sorted(ids)
                        if (batch := self._state.batches.get((customer, batch_id)))
                        for canvas in batch.canvases]
            self._random.shuffle(canvases)
        if not canvases:
            return 404, b""
        head = json.dumps({
            "@context": PRESENTATION_3,
            "id": f"{PUBLIC_HOST}/iiif-resource/v3/{customer}/{self.named_query}/"
                  + ",".join(map(str, sorted(ids))),
            "type": "Manifest",
            "label": {"en": [f"Generated from '{self.named_query}' named query"]},
            "metadata": [{"label": {"en": ["Title"]}, "value": {"en": ["Created by DLCS"]}}],
        }, separators=(",", ":")).encode()
        return 200, head[:-1] + b',"items":[' + b",".join(canvases) + b"]}"

    def _queue(self, customer: int, document: object) -> tuple[int, bytes]:
        members = document.get("member") if isinstance(document, dict) else None
        if not isinstance(members, list) or not members:
            return 400, _description("the body is not a Hydra Collection of assets")
        assets = []
        for member in members:
            if (not isinstance(member, dict) or not isinstance(member.get("id"), str)
                    or not isinstance(member.get("space"), int)):
                return 400, _description("every member needs a string id and an int space")
            assets.append(FakeAsset(member["space"], member["id"]))
        with self._lock:
            batch_id = self._next_batch_id
            self._next_batch_id += 1
        self.add_batch(customer, batch_id, assets)
        return 201, self._batch_document(customer, batch_id)

    def _batch_document(self, customer: int, batch_id: int) -> bytes:
        with self._lock:
            batch = self._state.batches.get((customer, batch_id))
            if batch is None:
                return b""
            if batch.finish_at is not None and batch.finished is None \
                    and time.monotonic() >= batch.finish_at:
                batch.finished = dt.datetime.now(dt.timezone.utc)
            done = batch.finished is not None
            count = len(batch.assets)
            document = {
                "@context": f"{PUBLIC_HOST}/contexts/Batch.jsonld",
                "@id": f"{self.url}/customers/{customer}/queue/batches/{batch_id}",
                "@type": "vocab:Batch",
                "submitted": _utc(batch.submitted),
                "count": count,
                "completed": count - batch.errors if done else 0,
                "errors": batch.errors if done else 0,
                "superseded": False,
            }
            if done:
                document["finished"] = _utc(batch.finished)
        return json.dumps(document).encode()


def _parse_ids(raw: str) -> frozenset[int] | None:
    parts = raw.split(",")
    if not all(part.isdigit() for part in parts):
        return None
    return _ids_key(parts)


def _description(text: str) -> bytes:
    return json.dumps({"description": text}).encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Do not wait for keep-alive connections of clients that are still running.
    block_on_close = False

    def __init__(self, address, handler, fake: FakeDlcs):
        self.fake = fake
        super().__init__(address, handler)

    def handle_error(self, request, client_address):
        error = sys.exc_info()[1]
        # A client that hangs up (a timeout on its side) is not a fault of the fake.
        if not isinstance(error, (ConnectionError, TimeoutError)):
            self.fake.errors.append(error)
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    fake: FakeDlcs
    protocol_version = "HTTP/1.1"
    timeout = 30  # drop idle keep-alive connections eventually

    def log_message(self, format, *args):  # noqa: A002 - the signature is http.server's
        pass  # quiet: the calls are recorded instead

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        fake = self.fake
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        auth = self.headers.get("Authorization")
        query = parse_qs(parts.query)

        if method == "GET" and (match := _NAMED_QUERY_PATH.match(parts.path)):
            customer, name, ids = match.groups()
            call = Call(NAMED_QUERY, method, parts.path, query, auth)
            fault = fake._record(call, (int(customer) if customer.isdigit() else -1, ids))
            if self._misbehave(call, fault, auth):
                return
            fake._released.wait(HOLD_LIMIT_SECONDS)
            if fake.delay:
                time.sleep(fake.delay)
            parsed = _parse_ids(ids)
            if not customer.isdigit() or parsed is None:
                return self._answer(call, 400, _description(f"cannot parse {ids!r}"))
            if name != fake.named_query:
                return self._answer(call, 404, b"")
            return self._answer(call, *fake._named_query(int(customer), parsed))

        if method == "POST" and (match := _QUEUE_PATH.match(parts.path)):
            call = Call(QUEUE, method, parts.path, query, auth)
            if self._misbehave(call, fake._record(call), auth):
                return
            if not match.group(1).isdigit():
                return self._answer(call, 404, b"")
            try:
                document = json.loads(raw)
            except ValueError:
                return self._answer(call, 400, _description("the body is not JSON"))
            return self._answer(call, *fake._queue(int(match.group(1)), document))

        if method == "GET" and (match := _BATCH_PATH.match(parts.path)):
            call = Call(BATCH, method, parts.path, query, auth)
            if self._misbehave(call, fake._record(call), auth):
                return
            customer, batch_id = match.groups()
            body = (fake._batch_document(int(customer), int(batch_id))
                    if customer.isdigit() and batch_id.isdigit() else b"")
            return self._answer(call, 200 if body else 404, body)

        call = Call("other", method, parts.path, query, auth)
        fake._record(call)
        self._answer(call, 404, b"")

    def _misbehave(self, call: Call, fault: Fault | None, auth: str | None) -> bool:
        """Apply a queued fault or the auth check; tell whether the call was answered."""
        if fault is not None:
            if fault.delay:
                time.sleep(fault.delay)
            if fault.status is not None:
                self._answer(call, fault.status, _description("the fake DLCS was told to fail"))
                return True
            if fault.invalid_json:
                self._answer(call, 200, b'{"items": [ this is not JSON')
                return True
        if not self.fake._authorised(auth):
            self._answer(call, 401, _description("bad credentials"),
                         {"WWW-Authenticate": 'Basic realm="DLCS"'})
            return True
        return False

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


def image_assets(prefix: str, count: int, *, space: int = 1,
                 sizes: Sequence[tuple[int, int]] = ((4000, 3000), (2000, 3000), (1200, 1600))
                 ) -> list[FakeAsset]:
    """Return ``count`` assets named ``{prefix}-{n}`` with a repeating pattern of sizes."""
    return [FakeAsset(space, f"{prefix}-{n:05d}", *sizes[n % len(sizes)]) for n in range(count)]
