"""Verify AWS SNS HTTP(S) messages: envelope, URLs, age and RSA signature.

Written from AWS's description of the algorithm ("Verifying the signatures of
Amazon SNS messages"): the signed text is ``key\\nvalue\\n`` over a fixed list
of keys per message type; SignatureVersion 1 is SHA1withRSA and 2 is
SHA256withRSA (PKCS#1 v1.5) with the certificate at ``SigningCertURL``.

Everything up to ``SnsVerifier`` is pure. The verifier's only I/O is its
injected certificate fetcher, called after every local check has passed, so
a forged message never makes the service contact a host of the sender's
choosing. ``CertificateFetcher`` and ``SubscriptionConfirmer`` are the
production network calls (timeout, size cap, no redirects).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from webhook.capped import read_capped
from webhook.config import SNS_SIGNATURE_VERSIONS
from webhook.deadlines import DeadlineTimeout, call_deadline
from webhook.domain import Deadline
from webhook.errors import CertificateUnavailable, ConfirmationFailed, SnsRejected

MAX_MESSAGE_BYTES = 256 * 1024  # SNS's own limit on a message
MAX_CERTIFICATE_BYTES = 64 * 1024  # a PEM certificate is ~2 KiB
MAX_AGE_SECONDS = 3600
TIMEOUT_SECONDS = 5.0
TYPE_HEADER = "x-amz-sns-message-type"

NOTIFICATION = "Notification"
SUBSCRIPTION_CONFIRMATION = "SubscriptionConfirmation"
UNSUBSCRIBE_CONFIRMATION = "UnsubscribeConfirmation"

_CONFIRMATION_KEYS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token",
                      "TopicArn", "Type")
# The keys AWS signs, in the order it signs them; "Subject" only when present.
SIGNED_KEYS = {
    NOTIFICATION: ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    SUBSCRIPTION_CONFIRMATION: _CONFIRMATION_KEYS,
    UNSUBSCRIBE_CONFIRMATION: _CONFIRMATION_KEYS,
}
_ENVELOPE_KEYS = ("Signature", "SignatureVersion", "SigningCertURL")
_HASHES = {"1": hashes.SHA1, "2": hashes.SHA256}  # keyed as config.SNS_SIGNATURE_VERSIONS

_REGION = r"[a-z]{2}(?:-gov|-iso[a-z]*)?-[a-z]+-[0-9]+"
_SNS_HOST = re.compile(rf"sns\.{_REGION}\.amazonaws\.com(?:\.cn)?")
_URL_CHARACTERS = re.compile(r"[!-~]+")  # printable ASCII: no spaces, controls or Unicode
_MESSAGE_ID = re.compile(r"[!-~]{1,256}")  # the delivery log's key column holds 256
_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class SnsMessage:
    """A well-formed SNS envelope, not yet verified: its string fields as received."""

    fields: Mapping[str, str]

    @property
    def type(self) -> str:
        return self.fields["Type"]

    @property
    def message_id(self) -> str:
        return self.fields["MessageId"]

    @property
    def topic_arn(self) -> str:
        return self.fields["TopicArn"]

    @property
    def message(self) -> str:
        return self.fields["Message"]

    @property
    def subscribe_url(self) -> str | None:
        return self.fields.get("SubscribeURL")


def is_sns_url(url: str, *, certificate: bool) -> bool:
    """Tell whether ``url`` is an https URL on an SNS regional host and nothing else."""
    # A certificate URL also needs a .pem path and no query; a SubscribeURL
    # carries its action and token in the query, so there a query is allowed.
    if not isinstance(url, str) or not _URL_CHARACTERS.fullmatch(url) or "\\" in url:
        return False
    if not url.startswith("https://") or "#" in url or (certificate and "?" in url):
        return False
    parts = urlsplit(url)
    # The whole authority must be the host: this rules out user info and ports.
    if not _SNS_HOST.fullmatch(parts.netloc) or not parts.path.startswith("/"):
        return False
    return parts.path.endswith(".pem") if certificate else True


def parse_message(body: bytes, type_header: str | None) -> SnsMessage:
    """Parse an SNS envelope, whatever its Content-Type, and check its shape."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise SnsRejected(400, "invalid-json", "The body is not a JSON SNS message.") from None
    if not isinstance(document, dict):
        raise SnsRejected(400, "invalid-json", "The body is not a JSON object.")
    kind = document.get("Type")
    if not isinstance(kind, str) or kind not in SIGNED_KEYS:
        raise SnsRejected(400, "unknown-type", "Type is not an SNS message type.")
    if type_header != kind:
        raise SnsRejected(400, "type-mismatch",
                          f"The {TYPE_HEADER} header does not match the message Type.")
    fields = {}
    for key in SIGNED_KEYS[kind] + _ENVELOPE_KEYS:
        value = document.get(key)
        if value is None and key == "Subject":
            continue  # optional, and then left out of the signed text
        if not isinstance(value, str) or not _utf8(value):
            raise SnsRejected(400, "invalid-field", f"{key} is missing or not a string.")
        # Newlines delimit the signed text: only Message may contain them, or
        # field boundaries could shift without changing what was signed.
        if key != "Message" and _CONTROL.search(value):
            raise SnsRejected(400, "invalid-field", f"{key} contains control characters.")
        fields[key] = value
    if not _MESSAGE_ID.fullmatch(fields["MessageId"]):
        raise SnsRejected(400, "invalid-field", "MessageId is not 1 to 256 printable characters.")
    return SnsMessage(fields)


