"""The stand-in DLCS API's assets: which exist, their manifests and their ingest errors.

:class:`webhook.devdlcs.DevDlcs` routes these calls here:

- ``POST /customers/{c}/allImages`` (which of these assets exist),
- ``PATCH /customers/{c}/allImages`` (add/remove/replace a manifest id in their
  ``manifests``),
- ``GET /customers/{c}/queue/batches/{b}/assets?page=&pageSize=`` (a batch's
  assets, paged as the DLCS pages a Hydra Collection),

and asks it for the canvases of the ``manifest-query`` named query. Requests are
validated as the DLCS validates them (duplicates, another customer's assets, at
most 500 ids, only the ``manifests`` field) so a client that passes here would
pass there; documents have the shapes of ``tests/samples/assets-*.json`` and
``batch-assets-page-*.json``.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from webhook.domain import ascii_digits


#: The DLCS API's MaxImageListSize: most ids in one allImages request.
MAX_IMAGE_LIST = 500
#: The DLCS API's PageSize default and the largest pageSize it honours.
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 100, 500


@dataclass
class _Record:
    customer: int
    space: int
    model_id: str
    width: int
    height: int
    canvas: bytes                       # the pre-rendered named-query canvas
    batch: int | None = None            # the batch it was last ingested in
    manifests: list[str] = field(default_factory=list)
    error: str = ""
    created: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))


class AssetStore:
    """Every asset the stand-in DLCS holds, by ``"{customer}/{space}/{id}"``."""

    def __init__(self, public_host: str) -> None:
        self.public_host = public_host  # of the image services the Images name
        self._lock = threading.Lock()
        self._records: dict[str, _Record] = {}
        self._batches: dict[tuple[int, int], list[str]] = {}
        # Kept as it changes: every named query asks, and scanning 50,000
        # records each time would be the benchmark's cost, not the service's.
        self._failed: set[str] = set()

    # ------------------------------------------------------------ set-up and inspection

    def add(self, customer: int, assets: Iterable, canvases: Iterable[bytes],
            batch_id: int | None = None) -> None:
        """Hold these assets (``Asset`` values) with their named-query canvases."""
        with self._lock:
            ids = []
            for asset, canvas in zip(assets, canvases):
                key = f"{customer}/{asset.space}/{asset.id}"
                record = self._records.get(key)
                if record is None:
                    record = self._records[key] = _Record(customer, asset.space, asset.id,
                                                          asset.width, asset.height, canvas)
                # Re-ingested: the new batch and canvas; manifests stay, as in the DLCS.
                record.canvas, record.error = canvas, ""
                self._failed.discard(key)
                if batch_id is not None:
                    record.batch = batch_id
                ids.append(key)
            if batch_id is not None:
                self._batches[(customer, batch_id)] = ids

    def fail(self, errors: Mapping[str, str]) -> None:
        """Record an ingest error for each asset id; failed assets leave the named queries."""
        with self._lock:
            for asset_id, text in errors.items():
                self._records[asset_id].error = text
                self._failed.add(asset_id)

    def failed(self) -> frozenset[str]:
        """Return the ids of the assets whose ingest failed."""
        with self._lock:
            return frozenset(self._failed)

    def manifests(self, asset_id: str) -> list[str]:
        """Return the manifest ids an asset is tagged with (empty for an unknown asset)."""
        with self._lock:
            record = self._records.get(asset_id)
            return list(record.manifests) if record else []

    def tagged(self, customer: int, manifest_id: str) -> list[bytes]:
        """Return the canvases of the ``manifest-query`` named query: tagged, not failed."""
        with self._lock:
            return [record.canvas for record in self._records.values()
                    if record.customer == customer and manifest_id in record.manifests
                    and not record.error]

    # ------------------------------------------------------------ the API calls

    def lookup(self, customer: int, document: object, root: str) -> tuple[int, bytes]:
        """Answer ``POST /customers/{c}/allImages``: the named assets that exist."""
        ids, problem = _member_ids(customer, document)
        if problem:
            return 400, _error(problem)
        with self._lock:
            found = [self._records[key] for key in ids if key in self._records]
            return 200, _collection(f"{root}/customers/{customer}/allImages",
                                    [_image(record, root, self.public_host) for record in found])

    def patch(self, customer: int, document: object, root: str) -> tuple[int, bytes]:
        """Answer ``PATCH /customers/{c}/allImages``: change the assets' ``manifests``."""
        ids, problem = _member_ids(customer, document)
        if problem:
            return 400, _error(problem)
        if document.get("field") != "manifests":
            return 400, _error(f"Unsupported field '{document.get('field')}'")
        value = document.get("value") or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return 400, _error("value must be a list of strings")
        operation = document.get("operation")
        if operation not in ("add", "remove", "replace"):
            return 400, _error(f"Unsupported operation '{operation}'")
        with self._lock:
            found = [self._records[key] for key in ids if key in self._records]
            for record in found:
                if operation == "add":
                    # array_agg(distinct ...): each id once.
                    record.manifests = sorted(set(record.manifests) | set(value))
                elif operation == "remove":
                    record.manifests = [m for m in record.manifests if m not in value]
                else:
                    record.manifests = list(value)
            return 200, _collection(f"{root}/customers/{customer}/allImages",
                                    [_image(record, root, self.public_host) for record in found])

    def batch_page(self, customer: int, batch_id: int, query: Mapping[str, list[str]],
                   root: str) -> tuple[int, bytes]:
        """Answer ``GET .../queue/batches/{b}/assets``: one page of the batch's assets."""
        with self._lock:
            ids = self._batches.get((customer, batch_id))
            if ids is None:
                return 404, _error("Batch not found")
            page, size = _paging(query)
            records = [self._records[key] for key in ids]
            members = [_image(record, root, self.public_host)
                       for record in records[(page - 1) * size:page * size]]
        base = f"{root}/customers/{customer}/queue/batches/{batch_id}/assets"
        return 200, _collection(base, members, total=len(records), page=page, size=size)


