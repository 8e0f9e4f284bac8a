"""Tests for webhook.manifest: the worked example, then a table per build rule of spec section 4."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import io
import json
import random
import tracemalloc
from pathlib import Path

import pytest

from tests.iiif import assert_valid_iiif
from tests.building import Published, build_manifest
from webhook.domain import PaintedResource
from webhook.errors import BuildError
from webhook.manifest import (PRESENTATION_3, RowUpdate, SlimAnswer, asset_id_from_canvas_id,
                              build_document, slim_canvas, write_document)
from webhook.manifest_json import serialise, write_manifest

SAMPLES = Path(__file__).parent / "samples"
BASE = "https://presentation.example"
DLCS = "https://dlcs.example"
CANVASES = f"{BASE}/2/canvases"
AUTH = "http://iiif.io/api/auth/2/context.json"
IMAGE_3 = "http://iiif.io/api/image/3/context.json"
REGISTERED = {"type": "Manifest", "label": {"en": ["A test manifest"]}}
FRONT, BACK, COVER = {"en": ["Front"]}, {"en": ["Back"]}, {"en": ["Cover"]}


# --- named-query and registration builders -----------------------------------------

def service(kind: str, width: int | None = None, height: int | None = None) -> dict:
    """An image service of the DLCS shape, v2 ("@id"/"@type") or v3."""
    if kind == "ImageService2":
        found = {"@context": "http://iiif.io/api/image/2/context.json",
                 "@id": f"{DLCS}/iiif-img/v2/2/5/x", "@type": kind,
                 "profile": "http://iiif.io/api/image/2/level2.json"}
    else:
        found = {"@context": IMAGE_3, "id": f"{DLCS}/iiif-img/2/5/x", "type": kind,
                 "profile": "level2"}
    if width is not None:
        found.update(width=width, height=height)
    return found


def image(asset: str, *, size: str = "1024,768", own: tuple | None = (1024, 768),
          services: list | None = None) -> dict:
    """An Image body whose id is an Image API request, as the DLCS answers it."""
    body = {"id": f"{DLCS}/iiif-img/2/5/{asset}/full/{size}/0/default.jpg",
            "type": "Image", "format": "image/jpeg"}
    if own:
        body.update(width=own[0], height=own[1])
    body["service"] = ([service("ImageService2", 4000, 3000), service("ImageService3", 4000, 3000)]
                       if services is None else services)
    return body


def sound(asset: str, duration: float | None = 12.5) -> dict:
    """A Sound body, with or without its own duration."""
    body = {"id": f"{DLCS}/iiif-av/2/5/{asset}/full/max/default.mp3", "type": "Sound",
            "format": "audio/mpeg"}
    if duration is not None:
        body["duration"] = duration
    return body


def video(asset: str, width: int = 1920, height: int = 1080, duration: float = 60) -> dict:
    """A Video body with its size and duration."""
    return {"id": f"{DLCS}/iiif-av/2/5/{asset}/full/full/max/max/0/default.mp4", "type": "Video",
            "format": "video/mp4", "width": width, "height": height, "duration": duration}


def choice(*members: dict) -> dict:
    """A Choice body."""
    return {"type": "Choice", "items": list(members)}


def thumb(asset: str, width: int | None = None, height: int | None = None,
          size: str = "200,150") -> dict:
    """A thumbnail Image, with or without width/height."""
    found = {"id": f"{DLCS}/thumbs/2/5/{asset}/full/{size}/0/default.jpg", "type": "Image",
             "format": "image/jpeg"}
    if width is not None:
        found["width"] = width
    if height is not None:
        found["height"] = height
    return found


def canvas(asset: str, body: dict | None = None, *, n: int = 1, size: tuple | None = (4000, 3000),
           duration: float | None = None, thumbnail: object = None) -> dict:
    """A named-query canvas for asset 2/5/{asset}, with the DLCS label and metadata."""
    canvas_id = f"{DLCS}/iiif-img/2/5/{asset}/canvas/c/{n}"
    found: dict = {"id": canvas_id, "type": "Canvas", "label": {"en": [f"Canvas {n}"]}}
    if size:
        found.update(width=size[0], height=size[1])
    if duration is not None:
        found["duration"] = duration
    found["metadata"] = [{"label": {"none": ["Tags"]}, "value": {"none": [""]}}]
    if thumbnail is not None:
        found["thumbnail"] = thumbnail
    found["items"] = [{
        "id": f"{canvas_id}/page", "type": "AnnotationPage",
        "items": [{"id": f"{canvas_id}/page/image", "type": "Annotation",
                   "motivation": "painting", "body": body or image(asset),
                   "target": canvas_id}],
    }]
    return found


def named_query(*canvases: dict, context: object = PRESENTATION_3) -> dict:
    """A named-query manifest holding the given canvases."""
    return {"@context": context, "id": f"{DLCS}/iiif-resource/v3/2/batch-query/1",
            "type": "Manifest", "label": {"en": ["Generated from 'batch-query' named query"]},
            "metadata": [{"label": {"en": ["Title"]}, "value": {"en": ["Created by DLCS"]}}],
            "thumbnail": [thumb("nq")], "items": list(canvases)}


def row(canvas_id: str, order: int, asset: str, **fields) -> PaintedResource:
    """A painted resource of asset 2/5/{asset}."""
    return PaintedResource(canvas_id=canvas_id, canvas_order=order, asset_id=f"2/5/{asset}",
                           **fields)


def all_returned(rows: list[PaintedResource]) -> dict:
    """A named query returning a default image canvas for every row's asset but "gone"."""
    assets = dict.fromkeys(r.asset_id.rsplit("/", 1)[1] for r in rows)
    return named_query(*(canvas(asset) for asset in assets if asset != "gone"))


def build(rows, answer: dict | None = None, registered: dict = REGISTERED) -> Published:
    """Build with the test defaults; every manifest built is checked against the schema."""
    result = build_manifest(registered, rows, all_returned(rows) if answer is None else answer,
                            base_url=BASE, customer=2, manifest_id="m")
    assert_valid_iiif(result.document)
    assert result.body == serialise(result.document)
    return result


def annotations(canvas_doc: dict) -> list[dict]:
    """The painting annotations of a published canvas."""
    return canvas_doc["items"][0]["items"]


def only_body(result: Published) -> dict:
    """The body of a one-canvas, one-annotation manifest."""
    [canvas_doc] = result.document["items"]
    [annotation] = annotations(canvas_doc)
    return annotation["body"]


def load(name: str) -> dict:
    """Parse a sample file."""
    return json.loads((SAMPLES / name).read_text(encoding="utf-8"))


# --- the worked example --------------------------------------------------------------

def painted_from_registration(body: dict, customer: int) -> list[PaintedResource]:
    """Turn a registration payload's paintedResources into rows, as the schemas do."""
    rows = []
    for resource in body["paintedResources"]:
        painting, asset = resource["canvasPainting"], resource["asset"]
        rows.append(PaintedResource(
            canvas_id=painting["canvasId"], canvas_order=painting["canvasOrder"],
            asset_id=f"{customer}/{asset['space']}/{asset['id']}",
            choice_order=painting.get("choiceOrder"), label=painting.get("label"),
            canvas_label=painting.get("canvasLabel"), target=painting.get("target"),
            static_width=painting.get("staticWidth"), static_height=painting.get("staticHeight")))
    return rows


def test_worked_example_publishes_the_sample():
    registration = load("registration-2-assets.json")
    registered = {k: v for k, v in registration.items() if k not in ("paintedResources", "batches")}
    result = build_manifest(registered, painted_from_registration(registration, 2),
                            load("named-query-2-assets.json"),
                            base_url="https://presentation.example", customer=2,
                            manifest_id="letters")
    assert_valid_iiif(result.document)
    assert json.loads(result.body) == load("published-2-assets.json")
    assert result.body == serialise(result.document)
    assert result.missing_assets == ()
    assert result.row_updates == (
        RowUpdate(f"{DLCS}/thumbs/2/5/foo/full/200,150/0/default.jpg", 4000, 3000, None),
        RowUpdate(f"{DLCS}/thumbs/2/5/bar/full/133,200/0/default.jpg", 2000, 3000, None),
    )


