"""The pure build of a published IIIF Presentation 3 manifest (spec section 4).

``build_document`` turns the registered manifest, its painted resources and the
DLCS named-query answer into the published document plus what the build learned
about each painted resource; ``manifest_json.write_manifest`` writes it as
JSON, and ``write_document`` does both in one pass (what a rebuild uses). Nothing here
does I/O beyond writing to the file it is given, or mutates its inputs. The
inputs are JSON values as ``json.loads`` makes them (dicts, lists and atoms).

The output shares with the inputs every subtree it publishes unchanged (image
bodies, services, thumbnails, labels) instead of copying it: copying was half
of a large build's time, and a copy of the named-query answer's bodies beside
the answer itself was most of its peak memory. What the build changes (a body
resized to its statics, a flattened Choice, a labelled member) is a new object.
So treat the inputs and the output as read-only once built.

Where section 4 is ambiguous the reading that yields valid IIIF was chosen; each
such choice is marked "Reading:" next to the code that makes it.

Rules 1 to 8 are section 4's. Rule 9 is this project's, after the DLCS's own
presentation service (``ManifestMerger`` in dlcs/iiif-presentation):

9. **Canvas rendering and behavior.** A canvas publishes the ``rendering`` and
   ``behavior`` of its registered canvas, then those of the named-query canvas
   of each of its rows the DLCS returned, in row order (rule 2). The registered
   canvas is the entry of the registration's ``items`` whose ``id`` is the
   row's ``canvasId`` (or the published canvas id); nothing else of it is used.
   Each list is merged without duplicates, the first kept: a behavior by its
   value, a rendering by its ``id``. A rendering that is not an object with a
   string ``id`` and ``type``, or a behavior that is not a string, is left out;
   a lone value counts as a one-item list; an empty result is no property.
   (The DLCS's service unions behaviors the same way but appends renderings
   without looking for duplicates, so a file painted twice was listed twice.)
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from webhook.domain import PaintedResource
from webhook.errors import BuildError
from webhook.manifest_json import CANVASES_PER_WRITE, write_items
from webhook.named_query import (Derived, SlimAnswer, as_list, asset_id_from_canvas_id,
                                 body_of, canvas_thumbnail, index_canvases, leaves,
                                 row_thumbnail, slim_canvas)

__all__ = ["PRESENTATION_3", "Built", "RowUpdate", "SlimAnswer", "Written",
           "asset_id_from_canvas_id", "build_document", "slim_canvas", "write_document"]

PRESENTATION_3 = "http://iiif.io/api/presentation/3/context.json"

# Registered properties the build writes itself; "paintedResources" and "batches"
# should already be gone, but dropping them keeps a careless caller from
# publishing properties a Manifest may not have.
_REPLACED = frozenset({"@context", "id", "type", "items", "paintedResources", "batches"})

# A IIIF Image API request: {prefix}/{region}/{size}/{rotation}/{quality}.{format}.
_NUMBER = r"[0-9]+(?:\.[0-9]+)?"
_IMAGE_REQUEST = re.compile(
    rf"(?P<head>.+/(?:full|square|(?:pct:)?{_NUMBER}(?:,{_NUMBER}){{3}}))"
    rf"/\^?(?:max|full|pct:{_NUMBER}|!?[0-9]+,[0-9]+|[0-9]+,|,[0-9]+)"
    rf"(?P<tail>/!?{_NUMBER}/[A-Za-z]+\.[A-Za-z0-9]+)"
)


@dataclass(frozen=True, slots=True)
class RowUpdate:
    """What a build learned about one painted resource the DLCS returned (rule 8)."""

    thumbnail: str | None
    width: int | None
    height: int | None
    duration: float | None


@dataclass(frozen=True, slots=True)
class Built:
    """The published manifest not yet serialised, and the per-row findings."""

    document: dict
    row_updates: tuple[RowUpdate | None, ...]
    missing_assets: tuple[str, ...]


def build_document(registered: dict, painted: Sequence[PaintedResource],
                   named_query: dict, *, base_url: str, customer: int,
                   manifest_id: str) -> Built:
    """Build the published manifest from the registration and the named-query answer.

    Serialising needs only the document, so a caller can let go of a large
    named-query answer first (``write_manifest`` then writes the JSON).
    ``write_document`` builds and writes in one pass, for large manifests.
    """
    plan = _Plan(registered, painted, named_query, base_url, customer, manifest_id)
    document = {**plan.head, "items": list(plan.canvases())}
    return Built(document=document, row_updates=plan.row_updates(),
                 missing_assets=plan.missing_assets())


@dataclass(frozen=True, slots=True)
class Written:
    """What ``write_document`` wrote, and what the build learned per row."""

    canvases: int
    row_updates: tuple[RowUpdate | None, ...]
    missing_assets: tuple[str, ...]


def write_document(registered: dict, painted: Sequence[PaintedResource], named_query: dict,
                   out: BinaryIO, *, base_url: str, customer: int, manifest_id: str) -> Written:
    """Build the manifest as ``build_document`` does and write it to ``out`` as it goes.

    The bytes are those ``manifest_json.write_manifest`` writes of
    ``build_document``'s document, but each block of canvases is written as
    soon as it is built: the answer's bodies, services and thumbnails it shares are still in the
    processor's caches then, where a second walk of the finished document, in
    canvas order over a heap of several hundred megabytes, found them
    scattered (serialising a built 50,000-canvas document took twice as long
    as serialising the same document freshly parsed). No more than one
    block of built canvases exists at a time. Raises BuildError as the build
    and ``write_manifest`` do.
    """
    plan = _Plan(registered, painted, named_query, base_url, customer, manifest_id)
    count = write_items(out, plan.head, plan.blocks(CANVASES_PER_WRITE))
    return Written(canvases=count, row_updates=plan.row_updates(),
                   missing_assets=plan.missing_assets())


class _Plan:
    """One build: the document's head, its canvases in order, and the rows' findings."""

    def __init__(self, registered: dict, painted: Sequence[PaintedResource],
                 named_query: dict, base_url: str, customer: int, manifest_id: str):
        self.painted = painted
        self.found = index_canvases(named_query)
        self.derived = Derived()
        self.canvases_url = f"{base_url}/{customer}/canvases"
        self.lent = _registered_canvases(registered.get("items"))
        self.head = {
            "@context": _context(named_query.get("@context")),
            "id": f"{base_url}/{customer}/manifests/{manifest_id}",
            # The published document is a Manifest whatever the registration says.
            "type": "Manifest",
            **{key: value for key, value in registered.items() if key not in _REPLACED},
            "items": [],
        }

    def canvases(self) -> Iterator[dict]:
        """Build the canvases in order (rule 2), leaving out those with nothing returned."""
        for rows in _group_by_canvas(sorted(self.painted, key=_row_order)):
            canvas = _build_canvas(rows, self.found, self.derived, self.canvases_url, self.lent)
            if canvas is not None:
                yield canvas

    def blocks(self, size: int) -> Iterator[list[dict]]:
        """The canvases, ``size`` at a time."""
        canvases = self.canvases()
        while block := list(itertools.islice(canvases, size)):
            yield block

    def row_updates(self) -> tuple[RowUpdate | None, ...]:
        return tuple(_row_update(row, self.found.get(row.asset_id), self.derived)
                     for row in self.painted)

    def missing_assets(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(
            row.asset_id for row in self.painted if row.asset_id not in self.found))


# --- canvases ---------------------------------------------------------------

def _row_order(row: PaintedResource) -> tuple:
    """Sort key: canvasOrder, then choiceOrder with an absent one first."""
    return (row.canvas_order, row.choice_order is not None, row.choice_order or 0)


def _group_by_canvas(ordered: Iterable[PaintedResource]) -> list[list[PaintedResource]]:
    """Gather the ordered rows by canvasId, each canvas placed at its first row."""
    canvases: dict[str, list[PaintedResource]] = {}
    for row in ordered:
        canvases.setdefault(row.canvas_id, []).append(row)
    return list(canvases.values())


def _build_canvas(rows: list[PaintedResource], found: dict[str, dict], derived: "Derived",
                  canvases_url: str, lent: dict[str, dict]) -> dict | None:
    """Build one canvas, or None when none of its rows came back (rule 7)."""
    hits = _hits(rows, found)
    if not hits:
        return None
    canvas_id = f"{canvases_url}/{rows[0].canvas_id}"
    label = _canvas_label(rows)
    # Rule 3: a one-row canvas labelled by canvasLabel moves the row label onto its body.
    body_label = rows[0].label if len(rows) == 1 and rows[0].canvas_label is not None else None
    annotations = [annotation for group in _by_canvas_order(rows)
                   if (annotation := _annotation(group, found, canvas_id, body_label))]
    canvas: dict = {"id": canvas_id, "type": "Canvas"}
    if label is not None:
        canvas["label"] = label
    canvas.update(_extent(rows, hits, canvas_id, derived))
    thumbnail = canvas_thumbnail(hits)
    if thumbnail is not None:
        canvas["thumbnail"] = thumbnail
    registered = (lent.get(rows[0].canvas_id) or lent.get(canvas_id)) if lent else None
    canvas.update(_links([registered] if registered else [], hits))
    # Reading: the page is named after the first canvasOrder of all the canvas's
    # rows, found or not, so its id does not change when a missing asset arrives.
    canvas["items"] = [{"id": f"{canvas_id}/annopages/{rows[0].canvas_order}",
                        "type": "AnnotationPage", "items": annotations}]
    return canvas


def _hits(rows: list[PaintedResource], found: dict[str, dict]) -> list[tuple]:
    """Pair each row whose asset the DLCS returned with its named-query canvas."""
    return [(row, canvas) for row in rows if (canvas := found.get(row.asset_id)) is not None]


def _by_canvas_order(rows: list[PaintedResource]) -> list[list[PaintedResource]]:
    """Split a canvas's ordered rows into runs sharing one canvasOrder."""
    if len(rows) == 1:  # most canvases: no need to group
        return [rows]
    return [list(group) for _, group in itertools.groupby(rows, key=lambda row: row.canvas_order)]


