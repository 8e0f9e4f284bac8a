"""What a DLCS named-query answer says about each asset (spec section 2).

The build (``webhook.manifest``) asks this module which canvas of the answer
is which asset's, what it paints (its body, a Choice's leaves), how large and
how long that is, and which thumbnails it has. ``slim_canvas`` keeps of each
canvas only what is read here and by the build, as the answer is parsed, and
``SlimAnswer`` keeps each value the answer repeats once (changing the objects
the parser hands it, which nobody else holds yet). Everything else is pure
and reads its input without changing it; malformed parts the build needs
raise ``BuildError``.
"""

from __future__ import annotations

import json
import math
import re

from webhook.domain import MAX_DURATION, MAX_INT32, is_storable
from webhook.errors import BuildError

_TIME_BASED = frozenset({"Sound", "Video"})
# What the build reads of a named-query canvas besides its painting body
# (index_canvases, the extent, natural_size, duration_of, the thumbnails and
# rule 9's rendering and behavior).
_CANVAS_READ = ("id", "type", "width", "height", "duration", "thumbnail", "behavior",
                "rendering")
_THUMBNAIL_SIDE = 100

# https://{host}/iiif-img/{customer}/{space}/{asset}/canvas/c/{n}; only the
# "/canvas/c/" marker is case-insensitive (spec section 2). The asset segment
# cannot contain "/", so the match is the first "/canvas/c/" as the spec says.
_CANVAS_ID = re.compile(
    r"(?i:https?)://[^/?#\s]+/iiif-img/([0-9]+/[0-9]+/[^/?#\s]+)(?i:/canvas/c/)[0-9]+"
)


def slim_canvas(value: dict) -> dict:
    """Keep of a named-query canvas only what the build reads; pass other objects unchanged.

    Meant as ``json.loads(..., object_hook=slim_canvas)`` for the named-query
    answer: each canvas drops its label, metadata and annotation wrappers as
    soon as it is parsed, so a large answer never holds them all at once
    (about half of its memory), and the build makes the same manifest from it.
    A canvas whose painting body is not where the build looks keeps its
    ``items`` as they are, so the build reports it as it would have.
    """
    if value.get("type") != "Canvas":
        return value
    return _slimmed(value)[0]


def _slimmed(canvas: dict) -> tuple[dict, object]:
    """Return ``slim_canvas``'s copy of a canvas, and its painting body (None: not found)."""
    slim = {key: canvas[key] for key in _CANVAS_READ if key in canvas}
    try:
        body = canvas["items"][0]["items"][0]["body"]
    except (KeyError, IndexError, TypeError):
        if "items" in canvas:
            slim["items"] = canvas["items"]
        return slim, None
    slim["items"] = [{"items": [{"body": body}]}]
    return slim, body


# What every resource of an answer repeats (see SlimAnswer).
_REPEATED_TEXT = frozenset(("type", "format", "profile", "@context", "@type"))
_REPEATED_NUMBERS = frozenset(("width", "height"))
_NESTED = frozenset(("service", "items"))  # resources within a resource