def test_worked_example_key_order_matches_the_sample():
    registration = load("registration-2-assets.json")
    registered = {k: v for k, v in registration.items() if k not in ("paintedResources", "batches")}
    result = build_manifest(registered, painted_from_registration(registration, 2),
                            load("named-query-2-assets.json"),
                            base_url="https://presentation.example", customer=2,
                            manifest_id="letters")
    expected = json.dumps(load("published-2-assets.json"), ensure_ascii=False,
                          separators=(",", ":")).encode()
    assert result.body == expected


def test_born_digital_worked_example_publishes_the_sample():
    # A file-only PDF and a video with a file channel, as the DLCS's manifest-query
    # projects them; the registration lends each canvas a rendering (one of which
    # the DLCS gives too) and the video a behavior (rule 9).
    registration = load("registration-born-digital.json")
    registered = {k: v for k, v in registration.items() if k not in ("paintedResources", "batches")}
    result = build_manifest(registered, painted_from_registration(registration, 2),
                            load("named-query-born-digital.json"),
                            base_url="https://presentation.example", customer=2,
                            manifest_id="report-2024")
    expected = load("published-born-digital.json")
    assert result.body == serialise(expected)
    assert_valid_iiif(result.document)
    assert result.missing_assets == ()
    assert result.row_updates == (RowUpdate(None, 1000, 1000, None),
                                  RowUpdate(None, 1920, 1080, 95.4))


def test_born_digital_behaviors_are_valid_only_under_their_extension_context():
    # The schema knows only the core vocabulary: "placeholder" passes because the
    # manifest declares the born-digital context, and fails without it.
    published = load("published-born-digital.json")
    assert_valid_iiif(published)
    with pytest.raises(AssertionError, match="behavior"):
        assert_valid_iiif({**published, "@context": PRESENTATION_3})


# --- rule 1: top level --------------------------------------------------------------

def test_top_level_keeps_registered_properties_in_order_and_replaces_the_rest():
    registered = {
        "@context": "http://example.org/ignored", "id": "https://example.org/ignored",
        "type": "Manifest", "label": {"en": ["Letters"]},
        "metadata": [{"label": {"en": ["Author"]}, "value": {"en": ["Ann"]}}],
        "summary": {"en": ["Two letters"]}, "rights": "http://rightsstatements.org/vocab/InC/1.0/",
        "requiredStatement": {"label": {"en": ["Held by"]}, "value": {"en": ["Library"]}},
        "seeAlso": [{"id": "https://example.org/letters.xml", "type": "Dataset"}],
        "thumbnail": [{"id": "https://example.org/t.jpg", "type": "Image"}],
        "items": [{"id": "https://example.org/ignored", "type": "Canvas"}],
        "behavior": ["paged"],
    }
    document = build([row("a", 0, "x")], registered=registered).document
    assert list(document) == ["@context", "id", "type", "label", "metadata", "summary", "rights",
                              "requiredStatement", "seeAlso", "thumbnail", "behavior", "items"]
    assert document["@context"] == PRESENTATION_3
    assert document["id"] == f"{BASE}/2/manifests/m"
    assert [c["id"] for c in document["items"]] == [f"{CANVASES}/a"]
    for key in ("label", "metadata", "summary", "rights", "requiredStatement", "seeAlso",
                "thumbnail", "behavior"):
        assert document[key] == registered[key]


def test_top_level_drops_registration_only_properties():
    registered = {**REGISTERED, "paintedResources": [], "batches": [1234]}
    document = build([row("a", 0, "x")], registered=registered).document
    assert "paintedResources" not in document and "batches" not in document


_OMITTED = object()


@pytest.mark.parametrize("context, expected", [
    (_OMITTED, PRESENTATION_3),
    (PRESENTATION_3, PRESENTATION_3),
    ([PRESENTATION_3], PRESENTATION_3),
    (AUTH, [AUTH, PRESENTATION_3]),
    ([AUTH, PRESENTATION_3], [AUTH, PRESENTATION_3]),
    ([PRESENTATION_3, AUTH], [AUTH, PRESENTATION_3]),
    ([AUTH, IMAGE_3, AUTH, PRESENTATION_3], [AUTH, IMAGE_3, PRESENTATION_3]),
    ([PRESENTATION_3, PRESENTATION_3], PRESENTATION_3),
    ([{"@vocab": "http://example.org/"}, PRESENTATION_3], PRESENTATION_3),
], ids=["absent", "p3-string", "p3-list", "one-extra-string", "extra-first", "extra-after-p3",
        "duplicates", "p3-twice", "inline-object-dropped"])
def test_context_puts_named_query_extras_before_presentation_3(context, expected):
    answer = named_query(canvas("x"), context=context)
    if context is _OMITTED:
        del answer["@context"]
    assert build([row("a", 0, "x")], answer).document["@context"] == expected


def test_nothing_else_of_the_named_query_is_used():
    document = build([row("a", 0, "x")]).document
    assert document["label"] == REGISTERED["label"]
    assert "metadata" not in document and "thumbnail" not in document
    [canvas_doc] = document["items"]
    assert "metadata" not in canvas_doc and "label" not in canvas_doc


# --- rule 2: canvases -------------------------------------------------------------------

def outline(document: dict) -> list[tuple]:
    """(canvas, page suffix, [(annotation suffix, target suffix)]) for every canvas."""
    shape = []
    for canvas_doc in document["items"]:
        cid = canvas_doc["id"]
        [page] = canvas_doc["items"]
        shape.append((cid.removeprefix(f"{CANVASES}/"), page["id"].removeprefix(cid),
                      [(a["id"].removeprefix(cid), a["target"].removeprefix(cid))
                       for a in page["items"]]))
    return shape


@pytest.mark.parametrize("rows, expected", [
    ([row("b", 1, "y"), row("a", 0, "x")],
     [("a", "/annopages/0", [("/annotations/0", "")]),
      ("b", "/annopages/1", [("/annotations/1", "")])]),
    ([row("a", 0, "x"), row("b", 1, "y"), row("a", 2, "z")],
     [("a", "/annopages/0", [("/annotations/0", ""), ("/annotations/2", "")]),
      ("b", "/annopages/1", [("/annotations/1", "")])]),
    ([row("a", 5, "y"), row("a", 3, "x")],
     [("a", "/annopages/3", [("/annotations/3", ""), ("/annotations/5", "")])]),
    ([row("a", 0, "x", target="xywh=0,0,800,600"), row("a", 1, "y", target="xywh=800,0,800,600")],
     [("a", "/annopages/0", [("/annotations/0", "#xywh=0,0,800,600"),
                             ("/annotations/1", "#xywh=800,0,800,600")])]),
    ([row("a", 0, "x", choice_order=2), row("a", 0, "y", choice_order=1, target="xywh=0,0,10,10")],
     [("a", "/annopages/0", [("/annotations/0", "#xywh=0,0,10,10")])]),
    ([row("p/1", 0, "x")], [("p/1", "/annopages/0", [("/annotations/0", "")])]),
], ids=["canvas-order-not-input-order", "shared-canvas-at-first-row", "page-named-by-first-order",
        "targets-as-fragments", "choice-rows-one-annotation", "canvas-id-verbatim"])
def test_canvases_and_annotations(rows, expected):
    document = build(rows).document
    assert outline(document) == expected
    for canvas_doc in document["items"]:
        for annotation in annotations(canvas_doc):
            assert list(annotation) == ["id", "type", "motivation", "body", "target"]
            assert (annotation["type"], annotation["motivation"]) == ("Annotation", "painting")


