"""Settings: the one place that reads the application's environment.

``Settings.from_env(os.environ)`` turns the variables named in the contract into
typed values, or raises ``ConfigError`` naming the first variable that is wrong.
Secrets are kept out of ``repr`` so a logged Settings never leaks them. The
``GUNICORN_*`` variables are gunicorn's, not the application's: ``server_settings``
reads those, with this module's ``parse_int``.

This module sits low, on floor 2: it parses values (webhook secrets through
``secret``, ``STORAGE_URL`` into a ``StorageLocation``) into what the modules
above take, so it imports none of them, only ``errors`` and ``secret``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit

from webhook.errors import ConfigError
from webhook.secret import MIN_SECRET_BYTES, parse_secret

# The SNS signature versions the service can verify (SHA1withRSA, SHA256withRSA).
SNS_SIGNATURE_VERSIONS = ("1", "2")

# The derived rebuild deadline's ceiling (seconds), well under the 30 s after
# which webhook senders commonly give up.
MAX_DEFAULT_REBUILD_DEADLINE = 20.0

# The project's folder (where wsgi.py is). The embedded defaults live in its var/,
# so the service and `flask --app DIR/wsgi.py` use the same files from any
# working directory.
PROJECT_DIR = Path(__file__).resolve().parent.parent

DEFAULTS = {
    "DATABASE_URL": f"sqlite:///{PROJECT_DIR / 'var' / 'webhook.db'}",
    "STORAGE_URL": f"file://{PROJECT_DIR / 'var' / 'manifests'}",
    "PUBLIC_BASE_URL": "http://localhost:8000",
    "WEBHOOK_TOLERANCE_SECONDS": "300",
    "DLCS_PROJECTION": "batches",
    "DLCS_TIMEOUT_SECONDS": "30",
    "DLCS_MAX_BATCH_SIZE": "100",
    "SNS_SIGNATURE_VERSIONS": "1 2",
    "METRICS": "on",
    "BODY_TIMEOUT_SECONDS": "10",
    "DATABASE_POOL_SIZE": "10",
    "STALLED_BATCH_SECONDS": "21600",
    "DELIVERY_RETENTION_DAYS": "30",
}

# Left unset, these serve a single-host trial (local ids, SQLite, a local folder):
# start-up and /readyz name the ones that were defaulted.
DEVELOPMENT_DEFAULTS = ("PUBLIC_BASE_URL", "DATABASE_URL", "STORAGE_URL")

#: How the DLCS projects a manifest's assets, and the named query each uses by default.
PROJECTIONS = {"batches": "batch-query", "manifest": "manifest-query"}
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_NAMED_QUERY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_SNS_TOPIC = re.compile(r"^arn:aws(-[a-z]+)*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_.-]{1,256}$")


@dataclass(frozen=True)
class Settings:
    """Everything the service is configured with, validated."""

    database_url: str = field(default=DEFAULTS["DATABASE_URL"], repr=False)
    # Connections one worker process keeps open at most; requests beyond wait for one.
    database_pool_size: int = 10
    storage: "StorageLocation" = field(
        default_factory=lambda: parse_storage_url(DEFAULTS["STORAGE_URL"]))
    public_base_url: str = DEFAULTS["PUBLIC_BASE_URL"]
    webhook_keys: tuple[bytes, ...] = field(default=(), repr=False)
    webhook_tolerance_seconds: int = 300
    admin_token: str | None = field(default=None, repr=False)
    dlcs_api_url: str | None = None
    dlcs_orchestrator_url: str | None = None
    dlcs_credentials: tuple[str, str] | None = field(default=None, repr=False)
    # "batches": the named query over the manifest's batch ids; "manifest": its
    # assets carry the manifest id and the named query takes that id.
    dlcs_projection: str = DEFAULTS["DLCS_PROJECTION"]
    dlcs_named_query: str = PROJECTIONS[DEFAULTS["DLCS_PROJECTION"]]
    dlcs_timeout_seconds: float = 30.0
    dlcs_max_batch_size: int = 100
    # None: derived from the DLCS timeout (see rebuild_lease_seconds).
    rebuild_lease: int | None = None
    # None: derived from the DLCS timeout (see rebuild_deadline_seconds).
    rebuild_deadline: int | None = None
    sns_topic_arns: tuple[str, ...] = ()
    sns_signature_versions: tuple[str, ...] = SNS_SIGNATURE_VERSIONS
    metrics_enabled: bool = True
    metrics_token: str | None = field(default=None, repr=False)
    # Set (by gunicorn.conf.py) when several worker processes share the metrics.
    metrics_multiprocess_dir: str | None = None
    # A request body not fully arrived this long after its headers is answered 408.
    body_timeout_seconds: float = 10.0
    # A batch still ingesting this long after it was recorded is reported stalled.
    stalled_batch_seconds: int = 21_600
    # What `flask prune-deliveries` keeps by default.
    delivery_retention_days: int = 30
    # The DEVELOPMENT_DEFAULTS variables that were left unset.
    defaulted: tuple[str, ...] = ()

    @property
    def rebuild_budget_seconds(self) -> float:
        """The longest a rebuild can take: the DLCS call with its retries, then storing.

        The named query is tried 3 times with DLCS_TIMEOUT_SECONDS each and at
        most 10 s of Retry-After between tries; storing takes at most about
        30 s (S3: bounded connect and read timeouts and retries); the rest is margin.
        """
        return 4 * self.dlcs_timeout_seconds + 120

    @property
    def rebuild_lease_seconds(self) -> float:
        """How long a rebuild's claim lasts: past it, another request may take the rebuild over.

        By default longer than any rebuild can take (the DLCS call with its
        retries, then storing), so only a claim left by a worker that died is
        ever taken over; a shorter lease recovers from such a crash sooner.
        """
        if self.rebuild_lease is not None:
            return float(self.rebuild_lease)
        return self.rebuild_budget_seconds

    @property
    def worker_timeout_seconds(self) -> int:
        """How long gunicorn lets a silent worker live: past any rebuild and any lease.

        A worker killed before then would cut a rebuild short, even with one
        thread (the sync worker's heartbeat waits for the request).
        """
        return int(max(self.rebuild_budget_seconds, self.rebuild_lease_seconds)) + 30

    def disabled(self) -> dict[str, str]:
        """Name each feature the configuration leaves off, with the variable that turns it on."""
        switches = {
            "webhook": ("WEBHOOK_SECRETS", bool(self.webhook_keys)),
            "sns": ("SNS_TOPIC_ARNS", bool(self.sns_topic_arns)),
            "admin": ("ADMIN_TOKEN", self.admin_token is not None),
            "dlcs-orchestrator": ("DLCS_ORCHESTRATOR_URL", self.dlcs_orchestrator_url is not None),
            "dlcs-api": ("DLCS_API_URL", self.dlcs_api_url is not None),
            "metrics": ("METRICS", self.metrics_enabled),
        }
        return {feature: variable for feature, (variable, on) in switches.items() if not on}

    @property
    def rebuild_deadline_seconds(self) -> float:
        """How long one rebuild may take: the named query (retries included), reading, storing.

        By default twice the DLCS timeout, at most 20 s (a webhook sender waits
        for the rebuild before it gets its answer, and senders commonly give up
        after 30 s), and three quarters of a lease set shorter than that.
        """
        if self.rebuild_deadline is not None:
            return float(self.rebuild_deadline)
        return min(MAX_DEFAULT_REBUILD_DEADLINE, 2 * self.dlcs_timeout_seconds,
                   0.75 * self.rebuild_lease_seconds)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> "Settings":
        """Read and validate every variable; raise ConfigError on the first bad one."""
        env = {**DEFAULTS, **{k: v for k, v in environ.items() if v != ""}}
        api_key, api_secret = env.get("DLCS_API_KEY"), env.get("DLCS_API_SECRET")
        if (api_key is None) != (api_secret is None):
            missing = "DLCS_API_SECRET" if api_secret is None else "DLCS_API_KEY"
            raise ConfigError(missing, "DLCS_API_KEY and DLCS_API_SECRET must be set together")
        projection = _projection(env["DLCS_PROJECTION"])
        if projection == "manifest" and "DLCS_API_URL" not in env:
            # The projection tags assets through the API; without it nothing is found.
            raise ConfigError("DLCS_PROJECTION", "manifest needs DLCS_API_URL (and its key)")
        settings = cls(
            database_url=_database_url(env["DATABASE_URL"]),
            database_pool_size=parse_int("DATABASE_POOL_SIZE", env["DATABASE_POOL_SIZE"],
                                         1, 1_000),
            storage=_storage(env["STORAGE_URL"]),
            public_base_url=_http_url("PUBLIC_BASE_URL", env["PUBLIC_BASE_URL"]),
            webhook_keys=_secrets(env.get("WEBHOOK_SECRETS", "")),
            webhook_tolerance_seconds=parse_int("WEBHOOK_TOLERANCE_SECONDS",
                                                env["WEBHOOK_TOLERANCE_SECONDS"], 1, 86_400),
            admin_token=_admin_token(env.get("ADMIN_TOKEN")),
            dlcs_api_url=_optional_http_url("DLCS_API_URL", env.get("DLCS_API_URL")),
            dlcs_orchestrator_url=_optional_http_url("DLCS_ORCHESTRATOR_URL",
                                                     env.get("DLCS_ORCHESTRATOR_URL")),
            dlcs_credentials=(api_key, api_secret) if api_key is not None else None,
            dlcs_projection=projection,
            dlcs_named_query=_named_query(env.get("DLCS_NAMED_QUERY", PROJECTIONS[projection])),
            dlcs_timeout_seconds=float(parse_int("DLCS_TIMEOUT_SECONDS",
                                                 env["DLCS_TIMEOUT_SECONDS"], 1, 600)),
            dlcs_max_batch_size=parse_int("DLCS_MAX_BATCH_SIZE", env["DLCS_MAX_BATCH_SIZE"],
                                          1, 10_000),
            rebuild_lease=(parse_int("REBUILD_LEASE_SECONDS", env["REBUILD_LEASE_SECONDS"],
                                     1, 86_400)
                           if "REBUILD_LEASE_SECONDS" in env else None),
            rebuild_deadline=(parse_int("REBUILD_DEADLINE_SECONDS",
                                        env["REBUILD_DEADLINE_SECONDS"], 1, 3_600)
                              if "REBUILD_DEADLINE_SECONDS" in env else None),
            sns_topic_arns=_topics(env.get("SNS_TOPIC_ARNS", "")),
            sns_signature_versions=_signature_versions(env["SNS_SIGNATURE_VERSIONS"]),
            metrics_enabled=_on_off("METRICS", env["METRICS"]),
            metrics_token=_token("METRICS_TOKEN", env.get("METRICS_TOKEN")),
            metrics_multiprocess_dir=_directory("PROMETHEUS_MULTIPROC_DIR",
                                                env.get("PROMETHEUS_MULTIPROC_DIR")),
            body_timeout_seconds=float(parse_int("BODY_TIMEOUT_SECONDS",
                                                 env["BODY_TIMEOUT_SECONDS"], 1, 600)),
            stalled_batch_seconds=parse_int("STALLED_BATCH_SECONDS",
                                            env["STALLED_BATCH_SECONDS"], 60, 365 * 86_400),
            delivery_retention_days=parse_int("DELIVERY_RETENTION_DAYS",
                                              env["DELIVERY_RETENTION_DAYS"], 1, 36_500),
            defaulted=tuple(name for name in DEVELOPMENT_DEFAULTS if not environ.get(name)),
        )
        if settings.rebuild_deadline_seconds >= settings.rebuild_lease_seconds:
            # A rebuild still running when its lease ends lets a second one start:
            # the work is done twice, and the first can only lose.
            raise ConfigError("REBUILD_DEADLINE_SECONDS", "must be shorter than the rebuild "
                              f"lease ({settings.rebuild_lease_seconds:g} s)")
        return settings


def _database_url(value: str) -> str:
    scheme = value.split(":", 1)[0].lower()
    if scheme == "sqlite":
        if not value.startswith("sqlite:///") or value == "sqlite:///":
            raise ConfigError("DATABASE_URL", "expected sqlite:///path")
        return value
    if scheme in ("postgres", "postgresql"):
        parts = urlsplit(value)
        if not parts.hostname or not parts.path.strip("/"):
            raise ConfigError("DATABASE_URL", "expected postgresql://user:pass@host:port/db")
        try:
            parts.port  # noqa: B018 - raises ValueError on a non-numeric port
        except ValueError as exc:
            raise ConfigError("DATABASE_URL", "the port is not a number") from exc
        return value
    raise ConfigError("DATABASE_URL", "expected a sqlite:/// or postgresql:// URL")


def _storage(value: str) -> "StorageLocation":
    try:
        return parse_storage_url(value)
    except ValueError as exc:
        raise ConfigError("STORAGE_URL", str(exc)) from None


def _http_url(name: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(name, "expected an http(s):// URL")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigError(name, "must not carry credentials, a query or a fragment")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ConfigError(name, "the port is not a number") from exc
    return value.rstrip("/")


def _optional_http_url(name: str, value: str | None) -> str | None:
    return None if value is None else _http_url(name, value)


def parse_int(name: str, value: str, low: int, high: int) -> int:
    """Parse variable ``name``'s whole number from ``low`` to ``high``, or raise ConfigError."""
    if not re.fullmatch(r"[0-9]+", value.strip()):
        raise ConfigError(name, f"expected a whole number, got {value!r}")
    number = int(value)
    if not low <= number <= high:
        raise ConfigError(name, f"expected a number from {low} to {high}, got {number}")
    return number


def _secrets(value: str) -> tuple[bytes, ...]:
    keys = []
    for position, secret in enumerate(value.split(), start=1):
        # The messages name the position, never the secret itself.
        try:
            key = parse_secret(secret)
        except ValueError as exc:
            raise ConfigError("WEBHOOK_SECRETS", f"secret #{position} is malformed: {exc}") from None
        if len(key) < MIN_SECRET_BYTES:
            raise ConfigError("WEBHOOK_SECRETS", (
                f"secret #{position} is {len(key)} bytes; at least {MIN_SECRET_BYTES} are "
                "needed (`flask --app wsgi secret` makes one)"))
        keys.append(key)
    return tuple(keys)


def _admin_token(value: str | None) -> str | None:
    return _token("ADMIN_TOKEN", value)


def _named_query(value: str) -> str:
    if not _NAMED_QUERY.fullmatch(value):
        raise ConfigError("DLCS_NAMED_QUERY", "expected a name of letters, digits, '_', '-' or '.'")
    return value


def _projection(value: str) -> str:
    projection = value.strip().lower()
    if projection not in PROJECTIONS:
        raise ConfigError("DLCS_PROJECTION",
                          f"expected {' or '.join(PROJECTIONS)}, got {value!r}")
    return projection


def _topics(value: str) -> tuple[str, ...]:
    topics = tuple(value.split())
    for topic in topics:
        if not _SNS_TOPIC.fullmatch(topic):
            raise ConfigError("SNS_TOPIC_ARNS", f"{topic!r} is not an SNS topic ARN")
    return topics


def _signature_versions(value: str) -> tuple[str, ...]:
    versions = tuple(dict.fromkeys(value.split()))
    if not versions or not set(versions) <= set(SNS_SIGNATURE_VERSIONS):
        raise ConfigError("SNS_SIGNATURE_VERSIONS",
                          f"expected one or more of {' '.join(SNS_SIGNATURE_VERSIONS)}, "
                          f"got {value!r}")
    return versions


def _on_off(name: str, value: str) -> bool:
    switch = value.strip().lower()
    if switch not in ("on", "off"):
        raise ConfigError(name, f"expected on or off, got {value!r}")
    return switch == "on"


def _token(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    if len(value) < 16 or not value.isascii() or any(c.isspace() for c in value):
        # The message never repeats the value: it is a secret.
        raise ConfigError(name, "expected at least 16 ASCII characters without spaces")
    return value


def _directory(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    if not os.path.isdir(value):
        raise ConfigError(name, f"{value!r} is not a directory")
    return value


@dataclass(frozen=True)
class StorageLocation:
    """Where published manifests are kept: a local directory, or an S3 bucket and prefix."""

    scheme: str                   # "file" or "s3"
    directory: Path | None = None  # file: as given (relative to the working directory)
    bucket: str | None = None      # s3
    prefix: str = ""               # s3: no leading or trailing slash


def parse_storage_url(url: str) -> StorageLocation:
    """Parse ``STORAGE_URL``: ``file://DIR`` or ``s3://bucket[/prefix]``.

    Raises ValueError with a message fit for an operator (it never repeats
    what could be a credential); no I/O happens here.
    """
    url = url.strip()
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError("expected file://DIR or s3://bucket[/prefix] (no '://' found)")
    scheme = scheme.lower()  # URL schemes are case-insensitive (RFC 3986)
    if scheme == "file":
        # Everything after "file://" is the directory, verbatim: "file://var/x"
        # is relative to the working directory, "file:///srv/x" absolute.
        if not rest:
            raise ValueError("file:// needs a directory, e.g. file://var/manifests")
        return StorageLocation("file", directory=Path(rest))
    if scheme == "s3":
        return _s3_location(rest)
    if not re.fullmatch(r"[a-z][a-z0-9+.-]*", scheme):
        raise ValueError("expected file://DIR or s3://bucket[/prefix]")
    raise ValueError(f"unsupported scheme {scheme!r}: expected file://DIR or s3://bucket[/prefix]")


def _s3_location(rest: str) -> StorageLocation:
    bucket, _, prefix = rest.partition("/")
    if "@" in bucket or ":" in bucket:
        raise ValueError(
            "s3:// URL must not carry credentials or a port; use AWS_ACCESS_KEY_ID, "
            "AWS_SECRET_ACCESS_KEY and AWS_ENDPOINT_URL")
    if "?" in rest or "#" in rest:
        raise ValueError(
            "s3:// URL takes no query or fragment; region and endpoint come from "
            "AWS_DEFAULT_REGION and AWS_ENDPOINT_URL")
    if not bucket:
        raise ValueError("s3:// needs a bucket name, e.g. s3://my-bucket/manifests")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise ValueError(
            f"invalid S3 bucket name {bucket!r}: 3-63 lowercase letters, digits, "
            "dots and hyphens, starting and ending with a letter or digit")
    prefix = prefix.strip("/")
    if prefix and ("\\" in prefix or "\0" in prefix
                   or any(part in ("", ".", "..") for part in prefix.split("/"))):
        raise ValueError(f"invalid S3 prefix {prefix!r}: no empty, '.' or '..' segments")
    return StorageLocation("s3", bucket=bucket, prefix=prefix)
