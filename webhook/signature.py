"""Sign and verify Standard Webhooks deliveries (``webhook-*`` headers, scheme ``v1``).

A pure module: raw bytes in, a :class:`Verified` or a
:class:`~webhook.errors.SignatureError` out. No Flask, no JSON, no clock and no
environment; the caller passes the headers mapping, the raw body, the secrets
and ``now``.

The signed content is ``f"{id}.{timestamp}.".encode() + body`` and a signature
entry is ``v1,<standard base64 of its HMAC-SHA256>``; the ``webhook-signature``
header carries one or more entries separated by spaces.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from webhook.errors import SignatureError

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"

MAX_ID_LENGTH = 256
MAX_SIGNATURE_HEADER_LENGTH = 8 * 1024
DEFAULT_TOLERANCE_SECONDS = 300

# Canonical non-negative integers only, at most 18 digits (fits in an int64).
# fullmatch, not `$`, so a trailing newline cannot slip through; `[0-9]` is a
# literal ASCII range, so other scripts' digits (e.g. Arabic-Indic) never match.
_TIMESTAMP = re.compile(r"0|[1-9][0-9]{0,17}")


@dataclass(frozen=True, slots=True)
class Verified:
    """An authentic delivery's id and timestamp, as the sender signed them."""

    msg_id: str
    timestamp: int


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """Return the ``v1,<base64>`` signature entry for one delivery.

    No validation of ``msg_id`` or ``timestamp``: tests use this to sign
    deliveries that :func:`verify` must then reject for other reasons.
    """
    return "v1," + base64.b64encode(_digest(key, msg_id, timestamp, body)).decode("ascii")


def verify(
    keys: Sequence[bytes],
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
) -> Verified:
    """Check a delivery's Standard Webhooks signature over its raw body.

    ``keys`` are the accepted HMAC keys (several during a rotation); ``headers``
    is any mapping with ``.get`` (Flask's ``request.headers`` looks names up
    case-insensitively; for a plain dict a case-insensitive scan is the
    fallback); ``now`` is the current Unix time in seconds.

    Checks run in this order and the first failure raises
    ``SignatureError(reason, detail)``:

    1. secrets: ``no-secrets`` when ``keys`` is empty or holds an empty key
       (fail closed);
    2. headers present: ``missing-header``, the detail naming every missing one;
    3. id: ``malformed-id`` unless 1-256 printable ASCII characters without
       ``.`` (a dot would let bytes move between id, timestamp and body
       without changing the signed content);
    4. timestamp format: ``malformed-timestamp`` unless a canonical
       non-negative integer (``0|[1-9][0-9]{0,17}``);
    5. tolerance: ``timestamp-too-old`` / ``timestamp-too-new`` when it is more
       than ``tolerance`` seconds from ``now`` (exactly ``tolerance`` passes);
    6. signature parse: ``malformed-signature`` when the header is over 8 KiB,
       not ASCII, or has no parseable entry; ``no-v1-signature`` when the
       parseable entries are all of other versions (those are skipped);
    7. compare: ``bad-signature`` unless some ``v1`` entry equals the HMAC
       under some key. Every entry is compared with every key in constant
       time, without stopping early.

    Details describe the problem only: they never echo a secret, an expected
    signature, or the header values themselves.
    """
    # 1. secrets
    if isinstance(keys, (bytes, bytearray, str)):
        # A lone key is a Sequence too (of ints); refuse rather than iterate it.
        raise TypeError("keys must be a sequence of keys, not a single key")
    keys = tuple(keys)
    if not keys or not all(keys):
        raise SignatureError("no-secrets", "no usable webhook secret is configured")
    if tolerance < 0:
        raise ValueError("tolerance must be >= 0")

    # 2. headers present
    msg_id, timestamp_text, signature_header = _required_headers(headers)

    # 3. id
    if not msg_id or len(msg_id) > MAX_ID_LENGTH:
        raise SignatureError(
            "malformed-id", f"{ID_HEADER} must be 1 to {MAX_ID_LENGTH} characters"
        )
    if not all("!" <= char <= "~" and char != "." for char in msg_id):
        raise SignatureError(
            "malformed-id",
            f"{ID_HEADER} may hold only printable ASCII characters other than '.'",
        )

    # 4. timestamp format
    if not _TIMESTAMP.fullmatch(timestamp_text):
        raise SignatureError(
            "malformed-timestamp",
            f"{TIMESTAMP_HEADER} must be whole Unix seconds (digits only, no leading zero)",
        )
    timestamp = int(timestamp_text)

    # 5. tolerance; written as `not (... <= ...)` so a NaN `now` fails closed.
    if not (now - timestamp <= tolerance):
        raise SignatureError(
            "timestamp-too-old",
            f"{TIMESTAMP_HEADER} is more than {tolerance} seconds in the past",
        )
    if not (timestamp - now <= tolerance):
        raise SignatureError(
            "timestamp-too-new",
            f"{TIMESTAMP_HEADER} is more than {tolerance} seconds in the future",
        )

    # 6. signature parse
    candidates = _v1_digests(signature_header)

    # 7. compare: all keys x all entries, no early exit on either side.
    matched = False
    for key in keys:
        expected = _digest(key, msg_id, timestamp, body)
        for candidate in candidates:
            # compare_digest is False for a different length, so a truncated
            # or oversized digest can never match.
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise SignatureError(
            "bad-signature", f"no {SIGNATURE_HEADER} entry matches a configured secret"
        )
    return Verified(msg_id=msg_id, timestamp=timestamp)


