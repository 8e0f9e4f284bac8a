"""The DLCS client: named queries on the Orchestrator; queue, batches and assets on the API.

One ``requests.Session`` (built by ``make_session``, the only place retries are
configured) serves every call. Each call has a timeout, sends HTTP Basic
credentials only when they are configured, never follows redirects (so nothing
goes to a host other than the configured ones), and turns every failure of
``requests``/``urllib3`` or of the DLCS's answer into ``DlcsError`` exactly once.
Credentials never appear in messages, reprs or logs. The answers' shapes are
judged in ``webhook.dlcs_documents``.
"""

from __future__ import annotations

import logging
import operator
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import requests
from requests.auth import HTTPBasicAuth

from webhook import cpu, metrics
from webhook.capped import read_capped
from webhook.deadlines import (DeadlineAdapter, DeadlineRetry, DeadlineTimeout, call_deadline,
                               timed_out)
from webhook.dlcs_documents import (AssetPage, json_text, parse_asset_page, parse_batch,
                                    parse_json, require_status)
from webhook.domain import BatchState, Deadline, DlcsAsset
from webhook.errors import DlcsError, NamedQueryNotFound, QueuePartiallyFailed

log = logging.getLogger("webhook.dlcs")

#: Largest response body read from the DLCS; a named query over thousands of
#: assets is a few MiB, so anything near this is a fault, not a manifest.
MAX_RESPONSE_BYTES = 256 * 1024 * 1024

#: Most pages of a batch's assets followed before giving up: the DLCS caps a
#: page at 500 and a batch at a few hundred assets, so this is a paging loop.
MAX_ASSET_PAGES = 100

_HYDRA_CONTEXT = "http://www.w3.org/ns/hydra/context.jsonld"
# The most the DLCS serves on one page (a larger pageSize falls back to its default).
_ASSET_PAGE_SIZE = 500
# A manifest id as the manifest-query named query takes it: one path segment
# that its argument parser does not split (it splits on "/" and ",").
_MANIFEST_ARGUMENT = re.compile(r"[A-Za-z0-9_.~-]{1,128}")



@dataclass(frozen=True, slots=True)
class NamedQueryAnswer:
    """The Orchestrator's answer to a named query."""

    document: dict  # the parsed IIIF manifest
    size: int       # bytes of the response body


