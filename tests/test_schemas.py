"""Tests for webhook.schemas: the notification and registration payloads at the edge."""

from __future__ import annotations

import copy
import datetime as dt
import json
import re

import pytest

from tests.conftest import sample
from webhook.domain import BatchCompletion, PaintedResource
from webhook.errors import PayloadError
from webhook.schemas import (MANIFEST_ID, Registration, parse_json_object, parse_notification,
                             parse_registration)

UTC = dt.timezone.utc
CURRENT = json.loads(sample("notification-current.json"))
OLD = json.loads(sample("notification-old.json"))
REGISTRATION = json.loads(sample("registration-2-assets.json"))


def encode(document) -> bytes:
    return json.dumps(document).encode()


def with_fields(document: dict, **changes) -> bytes:
    """``document`` with some fields replaced (a value of ``...`` removes the field)."""
    changed = {**document, **changes}
    return encode({k: v for k, v in changed.items() if v is not ...})


def at(messages, path: tuple):
    """Follow ``path`` through nested field messages."""
    for step in path:
        assert isinstance(messages, dict) and step in messages, (path, messages)
        messages = messages[step]
    return messages


# --------------------------------------------------------------------- notifications


def test_current_sample_loads_as_a_completion():
    assert parse_notification(sample("notification-current.json")) == BatchCompletion(
        batch_id=1234, customer=2, count=2, completed=2, errors=0, superseded=False,
        submitted=dt.datetime(2025, 2, 20, 12, 28, 1, 517392, tzinfo=UTC),
        finished=dt.datetime(2025, 2, 20, 12, 30, 15, 123456, tzinfo=UTC))


def test_old_sample_loads_as_a_completion():
    assert parse_notification(sample("notification-old.json")) == BatchCompletion(
        batch_id=1235, customer=2, count=3, completed=2, errors=1, superseded=False,
        submitted=dt.datetime(2025, 2, 20, 12, 28, 2, 40000, tzinfo=UTC),
        finished=dt.datetime(2025, 2, 20, 12, 31, 40, 993100, tzinfo=UTC))


def test_superseded_true_is_kept():
    assert parse_notification(with_fields(CURRENT, superseded=True)).superseded is True


@pytest.mark.parametrize("text, expected", [
    ("2025-02-20T12:30:15Z", dt.datetime(2025, 2, 20, 12, 30, 15)),
    ("2025-02-20T12:30:15.5Z", dt.datetime(2025, 2, 20, 12, 30, 15, 500000)),
    ("2025-02-20T12:30:15+00:00", dt.datetime(2025, 2, 20, 12, 30, 15)),
    # The DLCS writes up to 7 fractional digits; the 7th is cut, never rounded up ...
    ("2025-02-20T12:30:15.5173929Z", dt.datetime(2025, 2, 20, 12, 30, 15, 517392)),
    ("2025-02-20T12:30:15.1234560Z", dt.datetime(2025, 2, 20, 12, 30, 15, 123456)),
    # ... so a time just before midnight on New Year's Eve stays in that year.
    ("2025-12-31T23:59:59.9999999Z", dt.datetime(2025, 12, 31, 23, 59, 59, 999999)),
    ("2025-02-20T14:30:15.123456+02:00", dt.datetime(2025, 2, 20, 12, 30, 15, 123456)),
    ("2025-02-20T07:00:15-05:30", dt.datetime(2025, 2, 20, 12, 30, 15)),
    ("2025-02-21T02:30:15+14:00", dt.datetime(2025, 2, 20, 12, 30, 15)),
    ("2025-02-19T23:30:15-13:00", dt.datetime(2025, 2, 20, 12, 30, 15)),
    ("9999-12-31T23:59:59Z", dt.datetime(9999, 12, 31, 23, 59, 59)),
])
@pytest.mark.parametrize("field", ["submitted", "finished"])
def test_dates_become_aware_utc(field, text, expected):
    completion = parse_notification(with_fields(CURRENT, **{field: text}))
    moment = getattr(completion, field)
    assert moment.tzinfo is UTC
    assert moment.replace(tzinfo=None) == expected