def _digest(key: bytes, msg_id: str, timestamp: int, body: bytes) -> bytes:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return hmac.new(key, signed, hashlib.sha256).digest()


def _required_headers(headers: Mapping[str, str]) -> tuple[str, str, str]:
    """Return the id, timestamp and signature headers, or name every missing one."""
    names = (ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER)
    msg_id, timestamp, signature = (_header(headers, name) for name in names)
    if msg_id is None or timestamp is None or signature is None:
        values = (msg_id, timestamp, signature)
        missing = ", ".join(name for name, value in zip(names, values) if value is None)
        raise SignatureError("missing-header", f"missing header: {missing}")
    return msg_id, timestamp, signature


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """Look ``name`` (lower case) up, case-insensitively even in a plain dict."""
    value = headers.get(name)
    if value is not None:
        return value
    for key, candidate in headers.items():
        if isinstance(key, str) and key.lower() == name:
            return candidate
    return None


def _v1_digests(header: str) -> list[bytes]:
    """Return the decoded digests of the header's ``v1`` entries.

    Entries are ``version,base64`` separated by spaces. Runs of spaces and
    spaces (or tabs, HTTP's optional whitespace) around the whole value are
    tolerated: a proxy or a sloppy sender joining entries must not cause a
    rejection, and whitespace can never form part of a valid entry anyway.
    An entry with no comma, more than one comma, an empty part, or a ``v1``
    signature that is not canonical standard base64 is unparseable and
    skipped; if nothing parseable remains the header is malformed.
    """
    if len(header) > MAX_SIGNATURE_HEADER_LENGTH:
        raise SignatureError(
            "malformed-signature",
            f"{SIGNATURE_HEADER} is longer than {MAX_SIGNATURE_HEADER_LENGTH} characters",
        )
    if not header.isascii():
        raise SignatureError(
            "malformed-signature", f"{SIGNATURE_HEADER} contains non-ASCII characters"
        )

    parseable = 0
    digests: list[bytes] = []
    for entry in header.strip(" \t").split(" "):
        if not entry:
            continue  # a run of spaces between entries
        version, comma, encoded = entry.partition(",")
        if not comma or not version or not encoded or "," in encoded:
            continue
        if version != "v1":
            parseable += 1  # a scheme we do not know (v1a, v2...): skip, not fatal
            continue
        digest = _decode_canonical_base64(encoded)
        if digest is None:
            continue
        parseable += 1
        digests.append(digest)

    if not parseable:
        raise SignatureError(
            "malformed-signature", f"{SIGNATURE_HEADER} has no parseable 'version,base64' entry"
        )
    if not digests:
        raise SignatureError("no-v1-signature", f"{SIGNATURE_HEADER} has no v1 entry")
    return digests


def _decode_canonical_base64(encoded: str) -> bytes | None:
    """Decode strict standard base64, or return None.

    Canonical only: Python's decoder ignores the unused low bits of the last
    character, so "...1OE=" and "...1OF=" decode alike. Requiring the value
    to re-encode to itself makes every character of an entry significant
    (real senders use standard encoders, which always produce this form).
    """
    try:
        decoded = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return None
    if base64.b64encode(decoded).decode("ascii") != encoded:
        return None
    return decoded
