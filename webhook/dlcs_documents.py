"""The DLCS API's JSON documents turned into typed values.

``DlcsClient`` reads bodies off the wire; this module judges them: the status
(``require_status``, with the DLCS's error ``description``), the JSON, a Batch
(``parse_batch``) and a Hydra Collection of Images (``parse_asset_page``). Each
raises ``DlcsError`` (carrying the answer's HTTP status) for what does not fit,
so the client's callers see one error type. The shapes, as the DLCS's own code
writes them, are described with samples in ``tests/samples/README.md``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import parse_qs, urlsplit

from webhook.domain import (MAX_INT32, MAX_INT64, BatchState, DlcsAsset, ascii_digits,
                            storable)
from webhook.errors import DlcsError
from webhook.json_limits import JsonTooDeep, NonFiniteNumber, loads_finite

__all__ = ["AssetPage", "json_text", "parse_asset_page", "parse_batch", "parse_json",
           "require_status"]

#: Characters of an asset's error text kept: the DLCS stores exception messages
#: there, some of them long; a status page needs the gist, not a stack trace.
ERROR_TEXT_LIMIT = 1000
_DESCRIPTION_LIMIT = 500  # characters of a DLCS description surfaced in a message


@dataclass(frozen=True, slots=True)
class AssetPage:
    """One page of a Hydra Collection of Images."""

    assets: tuple[DlcsAsset, ...]
    next_query: str | None       # the query string of the next page; None on the last


def parse_batch(what: str, document: object, status: int) -> BatchState:
    """Turn a DLCS API Batch document into a BatchState."""
    try:
        if not isinstance(document, dict):
            raise ValueError("not a JSON object")
        return BatchState(
            batch_id=_batch_id(document.get("@id")),
            count=_count(document, "count"),
            completed=_count(document, "completed"),
            errors=_count(document, "errors"),
            superseded=_flag(document, "superseded"),
            submitted=_time(document, "submitted"),
            finished=_time(document, "finished"),
        )
    except ValueError as exc:
        raise DlcsError(f"{what}: the answer is not a DLCS batch ({exc})",
                        status=status) from exc


def parse_asset_page(what: str, document: object, status: int, customer: int) -> AssetPage:
    """Turn a Hydra Collection of the customer's Images into an AssetPage."""
    try:
        if not isinstance(document, dict):
            raise ValueError("not a JSON object")
        members = document.get("member")
        # The DLCS writes "member" even when it is empty; a collection without
        # it is not an answer to trust (it would read as "no asset exists").
        if not isinstance(members, list):
            raise ValueError("member is not a list")
        assets = tuple(_asset(member, customer, index) for index, member in enumerate(members))
        return AssetPage(assets=assets, next_query=_next_query(document.get("view")))
    except ValueError as exc:
        raise DlcsError(f"{what}: the answer is not a DLCS collection of images ({exc})",
                        status=status) from exc


def require_status(what: str, status: int, body: bytes, *accepted: int) -> None:
    """Raise the DlcsError that an unexpected status deserves."""
    if status in accepted:
        return
    description = _description(body)
    if 300 <= status < 400:
        reason = f"the DLCS answered a redirect ({status}), which is not followed"
    elif status in (401, 403):
        reason = (f"the DLCS refused the request ({status}); "
                  "check DLCS_API_KEY and DLCS_API_SECRET")
    else:
        reason = f"the DLCS answered {status}"
    message = f"{what}: {reason}"
    if description:
        message += f": {description}"
    raise DlcsError(message, status=status, description=description)


def _description(body: bytes) -> str | None:
    """Return the DLCS's ``description`` of an error, if the body has one."""
    try:
        document = loads_finite(body)
    except ValueError:  # not JSON, NaN, or nested too deeply: no description then
        return None
    if isinstance(document, dict) and isinstance(document.get("description"), str):
        # Storable: it goes into the failure a rebuild records.
        description = storable(document["description"].strip())
        if len(description) > _DESCRIPTION_LIMIT:
            description = description[:_DESCRIPTION_LIMIT] + "..."
        return description or None
    return None


def json_text(what: str, body: bytes | bytearray) -> str:
    """Decode a JSON body as ``json.loads`` would (UTF-8, -16 or -32, BOM allowed)."""
    try:
        return body.decode(json.detect_encoding(body), "surrogatepass")
    except UnicodeDecodeError as exc:
        raise DlcsError(f"{what}: the DLCS answer is not JSON") from exc


