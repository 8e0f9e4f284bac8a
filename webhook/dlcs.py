"""The DLCS client: the named query on the Orchestrator and the queue on the API.

One ``requests.Session`` (built by ``make_session``, the only place retries are
configured) serves every call. Each call has a timeout, sends HTTP Basic
credentials only when they are configured, never follows redirects (so nothing
goes to a host other than the configured ones), and turns every failure of
``requests``/``urllib3`` or of the DLCS's answer into ``DlcsError`` exactly once.
Credentials never appear in messages, reprs or logs.
"""

from __future__ import annotations

import json
import logging
import operator
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import quote, urlsplit

import requests
from requests.adapters import HTTPAdapter
from requests.auth import HTTPBasicAuth
from urllib3.exceptions import (ConnectTimeoutError, MaxRetryError, NewConnectionError,
                                ReadTimeoutError, ResponseError)
from urllib3.util import Timeout
from urllib3.util.retry import Retry

from webhook import metrics
from webhook.capped import read_capped
from webhook.domain import BatchState, Deadline
from webhook.errors import DlcsError, NamedQueryNotFound, QueuePartiallyFailed
from webhook.json_limits import JsonTooDeep, NonFiniteNumber, loads_finite

log = logging.getLogger("webhook.dlcs")

#: Largest response body read from the DLCS; a named query over thousands of
#: assets is a few MiB, so anything near this is a fault, not a manifest.
MAX_RESPONSE_BYTES = 256 * 1024 * 1024

_HYDRA_CONTEXT = "http://www.w3.org/ns/hydra/context.jsonld"
_DESCRIPTION_LIMIT = 500  # characters of a DLCS description surfaced in a message

#: Least time a retry must have left before the call's deadline (after its
#: backoff) to be worth starting; with less it would only be cut short.
MIN_RETRY_SECONDS = 1.0

# The deadline of the DLCS call under way in this thread, for the retry policy:
# one Retry object serves every call of the session, so it is told this way.
_CALL_DEADLINE: ContextVar[Deadline | None] = ContextVar("dlcs_call_deadline", default=None)


@dataclass(frozen=True, slots=True)
class NamedQueryAnswer:
    """The Orchestrator's answer to a named query."""

    document: dict  # the parsed IIIF manifest
    size: int       # bytes of the response body


class _DeadlineRetry(Retry):
    """The retry policy, except that no retry starts too close to the call's deadline.

    A call without a deadline retries as ``Retry`` does. With one, a retry
    starts only if, after its backoff (or the DLCS's ``Retry-After``), at least
    ``MIN_RETRY_SECONDS`` remain; otherwise the last error is raised (or, for
    a status, the last response returned) as when retries run out.
    """

    def increment(self, method=None, url=None, response=None, error=None, _pool=None,
                  _stacktrace=None):
        retry = super().increment(method, url, response, error, _pool, _stacktrace)
        deadline = _CALL_DEADLINE.get()
        if deadline is None:
            return retry
        wait = retry.get_backoff_time()
        if response is not None and retry.respect_retry_after_header:
            wait = retry.get_retry_after(response) or wait
        if deadline.remaining() - wait < MIN_RETRY_SECONDS:
            raise MaxRetryError(_pool, url, error or ResponseError(
                f"no time left for a retry before the deadline ({response and response.status})"))
        return retry


class _DeadlineTimeout(Timeout):
    """Connect and read timeouts that each attempt cuts to the time left before a deadline.

    urllib3 clones the timeout at the start of every attempt (retries
    included), so no attempt can wait past the deadline for a connection or
    for a byte; the deadline for the whole answer is kept by ``read_capped``.
    """

    def __init__(self, timeout: float, deadline: Deadline):
        super().__init__(connect=timeout, read=timeout)
        self._limit = timeout
        self._deadline = deadline

    def clone(self) -> Timeout:
        # Never zero or less: urllib3 would take that as "do not wait at all"
        # (non-blocking) or refuse it.
        left = max(self._deadline.remaining(), 0.01)
        return Timeout(connect=min(self._limit, left), read=min(self._limit, left))