@pytest.mark.parametrize("field, attribute", [("started", "submitted"),
                                              ("finished", "finished")])
def test_old_format_dates_are_converted_too(field, attribute):
    completion = parse_notification(with_fields(OLD, **{field: "2025-02-20T13:31:40.9931+01:00"}))
    moment = getattr(completion, attribute)
    assert moment.tzinfo is UTC
    assert moment.replace(tzinfo=None) == dt.datetime(2025, 2, 20, 12, 31, 40, 993100)


def test_unknown_fields_are_ignored():
    body = with_fields(CURRENT, images="https://api.dlcs.example/x", extra={"a": [1]},
                       customerId=99, total=99)
    assert parse_notification(body) == parse_notification(sample("notification-current.json"))


def test_largest_counts_load():
    top = 2**31 - 1
    completion = parse_notification(with_fields(CURRENT, count=top, completed=top, errors=top,
                                                id=2**63 - 1, customer=2**63 - 1))
    assert (completion.count, completion.completed, completion.errors) == (top, top, top)
    assert (completion.batch_id, completion.customer) == (2**63 - 1, 2**63 - 1)


INVALID_JSON = [
    pytest.param(b"", id="empty"),
    pytest.param(b"not json", id="text"),
    pytest.param(b'{"id": 1234', id="truncated"),
    pytest.param(b'{"id": 1234}\n{"id": 1}', id="two-documents"),
    pytest.param(b"\xff\xfe\x00{", id="bad-utf8"),
]

NOT_AN_OBJECT = [
    pytest.param(b"null", id="null"),
    pytest.param(b"[]", id="list"),
    pytest.param(b'"a string"', id="string"),
    pytest.param(b"1234", id="number"),
    pytest.param(b"true", id="bool"),
]


@pytest.mark.parametrize("body", INVALID_JSON)
def test_invalid_json_is_rejected(body):
    with pytest.raises(PayloadError) as info:
        parse_notification(body)
    assert info.value.detail == "The body is not valid JSON."
    assert info.value.errors == {}


def nested(depth: int, inner: bytes = b"1") -> bytes:
    """A notification whose ``x`` holds ``depth - 1`` nested arrays: ``depth`` levels in all."""
    return b'{"x": ' + b"[" * (depth - 1) + inner + b"]" * (depth - 1) + b"}"


TOO_DEEP = [
    pytest.param(nested(65), id="65-levels"),
    # Deep enough that the steps after parsing would recurse past Python's limit.
    pytest.param(nested(960), id="960-levels"),
    # Deep enough that parsing itself does.
    pytest.param(b"[" * 100_000 + b"]" * 100_000, id="100000-levels"),
    pytest.param(b'{"a":' * 100_000 + b"1" + b"}" * 100_000, id="100000-objects"),
]


@pytest.mark.parametrize("body", TOO_DEEP)
def test_nesting_deeper_than_64_levels_is_refused(body):
    with pytest.raises(PayloadError) as info:
        parse_notification(body)
    assert info.value.detail == "The body is nested deeper than 64 levels."


def test_nesting_of_64_levels_is_accepted():
    completion = parse_notification(with_fields(CURRENT) [:-1] + b', "x": '
                                    + b"[" * 63 + b"]" * 63 + b"}")
    assert completion.batch_id == 1234


NON_FINITE = ["NaN", "Infinity", "-Infinity"]


@pytest.mark.parametrize("constant", NON_FINITE)
def test_non_finite_numbers_are_refused_anywhere(constant):
    body = with_fields(CURRENT)[:-1] + f', "extra": {{"deep": [1, {constant}]}}}}'.encode()
    with pytest.raises(PayloadError) as info:
        parse_notification(body)
    assert info.value.detail == f"The body contains {constant}, which is not a JSON number."


BEYOND_DOUBLE = "which is beyond the range of a double-precision number"


