"""Operator commands: ``flask --app wsgi <command>``.

Each command does what the matching HTTP endpoint does, prints JSON or one line
per item, and exits non-zero on failure with a one-line message: status 1 for
a refusal, ``startup.EXIT_DATABASE`` (69) when the database cannot be reached.
Only ``db upgrade`` creates or migrates a database; every other command reads
(or writes to) one that exists and never makes an empty one.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import secrets
import shlex

import click
import requests
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext

from webhook import db, startup
from webhook.answer_schemas import OutcomeSchema, RequeueSchema, StatusSchema
from webhook.domain import ascii_digits
from webhook.errors import WebhookError
from webhook.secret import new_secret
from webhook.devdlcs.documents import signed_completion
from webhook.service import Services

db_cli = AppGroup("db", help="Create, upgrade or inspect the database schema.")


def init_app(app: Flask) -> None:
    """Register the commands on the app's ``flask`` CLI."""
    app.cli.add_command(db_cli)
    for command in (status, rebuild, reconcile, requeue, prune_deliveries, completion_curl,
                    send_completion, secret, dev_dlcs):
        app.cli.add_command(command)


def _services() -> Services:
    return current_app.extensions["webhook.services"]


def _settings():
    return current_app.extensions["webhook.settings"]


def _needs_schema(command):
    """Reach the database (exit 69 if it cannot be) and refuse one that has no schema yet."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        settings = _settings()
        startup.reach_database_or_exit(settings)
        current, _ = db.schema_version()
        if current is None:
            raise click.ClickException(
                f"the database at {startup.database_location(settings.database_url)} has no "
                "schema: run `flask --app wsgi db upgrade` or start the service")
        return command(*args, **kwargs)

    return run


def _fail(exc: WebhookError) -> click.ClickException:
    return click.ClickException(f"{type(exc).__name__}: {exc}")


@db_cli.command("upgrade")
def db_upgrade():
    """Create the database (a SQLite file) or its schema, or apply pending migrations."""
    settings = _settings()
    applied = startup.migrate_or_exit(settings)  # the one command that may create a database
    db.bind(db.open_database(settings.database_url, create=False))
    startup.reach_database_or_exit(settings)
    current, _ = db.schema_version()
    click.echo(f"applied: {', '.join(applied)}" if applied else f"up to date at {current}")


@db_cli.command("version")
def db_version():
    """Show the newest applied migration and any pending ones."""
    startup.reach_database_or_exit(_settings())
    current, pending = db.schema_version()
    click.echo(f"current: {current or 'none'}")
    click.echo(f"pending: {', '.join(pending) if pending else 'none'}")
    if pending:
        raise SystemExit(1)


@click.command("status")
@with_appcontext
@_needs_schema
@click.argument("customer", type=click.IntRange(min=1))
@click.argument("manifest_id")
def status(customer: int, manifest_id: str):
    """Print a manifest's state, batches and last rebuild as JSON."""
    try:
        state = _services().reading.status(customer, manifest_id)
    except WebhookError as exc:
        raise _fail(exc) from exc
    click.echo(json.dumps(StatusSchema().dump(state), indent=2))


@click.command("rebuild")
@with_appcontext
@_needs_schema
@click.argument("customer", type=click.IntRange(min=1))
@click.argument("manifest_id")
def rebuild(customer: int, manifest_id: str):
    """Rebuild and store a manifest now from what the DLCS returns."""
    try:
        outcome = _services().rebuild.rebuild_now(customer, manifest_id)
    except WebhookError as exc:
        raise _fail(exc) from exc
    click.echo(json.dumps(OutcomeSchema().dump(outcome)))


class Duration(click.ParamType):
    """A duration such as ``90s``, ``30m``, ``2h`` or ``1d``."""

    name = "duration"
    _UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    _LONGEST_SECONDS = 36_500 * 86400

    def convert(self, value, param, ctx):
        if isinstance(value, dt.timedelta):
            return value
        text = str(value).strip().lower()
        number = text[:-1]
        if ascii_digits(number) and text[-1:] in self._UNITS:
            seconds = int(number) * self._UNITS[text[-1]]
            # Counted back from now, a longer one would name a date before year 1.
            if seconds > self._LONGEST_SECONDS:
                self.fail(f"{value!r} is longer than 100 years", param, ctx)
            return dt.timedelta(seconds=seconds)
        self.fail(f"{value!r} is not a duration like 90s, 30m, 2h or 1d", param, ctx)


@click.command("reconcile")
@click.option("--older-than", type=Duration(), default="30m", show_default=True,
              help="Only manifests with a batch ingesting for longer than this.")
@with_appcontext
@_needs_schema
def reconcile(older_than: dt.timedelta):
    """Complete batches the DLCS finished but never notified; one line per manifest."""
    services = _services()
    failures = 0
    for customer, slug in services.reading.stale_manifests(older_than):
        try:
            reconciled = services.intake.reconcile(customer, slug)
        except WebhookError as exc:
            failures += 1
            click.echo(f"{customer}/{slug}: failed: {type(exc).__name__}: {exc}")
            continue
        done = ",".join(map(str, reconciled.completed)) or "none"
        line = f"{customer}/{slug}: completed {done} -> {reconciled.outcome.outcome}"
        if reconciled.stalled:
            line += "; stalled " + ", ".join(
                f"{s.batch} ({s.reason}, {_age(s.age)})" for s in reconciled.stalled)
        click.echo(line)
    if failures:
        raise SystemExit(1)