def string_to_sign(fields: Mapping[str, str]) -> bytes:
    """Return the text AWS signs: ``key\\nvalue\\n`` for each signed key of the type."""
    lines = [f"{key}\n{fields[key]}\n" for key in SIGNED_KEYS[fields["Type"]]
             if key != "Subject" or fields.get("Subject") is not None]
    return "".join(lines).encode("utf-8")


def parse_timestamp(text: str) -> dt.datetime:
    """Parse SNS's ``2025-02-20T12:30:15.200Z``, or raise SnsRejected."""
    try:
        if _TIMESTAMP.fullmatch(text):
            return dt.datetime.fromisoformat(text)
    except ValueError:
        pass  # the shape was right but the date is not (month 13...)
    raise SnsRejected(400, "invalid-timestamp", "Timestamp is not an ISO 8601 UTC time.")


class SnsVerifier:
    """Verify SNS messages for allowed topics, caching certificates by URL."""

    def __init__(self, fetch_certificate: Callable[[str], bytes], *, topics: Collection[str],
                 versions: Collection[str] = SNS_SIGNATURE_VERSIONS,
                 max_age: float = MAX_AGE_SECONDS, cache_size: int = 32):
        self._fetch = fetch_certificate
        self._topics = frozenset(topics)
        self._versions = frozenset(versions)
        self._max_age = max_age
        self._cache_size = cache_size
        self._cache: OrderedDict[str, rsa.RSAPublicKey] = OrderedDict()
        self._lock = threading.Lock()

    def verify(self, message: SnsMessage, now: float) -> None:
        """Raise unless ``message`` is from an allowed topic, fresh and signed by SNS."""
        fields = message.fields
        if message.topic_arn not in self._topics:
            raise SnsRejected(403, "topic-not-allowed", "The topic is not in SNS_TOPIC_ARNS.")
        version = fields["SignatureVersion"]
        if version not in self._versions:
            raise SnsRejected(400, "unsupported-signature-version",
                              "SignatureVersion is not one this service accepts.")
        age = now - parse_timestamp(fields["Timestamp"]).timestamp()
        if not age <= self._max_age:  # written so that a NaN fails closed
            raise SnsRejected(401, "message-too-old",
                              f"The message is more than {self._max_age:.0f} seconds old.")
        # Every URL is checked before any network request is made.
        if not is_sns_url(fields["SigningCertURL"], certificate=True):
            raise SnsRejected(403, "untrusted-certificate-url",
                              "SigningCertURL is not an https SNS certificate URL.")
        if message.type == SUBSCRIPTION_CONFIRMATION and not is_sns_url(
                fields["SubscribeURL"], certificate=False):
            raise SnsRejected(403, "untrusted-subscribe-url",
                              "SubscribeURL is not an https SNS URL.")
        try:
            signature = base64.b64decode(fields["Signature"], validate=True)
        except (binascii.Error, ValueError):
            raise SnsRejected(401, "malformed-signature", "Signature is not base64.") from None
        key = self._public_key(fields["SigningCertURL"])
        try:
            key.verify(signature, string_to_sign(fields), padding.PKCS1v15(),
                       _HASHES[version]())
        except InvalidSignature:
            raise SnsRejected(401, "bad-signature",
                              "The signature does not match the message.") from None

    def _public_key(self, url: str) -> rsa.RSAPublicKey:
        with self._lock:
            key = self._cache.get(url)
            if key is not None:
                self._cache.move_to_end(url)
                return key
        # Fetched outside the lock so one slow fetch does not stall every message.
        key = load_public_key(self._fetch(url))
        with self._lock:
            self._cache[url] = key
            self._cache.move_to_end(url)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return key