@pytest.mark.parametrize("number", ["1e400", "-1e400", "1.5E+309", "9" * 310 + ".0"],
                         ids=["1e400", "-1e400", "1.5E+309", "310-digits"])
def test_numbers_that_would_read_as_infinity_are_refused_anywhere(number):
    # json.loads reads them as float("inf"), which no JSON text can hold again.
    body = with_fields(CURRENT)[:-1] + f', "extra": {{"deep": [1, {number}]}}}}'.encode()
    with pytest.raises(PayloadError) as info:
        parse_notification(body)
    shown = number if len(number) <= 40 else number[:40] + "..."
    assert info.value.detail == f"The body contains {shown}, {BEYOND_DOUBLE}."


@pytest.mark.parametrize("number, value", [("1e308", 1e308), ("-1.7976931348623157e308",
                                                             -1.7976931348623157e308),
                                           ("1e-400", 0.0), ("2.5", 2.5)])
def test_large_tiny_and_plain_floats_are_read_as_json_loads_reads_them(number, value):
    body = with_fields(CURRENT)[:-1] + f', "extra": {number}}}'.encode()
    assert parse_notification(body).batch_id == 1234
    assert parse_json_object(body)["extra"] == value


@pytest.mark.parametrize("body", NOT_AN_OBJECT)
def test_json_that_is_not_an_object_is_rejected(body):
    with pytest.raises(PayloadError) as info:
        parse_notification(body)
    assert info.value.detail == "The body must be a JSON object."


MISSING = "Missing data for required field."
NULL = "Field may not be null."
NOT_INT = "Not a valid integer."
NOT_BOOL = "Not a valid boolean."
NOT_DATE = "Not a valid datetime."
NAIVE = "Not a valid aware datetime."
OUT_OF_RANGE = "Out of range once converted to UTC."

