"""A provider's 200 reply, read as the SDK would read it: what the fast decoder cannot read is read leniently, and what
cannot be read at all is still a billed call, recorded with an estimate, never at $0 (the provider charged for it).

A small OpenAI-compatible endpoint on loopback answers every chat completion with the body a test gives it; the
service reaches it through the real ``openai`` SDK.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from server.settings import Settings
from server.simulator import RunningSimulator
from server.users import NewUser
from tests.conftest import fetch_rows, serve_app, simulator_env

pytestmark = pytest.mark.usefixtures("db")

# gpt-4o-mini: $0.15 / $0.60 per million input / output tokens.
PROMPT, COMPLETION = 200_000, 100_000
EXACT_COST = Decimal("0.09")  # 200,000 x 0.15 + 100,000 x 0.60, per million


def _reply(*, usage: Any = None, content: Any = "fine answer", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
        **extra,
    }
    if usage is not None:
        body["usage"] = usage
    return body


class _Endpoint:
    def __init__(self) -> None:
        self.body: bytes = b"{}"
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["content-length"]))
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(endpoint.body)))
                self.end_headers()
                self.wfile.write(endpoint.body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"


@pytest.fixture
def endpoint() -> Iterator[_Endpoint]:
    served = _Endpoint()
    thread = threading.Thread(target=served.server.serve_forever, daemon=True)
    thread.start()
    yield served
    served.server.shutdown()
    thread.join()


async def _send(
    sim: RunningSimulator, endpoint: _Endpoint, alice: NewUser, tmp_path: Path, body: Any
) -> httpx.Response:
    endpoint.body = json.dumps(body).encode()
    env = simulator_env(sim, DATA_DIR=str(tmp_path), OPENAI_BASE_URL=endpoint.url, PROVIDER_MAX_RETRIES="0")
    async with (
        serve_app(Settings.from_env(env)) as app,
        httpx.AsyncClient(base_url=app.url, headers={"authorization": f"Bearer {alice.api_key}"}) as http,
    ):
        return await http.post("/trpc/chat.sendMessage", json={"message": "hi", "model": "gpt-4o-mini"})


@pytest.mark.parametrize(
    ("body", "text"),
    [
        pytest.param(
            _reply(usage={"prompt_tokens": PROMPT, "completion_tokens": COMPLETION}), "fine answer", id="no-total"
        ),
        pytest.param(
            _reply(usage={"prompt_tokens": float(PROMPT), "completion_tokens": COMPLETION, "total_tokens": 300_000.0}),
            "fine answer",
            id="integral-floats",
        ),
        pytest.param(
            _reply(
                usage={"prompt_tokens": PROMPT, "completion_tokens": COMPLETION, "total_tokens": PROMPT + COMPLETION},
                content=[{"type": "text", "text": "fine "}, {"type": "text", "text": "answer"}],
            ),
            "fine answer",
            id="content-parts",
        ),
    ],
)
async def test_a_reply_the_sdk_would_read_is_read_and_priced_exactly(
    sim: RunningSimulator, endpoint: _Endpoint, alice: NewUser, tmp_path: Path, body: dict[str, Any], text: str
) -> None:
    response = await _send(sim, endpoint, alice, tmp_path, body)

    assert response.status_code == 200, response.text
    assert response.json()["result"]["data"]["reply"] == text
    rows = await fetch_rows("SELECT status, input_tokens, output_tokens, estimated_cost_usd FROM ai_usage_logs")
    assert rows == [
        {"status": "ok", "input_tokens": PROMPT, "output_tokens": COMPLETION, "estimated_cost_usd": EXACT_COST}
    ]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(_reply(), id="no-usage"),
        pytest.param(_reply(usage={"prompt_tokens": "many", "completion_tokens": 1}), id="unreadable-usage"),
        pytest.param(_reply(usage={"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": -1}), id="impossible"),
        pytest.param({"choices": "not a list"}, id="unreadable-reply"),
    ],
)
async def test_a_billed_reply_that_cannot_be_read_is_recorded_with_an_estimate_not_at_zero(
    sim: RunningSimulator, endpoint: _Endpoint, alice: NewUser, tmp_path: Path, body: dict[str, Any]
) -> None:
    response = await _send(sim, endpoint, alice, tmp_path, body)

    assert response.status_code == 502, response.text
    assert response.json()["error"]["data"]["code"] == "BAD_GATEWAY"
    [row] = await fetch_rows("SELECT status, usage_estimated, input_tokens, estimated_cost_usd FROM ai_usage_logs")
    assert row["status"] == "error"
    assert row["usage_estimated"] is True
    assert row["input_tokens"] > 0
    assert row["estimated_cost_usd"] > 0
