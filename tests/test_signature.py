"""Tests for webhook.signature: a known-answer vector, then tables of hostile input."""

from __future__ import annotations

import base64
import dataclasses
import json
import math
from pathlib import Path

import pytest
from werkzeug.datastructures import EnvironHeaders, Headers

from webhook.errors import SignatureError
from webhook.secret import parse_secret
from webhook.signature import Verified, sign, verify

# The known-answer vector from the Standard Webhooks specification.
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TIMESTAMP = 1614265330
BODY = b'{"test": 2432232314}'
SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

KEY = parse_secret(SECRET)
OTHER_KEY = b"another key, 24 bytes!!!"
SAMPLES = Path(__file__).parent / "samples"

_ABSENT = object()


def make_headers(
    msg_id=MSG_ID, timestamp=str(TIMESTAMP), signature=SIGNATURE
) -> dict[str, str]:
    """The KAT delivery's headers; pass _ABSENT to leave one out."""
    values = {
        "webhook-id": msg_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": signature,
    }
    return {name: value for name, value in values.items() if value is not _ABSENT}


def rejection(keys, headers, body=BODY, *, now=TIMESTAMP, tolerance=300) -> SignatureError:
    """Run verify expecting a SignatureError; check its detail leaks nothing."""
    with pytest.raises(SignatureError) as info:
        verify(keys, headers, body, now=now, tolerance=tolerance)
    err = info.value
    forbidden = {SECRET.removeprefix("whsec_"), SIGNATURE.removeprefix("v1,")}
    for key in keys:
        forbidden.add(base64.b64encode(key).decode())
        # what verify itself computes as the expected signature for each key
        forbidden.add(sign(key, str(headers.get("webhook-id")), TIMESTAMP, body)[3:])
    for text in forbidden - {""}:
        assert text not in err.detail
        assert text not in str(err)
    assert err.reason and err.detail
    return err


# -- the known answer ----------------------------------------------------------


def test_sign_known_answer():
    assert sign(KEY, MSG_ID, TIMESTAMP, BODY) == SIGNATURE


def test_verify_known_answer():
    assert verify([KEY], make_headers(), BODY, now=TIMESTAMP) == Verified(
        msg_id=MSG_ID, timestamp=TIMESTAMP
    )


def test_verified_is_frozen():
    verified = Verified(msg_id=MSG_ID, timestamp=TIMESTAMP)
    with pytest.raises(dataclasses.FrozenInstanceError):
        verified.msg_id = "other"  # type: ignore[misc]


# -- parse_secret --------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "key"),
    [
        (SECRET, base64.b64decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")),
        ("whsec_" + base64.b64encode(bytes(range(32))).decode(), bytes(range(32))),  # "=" padding
        ("whsec_AAA=", b"\x00\x00"),
    ],
    ids=["kat", "padded-32-bytes", "short"],
)
def test_parse_secret_accepts(value, key):
    assert parse_secret(value) == key


