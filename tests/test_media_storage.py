"""Media storage: content-addressed, create-only puts and the URLs they hand out, on both backends.

The local backend is served by the real application over HTTP; requests that try to leave the media folder are sent
byte for byte over a socket, since an HTTP client would normalise their paths first.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from aiohttp import web

from schemas.errors import ErrorCode
from server.errors import StorageError, StorageUnavailableError
from server.media import CACHE_CONTROL, LocalMediaStore, S3MediaStore, StoredObject, content_key, media_store
from server.rpc.errors import to_trpc_error
from server.settings import Settings, SettingsError
from server.simulator import RunningSimulator
from tests.conftest import ServedApp, serve_app, simulator_env
from tests.s3_server import S3Bucket

PNG = b"\x89PNG\r\n\x1a\n" + b"persona one" * 50
OTHER_PNG = b"\x89PNG\r\n\x1a\n" + b"persona two" * 50


def _local_store(app: ServedApp) -> LocalMediaStore:
    """A store on the served application's media folder (as a second worker process would have)."""
    store = media_store(app.settings)
    assert isinstance(store, LocalMediaStore)
    return store


async def _raw_get(app: ServedApp, target: str) -> tuple[int, bytes]:
    """GET ``target`` exactly as written (no normalisation of ``..`` or percent escapes); status and body."""
    address = urlsplit(app.url)
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: {address.netloc}\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    response = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


async def test_a_local_put_is_a_file_under_data_dir_served_with_its_type(app_server: ServedApp) -> None:
    store = _local_store(app_server)
    stored = await store.put(PNG, content_type="image/png")

    digest = hashlib.sha256(PNG).hexdigest()
    assert stored == StoredObject(
        key=f"{digest}.png", url=f"/media/{digest}.png", content_type="image/png", size_bytes=len(PNG), created=True
    )
    assert (app_server.settings.data_dir / "media" / f"{digest}.png").read_bytes() == PNG
    async with httpx.AsyncClient(base_url=app_server.url) as http:
        response = await http.get(stored.url)
        assert response.status_code == 200
        assert response.content == PNG
        assert response.headers["content-type"] == "image/png"
        assert response.headers["cache-control"] == CACHE_CONTROL
        assert response.headers["etag"] == f'"{digest}"'
        assert response.headers["x-content-type-options"] == "nosniff"
        again = await http.get(stored.url, headers={"If-None-Match": f'"{digest}"'})
        assert (again.status_code, again.content) == (304, b"")
    assert await store.url_for(stored.key) == stored.url


async def test_a_repeated_local_put_is_one_file_and_not_created_again(tmp_path: Path) -> None:
    store = LocalMediaStore(tmp_path / "media")
    first = await store.put(PNG, content_type="image/png")
    results = await asyncio.gather(*(store.put(PNG, content_type="image/png") for _ in range(8)))
    other = await store.put(OTHER_PNG, content_type="image/png")

    assert first.created
    assert {result.key for result in results} == {first.key}
    assert not any(result.created for result in results)
    assert other.created
    assert other.key != first.key
    assert sorted(path.name for path in (tmp_path / "media").iterdir()) == sorted([first.key, other.key])


async def test_concurrent_first_puts_create_the_file_once(tmp_path: Path) -> None:
    store = LocalMediaStore(tmp_path / "media")
    results = await asyncio.gather(*(store.put(PNG, content_type="image/png") for _ in range(8)))
    assert sum(result.created for result in results) == 1
    assert [path.name for path in (tmp_path / "media").iterdir()] == [results[0].key]


async def test_the_extension_follows_the_content_type_and_others_are_refused(tmp_path: Path) -> None:
    store = LocalMediaStore(tmp_path)
    assert (await store.put(b"jpeg bytes", content_type="image/jpeg")).key.endswith(".jpg")
    assert (await store.put(b"webp bytes", content_type="image/webp")).key.endswith(".webp")
    with pytest.raises(ValueError, match="cannot store media of type 'text/html'"):
        await store.put(b"<script>", content_type="text/html")
    with pytest.raises(ValueError, match="not a media key"):
        await store.url_for("../settings.py")


def test_keys_are_named_by_content_and_prefix() -> None:
    digest = hashlib.sha256(PNG).hexdigest()
    assert content_key(PNG, "image/png", "media/") == f"media/{digest}.png"
    assert content_key(PNG, "image/png") != content_key(OTHER_PNG, "image/png")


