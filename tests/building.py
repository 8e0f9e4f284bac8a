"""Run the manifest build as a rebuild does, for tests: build the document, then write it."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

from webhook.domain import PaintedResource
from webhook.manifest import RowUpdate, build_document, write_manifest


@dataclass(frozen=True, slots=True)
class Published:
    """A built manifest, the bytes a rebuild stores, and what the build learned per row."""

    document: dict
    body: bytes
    row_updates: tuple[RowUpdate | None, ...]
    missing_assets: tuple[str, ...]


def build_manifest(registered: dict, painted: Sequence[PaintedResource], named_query: dict, *,
                   base_url: str, customer: int, manifest_id: str) -> Published:
    """Build and write the published manifest through the functions a rebuild calls."""
    built = build_document(registered, painted, named_query, base_url=base_url,
                           customer=customer, manifest_id=manifest_id)
    out = io.BytesIO()
    write_manifest(built.document, out)
    return Published(built.document, out.getvalue(), built.row_updates, built.missing_assets)
