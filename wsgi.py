"""The WSGI entry point: ``gunicorn -c gunicorn.conf.py wsgi:app``. The only import-time side effect.

In a gunicorn worker the app is built from the settings gunicorn's master
validated; anywhere else ``webhook.startup`` validates them here (one line and
exit status 3 on a bad value, 69 when the database cannot be reached).
"""

from webhook.startup import wsgi_app

app = wsgi_app()
