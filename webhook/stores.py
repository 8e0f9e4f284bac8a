"""Which ``ManifestStore`` a ``STORAGE_URL`` names: ``open_store``.

A module of its own because it is the one place that knows every store:
file_store and s3_store import storage (the interface), so choosing between
them in storage would be an import cycle.
"""

from __future__ import annotations

from webhook.config import StorageLocation
from webhook.file_store import FileStore
from webhook.s3_store import S3Store
from webhook.storage import ManifestStore


def open_store(location: StorageLocation) -> ManifestStore:
    """Return the store for a parsed ``STORAGE_URL`` (see ``config.parse_storage_url``); no I/O."""
    if location.scheme == "file":
        return FileStore(location.directory)
    return S3Store(location.bucket, location.prefix)
