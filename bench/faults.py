"""Run the fault scenarios of ``tests/faults.py`` at full size and print what they counted.

Each scenario gets a fresh PostgreSQL database, a fresh fake DLCS and a bucket
of its own in one moto server, and asserts that nothing was lost (see
``tests/faults.check_nothing_lost``); ``tests/test_faults.py`` runs the same
scenarios smaller in CI.

- ``load``: 100 manifests x 4 batches, every completion delivered at once by
  retrying senders, 4 gunicorn workers, while 20% of named queries fail (500, a
  timeout, invalid JSON) and S3 is cut off for a window;
- ``crash``: a worker killed with SIGKILL while it holds rebuilds waiting on the
  DLCS; redeliveries finish them once the claims' lease has run out;
- ``database``: PostgreSQL cut off (through a TCP proxy) under load.

Run: ``.venv/bin/python bench/faults.py [--scenarios load,crash,database]
[--manifests 100] [--batches 4] [--workers 4] [--fault-rate 0.2] [--s3-outage 5]``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import faults  # noqa: E402
from tests.fake_dlcs import FakeDlcs  # noqa: E402
from tests.servers import start_moto_server  # noqa: E402


def show(name: str, counts: dict, seconds: float) -> None:
    print(f"\n== {name} ({seconds:.0f} s): nothing lost")
    width = max(len(key) for key in counts)
    for key, value in counts.items():
        print(f"  {key:<{width}}  {value}")


@contextlib.contextmanager
def _shown_on_failure(captured: io.StringIO):
    try:
        yield
    except BaseException:
        print(captured.getvalue()[-20000:])
        raise


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", default="load,crash,database")
    parser.add_argument("--manifests", type=int, default=100)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--senders", type=int, default=32, help="concurrent sending threads")
    parser.add_argument("--fault-rate", type=float, default=0.2,
                        help="share of named queries that fail")
    parser.add_argument("--s3-outage", type=float, default=5.0, help="seconds S3 is cut off")
    parser.add_argument("--db-outage", type=float, default=5.0,
                        help="seconds PostgreSQL is cut off")
    parser.add_argument("--crash-manifests", type=int, default=12)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--postgres-url", default=os.environ.get(
        "WEBHOOK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    args = parser.parse_args(argv)
    scenarios = [s for s in args.scenarios.split(",") if s]

    load = " ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"machine: {os.cpu_count()} cores, {platform.platform()}, load average {load}")
    moto = start_moto_server()
    try:
        for scenario in scenarios:
            started = time.monotonic()
            # The scenarios print each gunicorn's log when it stops: kept for a failure only.
            captured = io.StringIO()
            with faults.fresh_postgres(args.postgres_url) as database_url, FakeDlcs() as fake, \
                    _shown_on_failure(captured), contextlib.redirect_stdout(captured):
                if scenario == "load":
                    counts = faults.load_with_faults(
                        database_url, moto, fake, manifests=args.manifests,
                        batches=args.batches, workers=args.workers, senders=args.senders,
                        dlcs_fault_rate=args.fault_rate, s3_outage_seconds=args.s3_outage,
                        seed=args.seed)
                elif scenario == "crash":
                    counts = faults.crash_during_rebuilds(
                        database_url, moto, fake, manifests=args.crash_manifests,
                        workers=args.workers, seed=args.seed + 1)
                elif scenario == "database":
                    counts = faults.database_outage(
                        database_url, moto, fake, manifests=args.manifests // 2,
                        batches=args.batches, workers=args.workers, senders=args.senders,
                        outage_seconds=args.db_outage, seed=args.seed + 2)
                else:
                    parser.error(f"unknown scenario {scenario!r}")
                if fake.errors:
                    raise AssertionError(f"the fake DLCS failed: {fake.errors!r}")
            show(scenario, counts, time.monotonic() - started)
    finally:
        moto.stop()


if __name__ == "__main__":
    main()