def _canvas_label(rows: list[PaintedResource]) -> dict | None:
    """Return the canvas label of rule 4."""
    first = next((row.canvas_label for row in rows if row.canvas_label is not None), None)
    if first is None and len(rows) == 1:
        return rows[0].label
    return first


def _extent(rows: list[PaintedResource], hits: list[tuple[PaintedResource, dict]],
            canvas_id: str, derived: "Derived") -> dict:
    """Return the canvas's width/height and duration (rule 5), or raise BuildError."""
    # Reading: statics are registration facts, so the first row with both gives
    # the size even if its own asset is missing; the natural size can only come
    # from a row the DLCS returned, so "the first row" there is the first found.
    size = next(filter(None, map(_statics, rows)), None) or derived.natural_size(hits[0][1])
    # Reading: the duration comes from the first found row whose content is
    # time-based, so audio/video after an image still gets a timed canvas.
    duration = None
    for _, canvas in hits:
        duration = derived.duration(canvas)
        if duration is not None:
            break
    if size is None and duration is None:
        raise BuildError(f"canvas {canvas_id} has neither a size nor a duration")
    extent: dict = {"width": size[0], "height": size[1]} if size else {}
    if duration is not None:
        extent["duration"] = duration
    return extent


def _registered_canvases(items: object) -> dict[str, dict]:
    """Map each registered canvas's id to it (the first of an id wins), for rule 9."""
    index: dict[str, dict] = {}
    for canvas in items if isinstance(items, list) else ():
        if isinstance(canvas, dict) and isinstance(canvas.get("id"), str):
            index.setdefault(canvas["id"], canvas)
    return index


