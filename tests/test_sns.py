"""Tests for webhook.sns and POST /webhooks/sns: real RSA signatures, hostile envelopes.

Messages are signed with a key generated here and a self-signed certificate
served through an injected fetcher that records every URL it is asked for, so
the production URL rules stay on. The string to sign is assembled here from
AWS's description, independently of the code under test.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import re
import uuid
from urllib.parse import urlsplit

import pytest
import requests
import responses
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

from tests.conftest import ORCHESTRATOR, sample
from tests.stalling import TricklingServer
from webhook import create_app, db
from webhook.config import Settings
from webhook.deadlines import DeadlineAdapter
from webhook.errors import ConfigError
from webhook.errors import CertificateUnavailable, ConfirmationFailed, SnsRejected
from webhook.sns import (MAX_CERTIFICATE_BYTES, MAX_MESSAGE_BYTES, CertificateFetcher,
                         SnsVerifier, SubscriptionConfirmer, is_sns_url, parse_message,
                         parse_timestamp, string_to_sign)

TOPIC = "arn:aws:sns:eu-west-1:123456789012:dlcs-batch-completion"
CERT_URL = ("https://sns.eu-west-1.amazonaws.com/"
            "SimpleNotificationService-0000000000000000000000.pem")
TOKEN = "2336412f37fb687f5d51e6e2425a8a5872d5f7d0a4d5e0e1b5b4a6b7c8d9e0f1"
SUBSCRIBE_URL = ("https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription"
                 f"&TopicArn={TOPIC}&Token={TOKEN}")
NAMED_QUERY = re.compile(ORCHESTRATOR + r"/iiif-resource/v3/2/batch-query/1234\?cacheBust=.*")
PROBLEM = "application/problem+json"
COMPLETED = {"outcome": "manifest-completed", "batch": 1234, "manifest": "2/letters"}


# ----------------------------------------------------------------- keys and fakes


def make_certificate(key, common_name: str = "sns.amazonaws.com") -> bytes:
    """Return a self-signed PEM certificate for ``key``."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(days=1))
                   .not_valid_after(now + dt.timedelta(days=30))
                   .sign(key, hashes.SHA256()))
    return certificate.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def certificate(key) -> bytes:
    return make_certificate(key)


class FakeSns:
    """The injected certificate fetcher and subscription confirmer; both record calls."""

    def __init__(self, pem: bytes):
        self.pem = pem
        self.fetched: list[str] = []
        self.confirmed: list[str] = []
        self.fetch_error: Exception | None = None
        self.confirm_error: Exception | None = None

    def fetch(self, url: str) -> bytes:
        self.fetched.append(url)
        if self.fetch_error is not None:
            raise self.fetch_error
        return self.pem

    def confirm(self, url: str) -> None:
        self.confirmed.append(url)
        if self.confirm_error is not None:
            raise self.confirm_error


@pytest.fixture
def fake(certificate) -> FakeSns:
    return FakeSns(certificate)


@pytest.fixture
def settings(settings) -> Settings:
    return dataclasses.replace(settings, sns_topic_arns=(TOPIC,))


@pytest.fixture
def make_client(settings, fake):
    """Build a test client over an app with ``changes`` to the settings."""
    def build(inject: bool = True, **changes):
        injected = {"sns_fetcher": fake.fetch, "sns_confirmer": fake.confirm} if inject else {}
        return create_app(dataclasses.replace(settings, **changes), **injected).test_client()
    yield build
    db.dispose()


@pytest.fixture
def client(make_client):
    return make_client()


# ----------------------------------------------------------------- messages


