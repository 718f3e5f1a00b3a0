"""What the operator hears: every failed model call once, every unpriced model once, the SDKs' own warnings, and a
DEFAULT_MODEL that will fail or go unpriced, said at start-up. Never a message's text, an e-mail's or a key."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import tomllib
import uuid
import warnings
from collections.abc import AsyncGenerator, Iterator
from pathlib import Path
from typing import Any

import pytest

from schemas.chat import Email, ExecuteActionInput, SendMessageInput, SummarizeEmailInput
from server.app import create_app
from server.errors import LLMError
from server.llm.core import Attribution, ImageRequest
from server.llm.pricing import PriceCatalogue
from server.llm.providers import ChatTurn, CompletionRequest
from server.llm.sdk_warnings import route_sdk_warnings
from server.settings import Settings
from server.simulator import RunningSimulator, ScriptedResponse
from server.users import NewUser
from tests.conftest import MakeServices, serve_app, simulator_env
from tests.docs_snippets import ROOT, fenced
from tollbooth_client import TollboothClient, TRPCClientError

SECRET_TEXT = "Project Nightingale ships on the 14th"
KEYS = ("sk-test-openai", "sk-test-anthropic", "test-gemini")
PROVIDERS = [("openai", "gpt-4o"), ("anthropic", "claude-haiku-4-5"), ("gemini", "gemini-2.5-flash")]
UNPRICED_MODEL = "gpt-99-experimental"
DEPRECATED_MODEL = "claude-sonnet-4-5"  # the anthropic SDK warns: end of life on 2026-11-30


def _request(model: str, text: str = SECRET_TEXT) -> CompletionRequest:
    return CompletionRequest(model=model, messages=(ChatTurn(role="user", content=text),))


def _attribution(user: NewUser, procedure: str = "chat.sendMessage") -> Attribution:
    return Attribution(user_id=user.id, procedure=procedure)


async def _drain(events: AsyncGenerator[object, None]) -> None:
    async with contextlib.aclosing(events):
        async for _ in events:
            pass


def _warnings(caplog: pytest.LogCaptureFixture, logger: str = "tollbooth") -> list[str]:
    """The service's warnings and errors (of ``logger`` and below it), not those of the simulator's web server."""
    return [
        record.getMessage()
        for record in caplog.records
        if record.levelno >= logging.WARNING and (record.name == logger or record.name.startswith(f"{logger}."))
    ]


def _assert_nothing_secret(caplog: pytest.LogCaptureFixture, *secrets: str) -> None:
    logged = "\n".join(f"{record.getMessage()} {record.exc_text or ''}" for record in caplog.records)
    for secret in (SECRET_TEXT, *KEYS, *secrets):
        assert secret not in logged


@pytest.mark.parametrize(("provider", "model"), PROVIDERS)
async def test_a_failed_call_is_logged_once_by_kind_never_by_content_or_key(
    make_services: MakeServices,
    sim: RunningSimulator,
    alice: NewUser,
    caplog: pytest.LogCaptureFixture,
    provider: Any,
    model: str,
) -> None:
    caplog.set_level(logging.INFO)
    sim.state.enqueue(ScriptedResponse(provider=provider, status=429, retry_after=0))
    with pytest.raises(LLMError):
        await make_services().llm.invoke(_request(model), _attribution(alice))
    [logged] = _warnings(caplog)
    assert logged.startswith("model call failed: procedure=chat.sendMessage ")
    assert f"provider={provider} model='{model}' failure=RATE_LIMITED error_type=RateLimitError" in logged
    _assert_nothing_secret(caplog)


async def test_a_stream_that_breaks_off_is_logged_once(
    make_services: MakeServices, sim: RunningSimulator, alice: NewUser, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    sim.state.enqueue(ScriptedResponse(provider="openai", reply="one two three", stream_break_after=2))
    with pytest.raises(LLMError):
        await _drain(make_services().llm.stream(_request("gpt-4o"), _attribution(alice)))
    [logged] = _warnings(caplog)
    assert "procedure=chat.sendMessage provider=openai model='gpt-4o' failure=UNREACHABLE" in logged
    _assert_nothing_secret(caplog, "one two")


@pytest.mark.parametrize(
    ("model", "env", "expected"),
    [
        ("llama-3", {}, "provider=- model='llama-3' failure=UNKNOWN_MODEL error_type=UnknownModel"),
        (
            "claude-haiku-4-5",
            {"ANTHROPIC_API_KEY": ""},
            "provider=anthropic model='claude-haiku-4-5' failure=NOT_CONFIGURED error_type=ProviderNotConfigured",
        ),
    ],
)
async def test_a_call_refused_before_it_is_sent_is_logged_once_too(
    make_services: MakeServices,
    sim: RunningSimulator,
    alice: NewUser,
    caplog: pytest.LogCaptureFixture,
    model: str,
    env: dict[str, str],
    expected: str,
) -> None:
    caplog.set_level(logging.INFO)
    with pytest.raises(LLMError):
        await make_services(**env).llm.invoke(_request(model), _attribution(alice))
    [logged] = _warnings(caplog)
    assert expected in logged
    assert sim.state.requests == []


async def test_a_caller_that_goes_away_is_logged_as_information_not_as_a_failure(
    make_services: MakeServices, sim: RunningSimulator, alice: NewUser, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    sim.state.enqueue(ScriptedResponse(provider="openai", delay_ms=2000))
    call = asyncio.create_task(make_services().llm.invoke(_request("gpt-4o"), _attribution(alice)))
    await asyncio.sleep(0.3)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert _warnings(caplog) == []
    [cancelled] = [r.getMessage() for r in caplog.records if r.name == "tollbooth.llm"]
    assert "model call cancelled" in cancelled
    assert "failure=CANCELLED error_type=Cancelled" in cancelled


async def test_through_the_service_a_failed_message_is_one_warning_and_an_invalid_answer_another(
    client: TollboothClient, sim: RunningSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    sim.state.enqueue(ScriptedResponse(provider="openai", status=500))
    with pytest.raises(TRPCClientError) as raised:
        await client.chat.send_message(SendMessageInput(message=SECRET_TEXT, model="gpt-4o"))
    assert raised.value.code == "BAD_GATEWAY"
    [failed] = _warnings(caplog)
    assert "procedure=chat.sendMessage provider=openai model='gpt-4o' failure=UPSTREAM_ERROR" in failed

    caplog.clear()
    answer = "Nightingale? not json"
    sim.state.enqueue(*[ScriptedResponse(provider="openai", reply=answer)] * 2)
    with pytest.raises(TRPCClientError):
        await client.chat.execute_action(ExecuteActionInput(action="draft_reply", text=SECRET_TEXT, model="gpt-4o"))
    [invalid] = _warnings(caplog)
    assert invalid == (
        "structured answer invalid twice: procedure=chat.executeAction provider=openai model='gpt-4o' "
        "failure=INVALID_OUTPUT"
    )

    caplog.clear()
    sim.state.enqueue(ScriptedResponse(provider="openai", status=503))
    email = Email(body=f"Confidential: {SECRET_TEXT}", subject="Nightingale", from_="ceo@example.com")
    with pytest.raises(TRPCClientError):
        await client.chat.summarize_email(SummarizeEmailInput(email=email, model="gpt-4o"))
    [overloaded] = _warnings(caplog)
    assert "procedure=chat.summarizeEmail provider=openai model='gpt-4o' failure=OVERLOADED" in overloaded
    _assert_nothing_secret(caplog, answer, "Nightingale", "ceo@example.com")


async def test_an_unpriced_model_is_warned_about_once_naming_it_and_where_to_price_it(
    make_services: MakeServices, alice: NewUser, caplog: pytest.LogCaptureFixture
) -> None:
    llm = make_services().llm
    for _ in range(3):
        result = await llm.invoke(_request(UNPRICED_MODEL), _attribution(alice))
        assert result.priced.status == "unpriced"
    [warning] = _warnings(caplog, "tollbooth.pricing")
    assert f"no known price for openai model '{UNPRICED_MODEL}'" in warning
    assert "PRICE_FILE" in warning
    assert "admin.unpricedCalls" in warning


def test_an_unpriced_default_model_is_warned_about_at_start_up(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    create_app(Settings.from_env({"DATA_DIR": str(tmp_path), "DEFAULT_MODEL": UNPRICED_MODEL}))
    [warning] = _warnings(caplog)
    assert warning.startswith(f"DEFAULT_MODEL: no known price for openai model '{UNPRICED_MODEL}'")
    assert "PRICE_FILE" in warning

    caplog.clear()
    create_app(Settings.from_env({"DATA_DIR": str(tmp_path), "DEFAULT_MODEL": "claude-haiku-4-5"}))
    assert _warnings(caplog) == []


def test_a_default_model_whose_provider_has_no_key_is_warned_about_at_start_up(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    env = {"DATA_DIR": str(tmp_path), "OPENAI_API_KEY": "sk-live-openai", "DEFAULT_MODEL": "claude-haiku-4-5"}
    create_app(Settings.from_env(env))
    [warning] = _warnings(caplog)
    assert "DEFAULT_MODEL 'claude-haiku-4-5' is served by anthropic, which is not configured" in warning
    assert "ANTHROPIC_API_KEY" in warning
    assert "sk-live-openai" not in warning


async def test_the_default_model_warned_about_at_start_up_is_not_warned_about_again_by_its_calls(
    sim: RunningSimulator, alice: NewUser, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    settings = Settings.from_env(simulator_env(sim, DATA_DIR=str(tmp_path), DEFAULT_MODEL=UNPRICED_MODEL))
    async with (
        serve_app(settings) as served,
        TollboothClient(served.url, api_key=alice.api_key, batching=False) as client,
    ):
        out = await client.chat.send_message(SendMessageInput(message="hi"))
        await client.chat.send_message(SendMessageInput(message="again", conversation_id=out.conversation_id))
    assert out.pricing_status == "unpriced"
    [warning] = _warnings(caplog, "tollbooth.pricing")
    assert warning.startswith("DEFAULT_MODEL: ")


@pytest.fixture
def routed_warnings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``route_sdk_warnings`` as ``python -m server`` installs it, undone after the test."""
    monkeypatch.setattr(sys, "warnoptions", [])  # as without -W or PYTHONWARNINGS
    with warnings.catch_warnings():
        route_sdk_warnings()
        yield


