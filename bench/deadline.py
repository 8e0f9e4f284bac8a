"""Measure how long a delivery waits when the DLCS hangs or trickles its named-query answer.

The service runs as the README runs it (gunicorn with ``gunicorn.conf.py``, 2
workers x 4 threads, a SQLite file and a folder of manifests). Its
Orchestrator is a loopback server that either never answers (``hung``),
sends its headers, then its body one byte every 0.5 s (``trickle``; 200 bytes,
so 100 s in all), or sends its status line and headers that way too
(``headers``). For each ``DLCS_TIMEOUT_SECONDS`` given, the bench registers
a manifest, delivers its last completion and times the answer (a ``503`` with
``Retry-After``), printing the seconds, the ratio to ``DLCS_TIMEOUT_SECONDS``
(the baseline, configured in the same run) and to the rebuild's deadline, the
attempts the server saw and the detail of the answer.

``--root`` runs the service from another checkout (e.g. before a change), with
this bench's servers and client.

Run: ``.venv/bin/python bench/deadline.py [--timeouts 30,5] [--root PATH]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import ADMIN_TOKEN, SECRET, sample, signed_headers  # noqa: E402
from tests.servers import start_gunicorn  # noqa: E402
from tests.stalling import HangingServer, TricklingServer  # noqa: E402

_OWN_PREFIXES = ("AWS_", "DLCS_", "WEBHOOK_", "SNS_", "GUNICORN_", "REBUILD_")
_OWN_NAMES = {"DATABASE_URL", "STORAGE_URL", "PUBLIC_BASE_URL", "ADMIN_TOKEN",
              "PROMETHEUS_MULTIPROC_DIR"}


def measure(root: Path, dlcs: HangingServer | TricklingServer, timeout: int) -> dict:
    """Deliver a final completion to a service whose DLCS is ``dlcs``; time the answer."""
    with tempfile.TemporaryDirectory(prefix="bench-deadline-") as scratch:
        env = {name: value for name, value in os.environ.items()
               if not name.startswith(_OWN_PREFIXES) and name not in _OWN_NAMES}
        env.update({"DATABASE_URL": f"sqlite:///{scratch}/webhook.db",
                    "STORAGE_URL": f"file://{scratch}/manifests",
                    "PUBLIC_BASE_URL": "https://presentation.example",
                    "WEBHOOK_SECRETS": SECRET, "ADMIN_TOKEN": ADMIN_TOKEN,
                    "DLCS_ORCHESTRATOR_URL": dlcs.url,
                    "DLCS_TIMEOUT_SECONDS": str(timeout)})
        server = start_gunicorn(env, cwd=root)
        try:
            admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            registered = requests.put(f"{server.url}/2/manifests/letters", headers=admin,
                                      data=sample("registration-2-assets.json"), timeout=30)
            assert registered.status_code == 202, registered.text
            body = sample("notification-current.json")
            started = time.monotonic()
            answer = requests.post(f"{server.url}/webhooks/batch-completed", data=body,
                                   headers=signed_headers(body, "msg_bench"), timeout=600)
            seconds = time.monotonic() - started
        finally:
            server.stop()
            server.cleanup()
    return {"seconds": seconds, "status": answer.status_code,
            "retry_after": answer.headers.get("Retry-After"), "attempts": dlcs.requests,
            "detail": answer.json().get("detail", answer.json().get("outcome"))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--timeouts", default="30,5",
                        help="DLCS_TIMEOUT_SECONDS values to measure, comma-separated")
    parser.add_argument("--root", type=Path, default=ROOT,
                        help="the checkout whose service is measured")
    args = parser.parse_args(argv)

    load = " ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"machine: {os.cpu_count()} cores, {platform.platform()}, load average {load}")
    print(f"service from {args.root}")
    print(f"{'DLCS':<8} {'timeout':>7} {'deadline':>8} {'answered':>9} {'x timeout':>9} "
          f"{'x deadline':>10} {'status':>6} {'retry-after':>11} {'attempts':>8}  detail")
    for timeout in (int(t) for t in args.timeouts.split(",")):
        deadline = min(20, 2 * timeout)
        for name, dlcs in (("hung", HangingServer()),
                           ("trickle", TricklingServer(length=200, interval=0.5)),
                           ("headers", TricklingServer(length=200, interval=0.5,
                                                       headers=True))):
            with dlcs:
                figures = measure(args.root, dlcs, timeout)
            print(f"{name:<8} {timeout:>6}s {deadline:>7}s {figures['seconds']:>8.1f}s "
                  f"{figures['seconds'] / timeout:>9.2f} {figures['seconds'] / deadline:>10.2f} "
                  f"{figures['status']:>6} {figures['retry_after'] or '-':>11} "
                  f"{figures['attempts']:>8}  {figures['detail']}")


if __name__ == "__main__":
    main()
