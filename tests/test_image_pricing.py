"""Image pricing. Every expected figure is computed by hand: tokens x USD-per-million / 1,000,000, or images x USD.

gpt-image-1.5 (genai-prices): $5 per million text input tokens, $10 per million text output tokens, $32 per million
image output tokens. dall-e-2 and dall-e-3: OpenAI's per-image prices, bundled in ``server/llm/bundled_prices.toml``.
"""

from __future__ import annotations

import datetime
import uuid
import warnings
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest
from genai_prices import Usage as GenaiUsage
from genai_prices.data import providers as genai_providers
from genai_prices.data_snapshot import DataSnapshot
from openai.types.images_response import Usage as ImagesUsage
from openai.types.images_response import UsageInputTokensDetails, UsageOutputTokensDetails

from server.llm.images import ImageRequest, image_output_tokens_bound, image_provider_for_model, sent_quality
from server.llm.ledger import Claim
from server.llm.pricing import BUNDLED_PRICE_FILE, PriceCatalogue
from server.llm.usage import NO_USAGE, TokenUsage, UsageReportError, usage_from_openai_images

NOW = datetime.datetime(2026, 11, 29, 12, tzinfo=datetime.UTC)
NO_TOKENS = NO_USAGE


@pytest.fixture(scope="module")
def catalogue() -> PriceCatalogue:
    return PriceCatalogue.load(None)


@pytest.fixture
def price_file(tmp_path: Path) -> Callable[[str], PriceCatalogue]:
    def load(text: str) -> PriceCatalogue:
        path = tmp_path / "prices.toml"
        path.write_text(text, encoding="utf-8")
        return PriceCatalogue.load(path)

    return load


def images_usage(text_in: int, text_out: int | None, image_out: int | None, output: int) -> ImagesUsage:
    """The images API's usage; ``text_out``/``image_out`` None: no ``output_tokens_details`` (no split)."""
    details = (
        None
        if text_out is None or image_out is None
        else UsageOutputTokensDetails(text_tokens=text_out, image_tokens=image_out)
    )
    return ImagesUsage(
        input_tokens=text_in,
        input_tokens_details=UsageInputTokensDetails(text_tokens=text_in, image_tokens=0),
        output_tokens=output,
        total_tokens=text_in + output,
        output_tokens_details=details,
    )


def test_gpt_image_1_5_text_and_image_tokens_cost_exactly(catalogue: PriceCatalogue) -> None:
    usage = usage_from_openai_images(images_usage(169, 439, 4160, 4599))
    assert (usage.input, usage.output, usage.output_image, usage.estimated) == (169, 439, 4160, False)
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (169, 4599, 4768)
    priced = catalogue.price_image("openai", "gpt-image-1.5", usage, NOW, quality="high", size="1024x1024")
    # 169 x 5 + 439 x 10 + 4160 x 32 = 845 + 4390 + 133120 = 138355 per million
    assert priced.total_cost == Decimal("0.138355")
    assert (priced.cost_input, priced.cost_output, priced.cost_output_image) == (
        Decimal("0.000845"),
        Decimal("0.00439"),
        Decimal("0.13312"),
    )
    assert priced.rates is not None
    assert (priced.rates.input, priced.rates.output, priced.rates.output_image) == (
        Decimal(5),
        Decimal(10),
        Decimal(32),
    )
    assert priced.source == "genai-prices 0.2.3 openai/gpt-image-1.5"
    assert catalogue.price("openai", "gpt-image-1.5", usage, NOW) == priced  # tokens are tokens, either way in


def test_gpt_image_1_5_without_the_output_split_is_priced_at_the_image_rate_and_flagged_estimated(
    catalogue: PriceCatalogue,
) -> None:
    usage = usage_from_openai_images(images_usage(169, None, None, 4599))
    assert (usage.output, usage.output_image, usage.estimated) == (0, 4599, True)
    priced = catalogue.price_image("openai", "gpt-image-1.5", usage, NOW, quality="high", size="1024x1024")
    # 169 x 5 + 4599 x 32 = 845 + 147168 = 148013 per million: never 4599 x 10 at the text rate
    assert priced.total_cost == Decimal("0.148013")
    assert priced.cost_output == 0
    assert priced.cost_output_image == Decimal("0.147168")