def _links(registered: list[dict], hits: list[tuple[PaintedResource, dict]]) -> dict:
    """Return the canvas's merged ``behavior`` and ``rendering`` (rule 9), only those present."""
    # Most canvases (every image) have neither: they cost one look each.
    sources = [source for source in registered + [canvas for _, canvas in hits]
               if "behavior" in source or "rendering" in source]
    if not sources:
        return {}
    behavior = dict.fromkeys(value for source in sources
                             for value in _as_values(source.get("behavior"))
                             if isinstance(value, str))
    rendering: dict[str, dict] = {}
    for source in sources:
        for entry in as_list(source.get("rendering")):
            if (isinstance(entry, dict) and isinstance(entry.get("id"), str)
                    and isinstance(entry.get("type"), str)):
                rendering.setdefault(entry["id"], entry)
    links: dict = {}
    if behavior:
        links["behavior"] = list(behavior)
    if rendering:
        links["rendering"] = list(rendering.values())
    return links


# --- annotations and bodies ---------------------------------------------------

def _annotation(group: list[PaintedResource], found: dict[str, dict],
                canvas_id: str, body_label: dict | None) -> dict | None:
    """Build the painting annotation of one canvasOrder, or None if none came back."""
    hits = _hits(group, found)
    if not hits:
        return None
    if len(group) == 1:
        body = _single_body(*hits[0], body_label)
    else:
        # Reading: the Choice is shaped by the registration, so it stays a Choice
        # (possibly of one member) while some of its assets are still missing.
        body = {"type": "Choice",
                "items": [member for row, canvas in hits for member in _members(row, canvas)]}
    # Reading: rows of one Choice share one annotation, so the first target among them is used.
    target = next((row.target for row in group if row.target), None)
    return {
        "id": f"{canvas_id}/annotations/{group[0].canvas_order}",
        "type": "Annotation",
        "motivation": "painting",
        "body": body,
        "target": f"{canvas_id}#{target}" if target else canvas_id,
    }


