"""A real S3-compatible server for the tests: moto's standalone server, in a subprocess on a free loopback port.

moto's in-process mock (``mock_aws``) patches botocore's synchronous HTTP layer, which aiobotocore does not use, so
the storage is tested over HTTP against ``python -m moto.server`` instead. One server runs for the session
(``s3_server``); every test that asks for ``s3_bucket`` gets a new, empty bucket on it, with the settings that point
the service at it (``S3Bucket.env``) and a synchronous boto3 client to look inside (``keys``, ``head``, ``get``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import httpx
import pytest

S3_REGION: Final = "us-east-1"
S3_ACCESS_KEY_ID: Final = "moto-test-key"
S3_SECRET_ACCESS_KEY: Final = "moto-test-secret"
START_TIMEOUT_SECONDS: Final = 60.0


@dataclass(frozen=True, slots=True)
class S3Server:
    endpoint: str

    def client(self) -> Any:
        """A synchronous boto3 S3 client on the server."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=S3_REGION,
            aws_access_key_id=S3_ACCESS_KEY_ID,
            aws_secret_access_key=S3_SECRET_ACCESS_KEY,
        )


@dataclass(frozen=True, slots=True)
class S3Bucket:
    """An empty bucket of its own for one test; ``env`` holds the settings (``S3_*``) that point the service at it."""

    server: S3Server
    name: str
    _client: Any = field(repr=False)

    @property
    def endpoint(self) -> str:
        return self.server.endpoint

    @property
    def env(self) -> dict[str, str]:
        return {
            "S3_BUCKET": self.name,
            "S3_ENDPOINT_URL": self.endpoint,
            "S3_REGION": S3_REGION,
            "S3_ACCESS_KEY_ID": S3_ACCESS_KEY_ID,
            "S3_SECRET_ACCESS_KEY": S3_SECRET_ACCESS_KEY,
        }

    @property
    def public_base_url(self) -> str:
        """Where the bucket's objects are, path style (readable without a signature once ``make_public`` ran)."""
        return f"{self.endpoint}/{self.name}/"

    def make_public(self) -> None:
        """Let anyone GET the bucket's objects (a bucket policy), as a bucket behind ``S3_PUBLIC_BASE_URL`` is."""
        statement = {
            "Effect": "Allow",
            "Principal": "*",
            "Action": "s3:GetObject",
            "Resource": f"arn:aws:s3:::{self.name}/*",
        }
        policy = json.dumps({"Version": "2012-10-17", "Statement": [statement]})
        self._client.put_bucket_policy(Bucket=self.name, Policy=policy)

    def keys(self) -> list[str]:
        """Every object key in the bucket, sorted."""
        pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.name)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def head(self, key: str) -> dict[str, Any]:
        """The object's metadata (``ContentType``, ``CacheControl``, ``ContentLength``, ``ETag``)."""
        return dict(self._client.head_object(Bucket=self.name, Key=key))

    def get(self, key: str) -> bytes:
        body: bytes = self._client.get_object(Bucket=self.name, Key=key)["Body"].read()
        return body


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's standalone S3 server, started once for the session and stopped at its end."""
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "AWS_DEFAULT_REGION": S3_REGION},
        )
        try:
            deadline = time.monotonic() + START_TIMEOUT_SECONDS
            while True:
                if process.poll() is not None:
                    log.seek(0)
                    raise RuntimeError(f"moto's server exited at start-up:\n{log.read().decode(errors='replace')}")
                try:
                    if httpx.get(f"{endpoint}/moto-api/", timeout=1.0).status_code < 500:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"moto's server did not answer at {endpoint} in {START_TIMEOUT_SECONDS} s")
                time.sleep(0.1)
            yield S3Server(endpoint)
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> S3Bucket:
    """A new, empty bucket on the session's S3 server."""
    client = s3_server.client()
    name = f"tollbooth-test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    return S3Bucket(server=s3_server, name=name, _client=client)