def test_costs_agree_with_genai_prices_own_calculation_of_image_tokens() -> None:
    """genai-prices' usage is inclusive: output tokens count the image tokens too."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = DataSnapshot(providers=genai_providers, from_auto_update=False).calc(
            GenaiUsage(input_tokens=169, output_tokens=4599, output_image_tokens=4160),
            "gpt-image-1.5",
            "openai",
            None,
            NOW,
            None,
        )
    assert expected.total_price == Decimal("0.138355")


def test_an_output_split_that_does_not_add_up_is_refused() -> None:
    with pytest.raises(UsageReportError, match="do not add up"):
        usage_from_openai_images(images_usage(10, 5, 100, 4599))


def test_chat_calls_have_no_image_cost(catalogue: PriceCatalogue) -> None:
    usage = TokenUsage(
        input=100,
        cache_read=0,
        cache_write_5m=0,
        cache_write_1h=0,
        output=10,
        reasoning=0,
        prompt_tokens=100,
        completion_tokens=10,
        total_tokens=110,
    )
    priced = catalogue.price("openai", "gpt-4o-mini", usage, NOW)
    assert priced.cost_output_image == 0
    assert priced.total_cost == Decimal("0.000021")  # 100 x 0.15 + 10 x 0.60


@pytest.mark.parametrize(
    ("model", "quality", "size", "usd"),
    [
        ("dall-e-3", "standard", "1024x1024", "0.04"),
        ("dall-e-3", "standard", "1024x1792", "0.08"),
        ("dall-e-3", "standard", "1792x1024", "0.08"),
        ("dall-e-3", "hd", "1024x1024", "0.08"),
        ("dall-e-3", "hd", "1024x1792", "0.12"),
        ("dall-e-3", "hd", "1792x1024", "0.12"),
        ("dall-e-2", "standard", "256x256", "0.016"),
        ("dall-e-2", "standard", "512x512", "0.018"),
        ("dall-e-2", "standard", "1024x1024", "0.02"),
    ],
)
def test_dall_e_is_priced_per_image_by_quality_and_size(
    catalogue: PriceCatalogue, model: str, quality: str, size: str, usd: str
) -> None:
    priced = catalogue.price_image("openai", model, NO_TOKENS, NOW, quality=quality, size=size)
    assert priced.status == "priced"
    assert priced.total_cost == priced.cost_output_image == Decimal(usd)
    assert priced.rates is None
    assert priced.source == f"bundled_prices.toml:{model} from 2023-11-06 per image ({quality}, {size})"
    assert catalogue.price_image("openai", model, NO_TOKENS, NOW, quality=quality, size=size, images=3).total_cost == (
        3 * Decimal(usd)
    )


def test_a_size_or_quality_the_price_file_does_not_list_is_unpriced_never_free(catalogue: PriceCatalogue) -> None:
    assert catalogue.price_image("openai", "dall-e-3", NO_TOKENS, NOW, quality="hd", size="512x512").status == (
        "unpriced"
    )
    assert catalogue.price_image("openai", "dall-e-2", NO_TOKENS, NOW, quality="hd", size="256x256").status == (
        "unpriced"
    )


def test_the_project_price_file_replaces_the_bundled_entries_of_its_model(
    price_file: Callable[[str], PriceCatalogue],
) -> None:
    catalogue = price_file(
        '[[models]]\nprovider = "openai"\nmodel = "dall-e-3"\neffective_from = 2026-01-01\n'
        'images = [{ quality = "standard", size = "1024x1024", usd = 0.03 }]\n'
        '[[models]]\nprovider = "openai"\nmodel = "gpt-image-9"\neffective_from = 2026-01-01\n'
        "input = 4\noutput = 8\noutput_image = 30\n"
    )
    standard = catalogue.price_image("openai", "dall-e-3", NO_TOKENS, NOW, quality="STANDARD", size="1024x1024")
    assert standard.total_cost == Decimal("0.03")
    assert standard.source == "prices.toml:dall-e-3 from 2026-01-01 per image (standard, 1024x1024)"
    # Its bundled hd prices went with the rest of the model's bundled entries, and before its date nothing applies.
    assert catalogue.price_image("openai", "dall-e-3", NO_TOKENS, NOW, quality="hd", size="1024x1024").status == (
        "unpriced"
    )
    # Unaffected models keep their bundled prices.
    assert catalogue.price_image(
        "openai", "dall-e-2", NO_TOKENS, NOW, quality="standard", size="256x256"
    ).total_cost == (Decimal("0.016"))
    usage = usage_from_openai_images(images_usage(100, 10, 1000, 1010))
    tokens = catalogue.price_image("openai", "gpt-image-9", usage, NOW, quality="low", size="1024x1024")
    assert tokens.total_cost == Decimal("0.03048")  # 100 x 4 + 10 x 8 + 1000 x 30 = 30480 per million


def test_the_bundled_price_file_cites_its_source() -> None:
    text = BUNDLED_PRICE_FILE.read_text(encoding="utf-8")
    assert "https://openai.com/api/pricing/" in text


def test_image_models_route_to_openai_and_others_are_refused() -> None:
    assert image_provider_for_model("gpt-image-1.5") == image_provider_for_model("dall-e-3") == "openai"
    with pytest.raises(Exception, match="not an image model"):
        image_provider_for_model("gpt-4o")


def test_dall_e_auto_quality_is_sent_as_standard() -> None:
    assert sent_quality(ImageRequest(model="dall-e-3", prompt="p")) == "standard"
    assert sent_quality(ImageRequest(model="gpt-image-1.5", prompt="p")) == "auto"


def test_an_interrupted_image_call_is_estimated_at_the_image_rate(catalogue: PriceCatalogue) -> None:
    request = ImageRequest(model="gpt-image-1.5", prompt="p", size="1024x1536", quality="high")
    bound = image_output_tokens_bound(request)
    assert bound == 6240 + 1024
    claim = Claim(
        call_id=uuid.uuid4(),
        user_id=None,
        conversation_id=None,
        procedure="personas.generate.image",
        provider="openai",
        requested_model="gpt-image-1.5",
        prompt_tokens_estimate=10,
        max_output_tokens=bound,
        metadata={"image_size": "1024x1536", "image_quality": "high"},
        created_at=NOW,
        lease_expires_at=NOW,
    )
    record = claim.interrupted(catalogue)
    assert (record.usage.output, record.usage.output_image, record.usage.estimated) == (0, bound, True)
    # 10 x 5 + 7264 x 32 = 50 + 232448 = 232498 per million
    assert record.priced.total_cost == Decimal("0.232498")
    hd = {"image_size": "1024x1792", "image_quality": "hd"}
    per_image = msgspec.structs.replace(claim, requested_model="dall-e-3", max_output_tokens=0, metadata=hd)
    assert per_image.interrupted(catalogue).priced.total_cost == Decimal("0.12")  # one image, as it may be billed
