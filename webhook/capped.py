"""Read an outbound call's answer without letting its sender decide how much memory, or time, it takes."""

from __future__ import annotations

import requests
from urllib3.exceptions import DecodeError, ProtocolError, ReadTimeoutError, SSLError

from webhook.domain import Deadline, ascii_digits

# Each read returns what one receive brought (at most this much), so a sender
# that trickles its answer is noticed between bytes, not after a whole block.
_READ_SIZE = 256 * 1024


def read_capped(response: requests.Response, limit: int,
                deadline: Deadline | None = None) -> bytearray | None:
    """Read the whole body of a streamed response, or None as soon as it exceeds ``limit``.

    A declared ``Content-Length`` over the limit is refused before reading.
    With a ``deadline``, the body must have arrived by then: a sender that
    trickles it, or stalls, raises ``requests.ReadTimeout`` once it passes.
    Failures of the connection leave as ``requests`` exceptions, as
    ``iter_content`` raises them.
    """
    declared = response.headers.get("Content-Length", "")
    # None: absent, or no number; the body then runs to its end.
    length = int(declared) if ascii_digits(declared) else None
    if length is not None and length > limit:
        return None
    # One buffer, sized once when the length of an uncompressed body is
    # known: a list of chunks joined at the end, or a buffer grown as chunks
    # arrive (each growth may copy it), would briefly hold a large answer twice.
    known = length is not None and not response.headers.get("Content-Encoding")
    body = bytearray(length if known else 0)
    filled = 0
    while chunk := _read_some(response, deadline):
        end = filled + len(chunk)
        if end > limit:
            return None
        body[filled:end] = chunk
        filled = end
    del body[filled:]
    return body


def _read_some(response: requests.Response, deadline: Deadline | None) -> bytes:
    """Read what the next receive brings (decoded), waiting no longer than the deadline allows."""
    raw = response.raw
    if deadline is not None:
        left = deadline.remaining()
        if left <= 0:
            raise requests.ReadTimeout("the answer did not arrive before the deadline")
        # A receive waits at most the socket's timeout: cut it to what is left,
        # so that a sender that stalls mid-body cannot outlast the deadline.
        connection = getattr(raw, "connection", None)
        sock = getattr(connection, "sock", None)
        if sock is not None:
            sock.settimeout(min(left, sock.gettimeout() or left))
    try:
        return raw.read1(_READ_SIZE, decode_content=True)
    except ReadTimeoutError as exc:
        raise requests.ReadTimeout(exc) from exc
    except ProtocolError as exc:
        raise requests.exceptions.ChunkedEncodingError(exc) from exc
    except DecodeError as exc:
        raise requests.exceptions.ContentDecodingError(exc) from exc
    except SSLError as exc:
        raise requests.exceptions.SSLError(exc) from exc