def make_session(retries: int = 2, backoff: float = 0.5, *,
                 max_retry_after: int = 10) -> requests.Session:
    """Build the session every DLCS call goes through, with its retry policy."""
    retry = DeadlineRetry(
        total=retries,
        # A connect error means the request never reached the server, so even
        # the (non-idempotent) queue POST is safe to send again.
        connect=retries,
        # Read errors and 5xx happen after the server may have acted on the
        # request: retry only GET, never the POST that creates a batch, since a
        # retried POST could queue the same assets twice. The PATCH that tags
        # assets is a set operation in the DLCS (adding a present id or removing
        # an absent one changes nothing), yet it is not resent here either: a
        # late resend could land after a newer registration's opposite PATCH.
        # Its callers repeat the whole tagging instead, in order. The asset
        # lookup is a read sent as POST; urllib3 decides by method, so it fails
        # at once too, and its caller answers 503 for the client to retry.
        read=retries,
        status=retries,
        allowed_methods=frozenset({"GET"}),
        status_forcelist=(502, 503, 504),
        # Anything else (TLS, proxy, ...) will not get better by trying again.
        other=0,
        backoff_factor=backoff,
        respect_retry_after_header=True,
        # The caller is usually a webhook delivery holding a worker; a DLCS
        # asking for minutes of patience is better treated as a failure now.
        retry_after_max=max_retry_after,
        # Hand back the last response so its status and description reach the
        # error message instead of an opaque RetryError.
        raise_on_status=False,
    )
    session = requests.Session()
    adapter = DeadlineAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class DlcsClient:
    """Call the DLCS Orchestrator and API; one method per DLCS call."""

    def __init__(self, *, orchestrator_url: str | None, api_url: str | None,
                 named_query: str = "batch-query", timeout: float = 30,
                 credentials: tuple[str, str] | None = None, max_batch_size: int = 100,
                 session: requests.Session | None = None,
                 max_response_bytes: int = MAX_RESPONSE_BYTES):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._orchestrator_url = _base_url(orchestrator_url, "orchestrator_url")
        self._api_url = _base_url(api_url, "api_url")
        self._named_query = named_query
        self._timeout = timeout
        # Kept as an auth object, never as a string, so nothing formats it by accident.
        self._auth = HTTPBasicAuth(*credentials) if credentials else None
        self._max_batch_size = max_batch_size
        self._owns_session = session is None
        self._session = session if session is not None else make_session()
        self._max_response_bytes = max_response_bytes

    def __repr__(self) -> str:
        return (f"DlcsClient(orchestrator_url={self._orchestrator_url!r}, "
                f"api_url={self._api_url!r}, named_query={self._named_query!r}, "
                f"credentials={'<set>' if self._auth else None})")

    def close(self) -> None:
        """Release the connections of a session this client created itself."""
        if self._owns_session:
            self._session.close()

    def named_query(self, customer: int, batch_ids: Sequence[int], *,
                    object_hook: Callable[[dict], object] | None = None,
                    deadline: Deadline | None = None) -> NamedQueryAnswer:
        """Fetch the named-query manifest of every asset in the given batches.

        ``object_hook`` is given to ``json.loads`` as the answer is parsed (to
        keep only what the caller reads of a large answer). With a ``deadline``
        the whole call (its retries, and reading the answer) ends by then.
        """
        ids = ",".join(str(operator.index(batch_id)) for batch_id in batch_ids)
        if not ids:
            raise ValueError("batch_ids is empty")
        return self._project(operator.index(customer), ids, object_hook, call="named_query",
                             deadline=deadline)

    def manifest_query(self, customer: int, manifest_id: str, *,
                       object_hook: Callable[[dict], object] | None = None,
                       deadline: Deadline | None = None) -> NamedQueryAnswer:
        """Fetch the named-query manifest of every asset tagged with ``manifest_id``.

        The DLCS's presentation service projects a manifest this way, with the
        named query ``manifest-query`` (template ``manifest=p1``); ``object_hook``
        and ``deadline`` as for ``named_query``.
        """
        if not isinstance(manifest_id, str) or not _MANIFEST_ARGUMENT.fullmatch(manifest_id):
            raise ValueError("manifest_id must be one path segment without ','")
        return self._project(operator.index(customer), manifest_id, object_hook,
                             call="manifest_query", deadline=deadline)

    def _project(self, customer: int, argument: str,
                 object_hook: Callable[[dict], object] | None, *, call: str,
                 deadline: Deadline | None = None) -> NamedQueryAnswer:
        base = self._require(self._orchestrator_url, "DLCS_ORCHESTRATOR_URL")
        # The Orchestrator caches named-query answers; a batch that has just
        # completed must not be answered from before it did.
        query = quote(self._named_query, safe="")
        url = (f"{base}/iiif-resource/v3/{customer}/{query}/{argument}"
               f"?cacheBust={uuid.uuid4().hex}")
        what = f"named query {self._named_query}/{argument} of customer {customer}"
        status, body = self._exchange("GET", url, what, call=call, deadline=deadline)
        if status == 404:
            raise NamedQueryNotFound(
                f"{what}: no assets matched (the DLCS answered 404)", status=404)
        require_status(what, status, body, 200)
        size = len(body)
        text = json_text(what, body)
        # The parse needs only the text; the bytes beside it would double the peak.
        del body
        # Off the gevent hub (a large answer parses for a second or more).
        document = cpu.run(parse_json, what, text, object_hook)
        if not isinstance(document, dict) or not isinstance(document.get("items"), list):
            raise DlcsError(f"{what}: the answer is not a manifest with a list of items",
                            status=status)
        return NamedQueryAnswer(document=document, size=size)

    def get_batch(self, customer: int, batch_id: int) -> BatchState:
        """Fetch the current state of one batch from the DLCS API."""
        base = self._require(self._api_url, "DLCS_API_URL")
        customer, batch_id = operator.index(customer), operator.index(batch_id)
        url = f"{base}/customers/{customer}/queue/batches/{batch_id}"
        what = f"batch {batch_id} of customer {customer}"
        status, body = self._exchange("GET", url, what, call="get_batch")
        require_status(what, status, body, 200)
        return parse_batch(what, parse_json(what, body), status)

    def queue_assets(self, customer: int, assets: Sequence[Mapping]) -> list[BatchState]:
        """Queue assets for ingest, one batch per ``max_batch_size`` assets.

        A failure after some chunks were queued raises ``QueuePartiallyFailed``
        carrying those batches. A chunk that times out, or whose answer cannot
        be read, may still have been queued by the DLCS; it is never resent
        automatically.
        """
        base = self._require(self._api_url, "DLCS_API_URL")
        customer = operator.index(customer)
        url = f"{base}/customers/{customer}/queue"
        queued: list[BatchState] = []
        size = self._max_batch_size
        chunks = [assets[start:start + size] for start in range(0, len(assets), size)]
        for number, chunk in enumerate(chunks, start=1):
            what = f"queue request {number}/{len(chunks)} of customer {customer}"
            try:
                queued.append(self._queue_chunk(url, what, chunk))
            except DlcsError as exc:
                if not queued:
                    raise
                # Chunks go in order, so the queued assets are the leading ones.
                assets_queued = (number - 1) * size
                batches = ", ".join(str(state.batch_id) for state in queued)
                raise QueuePartiallyFailed(
                    f"queued {assets_queued} of {len(assets)} assets in batches {batches}, "
                    f"then {exc}",
                    queued=queued, assets_queued=assets_queued,
                    status=exc.status, description=exc.description) from exc
        return queued

    def _queue_chunk(self, url: str, what: str, chunk: Sequence[Mapping]) -> BatchState:
        body = {"@context": _HYDRA_CONTEXT, "@type": "Collection",
                "member": [dict(asset) for asset in chunk]}
        status, answer = self._exchange("POST", url, what, json_body=body, call="queue")
        require_status(what, status, answer, 200, 201)
        return parse_batch(what, parse_json(what, answer), status)

    def find_assets(self, customer: int, asset_ids: Iterable[str], *,
                    deadline: Deadline | None = None) -> list[DlcsAsset]:
        """Return those of the given assets that exist in the DLCS, in chunks of ``max_batch_size``.

        ``POST /customers/{customer}/allImages`` with the ids as a Hydra
        Collection; the DLCS answers the Images it has and leaves the others out.
        With a ``deadline``, every chunk's request ends by then.
        """
        base = self._require(self._api_url, "DLCS_API_URL")
        customer = operator.index(customer)
        url = f"{base}/customers/{customer}/allImages"
        found: list[DlcsAsset] = []
        chunks = self._chunks(customer, asset_ids)
        for number, chunk in enumerate(chunks, start=1):
            what = f"asset lookup {number}/{len(chunks)} of customer {customer}"
            body = {"@context": _HYDRA_CONTEXT, "@type": "Collection",
                    "member": [{"id": asset_id} for asset_id in chunk]}
            found.extend(self._asset_page("POST", url, what, body, customer,
                                           call="find_assets", deadline=deadline).assets)
        return found

    def tag_assets(self, customer: int, manifest_id: str,
                   asset_ids: Iterable[str]) -> list[DlcsAsset]:
        """Add ``manifest_id`` to the ``manifests`` of the given assets; return those tagged.

        ``PATCH /customers/{customer}/allImages`` in chunks of ``max_batch_size``.
        Assets the DLCS does not have are left out of the answer. The DLCS adds
        an id at most once, so calling again after a failure is harmless.
        """
        return self._patch_manifests(customer, manifest_id, asset_ids, "add")

    def untag_assets(self, customer: int, manifest_id: str,
                     asset_ids: Iterable[str]) -> list[DlcsAsset]:
        """Remove ``manifest_id`` from the ``manifests`` of the given assets; return those seen."""
        return self._patch_manifests(customer, manifest_id, asset_ids, "remove")

    def batch_assets(self, customer: int, batch_id: int) -> list[DlcsAsset]:
        """Return every asset of a batch, with its error, following the pages.

        ``GET /customers/{customer}/queue/batches/{batch}/assets``: the DLCS's
        record of the batch's assets, kept even after they move to a later
        batch. At most ``MAX_ASSET_PAGES`` pages are read.
        """
        base = self._require(self._api_url, "DLCS_API_URL")
        customer, batch_id = operator.index(customer), operator.index(batch_id)
        root = f"{base}/customers/{customer}/queue/batches/{batch_id}/assets"
        query: str | None = f"page=1&pageSize={_ASSET_PAGE_SIZE}"
        seen: set[str] = set()
        assets: list[DlcsAsset] = []
        while query is not None:
            if len(seen) == MAX_ASSET_PAGES:
                raise DlcsError(f"assets of batch {batch_id} of customer {customer}: more than "
                                f"{MAX_ASSET_PAGES} pages")
            seen.add(query)
            what = f"assets of batch {batch_id} of customer {customer}, page {len(seen)}"
            page = self._asset_page("GET", f"{root}?{query}", what, None, customer,
                                    call="batch_assets")
            assets.extend(page.assets)
            query = page.next_query
            if query in seen:
                raise DlcsError(f"{what}: the next page is one already read")
        return assets

    def _patch_manifests(self, customer: int, manifest_id: str, asset_ids: Iterable[str],
                         operation: str) -> list[DlcsAsset]:
        base = self._require(self._api_url, "DLCS_API_URL")
        customer = operator.index(customer)
        if not isinstance(manifest_id, str) or not manifest_id:
            raise ValueError("manifest_id must be a non-empty string")
        url = f"{base}/customers/{customer}/allImages"
        seen: list[DlcsAsset] = []
        chunks = self._chunks(customer, asset_ids)
        for number, chunk in enumerate(chunks, start=1):
            what = (f"{'tagging' if operation == 'add' else 'untagging'} request "
                    f"{number}/{len(chunks)} of customer {customer}")
            # The DLCS's BulkPatch shape, exactly as its presentation service sends it.
            body = {"field": "manifests", "operation": operation, "value": [manifest_id],
                    "member": [{"id": asset_id} for asset_id in chunk]}
            try:
                seen.extend(self._asset_page("PATCH", url, what, body, customer,
                                             call="patch_assets").assets)
            except DlcsError as exc:
                if number == 1:
                    raise
                done = sum(len(earlier) for earlier in chunks[:number - 1])
                raise DlcsError(f"{exc} (after {done} of {sum(map(len, chunks))} assets)",
                                status=exc.status, description=exc.description) from exc
        return seen

    def _chunks(self, customer: int, asset_ids: Iterable[str]) -> list[list[str]]:
        """Split distinct asset ids into request-sized chunks, refusing foreign ones."""
        # The DLCS refuses a whole request that names an asset twice or one of
        # another customer; both are caller mistakes, caught before sending.
        distinct = list(dict.fromkeys(asset_ids))
        prefix = f"{customer}/"
        for asset_id in distinct:
            if (not isinstance(asset_id, str) or not asset_id.startswith(prefix)
                    or asset_id.count("/") != 2):
                raise ValueError(f"{asset_id!r} is not an asset id of customer {customer}")
        size = self._max_batch_size
        return [distinct[start:start + size] for start in range(0, len(distinct), size)]

    def _asset_page(self, method: str, url: str, what: str, body: dict | None, customer: int,
                    *, call: str, deadline: Deadline | None = None) -> AssetPage:
        status, answer = self._exchange(method, url, what, json_body=body, call=call,
                                        deadline=deadline)
        require_status(what, status, answer, 200)
        return parse_asset_page(what, parse_json(what, answer), status, customer)

    @staticmethod
    def _require(url: str | None, variable: str) -> str:
        if not url:
            raise DlcsError(f"{variable} is not configured")
        return url

    def _exchange(self, method: str, url: str, what: str, *, json_body: object = None,
                  call: str = "other", deadline: Deadline | None = None
                  ) -> tuple[int, bytearray]:
        """Send one request and read its body; return the status and the bytes.

        Every DLCS call passes here, so here it is timed and its failures
        counted, under ``call`` (named_query, manifest_query, get_batch, queue,
        find_assets, patch_assets, batch_assets). With a ``deadline``, every
        attempt and the reading of the answer end by then.
        """
        timeout = self._timeout if deadline is None else DeadlineTimeout(self._timeout, deadline)
        with call_deadline(deadline):
            return self._send(method, url, what, json_body, call, timeout, deadline)

    def _send(self, method: str, url: str, what: str, json_body: object, call: str,
              timeout, deadline: Deadline | None) -> tuple[int, bytearray]:
        started = time.perf_counter()
        outcome: object = "error"
        failure: str | None = None
        try:
            try:
                response = self._session.request(
                    method, url, json=json_body, auth=self._auth,
                    timeout=timeout, allow_redirects=False, stream=True)
            except requests.RequestException as exc:
                if timed_out(exc):
                    outcome, failure = type(exc).__name__, "timeout"
                    raise DlcsError(f"{what}: the DLCS did not answer within "
                                    f"{self._waited(deadline):g} s") from exc
                outcome, failure = type(exc).__name__, "unreachable"
                raise DlcsError(f"{what}: the DLCS could not be reached "
                                f"({type(exc).__name__})") from exc
            with response:
                outcome = response.status_code
                try:
                    body = read_capped(response, self._max_response_bytes, deadline)
                except requests.RequestException as exc:
                    if timed_out(exc):
                        failure = "timeout"
                        raise DlcsError(f"{what}: the DLCS did not answer within "
                                        f"{self._waited(deadline):g} s (its answer was "
                                        "still arriving)", status=response.status_code) from exc
                    failure = "read"
                    raise DlcsError(f"{what}: reading the DLCS answer failed "
                                    f"({type(exc).__name__})",
                                    status=response.status_code) from exc
                if body is None:
                    failure = "too-large"
                    raise DlcsError(f"{what}: the DLCS answer is larger than "
                                    f"{self._max_response_bytes} bytes",
                                    status=response.status_code)
                return response.status_code, body
        finally:
            elapsed = time.perf_counter() - started
            # Without the query: no log line carries one (the named query's cacheBust).
            log.debug("%s %s -> %s in %.0f ms", method, url.split("?", 1)[0], outcome,
                      elapsed * 1000)
            if failure is None and not (isinstance(outcome, int) and 200 <= outcome < 300):
                failure = f"status-{outcome}" if isinstance(outcome, int) else "error"
            metrics.dlcs_call(call, elapsed, failure)

    def _waited(self, deadline: Deadline | None) -> float:
        """The limit a timed-out call ran into: its deadline once that has passed, else the timeout."""
        if deadline is not None and deadline.remaining() < self._timeout:
            return deadline.seconds
        return self._timeout


def _base_url(url: str | None, name: str) -> str | None:
    """Return a configured root without its trailing slash, refusing embedded credentials."""
    if not url:
        return None
    # Credentials in the URL would be sent, logged and shown wherever the URL
    # is; they belong in ``credentials`` only. The URL is kept out of the message.
    if "@" in urlsplit(url).netloc:
        raise ValueError(f"{name} must not contain credentials; pass credentials instead")
    return url.rstrip("/")
