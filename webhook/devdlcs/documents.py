"""What the stand-in DLCS answers and sends, as bytes: named-query canvases, batches, completions.

Pure functions over :class:`Asset` values, shaped like the DLCS's own documents
(``tests/samples/named-query-2-assets.json``, ``queue-response-201.json`` and
``notification-current.json``): no I/O, no clock unless passed in.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from dataclasses import dataclass

from webhook.signature import sign

#: Host of every id in the generated documents (the DLCS's public host, not ours).
PUBLIC_HOST = "https://dlcs.test"
PRESENTATION_3 = "http://iiif.io/api/presentation/3/context.json"
_DLCS_METADATA = [("String 1", ""), ("String 2", ""), ("String 3", ""), ("Number 1", "0"),
                  ("Number 2", "0"), ("Number 3", "0"), ("Tags", ""), ("Roles", "")]
_THUMBNAIL_SIDES = (1024, 400, 200, 100)


@dataclass(frozen=True)
class Asset:
    """An image the DLCS has ingested: its space, id and full size."""

    space: int
    id: str
    width: int = 4000
    height: int = 3000

    def asset_id(self, customer: int) -> str:
        """Return ``"{customer}/{space}/{id}"``, how the webhook names the asset."""
        return f"{customer}/{self.space}/{self.id}"


def canvas_id(customer: int, asset: Asset, number: int) -> str:
    """Return the DLCS canvas id of an asset: ``.../iiif-img/{c}/{s}/{a}/canvas/c/{n}``."""
    return f"{PUBLIC_HOST}/iiif-img/{customer}/{asset.space}/{asset.id}/canvas/c/{number}"


def image_service_id(customer: int, asset: Asset) -> str:
    """Return the ImageService3 id an asset's canvas gets (to recognise it in a manifest)."""
    return f"{PUBLIC_HOST}/iiif-img/{customer}/{asset.space}/{asset.id}"


def _scaled(width: int, height: int, side: int) -> tuple[int, int]:
    """Fit (width, height) into a ``side`` x ``side`` box, keeping the aspect ratio."""
    scale = min(1.0, side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _label(text: str) -> dict:
    return {"none": [text]}


def _image_services(path: str, level: int, extra: dict) -> list[dict]:
    return [
        {"@context": "http://iiif.io/api/image/2/context.json",
         "@id": f"{PUBLIC_HOST}/{path.replace('/', '/v2/', 1)}", "@type": "ImageService2",
         "profile": f"http://iiif.io/api/image/2/level{level}.json", **extra},
        {"@context": "http://iiif.io/api/image/3/context.json",
         "id": f"{PUBLIC_HOST}/{path}", "type": "ImageService3",
         "profile": f"level{level}", **extra},
    ]


def named_query_canvas(customer: int, asset: Asset, number: int) -> dict:
    """Return the named-query canvas the DLCS answers for an image asset."""
    path = f"{customer}/{asset.space}/{asset.id}"
    canvas = canvas_id(customer, asset, number)
    sizes = [dict(zip(("width", "height"), _scaled(asset.width, asset.height, side)))
             for side in _THUMBNAIL_SIDES]
    thumb_w, thumb_h = _scaled(asset.width, asset.height, 200)
    body_w, body_h = _scaled(asset.width, asset.height, 1024)
    return {
        "id": canvas,
        "type": "Canvas",
        "label": {"en": [f"Canvas {number}"]},
        "width": asset.width,
        "height": asset.height,
        "metadata": [{"label": _label(name), "value": _label(value)}
                     for name, value in _DLCS_METADATA],
        "thumbnail": [{
            "id": f"{PUBLIC_HOST}/thumbs/{path}/full/{thumb_w},{thumb_h}/0/default.jpg",
            "type": "Image",
            "format": "image/jpeg",
            "service": _image_services(f"thumbs/{path}", 0, {"sizes": sizes}),
        }],
        "items": [{
            "id": f"{canvas}/page",
            "type": "AnnotationPage",
            "items": [{
                "id": f"{canvas}/page/image",
                "type": "Annotation",
                "motivation": "painting",
                "body": {
                    "id": f"{PUBLIC_HOST}/iiif-img/{path}/full/{body_w},{body_h}/0/default.jpg",
                    "type": "Image",
                    "format": "image/jpeg",
                    "width": body_w,
                    "height": body_h,
                    "service": _image_services(f"iiif-img/{path}", 2, {
                        "width": asset.width, "height": asset.height}),
                },
                "target": canvas,
            }],
        }],
    }


def named_query_manifest(customer: int, query: str, argument: str,
                         canvases: list[bytes]) -> bytes:
    """Return the named-query manifest over ``argument`` (batch ids or a manifest id)."""
    head = json.dumps({
        "@context": PRESENTATION_3,
        "id": f"{PUBLIC_HOST}/iiif-resource/v3/{customer}/{query}/{argument}",
        "type": "Manifest",
        "label": {"en": [f"Generated from '{query}' named query"]},
        "metadata": [{"label": {"en": ["Title"]}, "value": {"en": ["Created by DLCS"]}}],
    }, separators=(",", ":")).encode()
    # Joined, not re-encoded: a named query over 50,000 assets costs a join.
    return head[:-1] + b',"items":[' + b",".join(canvases) + b"]}"


def utc(moment: dt.datetime | None) -> str | None:
    """Format a moment as the DLCS does (microseconds, ``Z``)."""
    return None if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def batch_document(api_url: str, customer: int, batch_id: int, count: int, errors: int,
                   submitted: dt.datetime, finished: dt.datetime | None, *,
                   superseded: bool = False) -> bytes:
    """Return the API's Batch resource: counts are 0 until the batch has finished."""
    document = {
        "@context": f"{PUBLIC_HOST}/contexts/Batch.jsonld",
        "@id": f"{api_url}/customers/{customer}/queue/batches/{batch_id}",
        "@type": "vocab:Batch",
        "submitted": utc(submitted),
        "count": count,
        "completed": count - errors if finished else 0,
        "errors": errors if finished else 0,
        "superseded": superseded,
    }
    if finished is not None:
        document["finished"] = utc(finished)
    return json.dumps(document).encode()


def signed_completion(key: bytes, *, batch: int, customer: int, count: int, completed: int,
                      errors: int, submitted: dt.datetime, finished: dt.datetime,
                      ) -> tuple[dict[str, str], bytes]:
    """Return the headers and body of a Standard Webhooks "batch completed" delivery."""
    body = json.dumps({
        "id": batch, "customer": customer, "count": count, "completed": completed,
        "errors": errors, "superseded": False, "submitted": utc(submitted),
        "finished": utc(finished),
    }, separators=(",", ":")).encode()
    msg_id, timestamp = f"msg_{uuid.uuid4().hex}", int(time.time())
    return {"content-type": "application/json", "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(key, msg_id, timestamp, body)}, body
