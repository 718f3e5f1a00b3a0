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
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

import msgspec

from server.errors import StorageError, StorageUnavailableError
from server.settings import S3Settings, Settings

__all__ = (
    "CACHE_CONTROL",
    "CONTENT_TYPES",
    "LocalMediaStore",
    "MediaFile",
    "MediaStore",
    "S3MediaStore",
    "StoredObject",
    "content_key",
    "describe_media",
    "media_store",
    "signed_url_answer_ttl",
)

logger: Final = logging.getLogger("tollbooth.media")

CACHE_CONTROL: Final = "public, max-age=31536000, immutable"
"""Every stored object's cache header: its key is its content's hash, so what a URL names never changes."""

CONTENT_TYPES: Final = MappingProxyType(
    {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}
)
"""The content types the stores take, with the key extension of each."""

_EXTENSION_TYPES: Final = MappingProxyType({extension: kind for kind, extension in CONTENT_TYPES.items()})
S3_CONNECT_TIMEOUT_SECONDS: Final = 5.0
S3_READ_TIMEOUT_SECONDS: Final = 30.0
S3_MAX_ATTEMPTS: Final = 3
"""botocore's standard retries (5xx, throttling, connection errors), with backoff, per S3 request."""
S3_CONFLICT_RETRIES: Final = 3
"""Conditional writes that AWS refuses with 409 ConditionalRequestConflict (another write of the key was in
progress) are tried again this many times, as AWS asks."""
_S3_ABSENT: Final = frozenset({"PreconditionFailed", "412"})
_S3_MISSING_BUCKET: Final = frozenset({"NoSuchBucket"})
_S3_REFUSED: Final = frozenset(
    {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "403"}
)
_S3_BUSY: Final = frozenset({"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "503", "500"})
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
        return S3MediaStore(settings.s3)
    base = (settings.public_base_url or "").rstrip("/")
    return LocalMediaStore(settings.media_dir, url_base=f"{base}{LOCAL_ROUTE}/")


def signed_url_answer_ttl(settings: Settings) -> float | None:
    """How long an answer carrying the configured store's URLs may be replayed as it was: half a presigned URL's
    validity (``S3_URL_TTL_SECONDS``), so a replayed URL has at least that half left; None when URLs do not expire
    (a public bucket, the local store)."""
    s3 = settings.s3
    if s3 is None or s3.public_base_url:
        return None
    return s3.url_ttl_seconds / 2


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


class S3MediaStore:
    """An S3-compatible bucket through aioboto3: one session and one long-lived client per store, opened on first
    use (in the event loop that uses it) and closed by ``aclose``.

    ``put`` is one PutObject with ``If-None-Match: *``, which AWS S3, R2, MinIO and moto honour: a 412 means the
    object is there already (``created=False``). A server that answers the condition with 501 NotImplemented gets a
    HeadObject, then a plain PutObject when the key is absent. Every object carries its ``ContentType`` and
    ``CACHE_CONTROL``. URLs are the public base URL plus the key when ``S3_PUBLIC_BASE_URL`` is set, else presigned
    GETs valid ``url_ttl_seconds`` (presigning is local: no request).

    botocore computes request checksums only where the operation requires them: several S3-compatible servers
    refuse the trailing checksums botocore sends by default since 1.36.
    """

    def __init__(self, settings: S3Settings) -> None:
        import aioboto3  # here: importing it takes seconds, which a service without a bucket never pays
        from aiobotocore.config import AioConfig
        from botocore.exceptions import BotoCoreError, ClientError

        self.settings = settings
        self._session = aioboto3.Session(
            aws_access_key_id=settings.access_key_id,
            aws_secret_access_key=settings.secret_access_key,
            region_name=settings.region,
        )
        self._config = AioConfig(
            connect_timeout=S3_CONNECT_TIMEOUT_SECONDS,
            read_timeout=S3_READ_TIMEOUT_SECONDS,
            retries={"total_max_attempts": S3_MAX_ATTEMPTS, "mode": "standard"},
            s3={"addressing_style": settings.addressing_style},
            signature_version="s3v4",
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._public_base = None if settings.public_base_url is None else settings.public_base_url.rstrip("/") + "/"
        self._key = re.compile(re.escape(settings.key_prefix) + _NAME.pattern)
        self._client: Any = None
        self._exit = contextlib.AsyncExitStack()
        self._opening = asyncio.Lock()
        self._failures: tuple[type[Exception], ...] = (BotoCoreError, ClientError)

    async def put(self, data: bytes, *, content_type: str) -> StoredObject:
        key = content_key(data, content_type, self.settings.key_prefix)
        created = await self._put(key, data, content_type)
        return StoredObject(
            key=key, url=await self.url_for(key), content_type=content_type, size_bytes=len(data), created=created
        )

    async def url_for(self, key: str) -> str:
        if self._key.fullmatch(key) is None:
            raise ValueError(f"{key!r} is not a media key of this bucket")
        if self._public_base is not None:
            return self._public_base + key
        client = await self._open()
        try:
            url: str = await client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.settings.bucket, "Key": key},
                ExpiresIn=self.settings.url_ttl_seconds,
            )
        except self._failures as error:
            raise self._error(error, "sign a URL for") from error
        return url

    async def aclose(self) -> None:
        self._client = None
        await self._exit.aclose()

    async def _open(self) -> Any:
        if self._client is None:
            async with self._opening:
                if self._client is None:
                    self._client = await self._exit.enter_async_context(
                        self._session.client("s3", endpoint_url=self.settings.endpoint_url, config=self._config)
                    )
        return self._client

    async def _put(self, key: str, data: bytes, content_type: str) -> bool:
        client = await self._open()
        fields: dict[str, object] = {
            "Bucket": self.settings.bucket,
            "Key": key,
            "Body": data,
            "ContentType": content_type,
            "CacheControl": CACHE_CONTROL,
        }
        for attempt in range(S3_CONFLICT_RETRIES + 1):
            try:
                await client.put_object(**fields, IfNoneMatch="*")
            except self._failures as error:
                code = _s3_code(error)
                if code in _S3_ABSENT:
                    return False
                if code == "ConditionalRequestConflict" and attempt < S3_CONFLICT_RETRIES:
                    await asyncio.sleep(0.05 * 2**attempt)
                    continue
                if code in ("NotImplemented", "501"):
                    return await self._put_unconditionally(client, key, fields)
                raise self._error(error, "store") from error
            return True
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _put_unconditionally(self, client: Any, key: str, fields: dict[str, object]) -> bool:
        """For servers without conditional writes: HEAD, then PUT when absent (a race writes the same bytes twice,
        which a content-named object survives)."""
        try:
            await client.head_object(Bucket=self.settings.bucket, Key=key)
            return False
        except self._failures as error:
            if _s3_code(error) not in ("404", "NoSuchKey", "NotFound"):
                raise self._error(error, "store") from error
        try:
            await client.put_object(**fields)
        except self._failures as error:
            raise self._error(error, "store") from error
        return True

    def _error(self, error: Exception, doing: str) -> StorageError:
        """The domain error for a failed S3 request: the bucket named, never a credential."""
        from botocore.exceptions import (
            ConnectionError as BotoConnectionError,
        )
        from botocore.exceptions import (
            HTTPClientError,
            NoCredentialsError,
            PartialCredentialsError,
        )

        bucket = self.settings.bucket
        where = f" at {_host(self.settings.endpoint_url)}" if self.settings.endpoint_url else ""
        code = _s3_code(error)
        if isinstance(error, NoCredentialsError | PartialCredentialsError):
            return StorageError(
                f"no credentials for the media bucket {bucket!r}: set S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY, or "
                "provide AWS credentials through the default chain (environment, shared files, instance role)"
            )
        if isinstance(error, BotoConnectionError | HTTPClientError):
            return StorageUnavailableError(
                f"cannot reach the storage of the media bucket {bucket!r}{where} to {doing} an object "
                f"({type(error).__name__})"
            )
        if code in _S3_MISSING_BUCKET:
            return StorageError(
                f"the media bucket {bucket!r} does not exist{where}: create it, or correct S3_BUCKET / S3_ENDPOINT_URL"
            )
        if code in _S3_REFUSED:
            return StorageError(
                f"the storage{where} refused to let this server {doing} objects in the media bucket {bucket!r} "
                f"({code}): check S3_ACCESS_KEY_ID / S3_SECRET_ACCESS_KEY and the bucket's policy"
            )
        if code in _S3_BUSY or (code is not None and code.isdigit() and int(code) >= 500):
            return StorageUnavailableError(
                f"the storage of the media bucket {bucket!r}{where} failed to {doing} an object ({code}); "
                "try again later"
            )
        logger.error("S3 request to %s an object in bucket %s failed", doing, bucket, exc_info=error)
        return StorageError(f"could not {doing} an object in the media bucket {bucket!r}{where} ({code or 'error'})")


def _s3_code(error: Exception) -> str | None:
    """The S3 error code of a botocore ``ClientError`` (a HEAD's is its HTTP status), else None."""
    response = getattr(error, "response", None)
    if not isinstance(response, dict):
        return None
    code = response.get("Error", {}).get("Code")
    return str(code) if code else None
