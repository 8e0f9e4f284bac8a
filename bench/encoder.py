"""Time writing a published manifest with the service's encoder against the standard library's.

For each size (canvases of DLCS images, answered by ``tests/fake_dlcs.py``
without a server), the named-query answer is parsed once as a rebuild parses
it (``SlimAnswer``), then ``manifest.write_document`` builds and writes the
manifest ``--repeat`` times with ``manifest_json.serialise`` (orjson) and as
often with the standard library's ``json.dumps`` in its place, alternating,
with the cyclic collector off as in a rebuild. Printed per size: the medians
and minimums of both, their ratio, and ``serialise`` of the same document
freshly parsed (the data cost's serialise in ``bench/final_completion.py``)
with each encoder.

Run: ``.venv/bin/python bench/encoder.py [--canvases 1000,10000,50000] [--repeat 7]``.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fake_dlcs import FakeDlcs, image_assets  # noqa: E402
from webhook import manifest_json  # noqa: E402
from webhook.domain import PaintedResource  # noqa: E402
from webhook.manifest import write_document  # noqa: E402
from webhook.named_query import SlimAnswer  # noqa: E402

CUSTOMER = 2
REGISTERED = {"type": "Manifest", "label": {"en": ["Encoder benchmark"]}}
ENCODERS: dict[str, Callable[[object], bytes]] = {
    "orjson": manifest_json.serialise,
    "json": manifest_json._standard_library,
}


def answer_of(size: int) -> tuple[bytes, list[PaintedResource]]:
    """The fake DLCS's named-query answer for ``size`` image assets, and their rows."""
    assets = image_assets("encoder", size)
    with FakeDlcs() as fake:
        batch_ids = []
        for number, start in enumerate(range(0, size, 100)):
            fake.add_batch(CUSTOMER, 1000 + number, assets[start:start + 100])
            batch_ids.append(1000 + number)
        _, raw = fake.named_query_document(CUSTOMER, frozenset(batch_ids))
    rows = [PaintedResource(f"c{n}", n, f"{CUSTOMER}/{asset.space}/{asset.id}",
                            label={"en": [f"Image {n}"]}) for n, asset in enumerate(assets)]
    return raw, rows


def write_with(encoder: Callable[[object], bytes], rows, answer) -> tuple[float, bytes]:
    """Build and write the manifest with ``encoder`` as ``serialise``; seconds and bytes."""
    manifest_json.serialise = encoder
    try:
        out = io.BytesIO()
        started = time.perf_counter()
        write_document(REGISTERED, rows, answer, out, base_url="https://presentation.example",
                       customer=CUSTOMER, manifest_id="encoder")
        return time.perf_counter() - started, out.getvalue()
    finally:
        manifest_json.serialise = ENCODERS["orjson"]


def measure(size: int, repeat: int) -> dict:
    raw, rows = answer_of(size)
    answer = json.loads(raw, object_hook=SlimAnswer().object_hook)
    writes: dict[str, list[float]] = {name: [] for name in ENCODERS}
    for _ in range(repeat):
        for name, encoder in ENCODERS.items():
            seconds, text = write_with(encoder, rows, answer)
            writes[name].append(seconds)
    document = json.loads(text)
    fresh = {}
    for name, encoder in ENCODERS.items():
        times = []
        for _ in range(repeat):
            started = time.perf_counter()
            encoder(document)
            times.append(time.perf_counter() - started)
        fresh[name] = statistics.median(times)
    return {"size": size, "mb": len(text) / 2**20, "writes": writes, "fresh": fresh}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--canvases", default="1000,10000,50000")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)
    gc.disable()  # as a rebuild runs (rebuild._collector_paused)
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"machine: {os.cpu_count()} cores, {platform.machine()}, load average {load}; "
          f"python {platform.python_version()}; {args.repeat} alternating runs a size")
    print(f"{'canvases':>8} {'published':>9}  {'write_document: orjson':>24} {'json':>16} "
          f"{'orjson/json':>11}  {'fresh serialise: orjson':>24} {'json':>8}")
    for size in sorted(int(c) for c in args.canvases.split(",") if c):
        r = measure(size, args.repeat)
        fast, slow = r["writes"]["orjson"], r["writes"]["json"]
        print(f"{size:>8} {r['mb']:>7.1f}MB  {statistics.median(fast) * 1000:>9.0f} ms "
              f"(min {min(fast) * 1000:.0f}) {statistics.median(slow) * 1000:>6.0f} ms "
              f"(min {min(slow) * 1000:.0f}) {statistics.median(fast) / statistics.median(slow):>10.2f}x"
              f"  {r['fresh']['orjson'] * 1000:>21.0f} ms {r['fresh']['json'] * 1000:>5.0f} ms",
              flush=True)


if __name__ == "__main__":
    main()