def timestamp(seconds_ago: float = 0) -> str:
    moment = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=seconds_ago)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def envelope(kind: str = "Notification", **changes) -> dict:
    """Return an unsigned message of ``kind``; a change to None removes the key."""
    if kind == "Notification":
        document = json.loads(sample("sns-envelope.json"))
        del document["Signature"], document["SignatureVersion"]
    else:
        document = {"Type": kind, "Token": TOKEN, "TopicArn": TOPIC,
                    "Message": f"You have chosen to subscribe to the topic {TOPIC}.",
                    "SubscribeURL": SUBSCRIBE_URL, "SigningCertURL": CERT_URL}
    document.update(MessageId=str(uuid.uuid4()), Timestamp=timestamp())
    document.update(changes)
    return {name: value for name, value in document.items() if value is not None}


def canonical(message: dict) -> bytes:
    """The string AWS signs, assembled from its documentation."""
    if message["Type"] == "Notification":
        keys = ["Message", "MessageId", *(["Subject"] if "Subject" in message else []),
                "Timestamp", "TopicArn", "Type"]
    else:
        keys = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn",
                "Type"]
    return "".join(f"{name}\n{message[name]}\n" for name in keys).encode()


def sign(message: dict, key, version: str = "2") -> dict:
    """Return ``message`` signed as SNS signs with SignatureVersion ``version``."""
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = key.sign(canonical(message), padding.PKCS1v15(), algorithm)
    return {**message, "SignatureVersion": version,
            "Signature": base64.b64encode(signature).decode()}


def post(client, message: dict | bytes, message_type: str | None = ...):
    """POST as SNS does: text/plain, the type header copied from the message."""
    body = message if isinstance(message, bytes) else json.dumps(message).encode()
    if message_type is ...:
        message_type = message["Type"]
    headers = {"x-amz-sns-message-type": message_type} if message_type else {}
    return client.post("/webhooks/sns", data=body, headers=headers,
                       content_type="text/plain; charset=UTF-8")


def register(client, admin) -> None:
    response = client.put("/2/manifests/letters", data=sample("registration-2-assets.json"),
                          headers=admin)
    assert response.status_code == 202, response.get_json()


def deliveries(client, admin) -> list[tuple]:
    response = client.get("/deliveries", headers=admin)
    assert response.status_code == 200
    return [(d["id"], d["transport"], d["outcome"]) for d in response.get_json()]


def assert_problem(response, status: int, reason: str | None = None) -> dict:
    assert response.status_code == status, response.data
    assert response.mimetype == PROBLEM
    body = response.get_json()
    assert body["status"] == status and body["detail"]
    if reason is not None:
        assert body["reason"] == reason
    return body


# ----------------------------------------------------------------- the URL rule