async def test_the_sdks_deprecation_warnings_reach_the_log_once_each(
    routed_warnings: None,
    make_services: MakeServices,
    alice: NewUser,
    caplog: pytest.LogCaptureFixture,
) -> None:
    llm = make_services().llm
    await llm.invoke(_request(DEPRECATED_MODEL), _attribution(alice))
    await llm.invoke(_request(DEPRECATED_MODEL), _attribution(alice))
    await _drain(llm.stream(_request(DEPRECATED_MODEL), _attribution(alice)))
    [logged] = _warnings(caplog, "tollbooth.sdk")
    assert logged.startswith(f"anthropic SDK: DeprecationWarning: The model '{DEPRECATED_MODEL}' is deprecated")
    assert "end-of-life on November 30th, 2026" in logged
    assert "\n" not in logged
    _assert_nothing_secret(caplog)


def test_warnings_from_elsewhere_are_left_as_python_shows_them(
    routed_warnings: None, caplog: pytest.LogCaptureFixture
) -> None:
    with warnings.catch_warnings(record=True) as shown:
        route_sdk_warnings()
        warnings.warn(f"ours is old {uuid.uuid4()}", DeprecationWarning, stacklevel=1)
        warnings.warn(f"careful {uuid.uuid4()}", UserWarning, stacklevel=1)
    assert [str(warning.message).split()[0] for warning in shown] == ["careful"]
    assert _warnings(caplog, "tollbooth.sdk") == []


async def test_the_readme_price_file_example_loads_and_names_no_model_the_sdks_deprecate(
    make_services: MakeServices, alice: NewUser, tmp_path: Path
) -> None:
    [example] = fenced(ROOT / "README.md", "toml")
    prices = tmp_path / "prices.toml"
    prices.write_text(example.code)
    PriceCatalogue.load(prices)
    entries = tomllib.loads(example.code)["models"]
    llm = make_services().llm
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        for entry in entries:
            if "images" in entry:  # a model priced per image generates images
                await llm.generate_image(ImageRequest(model=entry["model"], prompt="hi"), _attribution(alice))
            else:
                await llm.invoke(_request(entry["model"]), _attribution(alice))
    assert [str(w.message) for w in shown if issubclass(w.category, DeprecationWarning)] == []
