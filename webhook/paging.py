"""Opaque page tokens: where a page of the delivery log stops, as clients pass it back.

A token is the base64url text of the last row's sort key (``DeliveryKey``),
checked field by field when it comes back, so a forged or damaged token is a
400 and never reaches SQL as anything but typed values. Clients must treat it
as opaque: its form may change.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re

from marshmallow import ValidationError, fields

from webhook.domain import MAX_INT64, DeliveryKey

MAX_CURSOR_LENGTH = 200
_TOKEN = re.compile(r"[A-Za-z0-9_-]+")


def encode_cursor(key: DeliveryKey) -> str:
    """Write where a page of the delivery log stops as an opaque token."""
    text = json.dumps(["d", key.received_at.isoformat(), key.id], separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(token: str) -> DeliveryKey:
    """Read a token written by ``encode_cursor``; ValueError when it is not one."""
    if len(token) > MAX_CURSOR_LENGTH or not _TOKEN.fullmatch(token):
        raise ValueError("not a cursor")
    try:
        kind, stamp, row_id = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        received_at = dt.datetime.fromisoformat(stamp)
    except (binascii.Error, ValueError, TypeError) as exc:  # base64, JSON, shape, date alike
        raise ValueError("not a cursor") from exc
    if (kind != "d" or received_at.tzinfo is not None or type(row_id) is not int
            or not 1 <= row_id <= MAX_INT64):
        raise ValueError("not a cursor")
    return DeliveryKey(received_at, row_id)


class Cursor(fields.String):
    """A page token on the wire, a ``DeliveryKey`` once loaded."""

    def __init__(self, **kwargs):
        # For the API description; decode_cursor checks the same.
        shape = {"pattern": f"^{_TOKEN.pattern}$", "maxLength": MAX_CURSOR_LENGTH}
        super().__init__(metadata={**shape, **kwargs.pop("metadata", {})}, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            return decode_cursor(text)
        except ValueError:
            raise ValidationError('Not a cursor: pass the one a `Link: <...>; rel="next"` '
                                  "header gave, unchanged.") from None