@pytest.mark.parametrize("url, certificate, accepted", [
    (CERT_URL, True, True),
    ("https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem", True, True),
    ("https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem", True, True),
    ("https://sns.us-gov-west-1.amazonaws.com/SimpleNotificationService-abc.pem", True, True),
    ("https://sns.us-iso-east-1.amazonaws.com/a.pem", True, True),
    ("https://sns.ap-southeast-2.amazonaws.com/a/b.pem", True, True),
    ("http://sns.us-east-1.amazonaws.com/a.pem", True, False),
    ("https://sns.us-east-1.amazonaws.com.evil.com/a.pem", True, False),
    ("https://sns.s3-ap-southeast-2.amazonaws.com/a.pem", True, False),
    ("https://sns.us-east-1.amazonaws.com@evil.com/a.pem", True, False),
    ("https://user@sns.us-east-1.amazonaws.com/a.pem", True, False),
    ("https://sns.us-east-1.amazonaws.com:443/a.pem", True, False),
    ("https://sns.us-east-1.amazonaws.com/a.txt", True, False),
    ("https://sns.us-east-1.amazonaws.com/a.pem?x=1", True, False),
    ("https://sns.us-east-1.amazonaws.com/a.pem?", True, False),
    ("https://sns.us-east-1.amazonaws.com/a.pem#x", True, False),
    ("https://sns.us-east-1.amazonaws.com", True, False),
    ("https://sns.amazonaws.com/a.pem", True, False),
    ("https://sns.US-EAST-1.amazonaws.com/a.pem", True, False),
    ("https://sns.us-east-1.amazonaws.com.cn.evil.com/a.pem", True, False),
    ("https://evil.com/sns.us-east-1.amazonaws.com/a.pem", True, False),
    ("https://sns.us-east-1.amazonaws.com\\@evil.com/a.pem", True, False),
    ("https://sns.us-east-1.amazonaws.com/a .pem", True, False),
    ("https://sns.us-east-1.amazonaws.com\n.evil.com/a.pem", True, False),
    ("HTTPS://sns.us-east-1.amazonaws.com/a.pem", True, False),
    ("", True, False),
    (SUBSCRIBE_URL, False, True),
    ("https://sns.cn-north-1.amazonaws.com.cn/?Action=ConfirmSubscription&Token=x", False, True),
    ("http://169.254.169.254/latest/meta-data/", False, False),
    ("https://169.254.169.254/?Action=ConfirmSubscription", False, False),
    ("http://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription", False, False),
    ("https://sns.eu-west-1.amazonaws.com:8443/?Action=ConfirmSubscription", False, False),
    ("https://x@sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription", False, False),
    ("https://sns.eu-west-1.amazonaws.com.evil.com/?Action=ConfirmSubscription", False, False),
    ("https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription#x", False, False),
])
def test_sns_url_rule(url, certificate, accepted):
    assert is_sns_url(url, certificate=certificate) is accepted


# ----------------------------------------------------------------- pure parts


def test_string_to_sign_known_answers():
    notification = {"Type": "Notification", "MessageId": "m-1", "TopicArn": "arn:t",
                    "Message": "hello\nworld", "Timestamp": "2025-02-20T12:30:15.200Z"}
    assert string_to_sign(notification) == (
        b"Message\nhello\nworld\nMessageId\nm-1\n"
        b"Timestamp\n2025-02-20T12:30:15.200Z\nTopicArn\narn:t\nType\nNotification\n")
    assert string_to_sign({**notification, "Subject": "Done"}) == (
        b"Message\nhello\nworld\nMessageId\nm-1\nSubject\nDone\n"
        b"Timestamp\n2025-02-20T12:30:15.200Z\nTopicArn\narn:t\nType\nNotification\n")
    confirmation = {**notification, "Type": "SubscriptionConfirmation", "Message": "m",
                    "SubscribeURL": "https://s/", "Token": "tok"}
    assert string_to_sign(confirmation) == (
        b"Message\nm\nMessageId\nm-1\nSubscribeURL\nhttps://s/\n"
        b"Timestamp\n2025-02-20T12:30:15.200Z\nToken\ntok\nTopicArn\narn:t\n"
        b"Type\nSubscriptionConfirmation\n")


@pytest.mark.parametrize("text, expected", [
    ("2025-02-20T12:30:15.200Z", dt.datetime(2025, 2, 20, 12, 30, 15, 200000, dt.timezone.utc)),
    ("2025-02-20T12:30:15Z", dt.datetime(2025, 2, 20, 12, 30, 15, tzinfo=dt.timezone.utc)),
    ("2025-02-20T12:30:15.200", None),
    ("2025-02-20T12:30:15.200+01:00", None),
    ("2025-13-20T12:30:15.200Z", None),
    ("yesterday", None),
    ("", None),
])
def test_parse_timestamp(text, expected):
    if expected is None:
        with pytest.raises(SnsRejected) as info:
            parse_timestamp(text)
        assert info.value.status == 400
    else:
        assert parse_timestamp(text) == expected


def test_signature_versions_setting():
    assert Settings.from_env({}).sns_signature_versions == ("1", "2")
    assert Settings.from_env({"SNS_SIGNATURE_VERSIONS": "2"}).sns_signature_versions == ("2",)
    assert Settings.from_env({"SNS_SIGNATURE_VERSIONS": " 2 1 2 "}).sns_signature_versions \
        == ("2", "1")