# (document, field whose message is expected, the message or a regex for it)
REJECTED = [
    pytest.param({}, "id", MISSING, id="empty-object"),
    *[pytest.param(with_fields(CURRENT, **{name: ...}), name, MISSING, id=f"missing-{name}")
      for name in CURRENT],
    pytest.param(with_fields(CURRENT, finished=None), "finished", NULL, id="finished-null"),
    pytest.param(with_fields(CURRENT, submitted=None), "submitted", NULL, id="submitted-null"),
    pytest.param(with_fields(CURRENT, id=None), "id", NULL, id="id-null"),
    pytest.param(with_fields(CURRENT, count="2"), "count", NOT_INT, id="count-string"),
    pytest.param(with_fields(CURRENT, count=2.5), "count", NOT_INT, id="count-fraction"),
    pytest.param(with_fields(CURRENT, count=True), "count", NOT_INT, id="count-bool"),
    pytest.param(with_fields(CURRENT, completed=-1), "completed", "greater than or equal to 0",
                 id="completed-negative"),
    pytest.param(with_fields(CURRENT, count=2**31), "count", "less than or equal to 2147483647",
                 id="count-over-int32"),
    pytest.param(with_fields(CURRENT, errors=2**31), "errors", "less than or equal to 2147483647",
                 id="errors-over-int32"),
    pytest.param(with_fields(CURRENT, id=1234.0), "id", NOT_INT, id="id-float"),
    pytest.param(with_fields(CURRENT, id="1234"), "id", NOT_INT, id="id-string"),
    pytest.param(with_fields(CURRENT, id=True), "id", NOT_INT, id="id-bool"),
    pytest.param(with_fields(CURRENT, id=0), "id", "greater than or equal to 1", id="id-zero"),
    pytest.param(with_fields(CURRENT, id=2**63), "id", "less than or equal to", id="id-over-int64"),
    pytest.param(with_fields(CURRENT, customer=-2), "customer", "greater than or equal to 1",
                 id="customer-negative"),
    pytest.param(with_fields(CURRENT, superseded=1), "superseded", NOT_BOOL,
                 id="superseded-one"),
    pytest.param(with_fields(CURRENT, superseded=0), "superseded", NOT_BOOL,
                 id="superseded-zero"),
    pytest.param(with_fields(CURRENT, superseded="false"), "superseded", NOT_BOOL,
                 id="superseded-string"),
    pytest.param(with_fields(CURRENT, finished="yesterday"), "finished", NOT_DATE,
                 id="finished-unparseable"),
    pytest.param(with_fields(CURRENT, finished=""), "finished", NOT_DATE, id="finished-empty"),
    pytest.param(with_fields(CURRENT, finished=1740054615), "finished", NOT_DATE,
                 id="finished-epoch-number"),
    pytest.param(with_fields(CURRENT, finished="2025-02-20T12:30:15"), "finished", NAIVE,
                 id="finished-naive"),
    pytest.param(with_fields(CURRENT, submitted="2025-02-20T12:28:01.517392"), "submitted",
                 NAIVE, id="submitted-naive"),
    pytest.param(with_fields(CURRENT, finished="2025-02-20"), "finished", NAIVE,
                 id="finished-date-only"),
    # Valid ISO 8601 whose UTC equivalent is outside the datetime range.
    pytest.param(with_fields(CURRENT, finished="9999-12-31T23:59:59-01:00"), "finished",
                 OUT_OF_RANGE, id="finished-after-year-9999-in-utc"),
    pytest.param(with_fields(CURRENT, submitted="0001-01-01T00:00:00+01:00"), "submitted",
                 OUT_OF_RANGE, id="submitted-before-year-1-in-utc"),
    # Old format: the messages use the old field names.
    pytest.param(with_fields(OLD, started=...), "started", MISSING, id="old-missing-started"),
    pytest.param(with_fields(OLD, total="3"), "total", NOT_INT, id="old-total-string"),
    pytest.param(with_fields(OLD, success=2**31), "success", "less than or equal to 2147483647",
                 id="old-success-over-int32"),
    pytest.param(with_fields(OLD, customerId=None), "customerId", NULL, id="old-customer-null"),
    pytest.param(with_fields(OLD, finished=None), "finished", NULL, id="old-finished-null"),
    pytest.param(with_fields(OLD, started="0001-01-01T00:00:00+01:00"), "started",
                 OUT_OF_RANGE, id="old-started-out-of-range"),
]


@pytest.mark.parametrize("document, field, message", REJECTED)
def test_rejected_notifications_name_the_field(document, field, message):
    body = document if isinstance(document, bytes) else encode(document)
    with pytest.raises(PayloadError) as info:
        parse_notification(body)
    messages = info.value.errors[field]
    assert any(re.search(re.escape(message), text) for text in messages), messages
    assert info.value.detail.startswith("The notification does not fit the batch-completed shape")


def test_old_format_errors_say_so():
    with pytest.raises(PayloadError) as info:
        parse_notification(with_fields(OLD, total=...))
    assert "old format" in info.value.detail
    assert info.value.errors == {"total": [MISSING]}


def test_current_format_errors_are_reported_when_nothing_looks_old():
    with pytest.raises(PayloadError) as info:
        parse_notification(with_fields(CURRENT, count=..., finished=None))
    assert "old format" not in info.value.detail
    assert info.value.errors == {"count": [MISSING], "finished": [NULL]}


# --------------------------------------------------------------------- registrations


def register(document, customer: int = 2, manifest_id: str = "letters", *,
             add_label: bool = True) -> Registration:
    """Load ``document`` as a registration, given a label when it has none (one is required)."""
    if add_label and "label" not in document:
        document = {**document, "label": {"en": ["A test"]}}
    return parse_registration(encode(document), customer, manifest_id)


def painting(document: dict, index: int) -> dict:
    return document["paintedResources"][index]["canvasPainting"]


def asset(document: dict, index: int) -> dict:
    return document["paintedResources"][index]["asset"]


def row(canvas_order: int, asset_id: str, **canvas_painting) -> dict:
    return {"canvasPainting": {"canvasOrder": canvas_order, **canvas_painting},
            "asset": {"id": asset_id, "space": 5}}