def test_canvas_keys_come_in_the_published_order():
    rows = [row("a", 0, "x", canvas_label=COVER), row("a", 1, "y")]
    answer = named_query(canvas("x", video("x"), thumbnail=[thumb("x")]), canvas("y"))
    [canvas_doc] = build(rows, answer).document["items"]
    assert list(canvas_doc) == ["id", "type", "label", "width", "height", "duration",
                                "thumbnail", "items"]


# --- rule 3: bodies and Choices ------------------------------------------------------

def labelled(body: dict, label: dict) -> dict:
    """The body with a label, as a Choice member carries it."""
    return {**body, "label": label}


@pytest.mark.parametrize("rows, answer, expected", [
    ([row("a", 0, "x", choice_order=1, label=FRONT), row("a", 0, "y", choice_order=2, label=BACK)],
     named_query(canvas("x"), canvas("y")),
     choice(labelled(image("x"), FRONT), labelled(image("y"), BACK))),
    ([row("a", 0, "z", choice_order=2, label=COVER), row("a", 0, "y", choice_order=1),
      row("a", 0, "x", label=FRONT)],
     named_query(canvas("x"), canvas("y"), canvas("z")),
     choice(labelled(image("x"), FRONT), image("y"), labelled(image("z"), COVER))),
    ([row("a", 0, "x", choice_order=1, label=FRONT), row("a", 0, "y", choice_order=2, label=BACK)],
     named_query(canvas("x", choice(image("x1"), image("x2"))), canvas("y")),
     choice(labelled(image("x1"), FRONT), labelled(image("x2"), FRONT),
            labelled(image("y"), BACK))),
    ([row("a", 0, "x", label=FRONT)],
     named_query(canvas("x", choice(image("x1"), image("x2")))),
     choice(image("x1"), image("x2"))),
    ([row("a", 0, "x")],
     named_query(canvas("x", choice(image("x1"), choice(image("x2"), image("x3"))))),
     choice(image("x1"), image("x2"), image("x3"))),
    ([row("a", 0, "x", choice_order=1), row("a", 0, "y", choice_order=1)],
     named_query(canvas("x"), canvas("y")),
     choice(image("x"), image("y"))),
    ([row("a", 0, "x", choice_order=0), row("a", 0, "y")],
     named_query(canvas("x"), canvas("y")),
     choice(image("y"), image("x"))),
], ids=["two-members-labelled", "three-members-absent-choice-order-first",
        "flattened-into-row-choice",
        "one-row-named-query-choice-kept", "one-row-two-level-choice-flattened",
        "equal-choice-orders-keep-input-order", "absent-choice-order-before-zero"])
def test_bodies_and_choices(rows, answer, expected):
    assert only_body(build(rows, answer)) == expected


@pytest.mark.parametrize("rows, answer", [
    ([row("a", 0, "x", choice_order=1), row("a", 0, "y", choice_order=2)],
     named_query(canvas("x", choice(image("x1"), choice(image("x2"), image("x3")))), canvas("y"))),
    ([row("a", 0, "x")],
     named_query(canvas("x", choice(choice(choice(image("x1")), image("x2")), image("x3"))))),
], ids=["three-levels-under-a-row-choice", "three-levels-in-one-body"])
def test_choice_nested_deeper_than_two_levels_is_an_error(rows, answer):
    with pytest.raises(BuildError, match="nested deeper than two levels"):
        build_manifest(REGISTERED, rows, answer, base_url=BASE, customer=2, manifest_id="m")


@pytest.mark.parametrize("fields, body_label", [
    ({"canvas_label": COVER, "label": FRONT}, FRONT),
    ({"label": FRONT}, None),
    ({"canvas_label": COVER}, None),
    ({}, None),
], ids=["canvas-label-moves-row-label-to-body", "row-label-is-canvas-label", "canvas-label-only",
        "no-labels"])
def test_one_row_body_label(fields, body_label):
    body = only_body(build([row("a", 0, "x", **fields)]))
    assert body.get("label") == body_label


def test_body_label_follows_id_and_type():
    rows = [row("a", 0, "x", choice_order=1, label=FRONT), row("a", 0, "y", choice_order=2)]
    first = only_body(build(rows))["items"][0]
    assert list(first)[:3] == ["id", "type", "label"]


def test_bodies_of_a_multi_row_canvas_without_choice_carry_no_label():
    rows = [row("a", 0, "x", label=FRONT), row("a", 1, "y", label=BACK, canvas_label=COVER)]
    [canvas_doc] = build(rows).document["items"]
    assert [a["body"] for a in annotations(canvas_doc)] == [image("x"), image("y")]


def test_one_row_named_query_choice_carries_the_label_on_the_choice():
    rows = [row("a", 0, "x", label=FRONT, canvas_label=COVER)]
    answer = named_query(canvas("x", choice(image("x1"), image("x2"))))
    assert only_body(build(rows, answer)) == {**choice(image("x1"), image("x2")), "label": FRONT}


# --- rule 4: canvas label ---------------------------------------------------------------

@pytest.mark.parametrize("rows, expected", [
    ([row("a", 0, "x", label=FRONT)], FRONT),
    ([row("a", 0, "x", label=FRONT, canvas_label=COVER)], COVER),
    ([row("a", 0, "x", label=FRONT), row("a", 1, "y", label=BACK)], None),
    ([row("a", 0, "x", label=FRONT), row("a", 1, "y", canvas_label=COVER)], COVER),
    ([row("a", 1, "y", canvas_label=BACK), row("a", 0, "x", canvas_label=COVER)], COVER),
    ([row("a", 0, "x", choice_order=1, label=FRONT), row("a", 0, "y", choice_order=2, label=BACK)],
     None),
    ([row("a", 0, "x")], None),
], ids=["one-row-label", "canvas-label-wins", "two-rows-no-canvas-label",
        "canvas-label-of-later-row",
        "first-canvas-label-in-order", "choice-rows-no-canvas-label", "dlcs-label-dropped"])
def test_canvas_label(rows, expected):
    [canvas_doc] = build(rows).document["items"]
    assert canvas_doc.get("label") == expected


# --- rule 5: size and duration --------------------------------------------------------------

def size_of(document: dict) -> list[tuple]:
    """(width, height, duration) of every canvas, None where absent."""
    return [(c.get("width"), c.get("height"), c.get("duration")) for c in document["items"]]