@pytest.mark.parametrize("value", ["3", "1 3", "v2", "SHA256", " "])
def test_a_bad_signature_version_names_the_variable(value):
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"SNS_SIGNATURE_VERSIONS": value})
    assert info.value.variable == "SNS_SIGNATURE_VERSIONS"


def test_a_shifted_field_boundary_is_refused(key, certificate):
    # Without Subject, a MessageId of "id\nSubject\nS" gives the very text that
    # was signed for the message with Subject "S": it must not be accepted.
    signed = sign(envelope(Subject="S"), key)
    shifted = {**signed, "MessageId": signed["MessageId"] + "\nSubject\nS"}
    del shifted["Subject"]
    assert canonical(shifted) == canonical(signed)

    with pytest.raises(SnsRejected) as info:
        parse_message(json.dumps(shifted).encode(), "Notification")
    assert (info.value.status, info.value.reason) == (400, "invalid-field")


def verifier_over(fetched: list, pem: bytes, **options) -> SnsVerifier:
    def fetch(url):
        fetched.append(url)
        return pem
    return SnsVerifier(fetch, topics=[TOPIC], **options)


def parsed(message: dict):
    return parse_message(json.dumps(message).encode(), message["Type"])


def test_certificates_are_cached_by_url_in_a_bounded_cache(key, certificate):
    fetched = []
    verifier = verifier_over(fetched, certificate, cache_size=2)
    urls = [f"https://sns.{region}.amazonaws.com/SimpleNotificationService-x.pem"
            for region in ("eu-west-1", "us-east-1", "ap-southeast-2")]
    message = sign(envelope(), key)
    # SigningCertURL is not part of the signed text, so one signature serves every URL.
    for url in urls + [urls[2], urls[0]]:
        verifier.verify(parsed({**message, "SigningCertURL": url}), now=_now())
    assert fetched == urls + [urls[0]]  # the third fetch evicted the first


def test_a_failed_fetch_is_not_cached(key, certificate):
    calls = []

    def flaky(url):
        calls.append(url)
        if len(calls) == 1:
            raise CertificateUnavailable("timed out")
        return certificate

    verifier = SnsVerifier(flaky, topics=[TOPIC])
    message = parsed(sign(envelope(), key))
    with pytest.raises(CertificateUnavailable):
        verifier.verify(message, now=_now())
    verifier.verify(message, now=_now())
    assert calls == [CERT_URL, CERT_URL]


@pytest.mark.parametrize("pem", [
    b"not a certificate",
    b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    b"x" * (MAX_CERTIFICATE_BYTES + 1),
    pytest.param(None, id="ec-certificate"),
])
def test_an_unusable_certificate_is_unavailable(key, pem):
    pem = pem or make_certificate(ec.generate_private_key(ec.SECP256R1()))
    verifier = verifier_over([], pem)
    with pytest.raises(CertificateUnavailable):
        verifier.verify(parsed(sign(envelope(), key)), now=_now())


def _now() -> float:
    return dt.datetime.now(dt.timezone.utc).timestamp()


# ----------------------------------------------------------------- the endpoint: happy paths


@pytest.mark.parametrize("version", ["1", "2"])
def test_a_notification_completes_the_manifest_exactly_once(client, admin, fake, key, version):
    register(client, admin)
    message = sign(envelope(), key, version)

    with responses.RequestsMock() as rm:
        query = rm.get(NAMED_QUERY, body=sample("named-query-2-assets.json"),
                       content_type="application/json")
        response = post(client, message)
    assert response.status_code == 200, response.data
    assert response.get_json() == COMPLETED
    assert query.call_count == 1
    assert client.get("/2/manifests/letters").status_code == 200

    with responses.RequestsMock():  # a redelivery must not reach the DLCS
        again = post(client, message)
    assert again.status_code == 200
    assert again.get_json() == {**COMPLETED, "outcome": "duplicate"}
    assert deliveries(client, admin) == [(message["MessageId"], "sns", "manifest-completed")]
    assert fake.fetched == [CERT_URL]  # the redelivery used the cached certificate