def load_public_key(pem: bytes) -> rsa.RSAPublicKey:
    """Return the RSA public key of a PEM certificate, or raise CertificateUnavailable."""
    if len(pem) > MAX_CERTIFICATE_BYTES:
        raise CertificateUnavailable("The SNS signing certificate is too large.")
    try:
        key = x509.load_pem_x509_certificate(pem).public_key()
    except ValueError as exc:
        raise CertificateUnavailable("The SNS signing certificate is not a PEM "
                                     "certificate.") from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise CertificateUnavailable("The SNS signing certificate has no RSA key.")
    return key


def _utf8(value: str) -> bool:
    # JSON can carry lone surrogates ("\ud800"), which have no UTF-8 form to sign.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# ----------------------------------------------------------------- network


class CertificateFetcher:
    """Fetch a signing certificate: https SNS URLs only, a deadline, a size cap, no redirects.

    ``timeout`` bounds the whole fetch, not each receive: a server that sent
    its answer a byte at a time would otherwise hold the SNS request as long
    as it liked. (Its session needs ``DeadlineAdapter`` for the headers to be
    bounded too, as ``create_app`` mounts it.)
    """

    def __init__(self, session: requests.Session, timeout: float = TIMEOUT_SECONDS,
                 limit: int = MAX_CERTIFICATE_BYTES):
        self.session = session
        self.timeout = timeout
        self.limit = limit

    def __call__(self, url: str) -> bytes:
        if not is_sns_url(url, certificate=True):  # again, whoever the caller is
            raise SnsRejected(403, "untrusted-certificate-url",
                              "SigningCertURL is not an https SNS certificate URL.")
        deadline = Deadline.after(self.timeout)
        try:
            with call_deadline(deadline), self.session.get(
                    url, timeout=DeadlineTimeout(self.timeout, deadline), allow_redirects=False,
                    stream=True) as response:
                if response.status_code != 200:
                    raise CertificateUnavailable(
                        f"The SNS signing certificate answered HTTP {response.status_code}.")
                body = read_capped(response, self.limit, deadline)
        except requests.RequestException as exc:
            raise CertificateUnavailable("The SNS signing certificate could not be "
                                         "fetched.") from exc
        if body is None:
            raise CertificateUnavailable("The SNS signing certificate is too large.")
        return bytes(body)


class SubscriptionConfirmer:
    """Confirm a subscription by GETting its SubscribeURL: a timeout, no redirects."""

    def __init__(self, session: requests.Session, timeout: float = TIMEOUT_SECONDS):
        self.session = session
        self.timeout = timeout

    def __call__(self, url: str) -> None:
        if not is_sns_url(url, certificate=False):
            raise SnsRejected(403, "untrusted-subscribe-url",
                              "SubscribeURL is not an https SNS URL.")
        try:
            # The body (an XML receipt) is not needed; streaming avoids reading it.
            with self.session.get(url, timeout=self.timeout, allow_redirects=False,
                                  stream=True) as response:
                status = response.status_code
        except requests.RequestException as exc:
            # The URL holds the subscription token: it stays out of the message.
            raise ConfirmationFailed("SNS could not be reached to confirm the "
                                     "subscription.") from exc
        if not 200 <= status < 300:
            raise ConfirmationFailed(f"SNS answered HTTP {status} to the confirmation.")
