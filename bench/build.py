"""Time the rebuild path of large manifests against the cost of the data it moves.

For each size (canvases), a manifest is registered through ``PUT`` (the Flask
test client) on a SQLite database with a FileStore, its batches are completed
through the service, and the named query is answered by the fake DLCS over
loopback HTTP. Printed per size:

- ``first``: the delivery that completes the last batch (named query, build,
  store, and the first write-back of every canvas-painting row);
- ``rebuild``: ``Rebuilder.rebuild_now`` again (rows unchanged, so no row writes);
  the median of ``--repeat`` runs;
- ``build``: the pure build (``build_document``, written as a rebuild writes it) on the parsed answer (median);
- ``data``: the unavoidable data cost, ``json.loads`` of the named-query answer
  plus ``serialise`` of the published document (the service's own encoding, as in
  ``bench/final_completion.py``; median);
- ``ratio``: rebuild / data, i.e. how many times the bare JSON work the whole
  path costs.

Run: ``.venv/bin/python bench/build.py [--sizes 1000,10000] [--repeat 3] [--no-gc] [--log]``.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from tests.fake_dlcs import FakeDlcs, image_assets  # noqa: E402
from webhook import create_app, db  # noqa: E402
from webhook.config import Settings  # noqa: E402
from tests.building import build_manifest  # noqa: E402
from webhook.manifest_json import serialise  # noqa: E402
from webhook.models import Manifest  # noqa: E402
from webhook.paintings import CanvasPainting  # noqa: E402

CUSTOMER = 5
ADMIN_TOKEN = "bench-admin-token-0123456789"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def timed(action: Callable[[], object]) -> tuple[float, object]:
    """Run ``action`` once; return the seconds it took and its result."""
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def median_time(action: Callable[[], object], repeat: int) -> float:
    return statistics.median(timed(action)[0] for _ in range(repeat))


def notification(batch_id: int, count: int) -> bytes:
    return json.dumps({
        "id": batch_id, "customer": CUSTOMER, "count": count, "completed": count,
        "errors": 0, "superseded": False, "submitted": "2025-02-20T12:28:01.517392Z",
        "finished": "2025-02-20T12:30:15.123456Z"}).encode()


def registration(slug: str, batches: dict[int, list]) -> bytes:
    painted = [{"canvasPainting": {"canvasId": f"c{n}", "canvasOrder": n,
                                   "label": {"en": [f"Image {n}"]}},
                "asset": {"id": asset.id, "space": asset.space,
                          "origin": f"https://origin.example/{asset.id}.tif"}}
               for n, asset in enumerate(a for assets in batches.values() for a in assets)]
    return json.dumps({"type": "Manifest", "label": {"en": [f"Benchmark {slug}"]},
                       "paintedResources": painted, "batches": list(batches)}).encode()


def measure(size: int, batch_size: int, repeat: int, workdir: Path) -> dict:
    """Register, complete and rebuild one manifest of ``size`` canvases; return timings."""
    slug = f"bench-{size}"
    assets = image_assets(slug, size)
    batches = {100_000 + n: assets[start:start + batch_size]
               for n, start in enumerate(range(0, size, batch_size))}
    with FakeDlcs() as fake:
        for batch_id, members in batches.items():
            fake.add_batch(CUSTOMER, batch_id, members)
        settings = Settings.from_env({
            "DATABASE_URL": f"sqlite:///{workdir}/{slug}.db",
            "STORAGE_URL": f"file://{workdir}/manifests",
            "PUBLIC_BASE_URL": "https://presentation.example",
            "WEBHOOK_SECRETS": SECRET,
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "DLCS_ORCHESTRATOR_URL": fake.url,
            "DLCS_TIMEOUT_SECONDS": "300",
        })
        app = create_app(settings)
        services = app.extensions["webhook.services"]
        try:
            body = registration(slug, batches)
            register_s, response = timed(lambda: app.test_client().put(
                f"/{CUSTOMER}/manifests/{slug}", data=body,
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}))
            assert response.status_code == 202, response.get_data(as_text=True)[:500]

            *early, last = batches
            for batch_id in early:
                outcome = services.intake.receive(f"bench-{batch_id}", "webhook",
                                          notification(batch_id, len(batches[batch_id])))
                assert outcome.outcome == "batch-completed", outcome
            first_s, outcome = timed(lambda: services.intake.receive(
                f"bench-{last}", "webhook", notification(last, len(batches[last]))))
            assert outcome.outcome == "manifest-completed", outcome
            assert fake.calls(CUSTOMER, batches) == 1

            rebuild_s = median_time(lambda: services.rebuild.rebuild_now(CUSTOMER, slug), repeat)

            # The inputs of the pure build, and the data it moves.
            ids = ",".join(map(str, batches))
            with requests.Session() as session:
                raw = session.get(f"{fake.url}/iiif-resource/v3/{CUSTOMER}/batch-query/{ids}",
                                  params={"cacheBust": "bench"}, timeout=300).content
            answer = json.loads(raw)
            manifest = Manifest.find(CUSTOMER, slug)
            rows, _ = CanvasPainting.for_rebuild(manifest.id)
            build = lambda: build_manifest(  # noqa: E731
                manifest.document, rows, answer, base_url=settings.public_base_url,
                customer=CUSTOMER, manifest_id=slug)
            build_s = median_time(build, repeat)
            document = build().document
            assert len(document["items"]) == size
            # The published document is streamed from the store; read it whole here.
            published_body = b"".join(services.reading.published(CUSTOMER, slug).body)
            assert published_body == serialise(document)

            loads_s = median_time(lambda: json.loads(raw), repeat)
            dumps_s = median_time(lambda: serialise(document), repeat)
        finally:
            db.dispose()
    data_s = loads_s + dumps_s
    return {"size": size, "batches": len(batches), "answer_mb": len(raw) / 2**20,
            "published_mb": len(published_body) / 2**20, "register": register_s,
            "first": first_s, "rebuild": rebuild_s, "build": build_s, "loads": loads_s,
            "dumps": dumps_s, "data": data_s, "ratio": rebuild_s / data_s,
            "first_ratio": first_s / data_s}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,50000",
                        help="comma-separated canvas counts (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=100,
                        help="assets per DLCS batch (default: %(default)s, the DLCS default)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs per median (default: %(default)s)")
    parser.add_argument("--log", action="store_true",
                        help="show the service's INFO log lines (rebuild timings) on stderr")
    parser.add_argument("--no-gc", action="store_true",
                        help="disable the cyclic garbage collector (shows its share)")
    args = parser.parse_args(argv)
    if args.no_gc:
        gc.disable()
    # A handler of our own keeps the service's JSON log lines out of the table.
    handler = logging.StreamHandler()
    handler.setLevel(logging.INFO if args.log else logging.WARNING)
    logging.basicConfig(handlers=[handler], level=logging.INFO)
    sizes = [int(size) for size in args.sizes.split(",") if size.strip()]

    load = " ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"machine: {os.cpu_count()} cores, {platform.machine()}, {platform.platform()}, "
          f"load average {load}")
    print(f"python {platform.python_version()} ({platform.python_implementation()}), "
          f"SQLite {sqlite3.sqlite_version}; batches of {args.batch_size}, "
          f"medians of {args.repeat}, cyclic GC {'off' if args.no_gc else 'on'}")
    header = (f"{'canvases':>9} {'batches':>7} {'answer':>9} {'published':>9} {'register':>9} "
              f"{'first':>8} {'rebuild':>8} {'build':>8} {'loads':>7} {'dumps':>7} "
              f"{'data':>7} {'ratio':>6} {'first/data':>10}")
    print(header)
    with tempfile.TemporaryDirectory(prefix="bench-build-") as workdir:
        for size in sizes:
            r = measure(size, args.batch_size, args.repeat, Path(workdir))
            print(f"{r['size']:>9} {r['batches']:>7} {r['answer_mb']:>7.1f}MB "
                  f"{r['published_mb']:>7.1f}MB {r['register']:>8.2f}s {r['first']:>7.2f}s "
                  f"{r['rebuild']:>7.2f}s {r['build']:>7.2f}s {r['loads']:>6.2f}s "
                  f"{r['dumps']:>6.2f}s {r['data']:>6.2f}s {r['ratio']:>5.1f}x "
                  f"{r['first_ratio']:>9.1f}x", flush=True)
    load = " ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"load average at the end: {load}")


if __name__ == "__main__":
    main()