def test_the_certificate_is_fetched_once_for_many_messages(client, admin, fake, key):
    for batch in (7, 8):
        body = json.dumps({**json.loads(sample("notification-current.json")), "id": batch})
        response = post(client, sign(envelope(Message=body), key))
        assert response.get_json() == {"outcome": "ignored", "batch": batch, "manifest": None}
    assert fake.fetched == [CERT_URL]
    assert [outcome for _, _, outcome in deliveries(client, admin)] == ["ignored", "ignored"]


def test_a_subject_is_part_of_the_signed_text(client, admin, key):
    response = post(client, sign(envelope(Subject="Batch 1234 completed"), key, "1"))
    assert response.get_json()["outcome"] == "ignored"


def test_a_failed_rebuild_answers_503_so_sns_retries(client, admin, key):
    register(client, admin)
    message = sign(envelope(), key)

    with responses.RequestsMock() as rm:
        rm.get(NAMED_QUERY, status=500)
        response = post(client, message)
    body = assert_problem(response, 503)
    assert response.headers["Retry-After"]
    assert body["outcome"] == "failed"
    assert deliveries(client, admin) == [(message["MessageId"], "sns", "failed")]

    with responses.RequestsMock() as rm:  # SNS's retry finishes the job
        rm.get(NAMED_QUERY, body=sample("named-query-2-assets.json"),
               content_type="application/json")
        assert post(client, message).get_json() == COMPLETED


def test_an_authentic_but_unprocessable_message_is_kept_and_answered_422(client, admin, key):
    message = sign(envelope(Message="this is not a notification"), key)

    assert_problem(post(client, message), 422)
    assert deliveries(client, admin) == [(message["MessageId"], "sns", "unprocessable")]
    assert_problem(post(client, message), 422)


def test_a_subscription_confirmation_is_confirmed_once(client, admin, fake, key):
    message = sign(envelope("SubscriptionConfirmation"), key, "1")

    response = post(client, message)

    assert response.status_code == 200, response.data
    assert response.get_json() == {"type": "SubscriptionConfirmation", "topic": TOPIC,
                                   "confirmed": True}
    assert fake.confirmed == [SUBSCRIBE_URL]
    assert deliveries(client, admin) == []


def test_an_unsubscribe_confirmation_is_acknowledged(client, admin, fake, key):
    response = post(client, sign(envelope("UnsubscribeConfirmation"), key))

    assert response.status_code == 200
    assert response.get_json() == {"type": "UnsubscribeConfirmation", "topic": TOPIC}
    assert fake.confirmed == [] and deliveries(client, admin) == []


# ----------------------------------------------------------------- the endpoint: refusals


def _resigned(key, version="2", kind="Notification", **changes):
    return lambda: sign(envelope(kind, **changes), key, version)


def _after_signing(key, kind="Notification", **changes):
    def build():
        message = {**sign(envelope(kind), key), **changes}
        return {name: value for name, value in message.items() if value is not None}
    return build


def _signature_of_another_message(key):
    def build():
        other = sign(envelope(Message="something else"), key)
        return {**sign(envelope(), key), "Signature": other["Signature"]}
    return build


def _tampered(key):
    def build():
        message = sign(envelope(), key)
        assert '"completed":2' in message["Message"]
        return {**message, "Message": message["Message"].replace('"completed":2',
                                                                 '"completed":1')}
    return build


