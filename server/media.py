"""Where generated media (the personas' pictures) are kept: one interface, two backends.

``media_store(settings)`` picks the backend once per process: an S3-compatible bucket through aioboto3 when
``S3_BUCKET`` is set (``S3MediaStore``), else files under ``DATA_DIR/media/`` that the service serves itself at
``GET /media/{key}`` (``LocalMediaStore``), so ``python -m server`` stores images with nothing configured.

Both name an object by its content: ``{prefix}{sha256 hex}.{extension}``, so the same bytes are stored once, a key
never changes meaning, and every URL may be cached forever (``CACHE_CONTROL``). Writes are create-only: a second put
of the same bytes finds the object there and reports ``created=False`` without writing.

Failures raise ``StorageError`` (the bucket is missing, credentials are absent or refused) or
``StorageUnavailableError`` (the storage cannot be reached, or failed on its side): the message names the bucket,
never a secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import stat
import tempfile
from pathlib import Path
from types import MappingProxyType
from typing import Final, Protocol
from urllib.parse import urlsplit

import msgspec

from server.errors import StorageError
from server.settings import Settings

__all__ = (
    "CACHE_CONTROL",
    "CONTENT_TYPES",
    "LocalMediaStore",
    "MediaFile",
    "MediaStore",
    "StoredObject",
    "content_key",
    "describe_media",
    "media_store",
)

logger: Final = logging.getLogger("tollbooth.media")

CACHE_CONTROL: Final = "public, max-age=31536000, immutable"
"""Every stored object's cache header: its key is its content's hash, so what a URL names never changes."""

CONTENT_TYPES: Final = MappingProxyType(
    {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}
)
"""The content types the stores take, with the key extension of each."""

_EXTENSION_TYPES: Final = MappingProxyType({extension: kind for kind, extension in CONTENT_TYPES.items()})
_NAME: Final = re.compile(r"(?P<digest>[0-9a-f]{64})\.(?P<extension>" + "|".join(_EXTENSION_TYPES) + ")")
LOCAL_ROUTE: Final = "/media"
"""Where the service serves the local backend's files: ``{LOCAL_ROUTE}/{key}``."""


class StoredObject(msgspec.Struct, frozen=True, kw_only=True):
    """One stored object: where it is and how a browser fetches it."""

    key: str
    """The object key, named by the content: ``{prefix}{sha256 hex}.{extension}`` (the extension from the type)."""
    url: str
    """A URL a browser can GET: the public base URL plus the key, a presigned GET URL (which expires), or the
    service's ``/media/{key}``."""
    content_type: str
    size_bytes: int
    created: bool
    """False when an object with this key was already there (the create-only write was skipped)."""


class MediaStore(Protocol):
    """Content-addressed, create-only storage of media (``media_store`` builds the configured one)."""

    async def put(self, data: bytes, *, content_type: str) -> StoredObject:
        """Store ``data`` under its content key unless an object is there already; ``content_type`` is one of
        ``CONTENT_TYPES`` (another raises ``ValueError``). Raises ``StorageError`` when it cannot be stored."""
        ...

    async def url_for(self, key: str) -> str:
        """A fresh URL for a stored ``key`` (presigned URLs expire; this one is valid for the configured TTL).
        Raises ``ValueError`` for a key this store never makes; whether the object exists is not checked."""
        ...

    async def aclose(self) -> None:
        """Release connections; called once at shutdown."""
        ...


def content_key(data: bytes, content_type: str, prefix: str = "") -> str:
    """The key of ``data``: ``{prefix}{sha256 hex}.{extension}``; ``ValueError`` for a type not in
    ``CONTENT_TYPES``."""
    extension = CONTENT_TYPES.get(content_type)
    if extension is None:
        raise ValueError(f"cannot store media of type {content_type!r}: one of {', '.join(CONTENT_TYPES)} is needed")
    return f"{prefix}{hashlib.sha256(data).hexdigest()}.{extension}"


def media_store(settings: Settings) -> MediaStore:
    """The configured store: S3 when ``S3_BUCKET`` is set, else files under ``DATA_DIR/media``."""
    if settings.s3 is not None:
        raise NotImplementedError("the S3 backend comes in the next commit")
    base = (settings.public_base_url or "").rstrip("/")
    return LocalMediaStore(settings.media_dir, url_base=f"{base}{LOCAL_ROUTE}/")