def test_sample_registration_loads():
    assert parse_registration(sample("registration-2-assets.json"), 2, "letters") == Registration(
        document={"type": "Manifest", "label": {"en": ["Letters, 1890-1895"]},
                  "summary": {"en": ["Two letters"]},
                  "rights": "http://creativecommons.org/licenses/by/4.0/"},
        painted=(PaintedResource(canvas_id="p1", canvas_order=0, asset_id="2/5/foo",
                                 label={"en": ["Front"]}),
                 PaintedResource(canvas_id="p2", canvas_order=1, asset_id="2/5/bar")),
        assets=({"id": "foo", "space": 5, "origin": "https://example.org/foo.jpg",
                 "mediaType": "image/jpeg"},
                {"id": "bar", "space": 5, "origin": "https://example.org/bar.jpg",
                 "mediaType": "image/jpeg"}),
        batches=(1234,), reingest=(False, False))


@pytest.mark.parametrize("value, expected", [(True, True), (False, False)])
def test_reingest_is_read_per_painted_resource(value, expected):
    document = {"paintedResources": [row(0, "a"), {**row(1, "b"), "reingest": value}]}
    assert register(document).reingest == (False, expected)


@pytest.mark.parametrize("value", ["true", 1, None, []])
def test_reingest_must_be_a_boolean(value):
    document = {"paintedResources": [{**row(0, "a"), "reingest": value}]}
    with pytest.raises(PayloadError) as info:
        register(document)
    assert "reingest" in info.value.errors["paintedResources"][0]


def test_registered_canvases_keep_only_what_they_lend_the_build():
    link = {"id": "https://example.org/a.txt", "type": "Text", "format": "text/plain"}
    items = [{"id": "a", "type": "Canvas", "label": {"en": ["x"]}, "rendering": [link],
              "items": [{"id": "page"}]},
             {"id": "b", "behavior": ["non-paged"], "seeAlso": []},
             {"id": "c", "type": "Canvas", "label": {"en": ["nothing lent"]}},
             {"rendering": [link]}, "not a canvas"]
    document = register({"label": {"en": ["x"]}, "items": items}).document
    assert document["items"] == [{"id": "a", "rendering": [link]},
                                 {"id": "b", "behavior": ["non-paged"]}]


def test_every_canvas_painting_field_is_loaded():
    document = {"type": "Manifest", "paintedResources": [{
        "canvasPainting": {"canvasId": "p1", "canvasOrder": 3, "choiceOrder": 2,
                           "label": {"en": ["front"]}, "canvasLabel": {"en": ["Page 1"]},
                           "target": "xywh=0,0,800,600", "staticWidth": 800,
                           "staticHeight": 600, "somethingElse": True},
        "asset": {"id": "letter-001", "space": 5}}], "batches": [7]}
    assert register(document, customer=9).painted == (PaintedResource(
        canvas_id="p1", canvas_order=3, asset_id="9/5/letter-001", choice_order=2,
        label={"en": ["front"]}, canvas_label={"en": ["Page 1"]}, target="xywh=0,0,800,600",
        static_width=800, static_height=600),)


def mutate(change):
    document = copy.deepcopy(REGISTRATION)
    change(document)
    return document


def second_row_on_first_canvas(document, **canvas_painting):
    painting(document, 1).update(canvasOrder=0, **canvas_painting)


