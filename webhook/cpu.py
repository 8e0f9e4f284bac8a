"""Run CPU-bound work so that it does not stall the other requests of a gevent worker.

Under gevent a worker's requests share one thread, and Python code that computes
for a second (parsing a 20 MB named-query answer, building and writing a
10,000-canvas manifest) lets no other request of that worker run meanwhile: a
delivery or a health check that reaches it waits for the whole computation.
``run`` hands such work to gevent's pool of native threads and waits for it
cooperatively; the interpreter then switches between it and the other requests
every few milliseconds (``sys.getswitchinterval()``), as between any threads.
Outside gevent (the threaded worker, the CLI, tests) it simply calls the function.
"""

from __future__ import annotations

import sys
from typing import Callable, TypeVar

T = TypeVar("T")


def cooperative() -> bool:
    """Tell whether this process runs its requests as greenlets (gevent has patched threading)."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and monkey.is_module_patched("threading")


def run(func: Callable[..., T], /, *args, **kwargs) -> T:
    """Return ``func(*args, **kwargs)``, computed off the gevent hub when gevent is in use."""
    if not cooperative():
        return func(*args, **kwargs)
    import gevent

    succeeded, value = gevent.get_hub().threadpool.apply(_outcome, (func, args, kwargs))
    if not succeeded:
        raise value
    return value


def _outcome(func: Callable, args: tuple, kwargs: dict) -> tuple[bool, object]:
    # An error is handed back, not raised in the pool's thread: gevent would
    # print its traceback there, although the caller handles it.
    try:
        return True, func(*args, **kwargs)
    except BaseException as exc:  # noqa: BLE001 - re-raised by run() in the caller
        return False, exc