@pytest.mark.parametrize(
    ("value", "message"),
    [
        # A bare base64 secret is refused on purpose (see parse_secret's docstring).
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "must start with"),
        ("WHSEC_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "must start with"),
        (" whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "must start with"),
        ("", "must start with"),
        ("whsec_", "empty key"),
        ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS", "not valid standard base64"),  # bad length
        ("whsec_AAA", "not valid standard base64"),  # padding missing
        ("whsec_Mf-Q9r8GKYqrTwjUPD8ILPZIo2LaLa_w", "not valid standard base64"),  # URL-safe
        ("whsec_MfKQ9r8GKYqr TwjUPD8ILPZIo2LaLaSw", "not valid standard base64"),
        ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n", "not valid standard base64"),
        ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSé", "not valid standard base64"),
        ("whsec_====", "not valid standard base64"),
    ],
    ids=[
        "bare-base64", "upper-prefix", "leading-space", "empty", "prefix-only",
        "bad-length", "no-padding", "url-safe", "inner-space", "trailing-newline",
        "non-ascii", "padding-only",
    ],
)
def test_parse_secret_rejects(value, message):
    with pytest.raises(ValueError, match=message) as info:
        parse_secret(value)
    encoded = value.strip().removeprefix("whsec_")
    if encoded:
        assert encoded not in str(info.value)
    # No chained library exception to carry the value into a traceback.
    assert info.value.__context__ is None or info.value.__suppress_context__


# -- what verify accepts -------------------------------------------------------


@pytest.mark.parametrize(
    "keys",
    [[KEY], [OTHER_KEY, KEY], [KEY, OTHER_KEY], (OTHER_KEY, b"third key", KEY)],
    ids=["one", "rotation-second", "rotation-first", "tuple-third"],
)
def test_verify_accepts_any_configured_key(keys):
    assert verify(keys, make_headers(), BODY, now=TIMESTAMP).msg_id == MSG_ID


WRONG = sign(OTHER_KEY, MSG_ID, TIMESTAMP, BODY)


@pytest.mark.parametrize(
    "signature",
    [
        f"{WRONG} {SIGNATURE}",
        f"{SIGNATURE} {WRONG}",
        f"v2,{SIGNATURE[3:]} {SIGNATURE}",
        f"v1a,{SIGNATURE[3:]} {WRONG} {SIGNATURE}",
        f"garbage v1,a,b {SIGNATURE}",  # unparseable entries are skipped, not fatal
        f"v1,{SIGNATURE[3:-1]} {SIGNATURE}",  # so is an entry with broken base64
        # Whitespace choice: spaces before, after and between entries (and HTTP's
        # optional tabs around the whole value) never reject a real sender.
        f" {SIGNATURE}",
        f"{SIGNATURE} ",
        f"  {WRONG}   {SIGNATURE}  ",
        f"\t{SIGNATURE}\t",
    ],
    ids=[
        "wrong-then-right", "right-then-wrong", "v2-first", "unknown-and-wrong-first",
        "garbage-first", "bad-base64-first", "leading-space", "trailing-space",
        "runs-of-spaces", "surrounding-tabs",
    ],
)
def test_verify_accepts_several_entries(signature):
    assert verify([KEY], make_headers(signature=signature), BODY, now=TIMESTAMP)


@pytest.mark.parametrize("offset", [-300, -1, 0, 1, 300], ids=str)
def test_verify_accepts_within_tolerance(offset):
    assert verify([KEY], make_headers(), BODY, now=TIMESTAMP + offset)


def test_verify_accepts_float_now_at_the_edge():
    assert verify([KEY], make_headers(), BODY, now=TIMESTAMP + 299.999)
    with pytest.raises(SignatureError, match="past"):
        verify([KEY], make_headers(), BODY, now=TIMESTAMP + 300.001)


def test_verify_tolerance_is_a_parameter():
    assert verify([KEY], make_headers(), BODY, now=TIMESTAMP, tolerance=0)
    assert rejection([KEY], make_headers(), now=TIMESTAMP + 1, tolerance=0).reason == (
        "timestamp-too-old"
    )
    assert verify([KEY], make_headers(), BODY, now=TIMESTAMP + 3600, tolerance=3600)


@pytest.mark.parametrize(
    "msg_id", ["a", "a" * 256, "msg_~!#$%&'*+-/:;<=>?@[]^_`{|}\"(),\\"], ids=["1", "256", "punct"]
)
def test_verify_accepts_printable_ids(msg_id):
    headers = make_headers(msg_id=msg_id, signature=sign(KEY, msg_id, TIMESTAMP, BODY))
    assert verify([KEY], headers, BODY, now=TIMESTAMP).msg_id == msg_id


def test_verify_accepts_timestamp_zero():
    headers = make_headers(timestamp="0", signature=sign(KEY, MSG_ID, 0, BODY))
    assert verify([KEY], headers, BODY, now=0) == Verified(MSG_ID, 0)


def test_verify_accepts_empty_body():
    headers = make_headers(signature=sign(KEY, MSG_ID, TIMESTAMP, b""))
    assert verify([KEY], headers, b"", now=TIMESTAMP)


def test_verify_accepts_header_of_exactly_8_kib():
    signature = SIGNATURE + " " * (8192 - len(SIGNATURE))
    assert len(signature) == 8192
    assert verify([KEY], make_headers(signature=signature), BODY, now=TIMESTAMP)
    too_long = make_headers(signature=signature + " ")
    assert rejection([KEY], too_long).reason == "malformed-signature"


# -- header lookup is case-insensitive -----------------------------------------


def test_verify_reads_flask_environ_headers():
    environ = {
        "HTTP_WEBHOOK_ID": MSG_ID,
        "HTTP_WEBHOOK_TIMESTAMP": str(TIMESTAMP),
        "HTTP_WEBHOOK_SIGNATURE": SIGNATURE,
    }
    assert verify([KEY], EnvironHeaders(environ), BODY, now=TIMESTAMP).msg_id == MSG_ID
    del environ["HTTP_WEBHOOK_TIMESTAMP"]
    err = rejection([KEY], EnvironHeaders(environ))
    assert (err.reason, err.detail) == ("missing-header", "missing header: webhook-timestamp")


def test_verify_reads_mixed_case_names():
    mixed = {"Webhook-Id": MSG_ID, "WEBHOOK-TIMESTAMP": str(TIMESTAMP),
             "webhook-Signature": SIGNATURE}
    assert verify([KEY], mixed, BODY, now=TIMESTAMP)
    assert verify([KEY], Headers(mixed), BODY, now=TIMESTAMP)


# -- what verify rejects, and why ----------------------------------------------


@pytest.mark.parametrize(
    ("keys", "headers", "detail"),
    [
        ([], make_headers(), "no usable webhook secret"),
        ((), {}, "no usable webhook secret"),  # secrets are checked before anything else
        ([KEY, b""], make_headers(), "no usable webhook secret"),  # an empty key fails closed
    ],
    ids=["empty-list", "empty-tuple-no-headers", "an-empty-key"],
)
def test_verify_fails_closed_without_secrets(keys, headers, detail):
    err = rejection(keys, headers)
    assert err.reason == "no-secrets"
    assert detail in err.detail


@pytest.mark.parametrize(
    ("absent", "detail"),
    [
        (["msg_id"], "missing header: webhook-id"),
        (["timestamp"], "missing header: webhook-timestamp"),
        (["signature"], "missing header: webhook-signature"),
        (["msg_id", "signature"], "missing header: webhook-id, webhook-signature"),
        (["msg_id", "timestamp", "signature"],
         "missing header: webhook-id, webhook-timestamp, webhook-signature"),
    ],
    ids=["id", "timestamp", "signature", "id-and-signature", "all"],
)
def test_verify_names_missing_headers(absent, detail):
    err = rejection([KEY], make_headers(**{name: _ABSENT for name in absent}))
    assert (err.reason, err.detail) == ("missing-header", detail)


def test_verify_rejects_wrong_secret():
    assert rejection([OTHER_KEY], make_headers()).reason == "bad-signature"


@pytest.mark.parametrize(
    "body",
    [
        b'{"test": 2432232315}',
        b'{"test":  2432232314}',
        b'{"test": 2432232314}\n',
        b'{"test": 2432232314',
        b"",
    ],
    ids=["digit", "extra-space", "trailing-newline", "truncated", "empty"],
)
def test_verify_rejects_changed_body(body):
    assert rejection([KEY], make_headers(), body).reason == "bad-signature"


def test_verify_rejects_signature_over_reserialised_json():
    raw = (SAMPLES / "notification-current.json").read_bytes()
    reserialised = json.dumps(json.loads(raw)).encode()
    assert reserialised != raw  # the same JSON value, different bytes
    signed_raw = make_headers(signature=sign(KEY, MSG_ID, TIMESTAMP, raw))
    assert verify([KEY], signed_raw, raw, now=TIMESTAMP)
    assert rejection([KEY], signed_raw, reserialised).reason == "bad-signature"
    signed_reserialised = make_headers(signature=sign(KEY, MSG_ID, TIMESTAMP, reserialised))
    assert rejection([KEY], signed_reserialised, raw).reason == "bad-signature"


def test_verify_rejects_dot_in_id_because_it_would_be_ambiguous():
    # Bytes can move between id, timestamp and body without changing the MAC:
    moved = sign(KEY, "msg.1", 2, b"x")
    assert moved == sign(KEY, "msg", 1, b"2.x")
    headers = make_headers(msg_id="msg.1", timestamp="2", signature=moved)
    assert rejection([KEY], headers, b"x", now=2).reason == "malformed-id"


@pytest.mark.parametrize(
    "msg_id",
    ["", ".", "msg.1", "msg_1.", "a" * 257, "msg 1", " msg", "msg\t1", "msg\x00", "msg\x1f",
     "msg\x7f", "msg\u00e9", "msg\u200b", "ｍｓｇ", "msg\n"],
    ids=["empty", "dot", "inner-dot", "trailing-dot", "257-chars", "space", "leading-space",
         "tab", "nul", "unit-separator", "del", "non-ascii", "zero-width-space", "fullwidth",
         "newline"],
)
def test_verify_rejects_malformed_id(msg_id):
    # Signed correctly, so only the id check can reject it.
    headers = make_headers(msg_id=msg_id, signature=sign(KEY, msg_id, TIMESTAMP, BODY))
    assert rejection([KEY], headers).reason == "malformed-id"


@pytest.mark.parametrize(
    "timestamp",
    ["1614265330.9", "1614265330.0", "+1614265330", "-1614265330", "01614265330", "00",
     " 1614265330", "1614265330 ", "1614265330\n", "", "１６１４２６５３３０",
     "١٦١٤٢٦٥٣٣٠", "1.6e9", "0x6037a7f2", "1_614_265_330", "1" * 19, "nan"],
    ids=["fraction", "zero-fraction", "plus", "negative", "leading-zero", "double-zero",
         "leading-space", "trailing-space", "trailing-newline", "empty", "fullwidth",
         "arabic-indic", "exponent", "hex", "underscores", "19-digits", "nan"],
)
def test_verify_rejects_non_canonical_timestamp(timestamp):
    assert rejection([KEY], make_headers(timestamp=timestamp)).reason == "malformed-timestamp"


@pytest.mark.parametrize(
    ("now", "reason"),
    [
        (TIMESTAMP + 301, "timestamp-too-old"),
        (TIMESTAMP + 300.5, "timestamp-too-old"),
        (TIMESTAMP + 10**9, "timestamp-too-old"),
        (TIMESTAMP - 301, "timestamp-too-new"),
        (TIMESTAMP - 300.5, "timestamp-too-new"),
        (0, "timestamp-too-new"),
        (math.nan, "timestamp-too-old"),  # a broken clock fails closed
    ],
    ids=["301s-old", "300.5s-old", "years-old", "301s-ahead", "300.5s-ahead", "epoch-now",
         "nan-now"],
)
def test_verify_rejects_outside_tolerance(now, reason):
    assert rejection([KEY], make_headers(), now=now).reason == reason


KAT_B64 = SIGNATURE[3:]


@pytest.mark.parametrize(
    ("signature", "reason"),
    [
        (SIGNATURE[:-4], "bad-signature"),  # valid base64, 30-byte digest
        ("v1," + base64.b64encode(base64.b64decode(KAT_B64) + b"\0").decode(), "bad-signature"),
        ("v1,AA==", "bad-signature"),
        (SIGNATURE[:-1], "malformed-signature"),  # padding lost: not base64
        (SIGNATURE[:-2] + "F=", "malformed-signature"),  # same bytes, non-canonical base64
        ("v1," + KAT_B64.rstrip("="), "malformed-signature"),
        ("v1," + base64.urlsafe_b64encode(base64.b64decode(KAT_B64)).decode(),
         "malformed-signature"),
        # Hex digits are base64 too: 64 of them decode to 48 bytes, which never match.
        ("v1," + base64.b64decode(KAT_B64).hex(), "bad-signature"),
        ("garbage", "malformed-signature"),
        ("v1,a,b", "malformed-signature"),
        (f"v1,{KAT_B64},", "malformed-signature"),
        ("v1,", "malformed-signature"),
        (",", "malformed-signature"),
        ("," + KAT_B64, "malformed-signature"),
        (KAT_B64, "malformed-signature"),
        ("", "malformed-signature"),
        ("   ", "malformed-signature"),
        (f"{WRONG}\t{SIGNATURE}", "malformed-signature"),  # tab is not an entry separator
        (SIGNATURE + "é", "malformed-signature"),
        (f"{SIGNATURE} v2,é", "malformed-signature"),  # non-ASCII anywhere, even beside a match
        ("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OÉ=", "malformed-signature"),
        (SIGNATURE + " " + "v2,AAAA " * 12_800, "malformed-signature"),  # 100 KB, valid inside
        (SIGNATURE + " " * 100_000, "malformed-signature"),
        ("v1a," + KAT_B64, "no-v1-signature"),
        ("v2," + KAT_B64, "no-v1-signature"),
        ("V1," + KAT_B64, "no-v1-signature"),  # versions are case-sensitive
        (f"v1a,{KAT_B64} v2,{KAT_B64}", "no-v1-signature"),
        (f"v2,{KAT_B64} v1,a,b", "no-v1-signature"),
        (WRONG, "bad-signature"),
        (f"{WRONG} {WRONG} v2,{KAT_B64}", "bad-signature"),
    ],
    ids=[
        "truncated-to-30-bytes", "33-bytes", "1-byte", "truncated-1-char", "non-canonical",
        "unpadded", "url-safe", "hex", "garbage", "v1,a,b", "trailing-comma", "empty-digest",
        "comma-only", "empty-version", "no-version", "empty", "spaces-only",
        "tab-separated", "non-ascii-suffix", "non-ascii-entry-beside-valid", "non-ascii-inside", "100kb-entries",
        "100kb-spaces", "v1a-only", "v2-only", "upper-V1", "v1a-and-v2",
        "v2-and-malformed-v1", "wrong", "two-wrong-and-v2",
    ],
)
def test_verify_rejects_bad_signature_header(signature, reason):
    assert rejection([KEY], make_headers(signature=signature)).reason == reason


def test_100kb_header_is_rejected_before_parsing():
    signature = SIGNATURE + " " + "v2,AAAA " * 12_800
    assert len(signature) > 100_000
    err = rejection([KEY], make_headers(signature=signature))
    assert "longer than 8192" in err.detail


@pytest.mark.parametrize(
    ("keys", "headers", "now", "reason"),
    [
        ([], make_headers(msg_id="", timestamp="x", signature="garbage"), 0, "no-secrets"),
        ([KEY], make_headers(msg_id="a.b", signature=_ABSENT), TIMESTAMP, "missing-header"),
        ([KEY], make_headers(msg_id="a.b", timestamp="x"), TIMESTAMP, "malformed-id"),
        ([KEY], make_headers(timestamp="x", signature="garbage"), TIMESTAMP,
         "malformed-timestamp"),
        ([KEY], make_headers(signature="garbage"), TIMESTAMP + 301, "timestamp-too-old"),
        ([OTHER_KEY], make_headers(signature="v2,x"), TIMESTAMP, "no-v1-signature"),
    ],
    ids=["secrets", "headers", "id", "timestamp-format", "tolerance", "parse"],
)
def test_verify_checks_in_documented_order(keys, headers, now, reason):
    assert rejection(keys, headers, now=now).reason == reason


def test_verify_refuses_a_single_key_instead_of_a_sequence():
    with pytest.raises(TypeError):
        verify(KEY, make_headers(), BODY, now=TIMESTAMP)


def test_verify_refuses_negative_tolerance():
    with pytest.raises(ValueError):
        verify([KEY], make_headers(), BODY, now=TIMESTAMP, tolerance=-1)


# -- property: every byte and every character counts ---------------------------


def test_flipping_any_bit_of_the_body_fails():
    checked = 0
    for position in range(len(BODY)):
        for bit in range(8):
            body = bytearray(BODY)
            body[position] ^= 1 << bit
            assert rejection([KEY], make_headers(), bytes(body)).reason == "bad-signature"
            checked += 1
    assert checked == 8 * len(BODY)


def test_replacing_any_character_of_the_signature_fails():
    # Every printable ASCII replacement (space included) plus one non-ASCII one,
    # at every position of "v1,<base64>": the result is always rejected, for
    # one of the reasons a damaged header can have.
    replacements = [chr(code) for code in range(0x20, 0x7F)] + ["é"]
    allowed = {"bad-signature", "malformed-signature", "no-v1-signature"}
    checked = 0
    for position, original in enumerate(SIGNATURE):
        for replacement in replacements:
            if replacement == original:
                continue
            damaged = SIGNATURE[:position] + replacement + SIGNATURE[position + 1:]
            assert rejection([KEY], make_headers(signature=damaged)).reason in allowed, damaged
            checked += 1
    assert checked == len(SIGNATURE) * (len(replacements) - 1)