async def test_public_base_url_makes_local_urls_absolute(tmp_path: Path) -> None:
    settings = Settings.from_env({"DATA_DIR": str(tmp_path), "PUBLIC_BASE_URL": "https://api.example.com/"})
    store = media_store(settings)
    assert await store.url_for("a" * 64 + ".png") == f"https://api.example.com/media/{'a' * 64}.png"


async def test_paths_outside_the_media_folder_are_refused(app_server: ServedApp) -> None:
    data_dir = app_server.settings.data_dir
    stored = await _local_store(app_server).put(PNG, content_type="image/png")
    outside = "b" * 64 + ".png"
    (data_dir / outside).write_bytes(b"SECRET outside the media folder")
    linked = "c" * 64 + ".png"
    (data_dir / "media" / linked).symlink_to(data_dir / outside)
    (data_dir / "media" / ("d" * 64 + ".png")).mkdir()

    assert (await _raw_get(app_server, f"/media/{stored.key}"))[0] == 200
    for target in (
        f"/media/../{outside}",
        f"/media/..%2f{outside}",
        f"/media/%2e%2e%2f{outside}",
        f"/media/%2E%2E/{outside}",
        f"/media/..%5c{outside}",
        f"/media/{linked}",
        f"/media/{'d' * 64}.png",
        "/media/%2fetc%2fpasswd",
        "/media//etc/passwd",
        "/media/..",
        f"/media/{stored.key.upper()}",
        f"/media/{stored.key}.png",
        f"/media/{stored.key[:-4]}.exe",
        f"/media/{'e' * 64}.png",
        "/media/.incoming-x.part",
        "/media/",
    ):
        status, body = await _raw_get(app_server, target)
        assert status in (400, 404), target
        assert b"SECRET" not in body, target


def _s3_store(env: dict[str, str]) -> S3MediaStore:
    store = media_store(Settings.from_env(env))
    assert isinstance(store, S3MediaStore)
    return store


async def test_an_s3_put_is_one_object_with_its_type_and_cache_headers_behind_a_presigned_url(
    s3_bucket: S3Bucket,
) -> None:
    store = _s3_store(s3_bucket.env)
    try:
        stored = await store.put(PNG, content_type="image/png")
        again = await store.put(PNG, content_type="image/png")
        other = await store.put(OTHER_PNG, content_type="image/png")
        fresh_url = await store.url_for(stored.key)
    finally:
        await store.aclose()

    key = f"media/{hashlib.sha256(PNG).hexdigest()}.png"
    assert (stored.key, stored.content_type, stored.size_bytes, stored.created) == (key, "image/png", len(PNG), True)
    assert (again.key, again.created) == (key, False)
    assert other.created
    assert other.key != key
    assert s3_bucket.keys() == sorted([key, other.key])
    head = s3_bucket.head(key)
    assert (head["ContentType"], head["CacheControl"], head["ContentLength"]) == ("image/png", CACHE_CONTROL, len(PNG))
    assert s3_bucket.get(key) == PNG
    query = urlsplit(stored.url).query
    assert "X-Amz-Signature=" in query
    assert "X-Amz-Expires=3600" in query
    async with httpx.AsyncClient() as http:
        for url in (stored.url, again.url, fresh_url):
            response = await http.get(url)
            assert response.status_code == 200
            assert response.content == PNG
            assert response.headers["content-type"] == "image/png"


async def test_a_public_bucket_url_is_the_base_url_and_the_key(s3_bucket: S3Bucket) -> None:
    s3_bucket.make_public()
    store = _s3_store(
        {
            **s3_bucket.env,
            "S3_PUBLIC_BASE_URL": s3_bucket.public_base_url,
            "S3_KEY_PREFIX": "personas/",
            "S3_URL_TTL_SECONDS": "60",
        }
    )
    try:
        stored = await store.put(PNG, content_type="image/png")
    finally:
        await store.aclose()

    assert stored.key == f"personas/{hashlib.sha256(PNG).hexdigest()}.png"
    assert stored.url == s3_bucket.public_base_url + stored.key
    assert s3_bucket.keys() == [stored.key]
    async with httpx.AsyncClient() as http:
        response = await http.get(stored.url)
    assert (response.status_code, response.content) == (200, PNG)
    with pytest.raises(ValueError, match="not a media key of this bucket"):
        await store.url_for(f"media/{hashlib.sha256(PNG).hexdigest()}.png")