def _member_ids(customer: int, document: object) -> tuple[list[str], str | None]:
    """Check an allImages body as the DLCS's ImageIdListValidator does."""
    members = document.get("member") if isinstance(document, dict) else None
    if not isinstance(members, list) or not members:
        return [], "Members cannot be empty"
    ids = [m.get("id") if isinstance(m, dict) else None for m in members]
    if not all(isinstance(i, str) and i.count("/") == 2 for i in ids):
        return [], "Every member needs an id of the form customer/space/asset"
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        return [], f"Members contains {len(dupes)} duplicate Id(s): {','.join(dupes)}"
    if len(ids) > MAX_IMAGE_LIST:
        return [], f"Maximum assets in single batch is {MAX_IMAGE_LIST}"
    if any(i.split("/", 1)[0] != str(customer) for i in ids):
        return [], "Cannot request images for different customer"
    return ids, None


def _paging(query: Mapping[str, list[str]]) -> tuple[int, int]:
    """Read page and pageSize as the DLCS does: bad or out-of-range values fall back."""
    def number(name: str) -> int:
        values = query.get(name, [])
        return int(values[0]) if values and ascii_digits(values[0]) else 0
    page, size = number("page"), number("pageSize")
    if not 0 < size <= MAX_PAGE_SIZE:
        size = DEFAULT_PAGE_SIZE
    return max(page, 1), size


def _utc(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")  # as the DLCS writes dates


def _image(record: _Record, root: str, public_host: str) -> dict:
    """The DLCS API's Hydra Image for an asset (null fields left out, as the DLCS does)."""
    path = f"{record.customer}/{record.space}/{record.model_id}"
    at = f"{root}/customers/{record.customer}/spaces/{record.space}/images/{record.model_id}"
    image = {
        "@context": f"{root}/contexts/Image.jsonld",
        "@id": at,
        "@type": "vocab:Image",
        "id": record.model_id,
        "space": record.space,
        "imageService": f"{public_host}/iiif-img/{path}",
        "thumbnailImageService": f"{public_host}/thumbs/{path}",
        "created": _utc(record.created),
        "origin": f"https://origin.test/{record.model_id}.jpg",
        "maxUnauthorised": -1,
        "finished": _utc(record.created),
        "ingesting": False,
        "error": record.error,
        "tags": [],
        "width": 0 if record.error else record.width,
        "height": 0 if record.error else record.height,
        "mediaType": "image/jpeg",
        "family": "I",
        "deliveryChannels": [{"channel": "iiif-img", "policy": "default"},
                             {"channel": "thumbs", "policy": "default"}],
        "roles": [],
        "manifests": list(record.manifests),
    }
    if record.batch is not None:
        image["batch"] = f"{root}/customers/{record.customer}/queue/batches/{record.batch}"
    return image


def _collection(at: str, members: list[dict], *, total: int | None = None,
                page: int = 1, size: int | None = None) -> bytes:
    """A Hydra Collection, with a PartialCollectionView when it is one page of several."""
    total = len(members) if total is None else total
    size = len(members) if size is None else size
    document: dict = {"@context": "http://www.w3.org/ns/hydra/context.jsonld", "@id": at,
                      "@type": "Collection", "totalItems": total, "pageSize": size,
                      "member": members}
    if total > len(members):
        pages = -(-total // size)
        view = {"@id": f"{at}?page={page}&pageSize={size}", "@type": "PartialCollectionView"}
        if page > 1:
            view["first"] = f"{at}?page=1&pageSize={size}"
            view["previous"] = f"{at}?page={page - 1}&pageSize={size}"
        if page < pages:
            view["next"] = f"{at}?page={page + 1}&pageSize={size}"
            view["last"] = f"{at}?page={pages}&pageSize={size}"
        document["view"] = {**view, "page": page, "pageSize": size, "totalPages": pages}
    return json.dumps(document).encode()


def _error(description: str) -> bytes:
    return json.dumps({"@context": "http://www.w3.org/ns/hydra/context.jsonld",
                       "@type": "Error", "description": description}).encode()
