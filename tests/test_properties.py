"""Properties, checked over generated inputs with hypothesis.

Signatures: a delivery signed with ``sign`` verifies; changing its body, id,
timestamp or signature makes it fail; and whatever the headers, body and clock,
``verify`` raises nothing but ``SignatureError``.

The manifest build, over random painted resources (canvas orders, choices,
composite canvases, statics, assets the DLCS did not return) and random
named-query answers: deterministic (also under any order of the answer's
canvases), never mutating its inputs, always valid IIIF Presentation 3, and
the same from the answer parsed with ``SlimAnswer`` as the service parses it.

Example counts are kept modest so the suite stays fast; raise them locally with
``--hypothesis-profile=thorough``.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import string

from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from tests.iiif import assert_valid_iiif
from tests.test_manifest import (BASE, canvas, choice, image, named_query, row, sound, thumb,
                                 video)
from webhook.errors import SignatureError
from tests.building import build_manifest
from webhook.manifest import SlimAnswer
from webhook.manifest_json import serialise, write_manifest
from webhook.signature import (ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, Verified,
                               sign, verify)

settings.register_profile("default", max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=2000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("default")

NOW = 1_750_000_000
TOLERANCE = 300

# ---------------------------------------------------------------- signatures

keys = st.binary(min_size=1, max_size=64)
# What a valid webhook-id is: 1-256 printable ASCII characters other than ".".
msg_ids = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E,
                                         exclude_characters="."),
                  min_size=1, max_size=256)
timestamps = st.integers(NOW - TOLERANCE, NOW + TOLERANCE)
bodies = st.binary(max_size=2048)


def headers_for(msg_id: str, timestamp: int, signature: str) -> dict[str, str]:
    return {ID_HEADER: msg_id, TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: signature}


def check(key: bytes, headers: dict, body: bytes) -> Verified:
    return verify([key], headers, body, now=NOW, tolerance=TOLERANCE)


def rejected(key: bytes, headers: dict, body: bytes) -> SignatureError:
    try:
        check(key, headers, body)
    except SignatureError as exc:
        return exc
    raise AssertionError("a changed delivery verified")


@given(key=keys, msg_id=msg_ids, timestamp=timestamps, body=bodies)
def test_a_signed_delivery_verifies(key, msg_id, timestamp, body):
    headers = headers_for(msg_id, timestamp, sign(key, msg_id, timestamp, body))
    assert check(key, headers, body) == Verified(msg_id, timestamp)


@given(key=keys, msg_id=msg_ids, timestamp=timestamps, body=bodies, other=bodies)
def test_a_changed_body_fails(key, msg_id, timestamp, body, other):
    assume(other != body)
    headers = headers_for(msg_id, timestamp, sign(key, msg_id, timestamp, body))
    assert rejected(key, headers, other).reason == "bad-signature"


@given(key=keys, msg_id=msg_ids, other=msg_ids, timestamp=timestamps, body=bodies)
def test_a_changed_id_fails(key, msg_id, other, timestamp, body):
    assume(other != msg_id)
    headers = headers_for(other, timestamp, sign(key, msg_id, timestamp, body))
    assert rejected(key, headers, body).reason == "bad-signature"


@given(key=keys, msg_id=msg_ids, timestamp=timestamps, other=st.integers(0, 10**18 - 1),
       body=bodies)
def test_a_changed_timestamp_fails(key, msg_id, timestamp, other, body):
    assume(other != timestamp)
    headers = headers_for(msg_id, other, sign(key, msg_id, timestamp, body))
    expected = ("bad-signature" if abs(other - NOW) <= TOLERANCE
                else {True: "timestamp-too-old", False: "timestamp-too-new"}[other < NOW])
    assert rejected(key, headers, body).reason == expected


@given(key=keys, msg_id=msg_ids, timestamp=timestamps, body=bodies, data=st.data())
def test_a_changed_signature_fails(key, msg_id, timestamp, body, data):
    signature = sign(key, msg_id, timestamp, body)
    if data.draw(st.booleans(), label="flip a bit of the digest"):
        digest = bytearray(base64.b64decode(signature[3:]))
        bit = data.draw(st.integers(0, len(digest) * 8 - 1), label="bit")
        digest[bit // 8] ^= 1 << (bit % 8)
        changed = "v1," + base64.b64encode(bytes(digest)).decode()
    else:
        position = data.draw(st.integers(0, len(signature) - 1), label="position")
        character = data.draw(st.characters(exclude_characters=string.whitespace
                                            + signature[position]), label="character")
        changed = signature[:position] + character + signature[position + 1:]
    assert rejected(key, headers_for(msg_id, timestamp, changed), body)


@given(key=keys, msg_id=msg_ids, timestamp=timestamps, body=bodies, other_key=keys)
def test_another_key_fails(key, msg_id, timestamp, body, other_key):
    assume(other_key != key)
    headers = headers_for(msg_id, timestamp, sign(key, msg_id, timestamp, body))
    assert rejected(other_key, headers, body).reason == "bad-signature"


header_names = st.sampled_from([ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER,
                                ID_HEADER.upper(), "Webhook-Signature", "x-other"])
header_values = st.one_of(st.text(max_size=300), msg_ids, st.integers().map(str),
                          st.builds(lambda d: "v1," + base64.b64encode(d).decode(),
                                    st.binary(max_size=40)))
clocks = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                   st.integers(-2**70, 2**70).map(float), timestamps.map(float))


@given(keys=st.lists(keys, min_size=1, max_size=3),
       headers=st.dictionaries(header_names, header_values, max_size=6), body=bodies,
       now=clocks, tolerance=st.integers(0, 10**6))
def test_verify_raises_nothing_but_signature_error(keys, headers, body, now, tolerance):
    try:
        verified = verify(keys, headers, body, now=now, tolerance=tolerance)
    except SignatureError as exc:
        assert exc.reason and exc.detail
    else:
        # It can only pass when one of the keys really signed this delivery.
        assert any(sign(key, verified.msg_id, verified.timestamp, body).split(",")[1]
                   in headers.get(SIGNATURE_HEADER, "") for key in keys)


# ---------------------------------------------------------------- the manifest build

ASSETS = [f"a{n}" for n in range(8)]
labels = st.one_of(st.none(), st.builds(lambda text: {"en": [text]},
                                         st.text(string.ascii_letters + " ", max_size=12)))
statics = st.one_of(st.none(), st.tuples(st.integers(1, 5000), st.integers(1, 5000)),
                    st.tuples(st.integers(1, 5000), st.none()))


@st.composite
def painted_rows(draw) -> list:
    """Rows as a registration can hold them: ordered, with choices and composite canvases."""
    specs = draw(st.lists(st.tuples(
        st.integers(0, 6),                            # canvasOrder
        st.one_of(st.none(), st.integers(1, 3)),      # choiceOrder
        st.sampled_from(ASSETS + ["gone"]),           # "gone" is never returned
        labels, labels, statics,
        st.one_of(st.none(), st.just("xywh=0,0,100,100")),
    ), min_size=1, max_size=10))
    # Rows sharing a canvasOrder share a canvasId; a canvasId may span several
    # canvasOrders (a composite canvas).
    orders = sorted({spec[0] for spec in specs})
    canvas_of = {}
    for order in orders:
        shared = draw(st.booleans()) and canvas_of
        canvas_of[order] = (draw(st.sampled_from(sorted(set(canvas_of.values()))))
                            if shared else f"c{order}")
    rows, seen = [], set()
    for order, choice_order, asset, label, canvas_label, size, target in specs:
        if (order, choice_order) in seen:  # the registration schema refuses these
            continue
        seen.add((order, choice_order))
        width, height = size if size else (None, None)
        rows.append(row(canvas_of[order], order, asset, choice_order=choice_order, label=label,
                        canvas_label=canvas_label, target=target, static_width=width,
                        static_height=height))
    return rows


thumbnails = st.one_of(
    st.none(), st.just([]),
    st.builds(lambda asset, w, h: [thumb(asset, w, h)], st.sampled_from(ASSETS),
              st.integers(1, 400), st.integers(1, 400)),
    st.builds(lambda asset: thumb(asset, 100, 75), st.sampled_from(ASSETS)))


@st.composite
def answer_canvas(draw, asset: str, number: int) -> dict:
    """A named-query canvas of one asset: an image, a choice, sound or video."""
    kind = draw(st.sampled_from(["image", "image-bare", "choice", "sound", "video"]))
    thumbnail = draw(thumbnails)
    if kind == "image":
        return canvas(asset, n=number, thumbnail=thumbnail)
    if kind == "image-bare":  # no services, no size of its own: the canvas's size counts
        return canvas(asset, image(asset, own=None, services=[]), n=number,
                      thumbnail=thumbnail)
    if kind == "choice":
        return canvas(asset, choice(image(f"{asset}x"), image(f"{asset}y")), n=number,
                      thumbnail=thumbnail)
    if kind == "sound":
        on_body = draw(st.booleans())
        return canvas(asset, sound(asset, 12.5 if on_body else None), n=number, size=None,
                      duration=None if on_body else 30.0, thumbnail=thumbnail)
    return canvas(asset, video(asset), n=number, size=None, thumbnail=thumbnail)


@st.composite
def answers(draw, rows: list) -> dict:
    """A named-query answer for some of the rows' assets (and maybe some unrelated ones)."""
    wanted = sorted({r.asset_id.rsplit("/", 1)[1] for r in rows} - {"gone"})
    returned = draw(st.lists(st.sampled_from(wanted), unique=True)) if wanted else []
    extra = draw(st.lists(st.sampled_from([f"z{n}" for n in range(3)]), unique=True))
    canvases = [draw(answer_canvas(asset, number))
                for number, asset in enumerate(returned + extra, start=1)]
    if draw(st.booleans()):  # a canvas whose id is not of the asset form is ignored
        canvases.append({"id": "https://elsewhere.example/canvas/1", "type": "Canvas",
                         "width": 10, "height": 10, "items": []})
    return named_query(*draw(st.permutations(canvases)))


