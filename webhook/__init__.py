"""dlcs-webhook: publish IIIF manifests when their DLCS batches complete."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import requests
from flask import Flask

from webhook import db, logs
from webhook.config import Settings
from webhook.body_deadline import BodyDeadline
from webhook.deadlines import DeadlineAdapter
from webhook.dlcs import DlcsClient, make_session
from webhook.domain import MAX_REGISTRATION_BYTES
from webhook.service import build_services
from webhook.sns import CertificateFetcher, SnsVerifier, SubscriptionConfirmer
from webhook.storage import ManifestStore
from webhook.stores import open_store


def create_app(settings: Settings | None = None, *, dlcs: DlcsClient | None = None,
               store: ManifestStore | None = None, migrate: bool = True,
               sns_fetcher: Callable[[str], bytes] | None = None,
               sns_confirmer: Callable[[str], None] | None = None) -> Flask:
    """Build the application: settings, database, clients, blueprints, CLI."""
    settings = settings or Settings.from_env(os.environ)
    # JSON lines on stderr, unless something (pytest, gunicorn's logconfig) set logging up.
    logs.configure()
    # Whoever configured logging, urllib3's retry warnings carry no query string.
    logs.redact_queries()
    app = Flask(__name__)
    # Bodies are read as streams with per-route limits; this caps anything else.
    app.config["MAX_CONTENT_LENGTH"] = MAX_REGISTRATION_BYTES
    app.json.sort_keys = False

    # Without migrate, nothing is created: a SQLite file must exist already
    # (gunicorn's master or `flask db upgrade` made it).
    db.bind(db.open_database(settings.database_url, pool_size=settings.database_pool_size,
                             create=migrate))
    if migrate:
        db.migrate()
        db.close()
    store = store or open_store(settings.storage)
    dlcs = dlcs or DlcsClient(
        orchestrator_url=settings.dlcs_orchestrator_url, api_url=settings.dlcs_api_url,
        named_query=settings.dlcs_named_query, timeout=settings.dlcs_timeout_seconds,
        credentials=settings.dlcs_credentials, max_batch_size=settings.dlcs_max_batch_size,
        session=make_session())
    app.extensions["webhook.settings"] = settings
    app.extensions["webhook.store"] = store
    app.extensions["webhook.services"] = build_services(settings, dlcs, store)
    # No retries on this session: SNS redelivers whatever we answer with a 503. Its
    # adapter bounds an answer's headers by the fetch's deadline (CertificateFetcher).
    sns_session = requests.Session()
    sns_session.mount("https://", DeadlineAdapter(max_retries=0))
    app.extensions["webhook.sns.verifier"] = SnsVerifier(
        sns_fetcher or CertificateFetcher(sns_session), topics=settings.sns_topic_arns,
        versions=settings.sns_signature_versions)
    app.extensions["webhook.sns.confirm"] = sns_confirmer or SubscriptionConfirmer(sns_session)

    @app.teardown_appcontext
    def _release_connection(exc):
        db.close()

    from webhook import cli, routes
    logs.init_app(app)  # first: its timer starts before, and its line ends after, all else
    routes.init_app(app)
    cli.init_app(app)
    logging.getLogger("webhook").setLevel(logging.INFO)
    # Outermost: the deadline runs from the moment gunicorn hands the request over.
    app.wsgi_app = BodyDeadline(app.wsgi_app, settings.body_timeout_seconds)
    return app
