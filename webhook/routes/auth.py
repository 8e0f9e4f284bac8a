"""The admin bearer token check."""

from __future__ import annotations

import functools
import hmac

from flask import current_app, request

from webhook.routes.problems import problem


def admin_required(view):
    """Let a view run only with ``Authorization: Bearer <ADMIN_TOKEN>``."""

    @functools.wraps(view)
    def guarded(*args, **kwargs):
        token = current_app.extensions["webhook.settings"].admin_token
        if token is None:
            return problem(503, "admin-disabled", "Admin endpoints disabled",
                           "No ADMIN_TOKEN is configured, so admin endpoints are off.")
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        # compare_digest on bytes: constant time whatever the given value is.
        if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode("utf-8", "replace"), token.encode()):
            return problem(401, "unauthorized", "Unauthorized",
                           "A valid 'Authorization: Bearer <token>' header is required.",
                           headers={"WWW-Authenticate": 'Bearer realm="dlcs-webhook"'})
        return view(*args, **kwargs)

    return guarded