@pytest.mark.parametrize("rows, answer, expected", [
    ([row("a", 0, "x", static_width=800, static_height=600)], None, [(800, 600, None)]),
    ([row("a", 0, "x", static_width=800)], None, [(4000, 3000, None)]),
    ([row("a", 0, "x", static_height=600)], None, [(4000, 3000, None)]),
    ([row("a", 0, "x")],
     named_query(canvas("x", image("x", services=[service("ImageService2", 2000, 1500),
                                                   service("ImageService3", 3000, 2000)]))),
     [(3000, 2000, None)]),
    ([row("a", 0, "x")],
     named_query(canvas("x", image("x", services=[service("ImageService2", 2000, 1500)]))),
     [(2000, 1500, None)]),
    ([row("a", 0, "x")],
     named_query(canvas("x", image("x", services=[service("ImageService3"),
                                                   service("ImageService2", 2000, 1500)]))),
     [(2000, 1500, None)]),
    ([row("a", 0, "x")], named_query(canvas("x", image("x", services=[]))), [(1024, 768, None)]),
    ([row("a", 0, "x")],
     named_query(canvas("x", image("x", own=None, services=[]), size=(640, 480))),
     [(640, 480, None)]),
    ([row("a", 0, "x"), row("a", 1, "y", static_width=500, static_height=400)], None,
     [(500, 400, None)]),
    ([row("a", 0, "x"), row("a", 1, "y")],
     named_query(canvas("x"), canvas("y", image("y", services=[service("ImageService3", 10, 10)]))),
     [(4000, 3000, None)]),
    ([row("a", 0, "gone", static_width=500, static_height=400), row("a", 1, "y")], None,
     [(500, 400, None)]),
    ([row("a", 0, "gone"), row("a", 1, "y")],
     named_query(canvas("y", image("y", services=[service("ImageService3", 10, 20)]))),
     [(10, 20, None)]),
    ([row("a", 0, "x")], named_query(canvas("x", sound("x"), size=None)), [(None, None, 12.5)]),
    ([row("a", 0, "x")], named_query(canvas("x", sound("x", None), size=None, duration=30)),
     [(None, None, 30.0)]),
    ([row("a", 0, "x")], named_query(canvas("x", video("x"), size=None)), [(1920, 1080, 60.0)]),
    ([row("a", 0, "x"), row("a", 1, "y")],
     named_query(canvas("x"), canvas("y", video("y"), size=None)), [(4000, 3000, 60.0)]),
    ([row("a", 0, "x", static_width=800, static_height=600)],
     named_query(canvas("x", video("x"), size=None)), [(800, 600, 60.0)]),
    # A size or duration no row can record (integer columns; REAL on PostgreSQL) is none.
    ([row("a", 0, "x")],
     named_query(canvas("x", image("x", services=[service("ImageService3", 2**31, 3000),
                                                   service("ImageService2", 2000, 2**31)]))),
     [(1024, 768, None)]),
    ([row("a", 0, "x")],
     named_query(canvas("x", image("x", services=[service("ImageService3", 2**31 - 1, 1)]))),
     [(2**31 - 1, 1, None)]),
    ([row("a", 0, "x")], named_query(canvas("x", sound("x", 1e39), size=None, duration=30)),
     [(None, None, 30.0)]),
    ([row("a", 0, "x")], named_query(canvas("x", sound("x", 10**40), size=None, duration=3e38)),
     [(None, None, 3e38)]),
], ids=["statics", "width-only-is-none", "height-only-is-none", "image-service-3-first",
        "image-service-2-next", "service-without-size-skipped", "own-size-next",
        "named-query-canvas-last", "first-row-with-statics", "first-row-body",
        "statics-of-missing-row", "first-found-row-body", "sound-duration", "canvas-duration",
        "video", "duration-from-later-row", "statics-and-video", "beyond-int32-skipped",
        "int32-max-kept", "beyond-real-duration-skipped", "real-max-kept"])
def test_canvas_size_and_duration(rows, answer, expected):
    assert size_of(build(rows, answer).document) == expected


@pytest.mark.parametrize("size, expected", [
    ("1024,768", "800,600"),
    ("max", "800,600"),
    ("^max", "800,600"),
    ("full", "800,600"),
    ("!1024,1024", "800,600"),
    ("1024,", "800,600"),
    (",768", "800,600"),
    ("pct:50", "800,600"),
    ("^!2000,2000", "800,600"),
], ids=lambda value: value)
def test_statics_rewrite_the_size_segment(size, expected):
    rows = [row("a", 0, "x", static_width=800, static_height=600)]
    body = only_body(build(rows, named_query(canvas("x", image("x", size=size)))))
    assert body["id"] == f"{DLCS}/iiif-img/2/5/x/full/{expected}/0/default.jpg"
    assert (body["width"], body["height"]) == (800, 600)


@pytest.mark.parametrize("path, expected", [
    ("0,0,100,200/max/!90/gray.png", "0,0,100,200/800,600/!90/gray.png"),
    ("pct:10,10,50,50/max/90.5/default.webp", "pct:10,10,50,50/800,600/90.5/default.webp"),
    ("square/full/0/bitonal.tif", "square/800,600/0/bitonal.tif"),
    ("full/max/0/default.jpg", "full/800,600/0/default.jpg"),
], ids=["region-rotation-mirrored", "pct-region", "square", "under-a-prefix"])
def test_statics_rewrite_keeps_the_other_segments(path, expected):
    rows = [row("a", 0, "x", static_width=800, static_height=600)]
    body = {**image("x"), "id": f"{DLCS}/iiif-img/v3/2/5/x/{path}"}
    rewritten = only_body(build(rows, named_query(canvas("x", body))))
    assert rewritten["id"] == f"{DLCS}/iiif-img/v3/2/5/x/{expected}"


@pytest.mark.parametrize("body", [
    {**image("x"), "id": f"{DLCS}/file/2/5/x.jpg"},
    {**image("x"), "id": f"{DLCS}/iiif-img/2/5/x/full/big/0/default.jpg"},
    {**image("x"), "id": f"{DLCS}/iiif-img/2/5/x/info.json"},
    video("x"),
    choice(image("x1"), image("x2")),
], ids=["not-an-image-request", "bad-size-segment", "info-json", "video", "named-query-choice"])
def test_statics_leave_other_bodies_alone(body):
    rows = [row("a", 0, "x", static_width=800, static_height=600)]
    result = build(rows, named_query(canvas("x", body)))
    assert only_body(result) == body
    assert size_of(result.document)[0][:2] == (800, 600)


def test_statics_rewrite_each_choice_member_by_its_own_row():
    rows = [row("a", 0, "x", choice_order=1, static_width=800, static_height=600),
            row("a", 0, "y", choice_order=2)]
    body = only_body(build(rows))
    assert [m["id"].split("/")[-3] for m in body["items"]] == ["800,600", "1024,768"]
    assert [(m["width"], m["height"]) for m in body["items"]] == [(800, 600), (1024, 768)]


def test_a_canvas_whose_only_size_is_beyond_the_rows_columns_is_an_error():
    answer = named_query(canvas("x", image("x", own=(2**40, 2**40), services=[]),
                                size=(2**31, 100)))
    with pytest.raises(BuildError, match="neither a size nor a duration"):
        build_manifest(REGISTERED, [row("a", 0, "x")], answer, base_url=BASE, customer=2,
                       manifest_id="m")


def test_a_canvas_with_neither_size_nor_duration_is_an_error():
    answer = named_query(canvas("x", sound("x", None), size=None))
    with pytest.raises(BuildError, match="neither a size nor a duration"):
        build_manifest(REGISTERED, [row("a", 0, "x")], answer, base_url=BASE, customer=2,
                       manifest_id="m")


# --- rule 6: thumbnails ------------------------------------------------------------------

@pytest.mark.parametrize("thumbnails, expected", [
    ([None, [thumb("y")]], [thumb("y")]),
    ([[thumb("x")], [thumb("y")]], [thumb("x")]),
    ([[], [thumb("y")]], [thumb("y")]),
    ([thumb("x"), None], [thumb("x")]),
    ([None, None], None),
], ids=["first-non-null", "first-of-two", "empty-list-is-null", "lone-object-wrapped", "none"])
def test_canvas_thumbnail(thumbnails, expected):
    rows = [row("a", 0, "x"), row("a", 1, "y")]
    answer = named_query(canvas("x", thumbnail=thumbnails[0]), canvas("y", thumbnail=thumbnails[1]))
    [canvas_doc] = build(rows, answer).document["items"]
    assert canvas_doc.get("thumbnail") == expected


@pytest.mark.parametrize("sizes, expected", [
    ([(200, 150)], 0),
    ([(200, 150), (100, 75)], 1),
    ([(75, 100), (133, 200)], 0),
    ([(90, 60), (110, 80)], 1),
    ([(None, None)], 0),
    ([(None, None), (300, 200)], 0),
    ([(200, 150), (None, None)], 1),
    ([(None, 120), (150, None)], 0),
    ([], None),
], ids=["single", "exact-100", "larger-side-is-height", "tie-goes-later", "no-size-is-zero",
        "no-size-nearer", "no-size-ties-later", "one-side-only", "no-thumbnail"])
def test_row_thumbnail_is_closest_to_100px(sizes, expected):
    images = [thumb("x", w, h, size=f"{i},") for i, (w, h) in enumerate(sizes)]
    answer = named_query(canvas("x", thumbnail=images or None))
    [update] = build([row("a", 0, "x")], answer).row_updates
    assert update.thumbnail == (None if expected is None else images[expected]["id"])