HOSTILE = [
    ("http-cert-url", lambda k: _after_signing(
        k, SigningCertURL="http://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0.pem"),
     ..., 403, "untrusted-certificate-url", False),
    ("cert-host-suffix", lambda k: _after_signing(
        k, SigningCertURL="https://sns.us-east-1.amazonaws.com.evil.com/cert.pem"),
     ..., 403, "untrusted-certificate-url", False),
    ("cert-host-not-a-region", lambda k: _after_signing(
        k, SigningCertURL="https://sns.s3-ap-southeast-2.amazonaws.com/cert.pem"),
     ..., 403, "untrusted-certificate-url", False),
    ("cert-userinfo", lambda k: _after_signing(
        k, SigningCertURL="https://sns.us-east-1.amazonaws.com@evil.com/cert.pem"),
     ..., 403, "untrusted-certificate-url", False),
    ("cert-not-pem", lambda k: _after_signing(
        k, SigningCertURL="https://sns.eu-west-1.amazonaws.com/cert.txt"),
     ..., 403, "untrusted-certificate-url", False),
    ("cert-query", lambda k: _after_signing(
        k, SigningCertURL=CERT_URL + "?Action=x"),
     ..., 403, "untrusted-certificate-url", False),
    ("tampered-message", _tampered, ..., 401, "bad-signature", True),
    ("signature-of-another-message", _signature_of_another_message,
     ..., 401, "bad-signature", True),
    ("signature-not-base64", lambda k: _after_signing(k, Signature="not base64!"),
     ..., 401, "malformed-signature", False),
    ("unknown-signature-version", lambda k: _after_signing(k, SignatureVersion="3"),
     ..., 400, "unsupported-signature-version", False),
    ("header-type-mismatch", lambda k: _resigned(k),
     "SubscriptionConfirmation", 400, "type-mismatch", False),
    ("header-missing", lambda k: _resigned(k), None, 400, "type-mismatch", False),
    ("old-timestamp", lambda k: _resigned(k, Timestamp=timestamp(3601)),
     ..., 401, "message-too-old", False),
    ("unparseable-timestamp", lambda k: _resigned(k, Timestamp="20 Feb 2025 12:30"),
     ..., 400, "invalid-timestamp", False),
    ("unlisted-topic", lambda k: _resigned(
        k, TopicArn="arn:aws:sns:eu-west-1:123456789012:someone-else"),
     ..., 403, "topic-not-allowed", False),
    ("subscribe-url-metadata", lambda k: _resigned(
        k, "1", "SubscriptionConfirmation",
        SubscribeURL="http://169.254.169.254/latest/meta-data/"),
     ..., 403, "untrusted-subscribe-url", False),
    ("subscribe-url-evil-host", lambda k: _resigned(
        k, "2", "SubscriptionConfirmation",
        SubscribeURL="https://sns.eu-west-1.amazonaws.com.evil.com/?Action=ConfirmSubscription"),
     ..., 403, "untrusted-subscribe-url", False),
    ("unknown-type", lambda k: _after_signing(k, Type="Reminder"),
     ..., 400, "unknown-type", False),
    ("missing-message-id", lambda k: _after_signing(k, MessageId=None),
     ..., 400, "invalid-field", False),
    ("missing-signature", lambda k: _after_signing(k, Signature=None),
     ..., 400, "invalid-field", False),
    ("numeric-message", lambda k: _after_signing(k, Message=12),
     ..., 400, "invalid-field", False),
    # Newlines delimit the signed text, so only Message may hold them.
    ("newline-in-subject", lambda k: _resigned(k, Subject="Done\nTimestamp\nlater"),
     ..., 400, "invalid-field", False),
    ("newline-in-token", lambda k: _resigned(k, "1", "SubscriptionConfirmation",
                                             Token=TOKEN + "\nTopicArn"),
     ..., 400, "invalid-field", False),
    ("confirmation-without-token", lambda k: _after_signing(
        k, "SubscriptionConfirmation", Token=None), ..., 400, "invalid-field", False),
]


@pytest.mark.parametrize("build, header, status, reason, fetches",
                         [pytest.param(*case[1:], id=case[0]) for case in HOSTILE])