def _single_body(row: PaintedResource, canvas: dict, label: dict | None) -> dict:
    """Return the body of a one-row annotation, a named-query Choice flattened to one level."""
    body = _row_body(row, canvas)
    if body["type"] == "Choice":
        # Reading: alone, the named-query Choice is the outer level, so it may hold
        # one more level, which is flattened into it to keep one flat Choice.
        body = {**body, "items": leaves(body, 2)}
    return _labelled(body, label)


def _members(row: PaintedResource, canvas: dict) -> list[dict]:
    """Return a row's contribution to a Choice: its body, or its Choice's items, labelled."""
    # Reading: every member a row contributes, flattened ones included, carries the row label.
    return [_labelled(leaf, row.label) for leaf in leaves(_row_body(row, canvas), 1)]


def _row_body(row: PaintedResource, canvas: dict) -> dict:
    """Return a row's named-query body, resized to the row's statics when it has them."""
    body = body_of(canvas)
    statics = _statics(row)
    # Reading: only a body that is itself an Image is rewritten (rule 5 says
    # "whose body is an Image"); the members of a named-query Choice are not.
    if statics and body["type"] == "Image":
        return _resized(body, statics)
    return body


def _resized(image: dict, size: tuple[int, int]) -> dict:
    """Return the image with its Image API request's size segment and width/height set.

    An image whose id is not an Image API request is returned unchanged.
    """
    match = _IMAGE_REQUEST.fullmatch(image["id"]) if isinstance(image.get("id"), str) else None
    if match is None:
        return image
    width, height = size
    # A new dict: the image belongs to the named-query answer, which is not ours to change.
    return {**image, "id": f"{match['head']}/{width},{height}{match['tail']}",
            "width": width, "height": height}


def _labelled(resource: dict, label: dict | None) -> dict:
    """Return the resource with `label` placed after its id and type, if a label is given."""
    if label is None:
        return resource
    out = {key: resource[key] for key in ("id", "type") if key in resource}
    out["label"] = label
    out.update((key, value) for key, value in resource.items() if key not in out)
    return out


# --- statics and row findings ---------------------------------------------------


def _statics(row: PaintedResource) -> tuple[int, int] | None:
    """Return the row's static size, or None unless both statics are given."""
    if row.static_width is None or row.static_height is None:
        return None
    return (row.static_width, row.static_height)


def _row_update(row: PaintedResource, canvas: dict | None,
                derived: "Derived") -> RowUpdate | None:
    """Return what the build learned about one row, or None if its asset is missing."""
    if canvas is None:
        return None
    width, height = row.static_width, row.static_height
    # Rule 8 fills the statics only when both were empty; a row with just one
    # keeps what it was given (the registration is not second-guessed).
    if width is None and height is None:
        width, height = derived.natural_size(canvas) or (None, None)
    return RowUpdate(thumbnail=row_thumbnail(canvas), width=width, height=height,
                     duration=derived.duration(canvas))


# --- small helpers ---------------------------------------------------------------

def _context(named_query_context: object) -> str | list[str]:
    """Return the Presentation 3 context preceded by the named query's extra contexts."""
    entries = (named_query_context if isinstance(named_query_context, list)
               else [named_query_context])
    # Reading: only URI strings are kept, as the Presentation 3 schema requires;
    # duplicates are dropped keeping the first position.
    extras = list(dict.fromkeys(
        entry for entry in entries if isinstance(entry, str) and entry != PRESENTATION_3))
    return [*extras, PRESENTATION_3] if extras else PRESENTATION_3


def _as_values(value: object) -> list:
    """Treat a lone string as a one-item list, as ``as_list`` treats a lone object."""
    return [value] if isinstance(value, str) else as_list(value)


