"""The admin bearer token check."""

from __future__ import annotations

import functools
import hmac

from flask import current_app, request

from webhook.routes.problems import problem


def bearer_matches(token: str) -> bool:
    """Tell whether the request carries ``Authorization: Bearer <token>``."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    # compare_digest on bytes: constant time whatever the given value is.
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode("utf-8", "replace"), token.encode())


def admin_required(view):
    """Let a view run only with ``Authorization: Bearer <ADMIN_TOKEN>``."""

    @functools.wraps(view)
    def guarded(*args, **kwargs):
        token = current_app.extensions["webhook.settings"].admin_token
        if token is None:
            return problem(503, "admin-disabled", "Admin endpoints disabled",
                           "No ADMIN_TOKEN is configured, so admin endpoints are off.")
        if not bearer_matches(token):
            return problem(401, "unauthorized", "Unauthorized",
                           "A valid 'Authorization: Bearer <token>' header is required.",
                           headers={"WWW-Authenticate": 'Bearer realm="dlcs-webhook"'})
        return view(*args, **kwargs)

    return guarded