def make_session(retries: int = 2, backoff: float = 0.5, *,
                 max_retry_after: int = 10) -> requests.Session:
    """Build the session every DLCS call goes through, with its retry policy."""
    retry = _DeadlineRetry(
        total=retries,
        # A connect error means the request never reached the server, so even
        # the (non-idempotent) queue POST is safe to send again.
        connect=retries,
        # Read errors and 5xx happen after the server may have acted on the
        # request: retry only GET, never the POST that creates a batch, since a
        # retried POST could queue the same assets twice.
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
    adapter = HTTPAdapter(max_retries=retry)
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
        base = self._require(self._orchestrator_url, "DLCS_ORCHESTRATOR_URL")
        ids = ",".join(str(operator.index(batch_id)) for batch_id in batch_ids)
        if not ids:
            raise ValueError("batch_ids is empty")
        customer = operator.index(customer)
        # The Orchestrator caches named-query answers; a batch that has just
        # completed must not be answered from before it did.
        query = quote(self._named_query, safe="")
        url = (f"{base}/iiif-resource/v3/{customer}/{query}/{ids}"
               f"?cacheBust={uuid.uuid4().hex}")
        what = f"named query {self._named_query}/{ids} of customer {customer}"
        status, body = self._exchange("GET", url, what, call="named_query", deadline=deadline)
        if status == 404:
            raise NamedQueryNotFound(
                f"{what}: no assets matched (the DLCS answered 404)", status=404)
        _require_status(what, status, body, 200)
        size = len(body)
        text = _json_text(what, body)
        # The parse needs only the text; the bytes beside it would double the peak.
        del body
        document = _parse_json(what, text, object_hook)
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
        _require_status(what, status, body, 200)
        return _parse_batch(what, _parse_json(what, body), status)

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
        _require_status(what, status, answer, 200, 201)
        return _parse_batch(what, _parse_json(what, answer), status)

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
        counted, under ``call`` (named_query, get_batch, queue). With a
        ``deadline``, every attempt and the reading of the answer end by then.
        """
        started = time.perf_counter()
        outcome: object = "error"
        failure: str | None = None
        timeout = self._timeout if deadline is None else _DeadlineTimeout(self._timeout, deadline)
        reset = _CALL_DEADLINE.set(deadline)
        try:
            try:
                response = self._session.request(
                    method, url, json=json_body, auth=self._auth,
                    timeout=timeout, allow_redirects=False, stream=True)
            except requests.RequestException as exc:
                if _timed_out(exc):
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
                    if _timed_out(exc):
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
            _CALL_DEADLINE.reset(reset)
            elapsed = time.perf_counter() - started
            log.debug("%s %s -> %s in %.0f ms", method, url, outcome, elapsed * 1000)
            if failure is None and not (isinstance(outcome, int) and 200 <= outcome < 300):
                failure = f"status-{outcome}" if isinstance(outcome, int) else "error"
            metrics.dlcs_call(call, elapsed, failure)


    def _waited(self, deadline: Deadline | None) -> float:
        """The limit a timed-out call ran into: its deadline once that has passed, else the timeout."""
        if deadline is not None and deadline.remaining() < self._timeout:
            return deadline.seconds
        return self._timeout


def _timed_out(exc: requests.RequestException) -> bool:
    """Tell whether a failure was a timeout, including one that ended urllib3's retries.

    urllib3 reports retries that ran out on read timeouts as MaxRetryError,
    which requests turns into a ConnectionError: a DLCS that hung is not one
    that "could not be reached".
    """
    if isinstance(exc, requests.Timeout):
        return True
    reason = exc.args[0] if exc.args else None
    if isinstance(reason, MaxRetryError):
        reason = reason.reason
    # urllib3's NewConnectionError (refused, unresolvable) derives from ConnectTimeoutError.
    return (isinstance(reason, (ReadTimeoutError, ConnectTimeoutError, TimeoutError))
            and not isinstance(reason, NewConnectionError))


def _base_url(url: str | None, name: str) -> str | None:
    """Return a configured root without its trailing slash, refusing embedded credentials."""
    if not url:
        return None
    # Credentials in the URL would be sent, logged and shown wherever the URL
    # is; they belong in ``credentials`` only. The URL is kept out of the message.
    if "@" in urlsplit(url).netloc:
        raise ValueError(f"{name} must not contain credentials; pass credentials instead")
    return url.rstrip("/")


def _require_status(what: str, status: int, body: bytes, *accepted: int) -> None:
    """Raise the DlcsError that an unexpected status deserves."""
    if status in accepted:
        return
    description = _description(body)
    if 300 <= status < 400:
        reason = f"the DLCS answered a redirect ({status}), which is not followed"
    elif status in (401, 403):
        reason = (f"the DLCS refused the request ({status}); "
                  "check DLCS_API_KEY and DLCS_API_SECRET")
    else:
        reason = f"the DLCS answered {status}"
    message = f"{what}: {reason}"
    if description:
        message += f": {description}"
    raise DlcsError(message, status=status, description=description)


def _description(body: bytes) -> str | None:
    """Return the DLCS's ``description`` of an error, if the body has one."""
    try:
        document = loads_finite(body)
    except ValueError:  # not JSON, NaN, or nested too deeply: no description then
        return None
    if isinstance(document, dict) and isinstance(document.get("description"), str):
        description = document["description"].strip()
        if len(description) > _DESCRIPTION_LIMIT:
            description = description[:_DESCRIPTION_LIMIT] + "..."
        return description or None
    return None


def _json_text(what: str, body: bytes | bytearray) -> str:
    """Decode a JSON body as ``json.loads`` would (UTF-8, -16 or -32, BOM allowed)."""
    try:
        return body.decode(json.detect_encoding(body), "surrogatepass")
    except UnicodeDecodeError as exc:
        raise DlcsError(f"{what}: the DLCS answer is not JSON") from exc


def _parse_json(what: str, body: str | bytes | bytearray,
                object_hook: Callable[[dict], object] | None = None) -> object:
    try:
        return loads_finite(body, object_hook=object_hook)
    except NonFiniteNumber as exc:
        raise DlcsError(f"{what}: the DLCS answer holds {exc.constant}, which is not "
                        "a JSON number") from None
    except JsonTooDeep:
        raise DlcsError(f"{what}: the DLCS answer is nested too deeply to read") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError alike
        raise DlcsError(f"{what}: the DLCS answer is not JSON") from exc


def _parse_batch(what: str, document: object, status: int) -> BatchState:
    """Turn a DLCS API Batch document into a BatchState."""
    try:
        if not isinstance(document, dict):
            raise ValueError("not a JSON object")
        return BatchState(
            batch_id=_batch_id(document.get("@id")),
            count=_count(document, "count"),
            completed=_count(document, "completed"),
            errors=_count(document, "errors"),
            superseded=_flag(document, "superseded"),
            submitted=_time(document, "submitted"),
            finished=_time(document, "finished"),
        )
    except ValueError as exc:
        raise DlcsError(f"{what}: the answer is not a DLCS batch ({exc})",
                        status=status) from exc


def _batch_id(value: object) -> int:
    if not isinstance(value, str):
        raise ValueError("@id is missing")
    segment = urlsplit(value).path.rstrip("/").rpartition("/")[2]
    if not segment.isdigit():
        raise ValueError(f"@id {value!r} does not end in a batch id")
    return int(segment)


def _count(document: dict, name: str) -> int:
    value = document.get(name)
    # bool is an int in Python but never a count in JSON.
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} is not a count")
    return value


def _flag(document: dict, name: str) -> bool:
    value = document.get(name)
    if not isinstance(value, bool):
        raise ValueError(f"{name} is not a boolean")
    return value


def _time(document: dict, name: str) -> datetime | None:
    value = document.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name} is not a date")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name} is not an ISO 8601 date") from None
    # The DLCS writes UTC; a date without an offset is taken as UTC too.
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)