def test_hostile_messages_are_refused_with_4xx_and_leave_no_trace(
        client, admin, fake, key, build, header, status, reason, fetches):
    message = build(key)()

    with responses.RequestsMock():  # any real outbound request would fail the test
        response = post(client, message, header)

    assert_problem(response, status, reason)
    assert fake.fetched == ([CERT_URL] if fetches else [])
    assert fake.confirmed == []
    assert deliveries(client, admin) == []


@pytest.mark.parametrize("body", [
    b"not json", b"[]", b'"Notification"', b"{", b"\xff\xfe",
    b'{"Type": ["Notification"]}',
    b"[" * 100_000,
])
def test_bodies_that_are_not_sns_messages_are_400(client, admin, fake, body):
    assert_problem(post(client, body, "Notification"), 400)
    assert fake.fetched == [] and deliveries(client, admin) == []


def test_a_lone_surrogate_is_400_not_500(client, admin, fake, key):
    body = json.dumps(sign(envelope(), key)).replace('"Message": "',
                                                     '"Message": "\\ud800', 1).encode()
    assert_problem(post(client, body, "Notification"), 400, "invalid-field")
    assert fake.fetched == []


def test_a_body_over_256_kib_is_413(client, admin, fake, key):
    message = sign(envelope(Message="x" * MAX_MESSAGE_BYTES), key)
    assert_problem(post(client, message), 413)
    assert fake.fetched == [] and deliveries(client, admin) == []


def test_a_disabled_signature_version_is_refused(make_client, admin, fake, key):
    client = make_client(sns_signature_versions=("2",))
    assert_problem(post(client, sign(envelope(), key, "1")), 400,
                   "unsupported-signature-version")
    assert post(client, sign(envelope(), key, "2")).status_code == 200
    assert fake.fetched == [CERT_URL]


def test_with_no_topics_configured_nothing_is_accepted(make_client, admin, fake, key):
    client = make_client(sns_topic_arns=())
    response = post(client, sign(envelope(), key))
    assert_problem(response, 503)
    assert response.headers["Retry-After"]
    assert fake.fetched == [] and deliveries(client, admin) == []


# ----------------------------------------------------------------- transient failures: 503


@pytest.mark.parametrize("error, pem", [
    (CertificateUnavailable("timed out"), None),
    (None, b"<html>not a certificate</html>"),
])
def test_an_unavailable_certificate_answers_503_so_sns_retries(client, admin, fake, key,
                                                               error, pem):
    fake.fetch_error, fake.pem = error, pem or fake.pem
    response = post(client, sign(envelope(), key))
    assert_problem(response, 503)
    assert response.headers["Retry-After"]
    assert deliveries(client, admin) == []


def test_a_failed_confirmation_answers_503_so_sns_resends(client, fake, key):
    fake.confirm_error = ConfirmationFailed("SNS answered HTTP 500 to the confirmation.")
    response = post(client, sign(envelope("SubscriptionConfirmation"), key))
    assert_problem(response, 503)
    assert response.headers["Retry-After"]


# ----------------------------------------------------------------- production network calls


def test_the_production_fetcher_and_confirmer_are_wired_in(make_client, admin, key,
                                                           certificate):
    client = make_client(inject=False)
    with responses.RequestsMock() as rm:
        cert = rm.get(CERT_URL, body=certificate)
        confirm = rm.get(SUBSCRIBE_URL, body="<ConfirmSubscriptionResponse/>")
        assert post(client, sign(envelope(), key)).get_json()["outcome"] == "ignored"
        assert post(client, sign(envelope("SubscriptionConfirmation"), key)).status_code == 200
    assert (cert.call_count, confirm.call_count) == (1, 1)