def _age(seconds: int) -> str:
    """Write an age as the largest two units: 2d3h, 7h05m, 12m30s."""
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds:02d}s"


@click.command("requeue")
@with_appcontext
@click.argument("customer", type=click.IntRange(min=1))
@click.argument("manifest_id")
def requeue(customer: int, manifest_id: str):
    """Queue a manifest's unfinished assets again, replacing the batches still ingesting."""
    try:
        requeued = _services().maintenance.requeue(customer, manifest_id)
    except WebhookError as exc:
        raise _fail(exc) from exc
    click.echo(json.dumps(RequeueSchema().dump(requeued)))


@click.command("prune-deliveries")
@click.option("--older-than", type=Duration(), default=None,
              help="Prune deliveries received longer ago than this (e.g. 30d). "
                   "[default: DELIVERY_RETENTION_DAYS days]")
@with_appcontext
def prune_deliveries(older_than: dt.timedelta | None):
    """Delete old deliveries that ended; never failed ones, nor those of ingesting batches."""
    settings = current_app.extensions["webhook.settings"]
    if older_than is None:
        older_than = dt.timedelta(days=settings.delivery_retention_days)
    if older_than <= dt.timedelta(0):
        raise click.BadParameter("must be longer than 0s", param_hint="--older-than")
    try:
        pruned = _services().maintenance.prune_deliveries(older_than)
    except WebhookError as exc:
        raise _fail(exc) from exc
    before = pruned.received_before.isoformat(timespec="seconds") + "Z"
    click.echo(f"pruned {pruned.deleted} deliveries received before {before}")


def _completion_options(command):
    options = [
        click.argument("batch", type=click.IntRange(min=1)),
        click.option("--customer", type=click.IntRange(min=1), required=True,
                     help="DLCS customer the batch belongs to."),
        click.option("--count", type=click.IntRange(min=0), default=1, show_default=True),
        click.option("--completed", type=click.IntRange(min=0), default=None,
                     help="Assets ingested (default: --count minus --errors)."),
        click.option("--errors", type=click.IntRange(min=0), default=0, show_default=True),
        click.option("--url", default=None,
                     help="Webhook URL (default: PUBLIC_BASE_URL/webhooks/batch-completed)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _signed_completion(batch, customer, count, completed, errors, url):
    settings = current_app.extensions["webhook.settings"]
    if not settings.webhook_keys:
        raise click.ClickException("No WEBHOOK_SECRETS are configured; nothing can be signed.")
    now = dt.datetime.now(dt.timezone.utc)
    headers, body = signed_completion(
        settings.webhook_keys[0], batch=batch, customer=customer, count=count,
        completed=count - errors if completed is None else completed, errors=errors,
        submitted=now, finished=now)
    return url or f"{settings.public_base_url}/webhooks/batch-completed", headers, body


@click.command("completion-curl")
@with_appcontext
@_completion_options
def completion_curl(batch, customer, count, completed, errors, url):
    """Print a ready-to-run curl that posts a signed completion of BATCH."""
    url, headers, body = _signed_completion(batch, customer, count, completed, errors, url)
    parts = ["curl", "-sS", "-X", "POST", url]
    for name, value in headers.items():
        parts += ["-H", f"{name}: {value}"]
    parts += ["--data-binary", body.decode()]
    click.echo(" ".join(shlex.quote(part) for part in parts))


@click.command("send-completion")
@with_appcontext
@_completion_options
def send_completion(batch, customer, count, completed, errors, url):
    """Sign and send a completion of BATCH; print the answer."""
    url, headers, body = _signed_completion(batch, customer, count, completed, errors, url)
    try:
        response = requests.post(url, data=body, headers=headers, timeout=60,
                                 allow_redirects=False)
    except requests.RequestException as exc:
        raise click.ClickException(f"could not reach {url}: {type(exc).__name__}") from exc
    click.echo(f"{response.status_code} {response.text.strip()}")
    if response.status_code >= 300:
        raise SystemExit(1)


@click.command("secret")
def secret():
    """Print a new webhook secret and admin token as shell `export` lines.

    `eval "$(flask --app wsgi secret)"` sets both in the current shell; give the
    same WEBHOOK_SECRETS value to the DLCS (or `flask dev-dlcs`) that signs the
    deliveries.
    """
    click.echo(f"export WEBHOOK_SECRETS={new_secret()}")
    click.echo(f"export ADMIN_TOKEN={secrets.token_urlsafe(32)}")


@click.command("dev-dlcs")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8001, show_default=True)
@click.option("--ingest-seconds", type=click.FloatRange(min=0), default=2.0, show_default=True,
              help="How long after queueing a batch finishes and its completion is sent.")
@click.option("--webhook-url", default=None,
              help="Where completions go (default: PUBLIC_BASE_URL/webhooks/batch-completed).")
@with_appcontext
def dev_dlcs(host, port, ingest_seconds, webhook_url):
    """Run a stand-in DLCS that queues assets, answers named queries and sends signed completions.

    Point DLCS_ORCHESTRATOR_URL and DLCS_API_URL at it; it signs with the first
    WEBHOOK_SECRETS entry. Runs until interrupted.
    """
    from webhook.devdlcs.run import run

    run(_settings(), host=host, port=port, ingest_seconds=ingest_seconds,
        webhook_url=webhook_url)
