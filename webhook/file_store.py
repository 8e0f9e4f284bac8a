"""Manifest documents as files under one directory: ``FileStore``.

A write replaces the file atomically and durably (a temporary file in the same
directory, fsynced, then renamed), so a reader sees the old document or the
new one, never a part of either. Every OSError leaves this module as
``StorageError`` (translated once, ``raise ... from exc``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from webhook.domain import Deadline
from webhook.errors import StorageError
from webhook.storage import (
    _IN_MEMORY,
    JSON_LD,
    Body,
    StoredDocument,
    StoredStream,
    _measured,
    _validated_key,
    etag_for,
)

# A spooled document is copied a block at a time, never read whole into memory.
_COPY_BLOCK = 1024 * 1024


class FileStore:
    """Manifest documents as files under one directory.

    The directory is created on the first ``put`` or ``check`` rather than in
    the constructor, so ``open_store`` does no I/O and an unusable directory
    shows up as a StorageError from the readiness probe instead of a crash.
    The file system keeps no content type; ``put`` accepts one for interface
    compatibility and ignores it (the GET view sets the IIIF media type).
    """

    backend = "file"

    def __init__(self, directory: Path | str):
        # abspath, not resolve(): no file system access, but "var/x" is pinned
        # to the working directory at start-up, not wherever we chdir later.
        self.directory = Path(os.path.abspath(directory))

    def describe(self) -> str:
        return self.directory.as_uri()

    def _path(self, key: str) -> Path:
        return self.directory.joinpath(*_validated_key(key).split("/"))

    @_measured("put")
    def put(self, key: str, body: Body, content_type: str = JSON_LD, *,
            deadline: Deadline | None = None) -> str:
        # A local write has nothing to retry; the deadline is for remote stores.
        etag = etag_for(body)
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_atomically(path, body)
        except OSError as exc:
            raise StorageError(f"cannot write {key} in {self.describe()}: {exc.strerror or exc}") from exc
        return etag

    @_measured("get")
    def get(self, key: str) -> StoredDocument | None:
        path = self._path(key)
        try:
            body = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            # No document at that key (a directory, or a file where a
            # directory should be, is "no object" in S3 terms too).
            return None
        except OSError as exc:
            raise StorageError(f"cannot read {key} in {self.describe()}: {exc.strerror or exc}") from exc
        return StoredDocument(body=body, etag=etag_for(body))

    @_measured("open")
    def open(self, key: str) -> StoredStream | None:
        path = self._path(key)
        try:
            file = path.open("rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except OSError as exc:
            raise StorageError(f"cannot read {key} in {self.describe()}: {exc.strerror or exc}") from exc
        try:
            # Hashed, then streamed, through one descriptor: a put() meanwhile
            # replaces the path with a new file and leaves this one as it was.
            etag = etag_for(file)
            length = os.fstat(file.fileno()).st_size
        except OSError as exc:
            file.close()
            raise StorageError(f"cannot read {key} in {self.describe()}: {exc.strerror or exc}") from exc
        return StoredStream(etag, length, file)
    @_measured("delete")
    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            return  # nothing stored there, as S3 answers a delete of an absent key
        except OSError as exc:
            raise StorageError(f"cannot delete {key} in {self.describe()}: "
                               f"{exc.strerror or exc}") from exc
        _fsync_directory(path.parent)

    @_measured("check")
    def check(self) -> None:
        # Actually creating a file is the only reliable writability test:
        # os.access() is wrong for root, ACLs and read-only mounts.
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.directory, prefix=".check-"):
                pass
        except OSError as exc:
            raise StorageError(f"{self.describe()} is not a writable directory: {exc.strerror or exc}") from exc


def _write_atomically(path: Path, body: Body) -> None:
    """Replace ``path`` with ``body`` so that readers see the old or the new file, never a part."""
    # The temporary file must be in the same directory: os.replace is only
    # atomic within one file system. Its name starts with "." and ends with
    # ".tmp" so that it is recognisable should the process die mid-write.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            if isinstance(body, _IN_MEMORY):
                file.write(body)
            else:
                shutil.copyfileobj(body, file, _COPY_BLOCK)
            file.flush()
            # mkstemp makes the file 0600; documents are public, and a web
            # server running as another user may serve the directory.
            os.fchmod(file.fileno(), 0o644)
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (the new entry survives a crash)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
