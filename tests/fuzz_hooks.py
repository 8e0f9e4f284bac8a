"""Schemathesis hooks for ``.ci/fuzz.sh`` (``SCHEMATHESIS_HOOKS=tests.fuzz_hooks``).

Without a valid signature every generated delivery would stop at the 401, so
the fuzzer would never reach parsing, recording or processing. When a generated
``POST /webhooks/batch-completed`` case carries all three ``webhook-*`` headers,
this signs its body (as the exact bytes sent) with ``FUZZ_WEBHOOK_SECRET`` and
the current time, keeping the generated ``webhook-id``. Cases that leave a
header out stay unsigned, so the 401 path is still exercised. Likewise an SNS
message's ``x-amz-sns-message-type`` header is set to its body's ``Type``.
"""

from __future__ import annotations

import json
import os
import time

import schemathesis

from webhook.secret import parse_secret
from webhook.signature import ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

WEBHOOK_PATH = "/webhooks/batch-completed"
SNS_PATH = "/webhooks/sns"
SNS_TYPE_HEADER = "x-amz-sns-message-type"


@schemathesis.hook
def before_call(context, case, kwargs):
    """Sign generated webhook deliveries; match SNS type headers to their bodies."""
    if case.method.upper() != "POST":
        return
    if case.operation.path == SNS_PATH:
        _match_sns_type(case)
    elif case.operation.path == WEBHOOK_PATH:
        _sign(case)


def _match_sns_type(case) -> None:
    # A random header never equals the envelope's Type, and a mismatch stops the
    # message at the first check; matching them lets it reach the later ones.
    headers = case.headers or {}
    if isinstance(case.body, dict) and isinstance(case.body.get("Type"), str) \
            and SNS_TYPE_HEADER in headers and case.body["Type"].isascii():
        case.headers = {**headers, SNS_TYPE_HEADER: case.body["Type"]}


def _sign(case) -> None:
    headers = case.headers or {}
    if not all(name in headers for name in (ID_HEADER, TIMESTAMP_HEADER, SIGNATURE_HEADER)):
        return
    msg_id = str(headers[ID_HEADER])
    body = case.body
    if not isinstance(body, bytes):
        try:
            # Sent verbatim as these bytes, so the signature covers what the server reads.
            body = json.dumps(body).encode("utf-8")
        except TypeError:
            return  # no body at all (a negative case): leave it unsigned
    timestamp = int(time.time())
    key = parse_secret(os.environ["FUZZ_WEBHOOK_SECRET"])
    case.body = body
    case.headers = {**headers, TIMESTAMP_HEADER: str(timestamp),
                    SIGNATURE_HEADER: sign(key, msg_id, timestamp, body)}
