"""Read an outbound call's answer without letting its sender decide how much memory it takes."""

from __future__ import annotations

import requests


def read_capped(response: requests.Response, limit: int) -> bytearray | None:
    """Read the whole body of a streamed response, or None as soon as it exceeds ``limit``.

    A declared ``Content-Length`` over the limit is refused before reading.
    """
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    # One buffer, sized once when the length of an uncompressed body is
    # known: a list of chunks joined at the end, or a buffer grown as chunks
    # arrive (each growth may copy it), would briefly hold a large answer twice.
    known = declared.isdigit() and not response.headers.get("Content-Encoding")
    body = bytearray(int(declared) if known else 0)
    filled = 0
    for chunk in response.iter_content(chunk_size=64 * 1024):
        end = filled + len(chunk)
        if end > limit:
            return None
        body[filled:end] = chunk
        filled = end
    del body[filled:]
    return body