def test_row_thumbnail_ignores_what_is_not_an_image_with_an_id():
    # The id-less Image would make an invalid canvas thumbnail, so it sits on the
    # second row, whose thumbnail list the canvas does not copy.
    images = [{"id": f"{DLCS}/t.txt", "type": "Text", "format": "text/plain"},
              {"type": "Image", "width": 100, "height": 100}, thumb("y", 500, 400)]
    answer = named_query(canvas("x", thumbnail=[thumb("x")]), canvas("y", thumbnail=images))
    result = build([row("a", 0, "x"), row("a", 1, "y")], answer)
    assert result.row_updates[1].thumbnail == images[2]["id"]
    assert result.document["items"][0]["thumbnail"] == [thumb("x")]


# --- rule 7: missing assets -----------------------------------------------------------------

def test_missing_asset_leaves_its_canvas_out_and_is_reported():
    rows = [row("a", 0, "x"), row("b", 1, "gone"), row("c", 2, "z")]
    result = build(rows, named_query(canvas("z"), canvas("x")))
    assert [c["id"] for c in result.document["items"]] == [f"{CANVASES}/a", f"{CANVASES}/c"]
    assert result.missing_assets == ("2/5/gone",)
    assert [update is None for update in result.row_updates] == [False, True, False]


def test_missing_choice_member_is_left_out_of_the_choice():
    rows = [row("a", 0, "x", choice_order=1), row("a", 0, "gone", choice_order=2)]
    assert only_body(build(rows, named_query(canvas("x")))) == choice(image("x"))


def test_missing_row_of_a_shared_canvas_contributes_no_annotation():
    rows = [row("a", 0, "gone"), row("a", 1, "y")]
    document = build(rows, named_query(canvas("y"))).document
    assert outline(document) == [("a", "/annopages/0", [("/annotations/1", "")])]


def test_missing_assets_in_input_order_without_duplicates():
    rows = [row("a", 3, "y"), row("b", 0, "x"), row("c", 1, "w"), row("d", 2, "y")]
    result = build(rows, named_query(canvas("x")))
    assert result.missing_assets == ("2/5/y", "2/5/w")
    assert [update is None for update in result.row_updates] == [True, False, True, True]


def test_nothing_returned_publishes_an_empty_manifest():
    # The schema accepts an empty items list, though Presentation 3 prose asks
    # for at least one canvas; the rules say the manifest is still published.
    result = build([row("a", 0, "x")], named_query())
    assert result.document["items"] == []
    assert result.missing_assets == ("2/5/x",)


@pytest.mark.parametrize("canvas_id", [
    f"{DLCS}/iiif-img/2/5/x/canvas/x/1",
    f"{DLCS}/iiif-av/2/5/x/canvas/c/1",
    "urn:x",
    None,
], ids=["other-marker", "other-path", "not-http", "no-id"])
def test_named_query_canvas_of_another_form_is_ignored(canvas_id):
    odd = {**canvas("x"), "id": canvas_id}
    result = build([row("a", 0, "x")], named_query(odd))
    assert result.document["items"] == [] and result.missing_assets == ("2/5/x",)


# --- rule 9: canvas rendering and behavior ------------------------------------------------

def file_link(name: str, kind: str = "Dataset", media: str = "application/pdf",
              **extra) -> dict:
    """A rendering of the DLCS's file channel shape (or anyone's, by id)."""
    return {"id": f"{DLCS}/file/2/5/{name}", "type": kind, "label": {"en": [f"File {name}"]},
            "format": media, **extra}


def linked(found: dict, **links) -> dict:
    """A named-query canvas that also carries canvas-level behavior/rendering values."""
    return {**found, **links}


def registered_with(*canvases: dict) -> dict:
    """A registration whose items lend canvases to the paintedResources."""
    return {**REGISTERED, "items": list(canvases)}


@pytest.mark.parametrize("rows, answer, registered, expected", [
    ([row("a", 0, "x")], named_query(linked(canvas("x"), rendering=[file_link("x")])),
     REGISTERED, {"rendering": [file_link("x")]}),
    ([row("a", 0, "x")], named_query(linked(canvas("x"), behavior=["auto-advance"])),
     REGISTERED, {"behavior": ["auto-advance"]}),
    ([row("a", 0, "x")],
     named_query(linked(canvas("x"), behavior=["non-paged"], rendering=[file_link("x")])),
     registered_with({"id": "a", "type": "Canvas", "behavior": ["facing-pages"],
                      "rendering": [file_link("reg", "Text", "text/plain")]}),
     {"behavior": ["facing-pages", "non-paged"],
      "rendering": [file_link("reg", "Text", "text/plain"), file_link("x")]}),
    ([row("a", 0, "x")],
     named_query(linked(canvas("x"), behavior=["auto-advance", "facing-pages"],
                        rendering=[file_link("x", label="the DLCS's")])),
     registered_with({"id": "a", "behavior": ["facing-pages", "facing-pages"],
                      "rendering": [file_link("x")]}),
     {"behavior": ["facing-pages", "auto-advance"], "rendering": [file_link("x")]}),
    ([row("a", 1, "y"), row("a", 0, "x")],
     named_query(linked(canvas("y"), rendering=[file_link("y")], behavior=["no-auto-advance"]),
                 linked(canvas("x"), rendering=[file_link("x")], behavior=["auto-advance"])),
     REGISTERED,
     {"behavior": ["auto-advance", "no-auto-advance"],
      "rendering": [file_link("x"), file_link("y")]}),
    ([row("a", 0, "y", choice_order=2), row("a", 0, "x", choice_order=1)],
     named_query(linked(canvas("y"), rendering=[file_link("y")]),
                 linked(canvas("x"), rendering=[file_link("x")])),
     REGISTERED, {"rendering": [file_link("x"), file_link("y")]}),
    ([row("a", 0, "x"), row("a", 1, "x", target="xywh=0,0,10,10")],
     named_query(linked(canvas("x"), rendering=[file_link("x")])),
     REGISTERED, {"rendering": [file_link("x")]}),
    ([row("a", 0, "x"), row("a", 1, "gone")],
     named_query(linked(canvas("x"), rendering=[file_link("x")])),
     REGISTERED, {"rendering": [file_link("x")]}),
    ([row("a", 0, "x")],
     named_query(linked(canvas("x"), behavior="auto-advance", rendering=file_link("x"))),
     REGISTERED, {"behavior": ["auto-advance"], "rendering": [file_link("x")]}),
    ([row("a", 0, "x")],
     named_query(linked(canvas("x"), behavior=[1, None, {"no": "string"}, "auto-advance"],
                        rendering=["text", None, {"id": 1, "type": "Text"},
                                   {"type": "Text"}, {"id": f"{DLCS}/untyped"},
                                   file_link("x")])),
     REGISTERED, {"behavior": ["auto-advance"], "rendering": [file_link("x")]}),
    ([row("a", 0, "x")], named_query(linked(canvas("x"), behavior=[], rendering=[])),
     registered_with({"id": "a", "behavior": None, "rendering": {"not": "a resource"}}), {}),
    ([row("a", 0, "x")], named_query(canvas("x")),
     registered_with({"id": f"{CANVASES}/a", "behavior": ["non-paged"]}),
     {"behavior": ["non-paged"]}),
    ([row("a", 0, "x")], named_query(canvas("x")),
     registered_with({"id": "a", "behavior": ["non-paged"]},
                     {"id": "a", "behavior": ["facing-pages"]}),
     {"behavior": ["non-paged"]}),
    ([row("a", 0, "x")], named_query(canvas("x")),
     registered_with({"id": "b", "behavior": ["non-paged"]}, "not a canvas", {"id": 7}), {}),
    ([row("a", 0, "x")], named_query(canvas("x")),
     {**REGISTERED, "items": {"id": "a", "behavior": ["non-paged"]}}, {}),
], ids=["named-query-rendering", "named-query-behavior", "registration-first",
        "duplicates-keep-the-first", "rows-in-canvas-order", "choice-members-in-choice-order",
        "one-asset-painted-twice", "missing-row-lends-nothing", "lone-values",
        "malformed-entries-left-out", "empty-lists-no-property", "matched-by-published-id",
        "first-registered-canvas-of-an-id", "other-canvases-ignored", "items-not-a-list"])
