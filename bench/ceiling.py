"""The ceiling of webhook intake: the least a correct receiver must do per delivery.

A minimal Flask app that does, per ``POST /webhooks/batch-completed``, only what
no receiver can skip: verify the Standard Webhooks signature on the raw body
(``webhook.signature.verify``), load the notification through the same schema
(``webhook.schemas.parse_notification``) and insert one delivery row with the
service's own statement (``Delivery.record``: a redelivered id is answered,
not an error), in a transaction of its own (autocommit: no ``BEGIN`` and
``COMMIT`` round trips; ``CEILING_TRANSACTION=1`` wraps it in one, as the
ceiling of issue 15 did), through a pooled connection of the same
``webhook.db`` module and the same migrations. No service layer, no batch or
manifest rows, no request log line, no metrics. ``bench/intake.py`` runs it
under the same gunicorn settings as the service and divides the service's
throughput by this one's.

Run it as gunicorn runs the service: ``gunicorn -c gunicorn.conf.py
'bench.ceiling:create_app()'`` with ``DATABASE_URL`` and ``WEBHOOK_SECRETS`` set.
"""

from __future__ import annotations

import os
import time

from flask import Flask, jsonify, request

from webhook import db
from webhook.config import Settings
from webhook.deliveries import Delivery
from webhook.errors import DatabaseUnavailable, PayloadError, SignatureError
from webhook.model_base import utcnow
from webhook.schemas import parse_notification
from webhook.signature import verify

MAX_BODY_BYTES = 64 * 1024


def create_app(settings: Settings | None = None) -> Flask:
    """Build the ceiling app on the database and secrets the environment names."""
    settings = settings or Settings.from_env(os.environ)
    in_transaction = os.environ.get("CEILING_TRANSACTION") == "1"
    app = Flask(__name__)
    db.bind(db.open_database(settings.database_url))
    db.migrate()
    db.close()

    @app.post("/webhooks/batch-completed")
    def batch_completed():
        body = request.stream.read(MAX_BODY_BYTES + 1)
        if len(body) > MAX_BODY_BYTES:
            return jsonify({"error": "too large"}), 413
        verified = verify(settings.webhook_keys, request.headers, body, now=time.time(),
                          tolerance=settings.webhook_tolerance_seconds)
        completion = parse_notification(body)
        now = utcnow()
        # The service's own insert: one hand-written statement, the unique id
        # deciding duplicates (a correct receiver answers a redelivery too), in
        # a transaction of its own (no BEGIN and COMMIT round trips), or, with
        # CEILING_TRANSACTION=1, in BEGIN ... COMMIT as the ceiling was.
        with (db.transaction() if in_transaction else db.autocommit()):
            recorded = Delivery.record(verified.msg_id, "webhook", now, now, body,
                                       completion.batch_id, None, "recorded", None)
        if not recorded:
            return jsonify({"outcome": "duplicate", "batch": completion.batch_id,
                            "manifest": None})
        return jsonify({"outcome": "recorded", "batch": completion.batch_id, "manifest": None})

    @app.get("/readyz")
    def readyz():
        db.ping()
        return jsonify({"status": "ok"})

    @app.errorhandler(SignatureError)
    def _signature(exc):
        return jsonify({"error": exc.reason}), 401

    @app.errorhandler(PayloadError)
    def _payload(exc):
        return jsonify({"error": exc.detail}), 422

    @app.errorhandler(DatabaseUnavailable)
    def _database(exc):
        return jsonify({"error": str(exc)}), 503

    @app.teardown_appcontext
    def _release_connection(exc):
        db.close()

    return app