# (how to change the sample, path to the message, the expected message)
REGISTRATION_ERRORS = [
    pytest.param(lambda d: painting(d, 0).pop("canvasOrder"),
                 ("paintedResources", 0, "canvasPainting", "canvasOrder"), MISSING,
                 id="missing-canvasOrder"),
    pytest.param(lambda d: painting(d, 1).update(canvasOrder=-1),
                 ("paintedResources", 1, "canvasPainting", "canvasOrder"),
                 "greater than or equal to 0", id="negative-canvasOrder"),
    pytest.param(lambda d: painting(d, 0).update(canvasOrder="0"),
                 ("paintedResources", 0, "canvasPainting", "canvasOrder"), NOT_INT,
                 id="string-canvasOrder"),
    pytest.param(lambda d: painting(d, 0).update(canvasOrder=True),
                 ("paintedResources", 0, "canvasPainting", "canvasOrder"), NOT_INT,
                 id="bool-canvasOrder"),
    pytest.param(lambda d: painting(d, 0).update(choiceOrder=0),
                 ("paintedResources", 0, "canvasPainting", "choiceOrder"),
                 "greater than or equal to 1", id="choiceOrder-zero"),
    pytest.param(lambda d: painting(d, 0).update(staticWidth="800"),
                 ("paintedResources", 0, "canvasPainting", "staticWidth"), NOT_INT,
                 id="string-staticWidth"),
    pytest.param(lambda d: painting(d, 0).update(staticHeight=0),
                 ("paintedResources", 0, "canvasPainting", "staticHeight"),
                 "greater than or equal to 1", id="zero-staticHeight"),
    pytest.param(lambda d: painting(d, 0).update(canvasId="has space"),
                 ("paintedResources", 0, "canvasPainting", "canvasId"),
                 "Must match ^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$.", id="bad-canvasId"),
    pytest.param(lambda d: painting(d, 0).update(label={"en": "Front"}),
                 ("paintedResources", 0, "canvasPainting", "label", "en", "value"),
                 "Not a valid list.",
                 id="label-not-a-language-map"),
    pytest.param(lambda d: asset(d, 1).pop("space"),
                 ("paintedResources", 1, "asset", "space"), MISSING, id="asset-without-space"),
    pytest.param(lambda d: asset(d, 1).pop("id"),
                 ("paintedResources", 1, "asset", "id"), MISSING, id="asset-without-id"),
    pytest.param(lambda d: asset(d, 1).update(id="a/b"),
                 ("paintedResources", 1, "asset", "id"), "Must be a DLCS asset id (no '/').",
                 id="asset-id-with-slash"),
    pytest.param(lambda d: asset(d, 0).update(space="5"),
                 ("paintedResources", 0, "asset", "space"), NOT_INT, id="string-space"),
    pytest.param(lambda d: d["paintedResources"][0].pop("asset"),
                 ("paintedResources", 0, "asset"), MISSING, id="row-without-asset"),
    pytest.param(lambda d: d["paintedResources"][0].update(extra=1),
                 ("paintedResources", 0, "extra"), "Unknown field.", id="unknown-row-field"),
    pytest.param(lambda d: d.update(paintedResources={}),
                 ("paintedResources",), "Not a valid list.", id="paintedResources-object"),
    pytest.param(lambda d: d.update(batches=[1234, 1234]),
                 ("batches",), "Batch ids must be unique.", id="duplicate-batch-ids"),
    pytest.param(lambda d: d.update(batches=[1234, "1235"]),
                 ("batches", 1), NOT_INT, id="batches-with-a-string"),
    pytest.param(lambda d: d.update(batches=[0]),
                 ("batches", 0), "greater than or equal to 1", id="batch-id-zero"),
    pytest.param(lambda d: d.update(batches=1234),
                 ("batches",), "Not a valid list.", id="batches-not-a-list"),
    pytest.param(lambda d: second_row_on_first_canvas(d, canvasId="p1"),
                 ("paintedResources", 1, "canvasPainting", "choiceOrder"),
                 "Rows sharing a canvasOrder need distinct choiceOrder values.",
                 id="same-canvasOrder-no-choiceOrder"),
    pytest.param(lambda d: (painting(d, 0).update(choiceOrder=1),
                            second_row_on_first_canvas(d, canvasId="p1", choiceOrder=1)),
                 ("paintedResources", 1, "canvasPainting", "choiceOrder"),
                 "Rows sharing a canvasOrder need distinct choiceOrder values.",
                 id="same-canvasOrder-same-choiceOrder"),
    pytest.param(lambda d: (painting(d, 0).update(choiceOrder=1),
                            second_row_on_first_canvas(d, choiceOrder=2)),
                 ("paintedResources", 1, "canvasPainting", "canvasId"),
                 "Rows sharing a canvasOrder must share their canvasId.",
                 id="same-canvasOrder-different-canvasId"),
    pytest.param(lambda d: d.update(type="Collection"),
                 ("type",), "Must be equal to Manifest.", id="type-not-Manifest"),
    # IIIF Presentation 3 requires a label; a registration without one cannot be published.
    pytest.param(lambda d: d.pop("label"), ("label",), MISSING, id="no-label"),
    pytest.param(lambda d: d.update(label=None), ("label",), "Field may not be null.",
                 id="null-label"),
    pytest.param(lambda d: d.update(label="Letters"), ("label",), "Not a valid mapping type.",
                 id="label-a-string"),
    # Patterns match the whole value: "$" alone would also match before a final newline.
    pytest.param(lambda d: painting(d, 0).update(canvasId="p1\n"),
                 ("paintedResources", 0, "canvasPainting", "canvasId"),
                 "Must match ^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$.", id="canvasId-newline"),
    pytest.param(lambda d: painting(d, 0).update(canvasId="p" * 64 + "\n"),
                 ("paintedResources", 0, "canvasPainting", "canvasId"),
                 "Must match ^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$.", id="canvasId-64-and-newline"),
    pytest.param(lambda d: asset(d, 0).update(id="foo\n"),
                 ("paintedResources", 0, "asset", "id"), "Must be a DLCS asset id (no '/').",
                 id="asset-id-newline"),
    pytest.param(lambda d: painting(d, 0).update(target="xywh=0,0,10,10\n"),
                 ("paintedResources", 0, "canvasPainting", "target"),
                 "Must not contain control characters.", id="target-newline"),
    pytest.param(lambda d: painting(d, 0).update(label={"en\n": ["Front"]}),
                 ("paintedResources", 0, "canvasPainting", "label", "en\n", "key"),
                 "String does not match expected pattern.", id="language-newline"),
]


