"""``LLMCore.generate_image``: the real openai SDK over HTTP against the simulator's images API, the real PostgreSQL.

gpt-image-1.5: $5 per million text input tokens, $10 per million text output tokens, $32 per million image output
tokens (genai-prices). dall-e-3: per image, $0.04 standard 1024x1024, $0.12 hd 1024x1792 (the bundled price file).
"""

from __future__ import annotations

import asyncio
import struct
import uuid
import zlib
from decimal import Decimal
from typing import Any

import pytest

from server.admin.consistency import check_totals
from server.database import Database
from server.errors import BudgetExceededError, LLMError, LLMFailure
from server.llm.core import Attribution, ImageRequest, ImageResult
from server.simulator import RunningSimulator, ScriptedImageUsage, ScriptedResponse
from server.users import NewUser
from tests.conftest import MakeServices, app_database, fetch_rows, until_received

PROCEDURE = "personas.generate.image"


def _attribution(user: NewUser, **changes: Any) -> Attribution:
    return Attribution(user_id=user.id, procedure=PROCEDURE, **changes)


def _script(**changes: Any) -> ScriptedResponse:
    return ScriptedResponse(provider="openai", api="images", **changes)


def _png_pixels(png: bytes) -> tuple[int, int, bytes]:
    """Width, height and the first pixel of an 8-bit RGB PNG, read chunk by chunk (its CRCs checked)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks = 8, {}
    while position < len(png):
        (length,) = struct.unpack(">I", png[position : position + 4])
        kind, data = png[position + 4 : position + 8], png[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", png[position + 8 + length : position + 12 + length])
        assert zlib.crc32(kind + data) == crc
        chunks[kind] = data
        position += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, colour) == (8, 2)
    pixels = zlib.decompress(chunks[b"IDAT"])
    assert len(pixels) == height * (1 + 3 * width)
    return width, height, pixels[1:4]


async def _row(result: ImageResult) -> dict[str, Any]:
    [row] = await fetch_rows("SELECT * FROM ai_usage_logs WHERE call_id = $1", result.record.call_id)
    return row


async def _no_claims_left() -> None:
    assert await fetch_rows("SELECT call_id FROM llm_call_claims") == []


async def test_a_gpt_image_call_writes_one_row_at_the_image_rate_and_returns_a_real_png(
    make_services: MakeServices, sim: RunningSimulator, alice: NewUser
) -> None:
    sim.state.enqueue(_script(image_usage=ScriptedImageUsage(text_input=169, text_output=439, image_output=4160)))
    services = make_services()
    request = ImageRequest(model="gpt-image-1.5", prompt="A portrait of Ada, a CFO", quality="high")
    result = await services.llm.generate_image(request, _attribution(alice))

    assert result.content_type == "image/png"
    width, height, _ = _png_pixels(result.image)
    assert (width, height) == (64, 64)
    assert result.record.status == "ok"
    # 169 x 5 + 439 x 10 + 4160 x 32 = 845 + 4390 + 133120 = 138355 per million
    assert result.record.priced.total_cost == Decimal("0.138355")
    [row] = await fetch_rows("SELECT * FROM ai_usage_logs")
    assert row["call_id"] == result.record.call_id
    assert row["estimated_cost_usd"] == Decimal("0.138355")
    assert (row["input_tokens"], row["output_tokens"], row["output_image_tokens"]) == (169, 439, 4160)
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (169, 4599, 4768)
    assert (row["rate_output"], row["rate_output_image"], row["cost_output_image"]) == (
        Decimal(10),
        Decimal(32),
        Decimal("0.13312"),
    )
    assert row["usage_estimated"] is False
    assert (row["procedure"], row["model"], row["status"], row["pricing_status"]) == (
        PROCEDURE,
        "gpt-image-1.5",
        "ok",
        "priced",
    )
    assert row["conversation_id"] is None
    assert row["message_id"] is None
    assert row["metadata"] == '{"image_size": "1024x1024", "image_quality": "high"}'
    await _no_claims_left()
    [sent] = sim.state.requests_to("openai", "images")
    assert sent.body == {
        "model": "gpt-image-1.5",
        "prompt": "A portrait of Ada, a CFO",
        "n": 1,
        "size": "1024x1024",
        "quality": "high",
        "output_format": "png",
    }
    report = await check_totals(app_database())
    assert report.consistent, report  # the rollup sums the image tokens and cost too


async def test_the_same_prompt_gives_the_same_png_and_another_prompt_another(
    make_services: MakeServices, sim: RunningSimulator, alice: NewUser
) -> None:
    services = make_services()
    first, again, other = [
        await services.llm.generate_image(ImageRequest(model="gpt-image-1.5", prompt=prompt), _attribution(alice))
        for prompt in ("a lighthouse", "a lighthouse", "a harbour")
    ]
    assert first.image == again.image
    assert _png_pixels(first.image)[2] != _png_pixels(other.image)[2]
    # Unscripted: ceil(12 / 4) = 3 input tokens and a high-quality 1024x1024 image (auto), 4160 image tokens.
    assert (first.record.usage.input, first.record.usage.output_image) == (3, 4160)
    assert first.record.priced.total_cost == Decimal("0.133135")  # 3 x 5 + 4160 x 32 = 133135 per million


async def test_a_report_without_the_output_split_is_priced_at_the_image_rate_and_flagged_estimated(
    make_services: MakeServices, sim: RunningSimulator, alice: NewUser
) -> None:
    usage = ScriptedImageUsage(text_input=169, text_output=439, image_output=4160, split=False)
    sim.state.enqueue(_script(image_usage=usage))
    result = await make_services().llm.generate_image(
        ImageRequest(model="gpt-image-1.5", prompt="a cat"), _attribution(alice)
    )
    row = await _row(result)
    assert (row["output_tokens"], row["output_image_tokens"], row["completion_tokens"]) == (0, 4599, 4599)
    assert row["usage_estimated"] is True
    # 169 x 5 + 4599 x 32 = 845 + 147168 = 148013 per million: every output token at the image rate
    assert row["estimated_cost_usd"] == Decimal("0.148013")
    assert row["cost_output"] == 0


@pytest.mark.parametrize(("status", "failure"), [(500, LLMFailure.UPSTREAM_ERROR), (429, LLMFailure.RATE_LIMITED)])
async def test_a_provider_error_leaves_an_error_row_and_raises(
    make_services: MakeServices, sim: RunningSimulator, alice: NewUser, status: int, failure: LLMFailure
) -> None:
    sim.state.enqueue(_script(status=status))
    with pytest.raises(LLMError) as raised:
        await make_services().llm.generate_image(
            ImageRequest(model="gpt-image-1.5", prompt="a cat"), _attribution(alice)
        )
    assert raised.value.failure is failure
    [row] = await fetch_rows("SELECT * FROM ai_usage_logs")
    assert (row["status"], row["procedure"], row["requested_model"]) == ("error", PROCEDURE, "gpt-image-1.5")
    assert row["error_type"] == {500: "InternalServerError", 429: "RateLimitError"}[status]
    assert row["estimated_cost_usd"] == 0  # refused: nothing generated, nothing billed
    await _no_claims_left()


async def test_an_image_answer_that_is_not_json_is_an_error_row_that_costs_nothing(
    make_services: MakeServices, sim: RunningSimulator, alice: NewUser
) -> None:
    sim.state.enqueue(_script(malformed=True))
    with pytest.raises(LLMError):
        await make_services().llm.generate_image(
            ImageRequest(model="gpt-image-1.5", prompt="a cat", size="1536x1024"), _attribution(alice)
        )
    [row] = await fetch_rows("SELECT * FROM ai_usage_logs")
    assert (row["status"], row["error_type"]) == ("error", "JSONDecodeError")
    assert row["estimated_cost_usd"] == 0  # a body that is not JSON: nothing says an image was made


async def test_a_caller_that_leaves_mid_call_leaves_a_cancelled_row_estimated_at_the_image_rate(
    make_services: MakeServices, sim: RunningSimulator, alice: NewUser
) -> None:
    sim.state.enqueue(_script(delay_ms=2000))
    services = make_services()
    call = asyncio.create_task(
        services.llm.generate_image(ImageRequest(model="gpt-image-1.5", prompt="a cat"), _attribution(alice))
    )
    await until_received(sim, 1)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    [row] = await fetch_rows("SELECT * FROM ai_usage_logs")
    assert (row["status"], row["usage_estimated"]) == ("cancelled", True)
    # ceil(5 / 4) = 2 prompt tokens, and the image's bound: 4160 + 1024 tokens, all at the image rate.
    assert (row["input_tokens"], row["output_image_tokens"]) == (2, 5184)
    assert row["estimated_cost_usd"] == Decimal("0.165898")  # 2 x 5 + 5184 x 32 = 165898 per million
    await _no_claims_left()


@pytest.mark.parametrize(
    ("quality", "size", "sent", "usd"),
    [("hd", "1024x1792", "hd", "0.12"), ("auto", "1024x1024", "standard", "0.04")],
)
async def test_a_dall_e_3_image_is_priced_per_image_by_quality_and_size(
    make_services: MakeServices, sim: RunningSimulator, alice: NewUser, quality: str, size: str, sent: str, usd: str
) -> None:
    result = await make_services().llm.generate_image(
        ImageRequest(model="dall-e-3", prompt="a cat", size=size, quality=quality), _attribution(alice)
    )
    assert _png_pixels(result.image)[:2] == (64, 64)
    row = await _row(result)
    assert row["estimated_cost_usd"] == row["cost_output_image"] == Decimal(usd)
    assert row["price_source"] == f"bundled_prices.toml:dall-e-3 from 2023-11-06 per image ({sent}, {size})"
    assert row["rate_input"] is None
    assert row["rate_output_image"] is None
    assert (row["input_tokens"], row["output_image_tokens"], row["usage_estimated"]) == (0, 0, False)
    [request] = sim.state.requests_to("openai", "images")
    assert (request.body["response_format"], request.body["quality"], request.body["size"]) == ("b64_json", sent, size)
    await _no_claims_left()


async def test_a_model_that_is_not_an_image_model_is_refused_before_anything_is_sent(
    make_services: MakeServices, sim: RunningSimulator, alice: NewUser
) -> None:
    with pytest.raises(LLMError) as raised:
        await make_services().llm.generate_image(ImageRequest(model="gpt-4o", prompt="a cat"), _attribution(alice))
    assert raised.value.failure is LLMFailure.UNKNOWN_MODEL
    assert sim.state.requests == []
    assert await fetch_rows("SELECT 1 FROM ai_usage_logs") == []


async def _hard_budget(limit_usd: str) -> uuid.UUID:
    budget_id = uuid.uuid4()
    await app_database().execute(
        "INSERT INTO budgets (id, scope, subject_id, period, limit_usd, hard, alert_thresholds)"
        " VALUES ($1, 'global', NULL, 'day', $2, true, '{}'::numeric[])",
        budget_id,
        Decimal(limit_usd),
    )
    return budget_id


async def test_a_hard_budget_reserves_the_image_worst_case_and_settles_the_actual_cost(
    make_services: MakeServices, sim: RunningSimulator, alice: NewUser
) -> None:
    budget_id = await _hard_budget("1")
    sim.state.enqueue(
        _script(delay_ms=300, image_usage=ScriptedImageUsage(text_input=169, text_output=439, image_output=4160))
    )
    services = make_services()
    request = ImageRequest(model="gpt-image-1.5", prompt="a cat", quality="high")
    call = asyncio.create_task(services.llm.generate_image(request, _attribution(alice)))
    await until_received(sim, 1)
    [claim] = await fetch_rows("SELECT reserved_usd, max_output_tokens FROM llm_call_claims")
    # The prompt's byte bound (5 + 8 framing tokens) x 5, and 4160 + 1024 output tokens x 32, per million.
    assert claim["max_output_tokens"] == 5184
    assert claim["reserved_usd"] == Decimal("0.165953")
    await call
    [period] = await fetch_rows("SELECT spent_usd, reserved_usd FROM budget_periods WHERE budget_id = $1", budget_id)
    assert period == {"spent_usd": Decimal("0.138355"), "reserved_usd": 0}
    await _budget_refuses_an_image_that_does_not_fit(services, alice)


async def _budget_refuses_an_image_that_does_not_fit(services: Any, alice: NewUser) -> None:
    await app_database().execute("UPDATE budgets SET limit_usd = 0.15")
    with pytest.raises(BudgetExceededError):
        await services.llm.generate_image(ImageRequest(model="gpt-image-1.5", prompt="a dog"), _attribution(alice))
    with pytest.raises(BudgetExceededError):  # a per-image model reserves its price: 0.12 more does not fit
        await services.llm.generate_image(
            ImageRequest(model="dall-e-3", prompt="a dog", quality="hd", size="1792x1024"), _attribution(alice)
        )
    await _no_claims_left()


async def test_an_image_call_in_a_conversation_counts_its_image_tokens_in_the_totals(
    make_services: MakeServices, sim: RunningSimulator, alice: NewUser
) -> None:
    sim.state.enqueue(_script(image_usage=ScriptedImageUsage(text_input=10, text_output=5, image_output=100)))
    conversation_id = uuid.uuid4()
    attribution = _attribution(alice, conversation_id=conversation_id, new_conversation=True, conversation_title="t")
    await make_services().llm.generate_image(ImageRequest(model="gpt-image-1.5", prompt="a cat"), attribution)
    [conversation] = await fetch_rows(
        "SELECT total_prompt_tokens, total_completion_tokens, total_tokens_used, total_cost_usd FROM conversations"
    )
    # 10 x 5 + 5 x 10 + 100 x 32 = 3300 per million
    assert conversation == {
        "total_prompt_tokens": 10,
        "total_completion_tokens": 105,
        "total_tokens_used": 115,
        "total_cost_usd": Decimal("0.0033"),
    }
    assert (await check_totals(app_database())).consistent


async def test_with_the_database_down_an_image_call_is_spooled_and_replayed_with_its_cost(
    make_services: MakeServices, sim: RunningSimulator, alice: NewUser, unreachable_database: Database
) -> None:
    sim.state.enqueue(_script(image_usage=ScriptedImageUsage(text_input=169, text_output=439, image_output=4160)))
    down = make_services(unreachable_database)
    down.llm.ledger.hard_budgets_exist = False  # what its sweeper learnt before the database went away
    result = await down.llm.generate_image(ImageRequest(model="gpt-image-1.5", prompt="a cat"), _attribution(alice))
    _png_pixels(result.image)  # the caller has its image all the same
    assert down.llm.spool.pending_claims() == []  # the spooled record superseded the claim
    [_] = down.llm.spool.pending()
    assert await make_services().llm.replay_spool() == 1
    row = await _row(result)
    assert (row["output_image_tokens"], row["estimated_cost_usd"]) == (4160, Decimal("0.138355"))
    await _no_claims_left()