async def test_a_missing_bucket_is_a_clear_internal_error(s3_bucket: S3Bucket) -> None:
    store = _s3_store({**s3_bucket.env, "S3_BUCKET": "tollbooth-no-such-bucket"})
    try:
        with pytest.raises(StorageError) as raised:
            await store.put(PNG, content_type="image/png")
    finally:
        await store.aclose()

    assert not isinstance(raised.value, StorageUnavailableError)
    assert raised.value.message == (
        f"the media bucket 'tollbooth-no-such-bucket' does not exist at {urlsplit(s3_bucket.endpoint).netloc}: "
        "create it, or correct S3_BUCKET / S3_ENDPOINT_URL"
    )
    error = to_trpc_error(raised.value, "personas.generate")
    assert (error.code, error.message) == (ErrorCode.INTERNAL_SERVER_ERROR, raised.value.message)


async def test_a_bucket_without_credentials_says_which_settings_are_missing(
    s3_bucket: S3Bucket, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    env = {name: value for name, value in s3_bucket.env.items() if "ACCESS_KEY" not in name}
    for extra in ({}, {"S3_PUBLIC_BASE_URL": s3_bucket.public_base_url}):
        store = _s3_store({**env, **extra})
        try:
            with pytest.raises(StorageError, match=f"no credentials for the media bucket '{s3_bucket.name}': set "):
                await store.put(PNG, content_type="image/png")
        finally:
            await store.aclose()
    assert s3_bucket.keys() == []


async def test_an_unreachable_storage_is_service_unavailable(s3_bucket: S3Bucket) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = _s3_store({**s3_bucket.env, "S3_ENDPOINT_URL": f"http://127.0.0.1:{port}"})
    try:
        with pytest.raises(StorageUnavailableError, match="cannot reach the storage of the media bucket") as raised:
            await store.put(PNG, content_type="image/png")
    finally:
        await store.aclose()
    assert to_trpc_error(raised.value).code == ErrorCode.SERVICE_UNAVAILABLE
    assert "moto-test-secret" not in raised.value.message


Fault = Callable[[web.Request], web.Response | None]


def _s3_error(status: int, code: str) -> web.Response:
    body = f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{code}</Message></Error>'
    return web.Response(status=status, text=body, content_type="application/xml")


@asynccontextmanager
async def _s3_in_front(upstream: str, fault: Fault) -> AsyncIterator[str]:
    """An HTTP proxy to the S3 server at ``upstream`` that answers a request itself when ``fault`` returns a response
    for it (an S3-compatible server without conditional writes, a busy one...); its URL."""
    async with httpx.AsyncClient(base_url=upstream) as http:

        async def forward(request: web.Request) -> web.Response:
            answer = fault(request)
            if answer is not None:
                return answer
            hop = {"host", "content-length", "transfer-encoding", "connection", "expect"}
            response = await http.request(
                request.method,
                request.raw_path,
                content=await request.read(),
                headers={name: value for name, value in request.headers.items() if name.lower() not in hop},
            )
            hop |= {"content-encoding", "server", "date"}
            headers = {name: value for name, value in response.headers.items() if name.lower() not in hop}
            return web.Response(status=response.status_code, body=response.content, headers=headers)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", forward)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            host, port = runner.addresses[0][:2]
            yield f"http://{host}:{port}"
        finally:
            await runner.cleanup()


async def test_without_conditional_writes_a_put_heads_first_and_still_creates_once(s3_bucket: S3Bucket) -> None:
    refused: list[str] = []

    def no_conditional_writes(request: web.Request) -> web.Response | None:
        if request.method == "PUT" and "If-None-Match" in request.headers:
            refused.append(request.path)
            return _s3_error(501, "NotImplemented")
        return None

    async with _s3_in_front(s3_bucket.endpoint, no_conditional_writes) as endpoint:
        store = _s3_store({**s3_bucket.env, "S3_ENDPOINT_URL": endpoint})
        try:
            first = await store.put(PNG, content_type="image/png")
            second = await store.put(PNG, content_type="image/png")
        finally:
            await store.aclose()

    assert (first.created, second.created) == (True, False)
    assert len(refused) == 2
    assert s3_bucket.keys() == [first.key]
    head = s3_bucket.head(first.key)
    assert (head["ContentType"], head["CacheControl"]) == ("image/png", CACHE_CONTROL)


async def test_a_conditional_write_conflict_is_tried_again(s3_bucket: S3Bucket) -> None:
    conflicts: list[str] = []

    def one_conflict(request: web.Request) -> web.Response | None:
        if request.method == "PUT" and not conflicts:
            conflicts.append(request.path)
            return _s3_error(409, "ConditionalRequestConflict")
        return None

    async with _s3_in_front(s3_bucket.endpoint, one_conflict) as endpoint:
        store = _s3_store({**s3_bucket.env, "S3_ENDPOINT_URL": endpoint})
        try:
            stored = await store.put(PNG, content_type="image/png")
        finally:
            await store.aclose()

    assert stored.created
    assert len(conflicts) == 1
    assert s3_bucket.keys() == [stored.key]


async def test_a_storage_that_keeps_failing_is_service_unavailable_after_three_attempts(s3_bucket: S3Bucket) -> None:
    attempts: list[str] = []

    def busy(request: web.Request) -> web.Response:
        attempts.append(request.path)
        return _s3_error(503, "SlowDown")

    async with _s3_in_front(s3_bucket.endpoint, busy) as endpoint:
        store = _s3_store({**s3_bucket.env, "S3_ENDPOINT_URL": endpoint})
        try:
            with pytest.raises(StorageUnavailableError, match=r"failed to store an object \(SlowDown\); try again"):
                await store.put(PNG, content_type="image/png")
        finally:
            await store.aclose()
    assert len(attempts) == 3


async def test_with_a_bucket_the_service_serves_no_local_media(
    s3_bucket: S3Bucket, sim: RunningSimulator, db: None, tmp_path: Path
) -> None:
    settings = Settings.from_env(simulator_env(sim, DATA_DIR=str(tmp_path), **s3_bucket.env))
    stored = await LocalMediaStore(settings.media_dir).put(PNG, content_type="image/png")
    async with serve_app(settings) as served, httpx.AsyncClient(base_url=served.url) as http:
        assert (await http.get(f"/media/{stored.key}")).status_code == 404


def test_s3_settings_are_read_and_validated() -> None:
    env = {
        "S3_BUCKET": "tollbooth-media",
        "S3_ENDPOINT_URL": "http://127.0.0.1:9000",
        "S3_REGION": "auto",
        "S3_ACCESS_KEY_ID": "AKIA-hunter2",
        "S3_SECRET_ACCESS_KEY": "hunter3",
        "S3_URL_TTL_SECONDS": "600",
        "S3_KEY_PREFIX": "personas/images/",
        "S3_ADDRESSING_STYLE": "path",
    }
    settings = Settings.from_env(env)
    assert settings.s3 is not None
    assert (settings.s3.bucket, settings.s3.url_ttl_seconds, settings.s3.key_prefix) == (
        "tollbooth-media",
        600,
        "personas/images/",
    )
    assert "hunter2" not in repr(settings)
    assert "hunter3" not in repr(settings)
    assert Settings.from_env({"S3_BUCKET": "b-1"}).s3.key_prefix == "media/"  # type: ignore[union-attr]
    assert Settings.from_env({"S3_BUCKET": "b-1", "S3_KEY_PREFIX": ""}).s3.key_prefix == ""  # type: ignore[union-attr]
    assert Settings.from_env({}).s3 is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"S3_ENDPOINT_URL": "http://127.0.0.1:9000"}, "S3_ENDPOINT_URL is set but S3_BUCKET is not"),
        ({"S3_BUCKET": "b-1", "S3_ACCESS_KEY_ID": "x"}, "must be set together"),
        ({"S3_BUCKET": "b-1", "S3_SECRET_ACCESS_KEY": "x"}, "must be set together"),
        ({"S3_BUCKET": "b-1", "S3_URL_TTL_SECONDS": "604801"}, "S3_URL_TTL_SECONDS must be between 1 and 604800"),
        ({"S3_BUCKET": "b-1", "S3_KEY_PREFIX": "/media/"}, "S3_KEY_PREFIX must be"),
        ({"S3_BUCKET": "b-1", "S3_KEY_PREFIX": "a/../b/"}, "S3_KEY_PREFIX must be"),
        ({"S3_BUCKET": "b-1", "S3_KEY_PREFIX": "a//"}, "S3_KEY_PREFIX must be"),
        ({"S3_BUCKET": "b/1"}, "S3_BUCKET must be a bucket name"),
        ({"S3_BUCKET": "b-1", "S3_PUBLIC_BASE_URL": "cdn.example.com"}, "S3_PUBLIC_BASE_URL must be an http"),
        ({"S3_BUCKET": "b-1", "S3_ADDRESSING_STYLE": "dns"}, "S3_ADDRESSING_STYLE must be one of"),
        ({"PUBLIC_BASE_URL": "example.com"}, "PUBLIC_BASE_URL must be an http"),
    ],
)
def test_invalid_storage_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)