@pytest.mark.parametrize("change, path, message", REGISTRATION_ERRORS)
def test_invalid_registrations_name_the_field(change, path, message):
    with pytest.raises(PayloadError) as info:
        register(mutate(change), add_label=False)
    assert info.value.detail == "The manifest registration is invalid."
    messages = at(info.value.errors, path)
    assert any(message in text for text in messages), messages


@pytest.mark.parametrize("body", INVALID_JSON + NOT_AN_OBJECT)
def test_registration_must_be_a_json_object(body):
    with pytest.raises(PayloadError):
        parse_registration(body, 2, "letters")


@pytest.mark.parametrize("constant", NON_FINITE)
def test_a_registration_with_a_non_finite_number_is_refused(constant):
    body = sample("registration-2-assets.json").replace(
        b'"rights"', f'"x-extent": {constant}, "rights"'.encode())
    with pytest.raises(PayloadError) as info:
        parse_registration(body, 2, "letters")
    assert info.value.detail == f"The body contains {constant}, which is not a JSON number."


def test_a_registration_with_a_number_beyond_a_double_is_refused():
    # Accepted, it was stored as Infinity: its GET answered invalid JSON and every
    # rebuild failed, since no published document can hold it.
    body = sample("registration-2-assets.json").replace(
        b'"rights"', b'"x-extent": {"n": [1e400]}, "rights"')
    with pytest.raises(PayloadError) as info:
        parse_registration(body, 2, "letters")
    assert info.value.detail == f"The body contains 1e400, {BEYOND_DOUBLE}."


