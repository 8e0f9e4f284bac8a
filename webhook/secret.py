"""Webhook secrets in the Standard Webhooks form ``whsec_<base64>``: decode one, make one.

``parse_secret`` turns a secret into the HMAC key bytes that ``signature``
signs and verifies with; ``new_secret`` makes a fresh one (``flask --app wsgi
secret``). Neither reads the environment: ``config`` reads ``WEBHOOK_SECRETS``
and hands each value here. A pure module that imports nothing of the service's,
so the settings, the CLI, the tests and the benchmarks decode a secret the same
way without depending on how the service is configured.
"""

from __future__ import annotations

import base64
import binascii
import secrets

SECRET_PREFIX = "whsec_"
# Standard Webhooks: a secret is 24 to 64 random bytes; shorter keys are refused,
# new_secret() makes 32.
MIN_SECRET_BYTES = 24
NEW_SECRET_BYTES = 32


def parse_secret(value: str) -> bytes:
    """Decode a ``whsec_<base64>`` secret into HMAC key bytes.

    Raises ``ValueError`` whose message describes the problem but never
    contains the value itself.

    The ``whsec_`` prefix is required. The Standard Webhooks libraries also
    accept a bare base64 secret, but the contract defines ``WEBHOOK_SECRETS``
    as ``whsec_<base64>`` values, and almost any short password is itself valid
    base64: accepting bare values would silently turn a pasted-in wrong value
    (an API key, a password) into a working key instead of stopping start-up.
    """
    if not isinstance(value, str):
        raise TypeError("a webhook secret must be a str")
    if not value.startswith(SECRET_PREFIX):
        raise ValueError(f"a webhook secret must start with {SECRET_PREFIX!r}")
    encoded = value[len(SECRET_PREFIX):]
    try:
        # Standard alphabet with padding; validate=True rejects anything else
        # (URL-safe characters, spaces, missing padding) instead of skipping it.
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        # `from None`: keep the library's exception (and its context) out of
        # tracebacks that might end up in a log next to the value.
        raise ValueError(
            f"a webhook secret is not valid standard base64 after {SECRET_PREFIX!r}"
        ) from None
    if not key:
        raise ValueError(f"a webhook secret has an empty key after {SECRET_PREFIX!r}")
    return key


def new_secret() -> str:
    """Return a fresh random ``whsec_<base64>`` secret of NEW_SECRET_BYTES bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(NEW_SECRET_BYTES)).decode("ascii")
