"""The operator console's session: a signed cookie, signing in and out, CSRF tokens.

The session lives in a cookie signed (not encrypted: it holds no secret, only
when its holder signed in and its CSRF token) with a key derived from
ADMIN_TOKEN by HMAC. Every gunicorn worker derives the same key, so a session
made by one worker is good in all of them, and changing ADMIN_TOKEN signs
everybody out. The cookie is ``HttpOnly``, ``SameSite=Strict``, limited to
``/console``, and ``Secure`` when the request came over HTTPS: as the WSGI
server says, that is gunicorn's ``wsgi.url_scheme``, which believes a proxy's
``X-Forwarded-Proto`` only from ``forwarded_allow_ips`` (loopback by default);
the application itself trusts no forwarding header.

A session lasts SESSION_SECONDS from signing in, whatever is done meanwhile:
checked on the time recorded in it (by the service's clock) and again on the
signature's own timestamp.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets

from flask import Flask, Request, request, session
from flask.sessions import SecureCookieSessionInterface, SessionMixin
from itsdangerous import BadSignature, URLSafeTimedSerializer

SESSION_SECONDS = 8 * 3600
COOKIE_NAME = "console_session"
COOKIE_PATH = "/console"
CSRF_FIELD = "csrf"
# Changing the label changes the key, which signs everybody out.
_KEY_LABEL = b"dlcs-webhook operator console session key v1"


def session_key(admin_token: str) -> bytes:
    """Derive the cookie signing key from the admin token (never the token itself)."""
    return hmac.new(admin_token.encode(), _KEY_LABEL, hashlib.sha256).digest()


class ConsoleSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions with the console's key and cookie attributes."""

    def __init__(self, admin_token: str | None):
        # Built once: Flask opens a session for every request, API requests included.
        self._serializer = None if admin_token is None else URLSafeTimedSerializer(
            session_key(admin_token), salt="console-session", serializer=self.serializer,
            signer_kwargs={"key_derivation": "hmac", "digest_method": hashlib.sha256})

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        return self._serializer

    def open_session(self, app: Flask, request: Request):
        # No ADMIN_TOKEN (the console is off), or a request outside the console (its
        # cookie is never sent there): Flask's null session, which costs the API nothing.
        if self._serializer is None or not request.path.startswith(COOKIE_PATH):
            return None
        value = request.cookies.get(COOKIE_NAME)
        if not value:
            return self.session_class()
        try:
            return self.session_class(self._serializer.loads(value, max_age=SESSION_SECONDS))
        except BadSignature:  # tampered, another key's, or older than SESSION_SECONDS
            return self.session_class()

    def get_cookie_name(self, app: Flask) -> str:
        return COOKIE_NAME

    def get_cookie_path(self, app: Flask) -> str:
        return COOKIE_PATH

    def get_cookie_domain(self, app: Flask) -> str | None:
        return None

    def get_cookie_httponly(self, app: Flask) -> bool:
        return True

    def get_cookie_samesite(self, app: Flask) -> str:
        return "Strict"

    def get_cookie_secure(self, app: Flask) -> bool:
        return request.is_secure

    def get_expiration_time(self, app: Flask, session: SessionMixin) -> dt.datetime | None:
        if not session.permanent:
            return None
        return dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=SESSION_SECONDS)

    def should_set_cookie(self, app: Flask, session: SessionMixin) -> bool:
        # Only when something changed: a session is not renewed by being used.
        return session.modified


def _epoch(moment: dt.datetime) -> int:
    return int(moment.replace(tzinfo=dt.timezone.utc).timestamp())


def csrf_token() -> str:
    """Return this session's CSRF token, making one when it has none."""
    token = session.get(CSRF_FIELD)
    if not isinstance(token, str):
        token = session[CSRF_FIELD] = secrets.token_urlsafe(32)
    return token


def csrf_ok() -> bool:
    """Tell whether the submitted form carries this session's CSRF token."""
    expected = session.get(CSRF_FIELD)
    given = request.form.get(CSRF_FIELD, "")
    return isinstance(expected, str) and hmac.compare_digest(
        given.encode("utf-8", "replace"), expected.encode())


def token_matches(given: str, admin_token: str) -> bool:
    """Compare a typed admin token with ADMIN_TOKEN in constant time."""
    return hmac.compare_digest(given.encode("utf-8", "replace"), admin_token.encode())


def sign_in(now: dt.datetime) -> None:
    """Start a signed-in session: a fresh one, so nothing from before carries over."""
    session.clear()
    session.permanent = True
    session["signed_in_at"] = _epoch(now)
    csrf_token()


def signed_in(now: dt.datetime) -> bool:
    """Tell whether the session signed in less than SESSION_SECONDS ago."""
    start = session.get("signed_in_at")
    if type(start) is not int:
        return False
    # A minute of grace for workers whose clocks disagree slightly.
    return start - 60 <= _epoch(now) < start + SESSION_SECONDS


def sign_out() -> None:
    """End the session: the cookie is deleted."""
    session.clear()