@pytest.mark.parametrize("depth", [65, 960, 100_000])
def test_a_registration_nested_too_deeply_is_refused(depth):
    body = (sample("registration-2-assets.json")[:-2]
            + b', "x-deep": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}")
    with pytest.raises(PayloadError) as info:
        parse_registration(body, 2, "letters")
    assert info.value.detail == "The body is nested deeper than 64 levels."


def test_default_canvas_ids_are_shared_per_canvasOrder_and_stable():
    document = {"paintedResources": [row(0, "a", choiceOrder=1), row(1, "b"),
                                     row(0, "c", choiceOrder=2), row(2, "d")],
                "batches": []}
    first = [p.canvas_id for p in register(document).painted]
    again = [p.canvas_id for p in register(copy.deepcopy(document)).painted]
    assert first == again
    assert first[0] == first[2]
    assert len({first[0], first[1], first[3]}) == 3
    assert all(re.fullmatch(MANIFEST_ID, canvas_id) for canvas_id in first)
    # Ids belong to one manifest: another manifest (or customer) gets others.
    assert [p.canvas_id for p in register(document, manifest_id="other").painted] != first
    assert [p.canvas_id for p in register(document, customer=3).painted] != first


def test_default_canvas_id_does_not_depend_on_row_position():
    document = {"paintedResources": [row(0, "a"), row(1, "b")]}
    swapped = {"paintedResources": [row(1, "b"), row(0, "a")]}
    ids = {p.asset_id: p.canvas_id for p in register(document).painted}
    assert {p.asset_id: p.canvas_id for p in register(swapped).painted} == ids


def test_a_given_canvasId_is_shared_with_rows_of_the_same_canvasOrder():
    document = {"paintedResources": [row(0, "a", choiceOrder=1),
                                     row(0, "b", choiceOrder=2, canvasId="front")]}
    assert [p.canvas_id for p in register(document).painted] == ["front", "front"]


def test_unknown_asset_fields_are_kept():
    document = mutate(lambda d: asset(d, 0).update(
        family="I", thumbnailPolicy="default", tags=["x"], roles=None))
    registration = register(document)
    assert registration.assets[0] == {
        "id": "foo", "space": 5, "origin": "https://example.org/foo.jpg",
        "mediaType": "image/jpeg", "family": "I", "thumbnailPolicy": "default", "tags": ["x"],
        "roles": None}


def test_top_level_properties_are_kept_verbatim_except_the_service_owned_ones():
    kept = {
        "type": "Manifest",
        "label": {"en": ["Letters"], "cy": ["Llythyrau"]},
        "metadata": [{"label": {"en": ["Date"]}, "value": {"none": ["1890"]}}],
        "summary": {"en": ["Two letters"]},
        "thumbnail": [{"id": "https://example.org/t.jpg", "type": "Image"}],
        "rights": "http://creativecommons.org/licenses/by/4.0/",
        "provider": [{"id": "https://example.org", "type": "Agent", "label": {"en": ["Us"]}}],
        "homepage": [{"id": "https://example.org/h", "type": "Text"}],
        "navDate": "1890-01-01T00:00:00Z",
        "behavior": ["paged"],
        "x-custom": {"nested": [1, 2.5, None, True, "é"]},
    }
    owned = {"id": "https://elsewhere.example/m", "@context": "http://example.org/ctx",
             "items": [{"id": "https://elsewhere.example/c", "type": "Canvas"}],
             "paintedResources": REGISTRATION["paintedResources"], "batches": [1234]}
    registration = register({**kept, **owned})
    assert registration.document == kept
    assert list(registration.document) == list(kept)  # order kept too


def test_type_defaults_to_Manifest_and_batches_may_be_absent_or_empty():
    absent = register({"label": {"en": ["x"]}, "paintedResources": []})
    assert absent.document == {"label": {"en": ["x"]}, "type": "Manifest"}
    assert absent.batches is None
    assert absent.painted == () and absent.assets == ()
    assert register({"batches": []}).batches == ()


def test_the_input_document_is_not_changed():
    document = copy.deepcopy(REGISTRATION)
    registration = register(document)
    assert document == REGISTRATION
    registration.assets[0]["id"] = "changed"  # the assets are copies
    assert document == REGISTRATION
