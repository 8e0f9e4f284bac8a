"""Manifests in every state that ``status``, the listing and the console show.

Each is made through the service's HTTP interface with the DLCS mocked by
``responses``; two published ones then get what only a dead or busy worker
can leave behind (a rebuild claim that expired, or one still held), set in
their rows as such a worker leaves them. Use with an app whose settings have ``DLCS_API_URL = API``
(``api_settings``), so that a registration without batches is queued.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from dataclasses import dataclass

import responses

from tests.conftest import ORCHESTRATOR, sample, signed_headers
from webhook.model_base import utcnow
from webhook.models import Manifest

API = "https://api.dlcs.test"
CUSTOMER = 2


@dataclass(frozen=True)
class Made:
    """A manifest made by ``make_every_state``: its id, state and a part of its error."""

    slug: str
    batch: int | None
    state: str
    error: str | None
    missing: int = 0


# In sort order of their ids.
EVERY_STATE = (
    Made("complete", 2001, "complete", None),
    Made("crashed", 2002, "rebuild-failed", "interrupted"),
    Made("failed", 2003, "rebuild-failed", "500"),
    Made("ingesting", 2004, "ingesting", None),
    Made("missing-one", 2005, "complete", None, missing=1),
    Made("queue-interrupted", None, "ingesting",
         "Registering the assets at the DLCS was interrupted"),
    Made("queue-stopped", None, "ingesting", "Registering the assets at the DLCS stopped"),
    Made("queueing", None, "ingesting", None),
    Made("rebuilding", 2006, "ingesting", None),
)


def api_settings(settings):
    """The test settings with a DLCS API, so that registrations without batches queue."""
    return dataclasses.replace(settings, dlcs_api_url=API,
                               dlcs_credentials=("the-key", "the-secret"))


def registration(batch: int | None, label: str) -> bytes:
    document = json.loads(sample("registration-2-assets.json"))
    document["label"] = {"en": [label]}
    if batch is None:
        del document["batches"]
    else:
        document["batches"] = [batch]
    return json.dumps(document).encode()


def notification(batch: int, customer: int = CUSTOMER) -> bytes:
    document = json.loads(sample("notification-current.json"))
    document.update(id=batch, customer=customer)
    return json.dumps(document).encode()


def named_query(batch: int, customer: int = CUSTOMER) -> re.Pattern:
    return re.compile(re.escape(f"{ORCHESTRATOR}/iiif-resource/v3/{customer}/batch-query/"
                                f"{batch}?cacheBust=") + "[^&]+$")


def register(client, admin, slug: str, batch: int | None, customer: int = CUSTOMER):
    response = client.put(f"/{customer}/manifests/{slug}",
                          data=registration(batch, f"The {slug} manifest"), headers=admin)
    assert response.status_code == 202, response.get_json()
    return response


def deliver(client, batch: int, customer: int = CUSTOMER, msg_id: str | None = None):
    body = notification(batch, customer)
    return client.post("/webhooks/batch-completed", data=body,
                       headers=signed_headers(body, msg_id))


def one_asset_answer() -> bytes:
    """The named-query answer without its second asset (bar)."""
    document = json.loads(sample("named-query-2-assets.json"))
    document["items"] = document["items"][:1]
    return json.dumps(document).encode()


def make(client, admin, made: Made) -> None:
    """Bring one manifest into ``made.state``."""
    with responses.RequestsMock() as dlcs:
        if made.batch is None:
            dlcs.post(f"{API}/customers/{CUSTOMER}/queue", status=500,
                      json={"description": "the DLCS is down"})
            answer = client.put(f"/{CUSTOMER}/manifests/{made.slug}",
                                data=registration(None, "Queued"), headers=admin)
            assert answer.status_code == 503, answer.get_json()
            if made.slug in ("queueing", "queue-interrupted"):
                # What a worker leaves behind while it queues the assets (its claim
                # runs), or once it died doing so (its claim is over).
                lease = dt.timedelta(minutes=5 if made.slug == "queueing" else -5)
                Manifest.update(queue_error=None, queueing_until=utcnow() + lease).where(
                    Manifest.slug == made.slug).execute()
            return
        register(client, admin, made.slug, made.batch)
        if made.slug == "ingesting":
            return
        if made.slug == "failed":
            dlcs.get(named_query(made.batch), status=500)
            assert deliver(client, made.batch).status_code == 503
            return
        body = one_asset_answer() if made.missing else sample("named-query-2-assets.json")
        dlcs.get(named_query(made.batch), body=body, content_type="application/json")
        answer = deliver(client, made.batch)
        assert answer.status_code == 200, answer.get_json()
    if made.slug in ("crashed", "rebuilding"):
        # What a worker leaves behind that claimed a rebuild (an operator's, say)
        # and then died (its lease is over) or is still at it (the lease runs).
        lease = dt.timedelta(minutes=-5 if made.slug == "crashed" else 5)
        Manifest.update(needs_rebuild=True, rebuild_owner="a-worker",
                        rebuild_lease_until=utcnow() + lease).where(
            Manifest.slug == made.slug).execute()


def make_every_state(client, admin) -> tuple[Made, ...]:
    """Register one manifest of customer 2 per entry of EVERY_STATE and bring it there."""
    for made in EVERY_STATE:
        make(client, admin, made)
    return EVERY_STATE
