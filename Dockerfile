# syntax=docker/dockerfile:1
# Python 3.11 on Debian 12: the interpreter requirements.lock is generated with.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY requirements.txt requirements.lock ./
# The runtime only (test and CI tools are in requirements-dev.txt), every package,
# transitive ones included, at the version requirements.lock pins.
RUN pip install -r requirements.txt -c requirements.lock

COPY webhook ./webhook
COPY wsgi.py gunicorn.conf.py ./

# A non-root user that owns only the embedded-default data folder.
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin webhook \
    && mkdir -p /app/var && chown webhook /app/var
# Numeric, so the runtime (and Kubernetes' runAsNonRoot) can tell it is not root.
USER 10001

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

# gunicorn finishes in-flight requests on SIGTERM for GUNICORN_GRACEFUL_TIMEOUT
# seconds (30): stop the container with at least that, e.g. `docker stop -t 40`.
STOPSIGNAL SIGTERM
# The control socket's default place (~/.gunicorn) is not writable by the user.
CMD ["gunicorn", "-c", "gunicorn.conf.py", "--control-socket", "/tmp/gunicorn.ctl", "wsgi:app"]
