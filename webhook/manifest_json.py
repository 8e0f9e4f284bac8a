"""A built manifest as JSON: the same bytes for the same document, a block of canvases at a time.

``serialise`` is the one encoding (compact UTF-8, no NaN); ``write_manifest``
and ``manifest.write_document`` stream a document's canvases in blocks through
``write_items``, so that only one block's text exists at a time. A document
that cannot be written as JSON raises BuildError.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import BinaryIO

from webhook.errors import BuildError

# About 400 KB of text a write for DLCS image canvases.
CANVASES_PER_WRITE = 256


def encode_manifest(document: dict | list) -> bytes:
    """Serialise a built manifest (or a list of its canvases) as ``serialise`` does.

    Raises BuildError when it cannot be written as JSON.
    """
    try:
        return serialise(document)
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError (a lone surrogate) included
        raise BuildError(f"the manifest cannot be written as JSON: {exc}") from exc


def write_manifest(document: dict, out: BinaryIO) -> None:
    """Write a built manifest to ``out``: the bytes of ``serialise``, a block of canvases at a time.

    ``json.dumps`` of a whole large manifest holds its text twice as it
    finishes (its pieces and their join), and encoding adds the bytes; block
    by block only one block's text exists at a time, which keeps a large
    rebuild's peak memory to the document and a few hundred kilobytes.
    Raises BuildError when the document cannot be written as JSON.
    """
    items = document.get("items")
    if not isinstance(items, list) or next(reversed(document)) != "items":
        out.write(encode_manifest(document))
        return
    write_items(out, {**document, "items": []},
                (items[start:start + CANVASES_PER_WRITE]
                 for start in range(0, len(items), CANVASES_PER_WRITE)))


def write_items(out: BinaryIO, head: dict, blocks: Iterable[list]) -> int:
    """Write ``head`` with the canvases of ``blocks`` as its ``items``; return how many.

    ``head``'s last key must be ``"items"``, an empty list: its JSON then ends
    ``"items":[]}`` and the canvases go between that ``[`` and ``]}``, each
    block encoded on its own. Raises BuildError as ``encode_manifest`` does.
    """
    out.write(encode_manifest(head)[:-2])
    count = 0
    for block in blocks:
        if count:
            out.write(b",")
        out.write(encode_manifest(block)[1:-1])
        count += len(block)
    out.write(b"]}")
    return count


def serialise(document: dict | list) -> bytes:
    """Encode a document as compact UTF-8 JSON, the same bytes for the same document."""
    # allow_nan=False: NaN/Infinity are not JSON, so other readers would reject the bytes.
    # check_circular=False: a document is built of what json.loads returned (the
    # registration, the named-query answer) and new containers around it, so it
    # has no cycle; not keeping every container's id in a set while encoding
    # made a 10,000-canvas document 10-20% quicker to write. (Should one ever
    # appear, it ends in RecursionError, which a rebuild reports, not a hang.)
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False, check_circular=False).encode("utf-8")
