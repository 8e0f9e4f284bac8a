"""The WSGI entry point: ``gunicorn -c gunicorn.conf.py wsgi:app``. The only import-time side effect.

In a gunicorn worker the app is built from the settings gunicorn's master
validated; anywhere else they are validated here (one line and exit status 3
on a bad value, 69 when the database cannot be reached: ``webhook.startup``).
"""

import os
from pathlib import Path

import click

from webhook import create_app, startup


def _app():
    settings = startup.handed_over()
    if settings is not None:
        # A gunicorn worker: the master validated, migrated and logged already.
        return create_app(settings, migrate=False)
    if os.environ.get("SERVER_SOFTWARE", "").startswith("gunicorn/"):
        # gunicorn reads ./gunicorn.conf.py from the folder it started in (not
        # --chdir's); without it: one sync worker, killed after 30 s mid-rebuild.
        conf = Path(__file__).resolve().parent / "gunicorn.conf.py"
        startup.fail(startup.EXIT_CONFIG,
                     f"gunicorn started without this project's gunicorn.conf.py: start it with -c {conf}")
    settings = startup.settings_or_exit(os.environ)
    context = click.get_current_context(silent=True)
    if context is not None and context.info_name != "run":
        # A `flask --app wsgi <command>`: each command reaches the database itself
        # when it needs it, and a read-only one never creates nor migrates one.
        return create_app(settings, migrate=False)
    startup.prepare_or_exit(settings)  # any other server, `flask run` included
    return create_app(settings, migrate=False)


app = _app()