def describe_media(settings: Settings) -> str:
    """Where media go, for the start-up log (no secrets: an endpoint by its host)."""
    s3 = settings.s3
    if s3 is None:
        return f"files under {settings.media_dir}, served at {LOCAL_ROUTE}/"
    where = f" at {_host(s3.endpoint_url)}" if s3.endpoint_url else ""
    urls = (
        f"public URLs under {s3.public_base_url}"
        if s3.public_base_url
        else f"presigned URLs valid {s3.url_ttl_seconds} s"
    )
    return f"S3 bucket {s3.bucket}{where}, keys {s3.key_prefix}<sha256>, {urls}"


def _host(url: str) -> str:
    return urlsplit(url).netloc.rpartition("@")[2]


class MediaFile(msgspec.Struct, frozen=True, kw_only=True):
    """A stored file as the media route serves it."""

    data: bytes
    content_type: str
    etag: str
    """The strong entity tag of the content, quoted: its SHA-256."""


class LocalMediaStore:
    """Files in one flat directory, named by content (``{sha256}.{extension}``, no prefix), written atomically and
    create-only: the bytes go to a temporary file in the same directory, fsynced, then hard-linked to their name
    (``link`` fails when the name exists, and a reader never sees a partial file).

    ``url_base`` ends with ``/``: the service's media route (``/media/``), absolute when ``PUBLIC_BASE_URL`` is set.
    """

    def __init__(self, directory: Path, *, url_base: str = f"{LOCAL_ROUTE}/") -> None:
        self.directory = directory
        self._url_base = url_base

    async def put(self, data: bytes, *, content_type: str) -> StoredObject:
        key = content_key(data, content_type)
        try:
            created = await asyncio.to_thread(self._write, key, data)
        except OSError as error:
            logger.error("could not write media file %s", self.directory / key, exc_info=error)
            raise StorageError(f"could not store the media file {key}: {error.strerror or error}") from error
        return StoredObject(
            key=key, url=self._url_base + key, content_type=content_type, size_bytes=len(data), created=created
        )

    async def url_for(self, key: str) -> str:
        if _NAME.fullmatch(key) is None:
            raise ValueError(f"{key!r} is not a media key")
        return self._url_base + key

    async def aclose(self) -> None:
        return None

    async def read(self, key: str) -> MediaFile | None:
        """The file named ``key``, or None when ``key`` is not a content name, no such file is stored, or the name
        is anything but a regular file in the media directory (a symbolic link is not followed)."""
        name = _NAME.fullmatch(key)
        if name is None:
            return None
        data = await asyncio.to_thread(self._read, key)
        if data is None:
            return None
        return MediaFile(data=data, content_type=_EXTENSION_TYPES[name["extension"]], etag=f'"{name["digest"]}"')

    def _write(self, key: str, data: bytes) -> bool:
        path = self.directory / key
        if path.exists():
            return False
        self.directory.mkdir(parents=True, exist_ok=True)
        descriptor, temporary = tempfile.mkstemp(dir=self.directory, prefix=".incoming-", suffix=".part")
        try:
            with os.fdopen(descriptor, "wb") as file:
                os.fchmod(file.fileno(), 0o644)
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            try:
                os.link(temporary, path)
            except FileExistsError:
                return False
            _fsync_directory(self.directory)
            return True
        finally:
            os.unlink(temporary)

    def _read(self, key: str) -> bytes | None:
        try:
            descriptor = os.open(self.directory / key, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
        except OSError:  # missing, a symbolic link (ELOOP), unreadable: all are "not here"
            return None
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):  # a directory opens, and reads as an error
            os.close(descriptor)
            return None
        with os.fdopen(descriptor, "rb") as file:
            return file.read()


def _fsync_directory(directory: Path) -> None:
    """Make a new name in ``directory`` durable (a file's fsync does not cover its directory entry)."""
    with contextlib.suppress(OSError):  # not every file system lets a directory be opened or synced
        descriptor = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
