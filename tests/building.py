"""Run the manifest build as a rebuild does, for tests: build and write it in one pass."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

from webhook.domain import PaintedResource
from webhook.manifest import RowUpdate, build_document, write_document
from webhook.manifest_json import write_manifest


@dataclass(frozen=True, slots=True)
class Published:
    """A built manifest, the bytes a rebuild stores, and what the build learned per row."""

    document: dict
    body: bytes
    row_updates: tuple[RowUpdate | None, ...]
    missing_assets: tuple[str, ...]


def build_manifest(registered: dict, painted: Sequence[PaintedResource], named_query: dict, *,
                   base_url: str, customer: int, manifest_id: str) -> Published:
    """Build and write the published manifest through the function a rebuild calls.

    The document comes from ``build_document``, the bytes and findings from
    ``write_document``; the two must agree, and this checks that they do.
    """
    built = build_document(registered, painted, named_query, base_url=base_url,
                           customer=customer, manifest_id=manifest_id)
    out = io.BytesIO()
    written = write_document(registered, painted, named_query, out, base_url=base_url,
                             customer=customer, manifest_id=manifest_id)
    document_bytes = io.BytesIO()
    write_manifest(built.document, document_bytes)
    assert out.getvalue() == document_bytes.getvalue()
    assert (written.canvases, written.row_updates, written.missing_assets) == (
        len(built.document["items"]), built.row_updates, built.missing_assets)
    return Published(built.document, out.getvalue(), written.row_updates,
                     written.missing_assets)
