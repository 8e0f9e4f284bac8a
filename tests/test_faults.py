"""Nothing is lost under faults: a short run of each scenario in ``tests/faults.py``.

The same scenarios run at full size from ``bench/faults.py``. Here: 20 manifests
of 3 batches with 4 workers while the DLCS fails a fifth of its named queries
and S3 goes away for a while; a worker killed in the middle of rebuilds; and
PostgreSQL cut off under load. Each prints what it counted (``pytest -s``).
"""

from __future__ import annotations

import pytest

from tests import faults

pytestmark = pytest.mark.e2e


def test_nothing_is_lost_when_the_dlcs_and_s3_fail(postgres_url, moto_server, fake_dlcs):
    counts = faults.load_with_faults(postgres_url, moto_server, fake_dlcs, manifests=20,
                                     batches=3, workers=4, senders=16, s3_outage_seconds=2.0)
    print(counts)
    # The faults did happen, and each cost a retry rather than a delivery.
    assert sum(counts[f"DLCS faults: {kind}"] for kind in faults.DLCS_FAULTS) > 0
    assert counts["S3 connections refused or reset"] > 0
    assert counts.get("503 rebuild-failed", 0) > 0


def test_a_worker_killed_during_rebuilds_loses_nothing(postgres_url, moto_server, fake_dlcs):
    counts = faults.crash_during_rebuilds(postgres_url, moto_server, fake_dlcs, manifests=6,
                                          lease=3)
    print(counts)
    assert counts.get("503 rebuild-in-progress", 0) > 0  # the dead worker's claims were waited out


def test_a_database_outage_loses_nothing(postgres_url, moto_server, fake_dlcs):
    counts = faults.database_outage(postgres_url, moto_server, fake_dlcs, manifests=15,
                                    batches=3, outage_seconds=2.0)
    print(counts)
    assert counts.get("503 unavailable", 0) > 0