def test_canvas_rendering_and_behavior(rows, answer, registered, expected):
    result = build(rows, answer, registered)
    [canvas_doc] = result.document["items"]
    assert {key: canvas_doc[key] for key in ("behavior", "rendering") if key in canvas_doc} \
        == expected


def test_rendering_and_behavior_come_before_the_canvas_items():
    answer = named_query(linked(canvas("x", thumbnail=[thumb("x")]), behavior=["auto-advance"],
                                rendering=[file_link("x")]))
    [canvas_doc] = build([row("a", 0, "x", label=FRONT)], answer).document["items"]
    assert list(canvas_doc) == ["id", "type", "label", "width", "height", "thumbnail",
                                "behavior", "rendering", "items"]


def test_a_registered_canvas_lends_only_rendering_and_behavior():
    lent = {"id": "a", "type": "Canvas", "label": {"en": ["Registered"]}, "width": 1,
            "height": 1, "seeAlso": [{"id": "https://example.org/a.xml", "type": "Dataset"}],
            "items": [], "behavior": ["non-paged"]}
    document = build([row("a", 0, "x")], registered=registered_with(lent)).document
    [canvas_doc] = document["items"]
    assert canvas_doc["behavior"] == ["non-paged"]
    assert "seeAlso" not in canvas_doc and "label" not in canvas_doc
    assert (canvas_doc["width"], canvas_doc["height"]) == (4000, 3000)
    assert len(canvas_doc["items"][0]["items"]) == 1
    assert [c["id"] for c in document["items"]] == [f"{CANVASES}/a"]


def test_a_registered_canvas_without_returned_rows_is_not_published():
    registered = registered_with({"id": "a", "rendering": [file_link("reg")]})
    assert build([row("a", 0, "gone")], named_query(), registered).document["items"] == []


# --- rule 8: row updates -----------------------------------------------------------------

@pytest.mark.parametrize("fields, found, expected", [
    ({"static_width": 800, "static_height": 600}, canvas("x", thumbnail=[thumb("x")]),
     RowUpdate(thumb("x")["id"], 800, 600, None)),
    ({}, canvas("x", thumbnail=[thumb("x")]), RowUpdate(thumb("x")["id"], 4000, 3000, None)),
    ({"static_width": 800}, canvas("x"), RowUpdate(None, 800, None, None)),
    ({"static_height": 600}, canvas("x"), RowUpdate(None, None, 600, None)),
    ({}, canvas("x", sound("x", 12), size=None), RowUpdate(None, None, None, 12.0)),
    ({}, canvas("x", video("x", 1280, 720, 9.5), size=None), RowUpdate(None, 1280, 720, 9.5)),
    ({}, canvas("x", image("x", own=None, services=[]), size=(300, 200)),
     RowUpdate(None, 300, 200, None)),
], ids=["statics-kept", "filled-when-both-empty", "width-only-kept", "height-only-kept", "sound",
        "video", "named-query-canvas-size"])
def test_row_update(fields, found, expected):
    [update] = build([row("a", 0, "x", **fields)], named_query(found)).row_updates
    assert update == expected
    assert update.duration is None or isinstance(update.duration, float)


def test_row_updates_follow_input_order_and_each_row_own_asset():
    rows = [row("a", 0, "y", choice_order=2), row("a", 0, "x", choice_order=1)]
    answer = named_query(
        canvas("x", image("x", services=[service("ImageService3", 4000, 3000)])),
        canvas("y", image("y", services=[service("ImageService3", 2000, 1000)])))
    result = build(rows, answer)
    assert [(u.width, u.height) for u in result.row_updates] == [(2000, 1000), (4000, 3000)]


# --- determinism and purity ------------------------------------------------------------------

def rich_inputs() -> tuple[dict, list[PaintedResource], dict]:
    """Inputs that exercise every rule at once."""
    registered = {**REGISTERED, "summary": {"fr": ["Lettres, été 1890"]},
                  "metadata": [{"label": {"en": ["Date"]}, "value": {"en": ["1890"]}}]}
    rows = [
        row("cover", 0, "c", canvas_label=COVER, label=FRONT, static_width=800, static_height=600),
        row("pair", 2, "b", choice_order=2, label=BACK, target="xywh=0,0,10,10"),
        row("pair", 2, "a", choice_order=1, label=FRONT),
        row("pair", 1, "d"),
        row("audio", 3, "s"),
        row("lost", 4, "gone"),
        row("clip", 5, "v", static_width=640, static_height=360),
    ]
    answer = named_query(
        canvas("a", choice(image("a1"), image("a2")), thumbnail=[thumb("a", 200, 150)]),
        canvas("b", thumbnail=[thumb("b", 90, 60), thumb("b", 110, 80, size="110,")]),
        canvas("c"), canvas("d", image("d", services=[service("ImageService2", 10, 10)])),
        canvas("s", sound("s"), size=None), canvas("v", video("v"), size=None),
        context=[AUTH, PRESENTATION_3])
    return registered, rows, answer


def test_two_builds_are_byte_identical():
    registered, rows, answer = rich_inputs()
    first = build(rows, answer, registered)
    second = build(rows, answer, registered)
    assert first.body == second.body
    assert first.row_updates == second.row_updates


@pytest.mark.parametrize("seed", range(5))
def test_shuffled_named_query_gives_identical_bytes(seed):
    registered, rows, answer = rich_inputs()
    expected = build(rows, answer, registered).body
    random.Random(seed).shuffle(answer["items"])
    assert build(rows, answer, registered).body == expected


@pytest.mark.parametrize("seed", range(5))
def test_shuffled_painted_resources_give_identical_bytes(seed):
    registered, rows, answer = rich_inputs()
    expected = build(rows, answer, registered)
    positions = list(range(len(rows)))
    random.Random(seed).shuffle(positions)
    result = build([rows[i] for i in positions], answer, registered)
    assert result.body == expected.body
    assert result.row_updates == tuple(expected.row_updates[i] for i in positions)


def test_duplicate_canvases_for_one_asset_do_not_depend_on_order():
    one, other = canvas("x", n=1), canvas("x", image("x", size="max"), n=2)
    rows = [row("a", 0, "x")]
    assert build(rows, named_query(one, other)).body == build(rows, named_query(other, one)).body


def test_inputs_are_never_mutated():
    registered, rows, answer = rich_inputs()
    before = copy.deepcopy((registered, rows, answer))
    build(rows, answer, registered)
    assert (registered, rows, answer) == before


def test_one_asset_painted_twice_is_resized_only_where_the_row_has_statics():
    # The output shares unchanged bodies with the answer, so a resize must be a
    # new body: neither the answer nor the other row's body may see it.
    rows = [row("big", 0, "x", static_width=800, static_height=600), row("small", 1, "x")]
    answer = named_query(canvas("x"))
    before = copy.deepcopy(answer)
    bodies = [c["items"][0]["items"][0]["body"] for c in build(rows, answer).document["items"]]
    assert [(b["id"].split("/full/")[1], b["width"], b["height"]) for b in bodies] == [
        ("800,600/0/default.jpg", 800, 600), ("1024,768/0/default.jpg", 1024, 768)]
    assert answer == before