class SlimAnswer:
    """The ``object_hook`` of one named-query answer: canvases slimmed, repeated values shared.

    A large answer repeats itself: every image names the same types,
    formats, profiles and contexts, and images of the same dimensions list
    the same sizes. Each canvas is slimmed (``slim_canvas``) as it is parsed;
    then, in what it keeps of its thumbnails and its painting body (a
    Choice's members included) and their services, what repeats a value
    already seen in this answer is replaced by that value's object:

    - the strings naming a resource's type, format, profile and context;
    - its width and height (CPython shares only small integers);
    - a service's ``sizes``, when every entry is ``{"width": w, "height": h}``
      in that order, with integers (no bool, no float: ``True`` is never
      ``1``).

    That halves the memory the parsed answer takes (3.0 to 1.5 times its
    text), the largest part of a rebuild's peak. It walks the resources the
    IIIF shapes put repeats in, not every value, as a generic walk cost twice
    the time for 3% more. Sharing cannot show in the manifest: the build
    reads the answer without changing it (an image it changes is a new
    dict, see ``manifest._resized``). One instance per answer: what it
    remembers lives as long as it does.
    """

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: dict = {}  # each value kept, by itself (sizes: by their pairs)

    def object_hook(self, value: dict) -> dict:
        """Slim ``value`` if it is a canvas, sharing its resources' repeats; else return it.

        Pass this bound method as ``object_hook``, not the instance: the parser
        calls the hook for every object of the answer (42 a canvas of the
        bench's), and an instance's ``__call__`` costs each call a slot lookup
        (4% of a 1,000-canvas parse, by callgrind).
        """
        if value.get("type") != "Canvas":
            return value
        slim, body = _slimmed(value)
        thumbnails = slim.get("thumbnail")
        for image in thumbnails if thumbnails.__class__ is list else (thumbnails,):
            if image.__class__ is dict:
                self._resource(image)
        if body.__class__ is dict:
            self._resource(body)
        return slim

    def _resource(self, resource: dict) -> None:
        # One pass over the resource's members, each key looked at once: a
        # lookup of every shared key instead cost 6% more of the parse.
        # Replacing a member's value while iterating is safe (the dict's size
        # does not change).
        seen = self._seen
        for key, item in resource.items():
            kind = item.__class__
            if kind is str:
                if key in _REPEATED_TEXT:
                    resource[key] = seen.setdefault(item, item)
            elif kind is int:
                if key in _REPEATED_NUMBERS:
                    resource[key] = seen.setdefault(item, item)
            elif kind is list:
                if key == "sizes":
                    resource[key] = self._sizes(item)
                elif key in _NESTED:  # its services, and a Choice's members
                    for member in item:
                        if member.__class__ is dict:
                            self._resource(member)

    def _sizes(self, sizes: list) -> list:
        pairs = []
        for size in sizes:
            if size.__class__ is not dict or len(size) != 2 or next(iter(size)) != "width":
                return sizes
            width, height = size.get("width"), size.get("height")
            if width.__class__ is not int or height.__class__ is not int:
                return sizes
            pairs.append((width, height))
        return self._seen.setdefault(tuple(pairs), sizes)


def asset_id_from_canvas_id(canvas_id: str) -> str | None:
    """Return "{customer}/{space}/{asset}" from a DLCS canvas id, or None for any other form."""
    match = _CANVAS_ID.fullmatch(canvas_id) if isinstance(canvas_id, str) else None
    return match.group(1) if match else None


def index_canvases(named_query: dict) -> dict[str, dict]:
    """Map asset id to named-query canvas, once, so the build stays linear."""
    if not isinstance(named_query, dict):
        raise BuildError("the named-query answer is not a JSON object")
    if named_query.get("type", "Manifest") != "Manifest":
        raise BuildError("the named-query answer is not a Manifest")
    canvases = named_query.get("items")
    if not isinstance(canvases, list):
        raise BuildError("the named-query answer has no items list")
    index: dict[str, dict] = {}
    for canvas in canvases:
        if not isinstance(canvas, dict):
            raise BuildError("a named-query item is not a JSON object")
        # A canvas whose id is not of the asset form cannot be matched to a
        # row; it is ignored, i.e. treated as not returned.
        asset_id = asset_id_from_canvas_id(canvas.get("id"))
        if asset_id is not None:
            index[asset_id] = _pick(index.get(asset_id), canvas)
    return index


def _pick(kept: dict | None, candidate: dict) -> dict:
    """Choose between two canvases for one asset independently of their order."""
    # The DLCS answers one canvas per asset, but the answer's order is not
    # guaranteed, so a duplicate must not make the output depend on it. Plain
    # json.dumps keeps key order (it shows in the output) and tolerates NaN.
    if kept is None:
        return candidate
    return min(kept, candidate, key=json.dumps)


def body_of(canvas: dict) -> dict:
    """Return the painting body of a named-query canvas, or raise BuildError."""
    try:
        body = canvas["items"][0]["items"][0]["body"]
    except (KeyError, IndexError, TypeError):
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("type"), str):
        raise BuildError(f"named-query canvas {canvas.get('id')} has no painting body")
    return body


def leaves(body: dict, levels: int) -> list[dict]:
    """Flatten a body into its non-Choice resources, allowing `levels` Choice levels."""
    if body.get("type") != "Choice":
        return [body]
    if levels == 0:
        raise BuildError("a Choice is nested deeper than two levels")
    members = body.get("items")
    if not isinstance(members, list) or not members:
        raise BuildError("a named-query Choice has no items")
    if not all(isinstance(member, dict) for member in members):
        raise BuildError("a named-query Choice item is not a JSON object")
    return [leaf for member in members for leaf in leaves(member, levels - 1)]


def first_leaf(canvas: dict) -> dict:
    """Return the first non-Choice resource painted by a named-query canvas."""
    return leaves(body_of(canvas), 2)[0]