def parse_json(what: str, body: str | bytes | bytearray,
               object_hook: Callable[[dict], object] | None = None) -> object:
    """Parse a JSON answer, or raise DlcsError (also for NaN, Infinity and too deep a nesting)."""
    try:
        return loads_finite(body, object_hook=object_hook)
    except NonFiniteNumber as exc:
        raise DlcsError(f"{what}: the DLCS answer holds {exc.constant}, {exc.why}") from None
    except JsonTooDeep:
        raise DlcsError(f"{what}: the DLCS answer is nested too deeply to read") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError alike
        raise DlcsError(f"{what}: the DLCS answer is not JSON") from exc


# --- shapes ------------------------------------------------------------------

def _asset(member: object, customer: int, index: int) -> DlcsAsset:
    if not isinstance(member, dict):
        raise ValueError(f"member {index} is not a JSON object")
    model_id, space = member.get("id"), member.get("space")
    if not isinstance(model_id, str) or not model_id or "/" in model_id:
        raise ValueError(f"member {index} has no asset id")
    if not isinstance(space, int) or isinstance(space, bool) or space < 0:
        raise ValueError(f"member {index} has no space")
    error = member.get("error")
    if error is not None and not isinstance(error, str):
        raise ValueError(f"member {index}: error is not text")
    ingesting = member.get("ingesting")
    if ingesting is not None and not isinstance(ingesting, bool):
        raise ValueError(f"member {index}: ingesting is not a boolean")
    manifests = member.get("manifests") or []
    if not isinstance(manifests, list) or not all(isinstance(m, str) for m in manifests):
        raise ValueError(f"member {index}: manifests is not a list of ids")
    batch = member.get("batch")
    if batch is not None and not isinstance(batch, str):
        raise ValueError(f"member {index}: batch is not a link")
    return DlcsAsset(
        asset_id=f"{customer}/{space}/{model_id}",
        error=_error_text(error),
        ingesting=ingesting,
        finished=_time(member, "finished"),
        manifests=tuple(manifests),
        # Assets ingested without a batch ("immediate" mode) have no link.
        batch=_batch_id(batch, f"member {index}: batch") if batch else None,
    )


def _error_text(error: str | None) -> str | None:
    """Return the error as shown to people: None for none, long text cut short."""
    # The DLCS tells success by an empty error ("!string.IsNullOrEmpty(Error)"
    # counts a failure), and may write "" or leave the field out.
    # Storable: it is recorded on the asset's rows.
    text = storable((error or "").strip())
    if not text:
        return None
    return text if len(text) <= ERROR_TEXT_LIMIT else text[:ERROR_TEXT_LIMIT] + "..."


def _next_query(view: object) -> str | None:
    """Return the query string of a PartialCollectionView's ``next``, or None."""
    if view is None:
        return None
    if not isinstance(view, dict):
        raise ValueError("view is not a JSON object")
    link = view.get("next")
    if link is None:
        return None
    if not isinstance(link, str):
        raise ValueError("view.next is not a link")
    # Only the query is taken: the link's host and path are the DLCS's idea of
    # its own address (behind a proxy, often not the configured one), and
    # following them could send credentials elsewhere.
    query = urlsplit(link).query
    pages = parse_qs(query).get("page", [])
    if len(pages) != 1 or not ascii_digits(pages[0]):
        raise ValueError(f"view.next {link!r} names no page")
    return query


def _batch_id(value: object, name: str = "@id") -> int:
    if not isinstance(value, str):
        raise ValueError(f"{name} is missing")
    segment = urlsplit(value).path.rstrip("/").rpartition("/")[2]
    # An id the batch table's 64-bit key holds, as a registration's batches must be.
    batch_id = int(segment) if ascii_digits(segment) else 0
    if not 1 <= batch_id <= MAX_INT64:
        raise ValueError(f"{name} {value!r} does not end in a batch id")
    return batch_id


def _count(document: dict, name: str) -> int:
    value = document.get(name)
    # bool is an int in Python but never a count in JSON. Bounded as a
    # notification's counts are: the batch's columns hold 32-bit integers.
    if (not isinstance(value, int) or isinstance(value, bool)
            or not 0 <= value <= MAX_INT32):
        raise ValueError(f"{name} is not a count from 0 to {MAX_INT32}")
    return value


def _flag(document: dict, name: str) -> bool:
    value = document.get(name)
    if not isinstance(value, bool):
        raise ValueError(f"{name} is not a boolean")
    return value


def _time(document: dict, name: str) -> datetime | None:
    value = document.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name} is not a date")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name} is not an ISO 8601 date") from None
    # The DLCS writes UTC; a date without an offset is taken as UTC too.
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    try:
        return moment.astimezone(timezone.utc)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        raise ValueError(f"{name} is out of range once converted to UTC") from None