def test_a_built_document_is_not_changed_by_the_next_build_from_the_same_answer():
    registered, rows, answer = rich_inputs()
    first = build(rows, answer, registered)
    relabelled = [dataclasses.replace(r, label={"en": ["other"]}) for r in rows]
    build(relabelled, answer, registered)
    assert serialise(first.document) == first.body


# --- asset ids, serialisation, malformed answers, size -----------------------------------------

@pytest.mark.parametrize("canvas_id, expected", [
    (f"{DLCS}/iiif-img/2/5/foo/canvas/c/1", "2/5/foo"),
    (f"{DLCS}/iiif-img/2/5/foo/CANVAS/C/1", "2/5/foo"),
    (f"{DLCS}/iiif-img/2/5/foo/Canvas/c/12", "2/5/foo"),
    ("http://dlcs.example:8080/iiif-img/12/345/a-b_c.d%20e/canvas/c/17", "12/345/a-b_c.d%20e"),
    ("HTTPS://DLCS.EXAMPLE/iiif-img/2/5/Foo/canvas/c/1", "2/5/Foo"),
    (f"{DLCS}/iiif-img/2/5/canvas/canvas/c/1", "2/5/canvas"),
    (f"{DLCS}/iiif-img/2/5/foo/canvas/c/1/page", None),
    (f"{DLCS}/iiif-img/2/5/foo/canvas/c/", None),
    (f"{DLCS}/iiif-img/2/5/foo/canvas/c/x", None),
    (f"{DLCS}/iiif-img/2/5/canvas/c/1", None),
    (f"{DLCS}/iiif-img/2/5/foo", None),
    (f"{DLCS}/iiif-av/2/5/foo/canvas/c/1", None),
    (f"{DLCS}/iiif-img/x/5/foo/canvas/c/1", None),
    (f"{DLCS}/iiif-img/2/5/foo/canvas/c/1?x=1", None),
    ("ftp://dlcs.example/iiif-img/2/5/foo/canvas/c/1", None),
    ("2/5/foo", None),
    ("", None),
], ids=lambda value: str(value)[-40:])
def test_asset_id_from_canvas_id(canvas_id, expected):
    assert asset_id_from_canvas_id(canvas_id) == expected


def test_serialise_is_compact_utf8():
    assert serialise({"label": {"fr": ["Été"]}, "n": [1, 2.5]}) == \
        '{"label":{"fr":["Été"]},"n":[1,2.5]}'.encode()


@pytest.mark.parametrize("canvases", [0, 1, 255, 256, 257, 600])
def test_write_manifest_writes_the_bytes_of_serialise(canvases):
    rows = [row(f"c{n}", n, f"a{n}", label={"en": [f"Page {n}"]}) for n in range(canvases)]
    registered = {**REGISTERED, "metadata": [{"label": {"en": ["items"]},
                                              "value": {"en": ['"items":[]}']}}]}
    document = build(rows, registered=registered).document
    out = io.BytesIO()
    write_manifest(document, out)
    assert out.getvalue() == serialise(document)


@pytest.mark.parametrize("canvases, missing", [(0, ()), (1, ()), (256, ()), (257, ()),
                                               (600, ()), (600, (0, 255, 256, 599)),
                                               (300, tuple(range(256)))])
def test_write_document_writes_the_bytes_of_the_built_document(canvases, missing):
    rows = [row(f"c{n}", n, "gone" if n in missing else f"a{n}",
                label={"en": [f"Page {n}"]}) for n in range(canvases)]
    answer = all_returned(rows)
    built = build_document(REGISTERED, rows, answer, base_url=BASE, customer=2, manifest_id="m")
    out = io.BytesIO()
    written = write_document(REGISTERED, rows, answer, out, base_url=BASE, customer=2,
                             manifest_id="m")
    assert out.getvalue() == serialise(built.document)
    assert written.canvases == canvases - len(missing) == len(built.document["items"])
    assert written.row_updates == built.row_updates
    assert written.missing_assets == built.missing_assets == (("2/5/gone",) if missing else ())


def test_write_document_refuses_what_is_not_json():
    registered = {**REGISTERED, "navDate": float("inf")}
    with pytest.raises(BuildError, match="JSON"):
        write_document(registered, [row("c", 0, "a")], all_returned([row("c", 0, "a")]),
                       io.BytesIO(), base_url=BASE, customer=2, manifest_id="m")


def test_write_manifest_of_a_document_not_shaped_by_the_build_writes_it_whole():
    document = {"items": [{"id": "x"}], "label": {"none": ["items last is not assumed"]}}
    out = io.BytesIO()
    write_manifest(document, out)
    assert out.getvalue() == serialise(document)


def test_write_manifest_refuses_what_is_not_json():
    registered = {**REGISTERED, "navDate": float("inf")}
    document = build_document(registered, [row("c", 0, "a")], all_returned([row("c", 0, "a")]),
                              base_url=BASE, customer=2, manifest_id="m").document
    with pytest.raises(BuildError, match="JSON"):
        write_manifest(document, io.BytesIO())


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_serialise_refuses_what_is_not_a_json_number(value):
    # Wherever it is, beside a null or not (orjson would write it as null).
    with pytest.raises(ValueError):
        serialise({"duration": value})
    with pytest.raises(ValueError):
        serialise({"navDate": None, "items": [{"a": [1, (2, {"b": value})]}]})


def test_serialise_writes_nulls_and_numbers_as_they_parse():
    document = {"navDate": None, "n": [0.00001, 1e16, -0.0, 2**63 - 1, 12.5], "t": ["\u2028\x00"]}
    text = serialise(document)
    assert text == b'{"navDate":null,"n":[0.00001,1e+16,-0.0,9223372036854775807,12.5],' \
        b'"t":["\xe2\x80\xa8\\u0000"]}'
    assert json.loads(text) == document


def test_write_manifest_writes_its_blocks_with_the_same_encoder():
    # A float below 1e-4 is where orjson's text and the standard library's differ:
    # the blocks of canvases must come out as serialise writes them, not as json.dumps.
    document = {"type": "Manifest",
                "items": [{"id": f"c{n}", "duration": 0.00001} for n in range(300)]}
    out = io.BytesIO()
    write_manifest(document, out)
    assert out.getvalue() == serialise(document)
    assert out.getvalue().count(b'"duration":0.00001') == 300


def test_serialise_writes_what_orjson_refuses_as_the_standard_library_does():
    # Integers beyond 64 bits and keys that are not strings are JSON to other readers.
    assert serialise({"n": 2**70, 1: "one"}) == b'{"n":1180591620717411303424,"1":"one"}'
    deep = current = []
    for _ in range(300):  # past orjson's 255 levels
        current.append([])
        current = current[0]
    assert serialise(deep) == b"[" * 301 + b"]" * 301


@pytest.mark.parametrize("value", [dt.datetime(2025, 1, 1), object(), {1, 2}])
def test_serialise_refuses_what_json_cannot_hold(value):
    with pytest.raises(TypeError):
        serialise({"value": value})


def test_serialise_refuses_a_lone_surrogate():
    with pytest.raises(UnicodeEncodeError):
        serialise({"label": {"en": ["\ud800"]}})


def test_serialise_of_a_cycle_ends_in_an_error_not_a_hang():
    # Built documents have no cycles (see serialise); one that had would still end.
    document = {"items": []}
    document["items"].append(document)
    with pytest.raises(RecursionError):
        serialise(document)


def test_unserialisable_registration_is_a_build_error():
    registered = {**REGISTERED, "navDate": float("inf")}
    with pytest.raises(BuildError, match="JSON"):
        build_manifest(registered, [row("a", 0, "x")], all_returned([row("a", 0, "x")]),
                       base_url=BASE, customer=2, manifest_id="m")


def _without_body(asset: str) -> dict:
    """A named-query canvas whose annotation has no body."""
    found = canvas(asset)
    del found["items"][0]["items"][0]["body"]
    return found


