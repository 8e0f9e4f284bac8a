"""The WSGI entry point: ``gunicorn wsgi:app``. The only import-time side effect."""

import sys

from webhook import create_app
from webhook.errors import ConfigError

try:
    app = create_app()
except ConfigError as exc:
    # A clear one-line message naming the variable, not a traceback.
    print(f"dlcs-webhook: bad configuration: {exc}", file=sys.stderr)
    sys.exit(3)
