"""Run the stand-in DLCS until interrupted: ``python -m webhook.devdlcs`` or ``flask dev-dlcs``."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading

from webhook import logs
from webhook.config import Settings
from webhook.devdlcs.server import CompletionSender, DevDlcs
from webhook.startup import EXIT_CONFIG, fail, settings_or_exit

log = logging.getLogger("webhook.devdlcs")


def run(settings: Settings, *, host: str, port: int, ingest_seconds: float,
        webhook_url: str | None) -> None:
    """Serve until SIGINT or SIGTERM; completions go to ``webhook_url`` (default: PUBLIC_BASE_URL's)."""
    if not settings.webhook_keys:
        fail(EXIT_CONFIG, "bad configuration: WEBHOOK_SECRETS: the stand-in DLCS signs its "
             "completions with the first secret: give it the service's "
             "(`flask --app wsgi secret` makes one)", variable="WEBHOOK_SECRETS")
    logs.configure()
    url = webhook_url or f"{settings.public_base_url}/webhooks/batch-completed"
    dlcs = DevDlcs(named_query=settings.dlcs_named_query, host=host, port=port,
                   ingest_seconds=ingest_seconds,
                   sender=CompletionSender(url, settings.webhook_keys[0]))
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with dlcs:
        logs.event(log, logging.INFO, f"stand-in DLCS on {dlcs.url}: batches finish "
                   f"{ingest_seconds:g} s after queueing, completions go to {url}",
                   url=dlcs.url, named_query=settings.dlcs_named_query, webhook_url=url)
        stop.wait()


def main(argv: list[str] | None = None) -> None:
    """Parse the command line, read the settings as the service does, run."""
    parser = argparse.ArgumentParser(prog="python -m webhook.devdlcs",
                                     description=run.__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--ingest-seconds", type=float, default=2.0)
    parser.add_argument("--webhook-url", default=None)
    args = parser.parse_args(argv)
    run(settings_or_exit(os.environ), host=args.host, port=args.port,
        ingest_seconds=args.ingest_seconds, webhook_url=args.webhook_url)