def test_the_fetcher_returns_the_certificate_with_a_timeout(certificate):
    with responses.RequestsMock() as rm:
        rm.get(CERT_URL, body=certificate)
        assert CertificateFetcher(requests.Session(), timeout=3)(CERT_URL) == certificate
        timeout = rm.calls[0].request.req_kwargs["timeout"]
        assert (timeout.connect_timeout, timeout.read_timeout) == (3, 3)
        # Each attempt gets at most what is left of the fetch's 3 s.
        assert 0 < timeout.clone().read_timeout <= 3


class _ToLoopback(DeadlineAdapter):
    """Sends each request to ``target`` (plain HTTP on loopback) instead of its own host.

    The SNS URL check passes, and the answer comes over a real socket from a
    server that trickles it.
    """

    def __init__(self, target: str):
        super().__init__(max_retries=0)
        self.target = target

    def send(self, request, **kwargs):
        request.url = self.target + urlsplit(request.url).path
        return super().send(request, **kwargs)


@pytest.mark.parametrize("headers", [False, True], ids=["body", "headers"])
def test_a_trickled_certificate_is_cut_off_at_the_timeout(headers):
    # 40 bytes at one every 0.3 s (the headers' too, in the second case): each
    # receive gets a byte well within 1 s, so only a deadline for the whole fetch stops it.
    with TricklingServer(length=40, interval=0.3, headers=headers) as trickle:
        session = requests.Session()
        session.mount("https://sns.", _ToLoopback(trickle.url))
        with pytest.raises(CertificateUnavailable, match="could not be fetched"):
            CertificateFetcher(session, timeout=1)(CERT_URL)

    assert trickle.requests == 1
    assert trickle.bytes_sent < len(trickle.head) + trickle.length
    assert trickle.hung_up == 1


@pytest.mark.parametrize("answer", [
    {"status": 302, "headers": {"Location": "http://169.254.169.254/cert.pem"}},
    {"status": 404},
    {"body": b"x" * (MAX_CERTIFICATE_BYTES + 1)},
    {"body": requests.ConnectionError("refused")},
    {"body": requests.Timeout("slow")},
])
def test_the_fetcher_fails_as_unavailable(answer):
    with responses.RequestsMock() as rm:
        rm.get(CERT_URL, **answer)
        with pytest.raises(CertificateUnavailable):
            CertificateFetcher(requests.Session())(CERT_URL)
        assert len(rm.calls) == 1  # no redirect followed


def test_the_fetcher_refuses_a_forged_url_without_a_request():
    with responses.RequestsMock() as rm:
        with pytest.raises(SnsRejected):
            CertificateFetcher(requests.Session())("https://evil.example/cert.pem")
        assert len(rm.calls) == 0


def test_the_confirmer_gets_the_subscribe_url_once():
    with responses.RequestsMock() as rm:
        rm.get(SUBSCRIBE_URL, body="<ConfirmSubscriptionResponse/>")
        SubscriptionConfirmer(requests.Session(), timeout=4)(SUBSCRIBE_URL)
        assert len(rm.calls) == 1 and rm.calls[0].request.req_kwargs["timeout"] == 4


@pytest.mark.parametrize("answer", [
    {"status": 302, "headers": {"Location": "http://169.254.169.254/"}},
    {"status": 403},
    {"body": requests.ConnectionError("refused")},
])
def test_the_confirmer_fails_without_following_or_leaking_the_token(answer):
    with responses.RequestsMock() as rm:
        rm.get(SUBSCRIBE_URL, **answer)
        with pytest.raises(ConfirmationFailed) as info:
            SubscriptionConfirmer(requests.Session())(SUBSCRIBE_URL)
        assert len(rm.calls) == 1
    assert TOKEN not in str(info.value)


def test_the_confirmer_refuses_a_forged_url_without_a_request():
    with responses.RequestsMock() as rm:
        with pytest.raises(SnsRejected):
            SubscriptionConfirmer(requests.Session())("http://169.254.169.254/latest/meta-data/")
        assert len(rm.calls) == 0