@pytest.mark.parametrize("answer, message", [
    ([], "not a JSON object"),
    ("manifest", "not a JSON object"),
    ({"type": "Manifest"}, "no items list"),
    ({"type": "Manifest", "items": {}}, "no items list"),
    ({"type": "Collection", "items": []}, "not a Manifest"),
    ({"type": "Manifest", "items": ["canvas"]}, "not a JSON object"),
    (named_query(_without_body("x")), "no painting body"),
    (named_query({**canvas("x"), "items": []}), "no painting body"),
    (named_query({**canvas("x"), "items": "page"}), "no painting body"),
    (named_query(canvas("x", [image("x")])), "no painting body"),
    (named_query(canvas("x", {"id": f"{DLCS}/x"})), "no painting body"),
    (named_query(canvas("x", choice())), "Choice has no items"),
    (named_query(canvas("x", choice("x"))), "Choice item is not a JSON object"),
], ids=["list", "string", "no-items", "items-not-list", "not-manifest", "item-not-object",
        "no-body", "no-pages", "pages-not-list", "body-array", "body-without-type", "empty-choice",
        "choice-item-not-object"])
def test_malformed_named_query_is_a_build_error(answer, message):
    with pytest.raises(BuildError, match=message):
        build_manifest(REGISTERED, [row("a", 0, "x")], answer, base_url=BASE, customer=2,
                       manifest_id="m")


def test_malformed_canvas_nobody_paints_is_never_read():
    result = build([row("a", 0, "x")], named_query(canvas("x"), _without_body("unused")))
    assert len(result.document["items"]) == 1


def test_ten_thousand_canvases_build():
    count = 10_000
    rows = [row(f"c{i}", i, f"a{i}") for i in range(count)]
    answer = named_query(*(canvas(f"a{i}") for i in range(count)))
    random.Random(0).shuffle(answer["items"])
    result = build(rows, answer)
    assert len(result.document["items"]) == count
    assert result.document["items"][-1]["id"] == f"{CANVASES}/c{count - 1}"
    assert result.missing_assets == () and None not in result.row_updates


# --- slim_canvas: the named-query answer as the service parses it ------------------------

def test_slim_canvas_keeps_rendering_and_behavior():
    full = linked(canvas("a"), behavior=["placeholder"], rendering=[file_link("a")])
    slim = slim_canvas(copy.deepcopy(full))
    assert (slim["behavior"], slim["rendering"]) == (full["behavior"], full["rendering"])
    answer = named_query(full)
    slimmed = json.loads(json.dumps(answer), object_hook=slim_canvas)
    rows = [row("p1", 0, "a")]
    assert build_manifest(REGISTERED, rows, slimmed, base_url=BASE, customer=2,
                          manifest_id="m").body == \
        build_manifest(REGISTERED, rows, answer, base_url=BASE, customer=2, manifest_id="m").body


def test_slim_canvas_keeps_only_what_the_build_reads():
    full = canvas("a", thumbnail=[thumb("a", 200, 150)])
    slim = slim_canvas(copy.deepcopy(full))
    assert set(slim) == {"id", "type", "width", "height", "thumbnail", "items"}
    assert slim["items"] == [{"items": [{"body": full["items"][0]["items"][0]["body"]}]}]
    assert all(slim[key] == full[key] for key in ("id", "type", "width", "height", "thumbnail"))
    answer = named_query(full)
    slimmed = json.loads(json.dumps(answer), object_hook=slim_canvas)
    assert build([row("p1", 0, "a")], slimmed).body == build([row("p1", 0, "a")], answer).body


# --- SlimAnswer: each repeated value of the answer kept once ------------------------------

def sized_thumb(asset: str, *sizes: dict) -> dict:
    """A thumbnail Image whose image service lists ``sizes``."""
    return {**thumb(asset, 200, 150),
            "service": [{"id": f"{DLCS}/thumbs/2/5/{asset}", "type": "ImageService3",
                         "profile": "level0", "sizes": list(sizes)}]}


def parsed(answer: dict, hook) -> dict:
    return json.loads(json.dumps(answer), object_hook=hook)


def test_an_answer_keeps_each_repeated_value_once_and_builds_the_same_manifest():
    # Two images of the same dimensions: their thumbnails list the same sizes.
    sizes = ({"width": 200, "height": 150}, {"width": 100, "height": 75})
    answer = named_query(canvas("a", thumbnail=[sized_thumb("a", *sizes)]),
                         canvas("b", thumbnail=[sized_thumb("b", *sizes)]))
    shared = parsed(answer, SlimAnswer().object_hook)
    assert shared == parsed(answer, slim_canvas)
    first, second = (item["thumbnail"][0] for item in shared["items"])
    assert second["service"][0]["sizes"] is first["service"][0]["sizes"]
    assert second["service"][0]["profile"] is first["service"][0]["profile"]
    assert second["format"] is first["format"]
    first_body, second_body = (item["items"][0]["items"][0]["body"] for item in shared["items"])
    assert second_body["service"][1]["type"] is first_body["service"][1]["type"]
    assert second_body["service"][1]["width"] is first_body["service"][1]["width"]  # 4000
    # Ids are each asset's own: never shared.
    assert second["id"] != first["id"] and second["service"][0]["id"] != first["service"][0]["id"]
    rows = [row("p1", 0, "a"), row("p2", 1, "b")]
    assert build(rows, shared).body == build(rows, answer).body


def test_an_answer_of_alike_images_takes_half_the_memory_parsed():
    # What a worker's peak is made of: the answer as parsed. Images of three
    # sizes, as a digitised volume has, each thumbnail listing four sizes.
    dimensions = [(4000, 3000), (2000, 3000), (1200, 1600)]
    answer = named_query(*(
        canvas(f"a{n}", size=dimensions[n % 3], thumbnail=[sized_thumb(
            f"a{n}", *({"width": w * side // 4000, "height": h * side // 4000}
                       for w, h in [dimensions[n % 3]] for side in (1024, 400, 200, 100)))])
        for n in range(300)))
    text = json.dumps(answer)

    def memory_parsed(hook) -> int:
        started = not tracemalloc.is_tracing()
        if started:
            tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            parsed = json.loads(text, object_hook=hook)  # held while measured
            used = tracemalloc.get_traced_memory()[0] - before
            del parsed
            return used
        finally:
            if started:
                tracemalloc.stop()

    assert memory_parsed(SlimAnswer().object_hook) < 0.7 * memory_parsed(slim_canvas)


@pytest.mark.parametrize("other", [True, 1.0, "1"], ids=["bool", "float", "string"])
def test_an_answer_shares_a_value_only_with_one_of_the_same_type(other):
    # 1 == True == 1.0 in Python: sharing by equality alone would publish a
    # true, or a 1.0, as the 1 seen before it.
    answer = named_query(canvas("a", thumbnail=[sized_thumb("a", {"width": 1, "height": 2})]),
                         canvas("b", thumbnail=[sized_thumb("b", {"width": other, "height": 2})]))
    shared = parsed(answer, SlimAnswer().object_hook)
    widths = [item["thumbnail"][0]["service"][0]["sizes"][0]["width"]
              for item in shared["items"]]
    assert [type(width) for width in widths] == [int, type(other)]
    assert json.dumps(shared) == json.dumps(parsed(answer, slim_canvas))


@pytest.mark.parametrize("value", [
    {"type": "Image", "id": "x", "label": {"en": ["kept"]}},
    {"id": "no type", "metadata": []},
    {"type": "Canvas", "id": "c", "label": {"en": ["dropped"]}, "items": {"not": "a list"}},
    {"type": "Canvas", "id": "c", "items": [{"items": []}]},
], ids=["not-a-canvas", "no-type", "items-not-a-list", "no-annotation"])
def test_slim_canvas_leaves_anything_else_for_the_build_to_judge(value):
    slim = slim_canvas(copy.deepcopy(value))
    if value.get("type") != "Canvas":
        assert slim == value
    else:
        assert slim["items"] == value["items"] and "label" not in slim
