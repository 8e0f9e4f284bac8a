"""The project's stand-in DLCS (``webhook.devdlcs``), instrumented for tests and benchmarks.

``FakeDlcs`` is :class:`webhook.devdlcs.DevDlcs` (the named query, the queue
and batches, over real HTTP on a loopback port) plus what tests need to watch
and break it:

- it records every call and counts named-query calls per ``(customer, ids)``
  under a lock, so tests can assert that a manifest was rebuilt exactly once;
- it can insist on HTTP Basic credentials;
- it can be told to misbehave: fail the next N calls (a status, a delay, a body
  that is not JSON), delay every named query, hold named queries until the
  test releases them (all at once, or named queries or queue requests one by
  one), or answer a fixed document for some batches (``freeze`` renders one
  once, so the benchmarks' large answers cost the fake nothing per request).

Batches finish only when a test says so (``finish_batch``; ``supersede_batch``
makes one that never will); nothing is sent to the service: the tests deliver
completions themselves.
"""

from __future__ import annotations

import base64
import collections
import hmac
import json
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tests.servers import LOOPBACK
from webhook.devdlcs import Asset, Call, DevDlcs, image_service_id  # noqa: F401 - re-exported
from webhook.devdlcs.documents import PUBLIC_HOST, canvas_id, named_query_canvas  # noqa: F401
from webhook.devdlcs.server import (BATCH, BATCH_ASSETS, ENDPOINTS,  # noqa: F401
                                    FIND_ASSETS, NAMED_QUERY, PATCH_ASSETS, QUEUE, ROUTES,
                                    description, parse_ids)

#: The tests' name for an asset the DLCS has ingested.
FakeAsset = Asset
# How long a held named query waits for release() before answering anyway, so a
# test that forgets to release cannot hang a server thread forever.
HOLD_LIMIT_SECONDS = 30.0


@dataclass(frozen=True)
class Fault:
    """How to misbehave on one call: wait, then answer ``status`` or a body that is not JSON."""

    status: int | None = None
    delay: float = 0.0
    invalid_json: bool = False


def _ids_key(ids: Iterable[int]) -> frozenset[int]:
    return frozenset(int(i) for i in ids)


