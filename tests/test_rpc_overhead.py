"""The protocol's cost per call, measured in process (no network) against a bare Litestar handler."""

from __future__ import annotations

import json
import statistics
import time
from typing import Any
from urllib.parse import urlencode

from litestar import Litestar, get
from litestar.types import ASGIApp, Message

from tests.rpc_testing import USER_KEY, build_app

BUDGET_SECONDS = 0.001


@get("/plain", sync_to_thread=False)
def plain() -> bytes:
    return b'{"result":{"data":{"value":1}}}'


def scope(method: str, path: str, query: str = "", headers: tuple[tuple[str, str], ...] = ()) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [(k.encode(), v.encode()) for k, v in headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }


async def median_seconds(app: ASGIApp, request: dict[str, Any], body: bytes = b"", calls: int = 1500) -> float:
    statuses: set[int] = set()

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses.add(message["status"])

    durations = []
    for _ in range(calls):
        started = time.perf_counter()
        await app(dict(request), receive, send)  # type: ignore[arg-type]
        durations.append(time.perf_counter() - started)
    assert statuses == {200}
    return statistics.median(durations[calls // 5 :])


async def test_protocol_overhead_per_call_is_well_under_a_millisecond() -> None:
    baseline = await median_seconds(Litestar([plain]), scope("GET", "/plain"))
    app = build_app()
    authenticated = (("authorization", f"Bearer {USER_KEY}"), ("content-type", "application/json"))
    echo = {
        "text": "hi",
        "amountUsd": "1.5",
        "at": "2026-01-01T00:00:00Z",
        "conversationId": "6f0c1f38-0d4c-4a43-a1e5-2f0c5f1d9a11",
        "tags": ["a"],
        "nested": {"maxTokens": 3},
    }
    query_input = urlencode({"input": json.dumps({"ms": 0, "value": 1})})
    measured = {
        "query": await median_seconds(app, scope("GET", "/trpc/probe.sleep", query_input)),
        "authenticated query": await median_seconds(app, scope("GET", "/trpc/system.whoami", headers=authenticated)),
        "mutation": await median_seconds(
            app, scope("POST", "/trpc/probe.echo", headers=authenticated), json.dumps(echo).encode()
        ),
    }
    overheads = {name: seconds - baseline for name, seconds in measured.items()}
    print(
        f"\nbare Litestar {baseline * 1e6:.0f} µs; protocol overhead: "
        + ", ".join(f"{name} {seconds * 1e6:.0f} µs" for name, seconds in overheads.items())
    )
    assert max(overheads.values()) < BUDGET_SECONDS