@st.composite
def build_inputs(draw) -> tuple[dict, list, dict]:
    rows = draw(painted_rows())
    registered = {"type": "Manifest", "label": {"en": ["Generated"]}}
    if draw(st.booleans()):
        registered["summary"] = {"en": ["A summary"]}
        registered["rights"] = "http://creativecommons.org/licenses/by/4.0/"
    return registered, rows, draw(answers(rows))


def run_build(registered, rows, answer):
    return build_manifest(registered, rows, answer, base_url=BASE, customer=2, manifest_id="m")


@settings(max_examples=80)
@given(inputs=build_inputs(), data=st.data())
def test_the_build_is_deterministic_pure_and_valid(inputs, data):
    registered, rows, answer = inputs
    before = copy.deepcopy(inputs)
    result = run_build(registered, rows, answer)
    for shape, seen in (
            ("a choice", len({r.canvas_order for r in rows}) < len(rows)),
            ("a composite canvas", len({(r.canvas_id, r.canvas_order) for r in rows})
             > len({r.canvas_id for r in rows})),
            ("statics", any(r.static_width and r.static_height for r in rows)),
            ("a missing asset", bool(result.missing_assets))):
        if seen:
            event(shape)  # shown by --hypothesis-show-statistics

    assert (registered, rows, answer) == before, "the build mutated its inputs"
    assert_valid_iiif(result.document)
    assert result.body == serialise(result.document)
    written = io.BytesIO()
    write_manifest(result.document, written)
    assert written.getvalue() == result.body
    assert json.loads(result.body) == result.document
    assert len(result.row_updates) == len(rows)
    returned = {c["id"].split("/iiif-img/")[1].split("/canvas/")[0]
                for c in answer["items"] if "/iiif-img/" in c["id"]}
    assert set(result.missing_assets) == {r.asset_id for r in rows} - returned

    # The same inputs, and the DLCS's canvases in any other order, build the same bytes.
    again = run_build(copy.deepcopy(registered), copy.deepcopy(rows), copy.deepcopy(answer))
    assert again.body == result.body and again.row_updates == result.row_updates
    shuffled = {**answer, "items": data.draw(st.permutations(answer["items"]))}
    assert run_build(registered, rows, shuffled).body == result.body

    # The answer as the service parses it, keeping only what the build reads
    # and each repeated value once, builds the same manifest.
    slim = json.loads(json.dumps(answer), object_hook=SlimAnswer().object_hook)
    slimmed = run_build(registered, rows, slim)
    assert slimmed.body == result.body and slimmed.row_updates == result.row_updates