class FakeDlcs(DevDlcs):
    """The stand-in DLCS on a loopback port, recording calls and failing on demand."""

    def __init__(self, *, named_query: str = "batch-query",
                 credentials: tuple[str, str] | None = None, seed: int = 0,
                 first_batch_id: int = 90_000):
        super().__init__(named_query=named_query, host=LOOPBACK, port=0, seed=seed,
                         first_batch_id=first_batch_id)
        self.credentials = credentials
        #: Seconds every named query waits before answering (widens race windows).
        self.delay = 0.0
        self._changed = threading.Condition(threading.Lock())
        self._calls: list[Call] = []
        self._named_query_calls: collections.Counter = collections.Counter()
        self._faults = {name: collections.deque() for name in ENDPOINTS}
        self._documents: dict[tuple[int, frozenset[int]], bytes] = {}
        self._released = threading.Event()
        self._released.set()
        # The endpoint whose calls are held one by one (hold_each), and their gates
        # in order of arrival.
        self._gated: str | None = None
        self._gates: list[threading.Event] = []

    def stop(self) -> None:
        """Release held calls, then stop serving; safe to call twice."""
        self.release()
        super().stop()

    # ------------------------------------------------------------ set-up

    def serve_document(self, customer: int, batch_ids: Iterable[int], document: dict) -> None:
        """Answer the named query over exactly these batches with ``document``, verbatim."""
        with self._changed:
            self._documents[(customer, _ids_key(batch_ids))] = json.dumps(document).encode()

    def freeze(self, customer: int, batch_ids: Iterable[int]) -> int:
        """Render the answer over exactly these batches once and serve those bytes from now on.

        For large answers (the benchmarks): a 50,000-canvas answer is then
        sent as soon as it is asked for, at the speed of the socket, instead
        of being shuffled and joined per request. Returns its size in bytes.
        """
        key = _ids_key(batch_ids)
        status, body = super().named_query_document(customer, key)
        if status != 200:
            raise ValueError(f"no canvases in batches {sorted(key)} of customer {customer}")
        with self._changed:
            self._documents[(customer, key)] = body
        return len(body)

    def fail_next(self, count: int = 1, *, status: int | None = None, delay: float = 0.0,
                  invalid_json: bool = False, endpoint: str = NAMED_QUERY) -> None:
        """Make the next ``count`` calls to ``endpoint`` wait ``delay`` s, then fail.

        With neither ``status`` nor ``invalid_json`` the calls are only slow.
        """
        if endpoint not in ENDPOINTS:
            raise ValueError(f"endpoint must be one of {ENDPOINTS}")
        with self._changed:
            self._faults[endpoint].extend([Fault(status, delay, invalid_json)] * count)

    def hold(self) -> None:
        """Make named queries wait (up to HOLD_LIMIT_SECONDS) until ``release()``."""
        self._released.clear()

    def release(self) -> None:
        """Let held calls answer (those held one by one too), and stop holding."""
        self._released.set()
        with self._changed:
            self._gated = None
            for gate in self._gates:
                gate.set()

    def hold_each(self, endpoint: str = NAMED_QUERY) -> None:
        """Make each call to ``endpoint`` from now on wait (up to HOLD_LIMIT_SECONDS) for ``release_call``.

        A held named query computes its answer once released, from the batches
        as they are then: a test can change them between releases.
        """
        if endpoint not in (NAMED_QUERY, QUEUE):
            raise ValueError("named queries and queue requests can be held")
        with self._changed:
            self._gated = endpoint
            self._gates = []

    def release_call(self, number: int, timeout: float = 10.0) -> None:
        """Let the ``number``-th call held since ``hold_each`` answer (0 is the first).

        Waits up to ``timeout`` s for that call to arrive.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while len(self._gates) <= number:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"call #{number} did not arrive in {timeout} s")
                self._changed.wait(left)
            self._gates[number].set()

    # ------------------------------------------------------------ what happened

    def calls(self, customer: int, batch_ids: Iterable[int]) -> int:
        """Count named-query calls for exactly these batches of ``customer``, in any order."""
        wanted = _ids_key(batch_ids)
        with self._changed:
            return sum(n for (c, ids), n in self._named_query_calls.items()
                       if c == customer and parse_ids(ids) == wanted)

    def named_query_counts(self) -> dict[tuple[int, str], int]:
        """Return every named-query call count, keyed by (customer, ids as sent)."""
        with self._changed:
            return dict(self._named_query_calls)

    @property
    def total_named_queries(self) -> int:
        with self._changed:
            return sum(self._named_query_calls.values())

    def requests(self, endpoint: str | None = None) -> list[Call]:
        """Return the calls received so far, optionally only those to ``endpoint``."""
        with self._changed:
            return [c for c in self._calls if endpoint is None or c.endpoint == endpoint]

    def wait_for_calls(self, endpoint: str, count: int, timeout: float = 10.0) -> None:
        """Block until at least ``count`` calls to ``endpoint`` arrived; raise TimeoutError."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while sum(1 for call in self._calls if call.endpoint == endpoint) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"fewer than {count} {endpoint} calls after {timeout} s")
                self._changed.wait(left)

    def wait_for_named_queries(self, count: int, timeout: float = 10.0) -> None:
        """Block until at least ``count`` named queries arrived; raise TimeoutError."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while sum(self._named_query_calls.values()) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"fewer than {count} named queries after {timeout} s")
                self._changed.wait(left)

    # ------------------------------------------------------------ serving

    def before(self, call: Call) -> tuple[int, bytes, dict[str, str]] | None:
        """Record the call, then apply a queued fault, the credentials check, a hold or a delay."""
        gate = None
        with self._changed:
            self._calls.append(call)
            if call.endpoint == NAMED_QUERY:
                customer, _, ids = ROUTES[("GET", NAMED_QUERY)].match(call.path).groups()
                self._named_query_calls[(int(customer) if customer.isdigit() else -1, ids)] += 1
            if self._gated == call.endpoint:
                gate = threading.Event()
                self._gates.append(gate)
            self._changed.notify_all()
            queued = self._faults.get(call.endpoint)
            fault = queued.popleft() if queued else None
        if fault is not None:
            if fault.delay:
                time.sleep(fault.delay)
            if fault.status is not None:
                return fault.status, description("the fake DLCS was told to fail"), {}
            if fault.invalid_json:
                return 200, b'{"items": [ this is not JSON', {}
        if not self._authorised(call.authorization):
            return 401, description("bad credentials"), {"WWW-Authenticate": 'Basic realm="DLCS"'}
        if call.endpoint == NAMED_QUERY:
            self._released.wait(HOLD_LIMIT_SECONDS)
        if gate is not None:
            gate.wait(HOLD_LIMIT_SECONDS)
        if call.endpoint == NAMED_QUERY and self.delay:
            time.sleep(self.delay)
        return None

    def named_query_document(self, customer: int, ids: frozenset[int]) -> tuple[int, bytes]:
        with self._changed:
            fixed = self._documents.get((customer, ids))
        if fixed is not None:
            return 200, fixed
        return super().named_query_document(customer, ids)

    def _authorised(self, header: str | None) -> bool:
        if self.credentials is None:
            return True
        expected = "Basic " + base64.b64encode(":".join(self.credentials).encode()).decode()
        return hmac.compare_digest((header or "").encode(), expected.encode())


def image_assets(prefix: str, count: int, *, space: int = 1,
                 sizes: Sequence[tuple[int, int]] = ((4000, 3000), (2000, 3000), (1200, 1600))
                 ) -> list[Asset]:
    """Return ``count`` assets named ``{prefix}-{n}`` with a repeating pattern of sizes."""
    return [Asset(space, f"{prefix}-{n:05d}", *sizes[n % len(sizes)]) for n in range(count)]