class Derived:
    """A named-query canvas's natural size and duration, each worked out once per build.

    Both are read for the canvas's extent and again for each of its rows'
    findings; working them out twice was a fifth of a large build. They are
    worked out together, from one look for the painting body.
    """

    __slots__ = ("_facts",)

    def __init__(self) -> None:
        # Keyed by id(): the canvases outlive the build, so no id is reused during it.
        self._facts: dict[int, tuple[tuple[int, int] | None, float | None]] = {}

    def natural_size(self, canvas: dict) -> tuple[int, int] | None:
        return self._of(canvas)[0]

    def duration(self, canvas: dict) -> float | None:
        return self._of(canvas)[1]

    def _of(self, canvas: dict) -> tuple[tuple[int, int] | None, float | None]:
        facts = self._facts.get(id(canvas))
        if facts is None:
            body = first_leaf(canvas)
            facts = self._facts[id(canvas)] = (_natural_size(canvas, body),
                                               _duration(canvas, body))
        return facts


def natural_size(canvas: dict) -> tuple[int, int] | None:
    """Return the size of rule 5: ImageService3, ImageService2, the body, the canvas."""
    return _natural_size(canvas, first_leaf(canvas))


def _natural_size(canvas: dict, body: dict) -> tuple[int, int] | None:
    services = as_list(body.get("service"))
    for kind in ("ImageService3", "ImageService2"):
        service = _service(services, kind)
        size = _size(service) if service is not None else None
        if size is not None:
            return size
    return _size(body) or _size(canvas)


def _service(services: list, kind: str) -> dict | None:
    """Return the first service of the given type (v3 "type" or v2 "@type")."""
    for service in services:
        if isinstance(service, dict) and kind in (service.get("type"), service.get("@type")):
            return service
    return None


def _size(resource: dict) -> tuple[int, int] | None:
    """Return (width, height) when both are positive integers."""
    width, height = _dimension(resource.get("width")), _dimension(resource.get("height"))
    return (width, height) if width and height else None


def _dimension(value: object) -> int:
    """Return a positive integer dimension, or 0 for anything else.

    Reading: a dimension beyond the rows' integer columns (``MAX_INT32``) is
    not one: no image is two billion pixels wide, and recording it would fail
    the rebuild's write-back (PostgreSQL refuses it, SQLite beyond 64 bits).
    """
    return (value if isinstance(value, int) and not isinstance(value, bool)
            and 0 < value <= MAX_INT32 else 0)


def duration_of(canvas: dict) -> float | None:
    """Return the duration of time-based content: the body's, else the canvas's."""
    return _duration(canvas, first_leaf(canvas))


def _duration(canvas: dict, body: dict) -> float | None:
    if body["type"] not in _TIME_BASED:
        return None
    # Reading: as for dimensions, a duration no row can record is not one.
    for value in (body.get("duration"), canvas.get("duration")):
        if (isinstance(value, (int, float)) and not isinstance(value, bool)
                and 0 < value <= MAX_DURATION):
            return float(value)
    return None


def row_thumbnail(canvas: dict) -> str | None:
    """Return the id of the thumbnail Image whose larger side is closest to 100 px.

    Reading: an id holding what no database column can (NUL, a lone
    surrogate) is no URI, and is passed over like one that is not text.
    """
    best, best_distance = None, math.inf
    for image in as_list(canvas.get("thumbnail")):
        if not (isinstance(image, dict) and image.get("type") == "Image"
                and isinstance(image.get("id"), str) and is_storable(image["id"])):
            continue
        side = max(_dimension(image.get("width")), _dimension(image.get("height")))
        distance = abs(side - _THUMBNAIL_SIDE)
        if distance <= best_distance:  # "<=": ties go to the later image
            best, best_distance = image["id"], distance
    return best


def canvas_thumbnail(hits: list[tuple[PaintedResource, dict]]) -> list | None:
    """Return the first non-empty named-query thumbnail among the rows, as a list."""
    for _, canvas in hits:
        thumbnail = canvas.get("thumbnail")
        # Reading: an empty list counts as null, and a lone object is wrapped,
        # because Presentation 3 wants thumbnail as a non-empty list.
        if isinstance(thumbnail, dict):
            return [thumbnail]
        if isinstance(thumbnail, list) and thumbnail:
            return thumbnail
    return None


def as_list(value: object) -> list:
    """Treat a lone JSON object as a one-item list and anything else but a list as empty."""
    if isinstance(value, list):
        return value
    return [value] if isinstance(value, dict) else []
