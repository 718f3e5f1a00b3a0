"""Cost math. Every expected figure is computed by hand: tokens x USD-per-million / 1,000,000."""

from __future__ import annotations

import datetime
import warnings
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest
from anthropic.types import CacheCreation, Usage
from genai_prices import Usage as GenaiUsage
from genai_prices.data import providers as genai_providers
from genai_prices.data_snapshot import DataSnapshot, get_snapshot, set_custom_snapshot
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types import CompletionUsage
from openai.types.completion_usage import PromptTokensDetails

from server.llm.pricing import BucketRates, PriceCatalogue, PricedUsage, PriceFileError
from server.llm.usage import TokenUsage, usage_from_anthropic, usage_from_openai

NOW = datetime.datetime(2026, 11, 1, 12, tzinfo=datetime.UTC)
BUCKETS = ("input", "cache_read", "cache_write_5m", "cache_write_1h", "output")


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


def tokens(
    input: int = 0, cache_read: int = 0, cache_write_5m: int = 0, cache_write_1h: int = 0, output: int = 0
) -> TokenUsage:
    prompt = input + cache_read + cache_write_5m + cache_write_1h
    return TokenUsage(
        input=input,
        cache_read=cache_read,
        cache_write_5m=cache_write_5m,
        cache_write_1h=cache_write_1h,
        output=output,
        reasoning=0,
        prompt_tokens=prompt,
        completion_tokens=output,
        total_tokens=prompt + output,
    )


def rates(*values: str, output_image: str | None = None) -> BucketRates:
    """Rates by bucket; the image-output rate defaults to the output rate, as a model without its own has it."""
    by_bucket = {bucket: Decimal(value) for bucket, value in zip(BUCKETS, values, strict=True)}
    return BucketRates(**by_bucket, output_image=Decimal(output_image or values[-1]))


# --- Reference figures ----------------------------------------------------------------------------------------------


def test_gpt_4o_with_cached_prompt_costs_exactly(catalogue: PriceCatalogue) -> None:
    usage = usage_from_openai(
        CompletionUsage(
            prompt_tokens=1_000,
            completion_tokens=100,
            total_tokens=1_100,
            prompt_tokens_details=PromptTokensDetails(cached_tokens=200),
        )
    )
    priced = catalogue.price("openai", "gpt-4o", usage, NOW)
    # 800 x 2.50 + 200 x 1.25 + 100 x 10 = 2000 + 250 + 1000 = 3250 per million
    assert priced.total_cost == Decimal("0.00325")
    assert (priced.cost_input, priced.cost_cache_read, priced.cost_output) == (
        Decimal("0.002"),
        Decimal("0.00025"),
        Decimal("0.001"),
    )
    assert priced.status == "priced"
    assert priced.source == "genai-prices 0.2.3 openai/gpt-4o"
    assert priced.tier is None


def test_claude_sonnet_4_5_cache_writes_by_ttl_cost_exactly(catalogue: PriceCatalogue) -> None:
    usage = usage_from_anthropic(
        Usage(
            input_tokens=1_000,
            cache_creation_input_tokens=2_000,
            cache_creation=CacheCreation(ephemeral_5m_input_tokens=1_500, ephemeral_1h_input_tokens=500),
            cache_read_input_tokens=3_000,
            output_tokens=100,
        )
    )
    priced = catalogue.price("anthropic", "claude-sonnet-4-5", usage, NOW)
    # 1000 x 3 + 3000 x 0.30 + 1500 x 3.75 + 500 x 6 + 100 x 15 = 3000 + 900 + 5625 + 3000 + 1500 = 14025
    assert priced.total_cost == Decimal("0.014025")
    assert priced.cost_cache_write_5m == Decimal("0.005625")
    assert priced.cost_cache_write_1h == Decimal("0.003")


def gemini_call(prompt: int, cached: int) -> TokenUsage:
    """A Gemini call: ``prompt`` tokens (``cached`` of them from the cache), 1,000 answer and 2,000 thought tokens."""
    return TokenUsage(
        input=prompt - cached,
        cache_read=cached,
        cache_write_5m=0,
        cache_write_1h=0,
        output=3_000,
        reasoning=2_000,
        prompt_tokens=prompt,
        completion_tokens=1_000,
        total_tokens=prompt + 3_000,
    )


def test_gemini_2_5_pro_over_200k_prices_every_token_at_the_higher_tier(catalogue: PriceCatalogue) -> None:
    priced = catalogue.price("gemini", "gemini-2.5-pro", gemini_call(210_000, 150_000), NOW)
    # 60000 x 2.50 + 150000 x 0.25 + 3000 x 15 = 150000 + 37500 + 45000 = 232500 per million
    assert priced.total_cost == Decimal("0.2325")
    assert priced.tier == "prompt>200000"
    assert priced.rates == rates("2.50", "0.25", "2.50", "2.50", "15")


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        # 50000 x 1.25 + 150000 x 0.125 + 3000 x 10 = 62500 + 18750 + 30000
        (200_000, Decimal("0.11125")),
        # 49999 x 1.25 + 150000 x 0.125 + 3000 x 10 = 62498.75 + 18750 + 30000
        (199_999, Decimal("0.11124875")),
    ],
)
def test_gemini_2_5_pro_up_to_200k_uses_the_base_tier(
    catalogue: PriceCatalogue, prompt: int, expected: Decimal
) -> None:
    priced = catalogue.price("gemini", "gemini-2.5-pro", gemini_call(prompt, 150_000), NOW)
    assert priced.total_cost == expected
    assert priced.tier == "prompt<=200000"


def test_gemini_tier_cliff_is_crossed_by_a_single_token(catalogue: PriceCatalogue) -> None:
    below = catalogue.price("gemini", "gemini-2.5-pro", gemini_call(200_000, 0), NOW)
    above = catalogue.price("gemini", "gemini-2.5-pro", gemini_call(200_001, 0), NOW)
    # 200001 x 2.50 + 3000 x 15 = 500002.5 + 45000; the whole prompt moves to the higher rate
    assert above.total_cost == Decimal("0.5450025")
    assert below.total_cost == Decimal("0.28")  # 200000 x 1.25 + 3000 x 10


@pytest.mark.parametrize(
    ("provider", "model", "expected"),
    [
        # Buckets without a price of their own are billed as plain input, as genai-prices does.
        ("openai", "gpt-4o", rates("2.50", "1.25", "2.50", "2.50", "10")),
        ("openai", "gpt-4o-mini", rates("0.15", "0.075", "0.15", "0.15", "0.60")),
        ("anthropic", "claude-sonnet-4-5", rates("3", "0.30", "3.75", "6", "15")),
        ("anthropic", "claude-haiku-4-5", rates("1", "0.10", "1.25", "2", "5")),
        ("gemini", "gemini-2.5-pro", rates("1.25", "0.125", "1.25", "1.25", "10")),
        ("gemini", "gemini-2.5-flash", rates("0.30", "0.03", "0.30", "0.30", "2.50")),
    ],
)
def test_bundled_rates_match_the_design_reference_figures(
    catalogue: PriceCatalogue, provider: str, model: str, expected: BucketRates
) -> None:
    assert catalogue.price(provider, model, tokens(input=1), NOW).rates == expected


@pytest.mark.parametrize(
    ("provider", "reported", "canonical"),
    [
        ("openai", "gpt-4o-2024-08-06", "gpt-4o"),
        ("openai", "gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("anthropic", "claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("anthropic", "claude-haiku-4-5-20251001", "claude-haiku-4-5"),
        ("gemini", "models/gemini-2.5-flash", "gemini-2.5-flash"),
        ("gemini", "Gemini-2.5-Pro", "gemini-2.5-pro"),
    ],
)
def test_reported_snapshot_names_are_priced_like_their_model(
    catalogue: PriceCatalogue, provider: str, reported: str, canonical: str
) -> None:
    usage = tokens(input=1_234, cache_read=56, output=789)
    priced = catalogue.price(provider, reported, usage, NOW)
    assert priced.status == "priced"
    assert priced == catalogue.price(provider, canonical, usage, NOW)


@pytest.mark.parametrize(("provider", "model"), [("openai", "gpt-nonexistent-9"), ("mistral", "mistral-large")])
def test_unknown_model_is_unpriced_never_free(catalogue: PriceCatalogue, provider: str, model: str) -> None:
    priced = catalogue.price(provider, model, tokens(input=1_000, output=1_000), NOW)
    assert priced == PricedUsage(status="unpriced")
    assert priced.total_cost is None
    assert priced.cost_input is None
    assert priced.rates is None


def test_a_single_token_of_the_cheapest_model_is_not_rounded_away(catalogue: PriceCatalogue) -> None:
    assert catalogue.price("openai", "gpt-5-nano", tokens(input=1), NOW).total_cost == Decimal("0.00000005")


def test_naive_call_time_is_refused(catalogue: PriceCatalogue) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        catalogue.price("openai", "gpt-4o", tokens(input=1), datetime.datetime(2026, 1, 1))  # noqa: DTZ001


def test_bundled_data_is_used_even_when_genai_prices_was_told_to_auto_update() -> None:
    set_custom_snapshot(DataSnapshot(providers=[], from_auto_update=True))
    try:
        assert get_snapshot().providers == []
        priced = PriceCatalogue.load(None).price("openai", "gpt-4o", tokens(output=1_000), NOW)
    finally:
        set_custom_snapshot(None)
    assert priced.total_cost == Decimal("0.01")


# --- Service tiers --------------------------------------------------------------------------------------------------


def test_batch_rates_from_genai_prices_apply_when_it_has_them(catalogue: PriceCatalogue) -> None:
    priced = catalogue.price("openai", "gpt-4o", tokens(input=1_000, output=1_000), NOW, service_tier="batch")
    # Batch halves input and output (1.25 / 5): 1000 x 1.25 + 1000 x 5 = 6250 per million
    assert priced.total_cost == Decimal("0.00625")
    assert priced.source == "genai-prices 0.2.3 openai/gpt-4o batch"


@pytest.mark.parametrize("service_tier", [None, "default", "standard", "auto", "DEFAULT"])
def test_standard_service_tier_names_use_standard_rates(catalogue: PriceCatalogue, service_tier: str | None) -> None:
    priced = catalogue.price("openai", "gpt-4o", tokens(input=1_000), NOW, service_tier=service_tier)
    assert priced.total_cost == Decimal("0.0025")
    assert priced.source == "genai-prices 0.2.3 openai/gpt-4o"


def test_service_tier_without_rates_is_priced_standard_and_says_so(catalogue: PriceCatalogue) -> None:
    priced = catalogue.price("openai", "gpt-4o", tokens(input=1_000), NOW, service_tier="flex")
    assert priced.total_cost == Decimal("0.0025")
    assert priced.source == "genai-prices 0.2.3 openai/gpt-4o (flex: no rates, standard applied)"


def test_service_tier_rates_apply_only_from_when_genai_prices_verified_them(catalogue: PriceCatalogue) -> None:
    before = datetime.datetime(2026, 10, 13, tzinfo=datetime.UTC)
    priced = catalogue.price("openai", "gpt-4o", tokens(input=1_000), before, service_tier="batch")
    assert priced.total_cost == Decimal("0.0025")
    assert priced.source is not None
    assert priced.source.endswith("(batch: no rates, standard applied)")


# --- Price file -----------------------------------------------------------------------------------------------------

NEGOTIATED = """
[[models]]
provider = "openai"
model = "gpt-4o"
effective_from = 2026-01-01
input = 2.00
cache_read = 1.00
output = 8.00
service_tiers = { batch = 0.5 }

[[models]]
provider = "openai"
model = "gpt-4o"
effective_from = 2026-07-01T00:00:00+02:00
input = 1.80
output = 7.20
"""


def test_price_file_overrides_genai_prices_from_its_effective_date(
    catalogue: PriceCatalogue, price_file: Callable[[str], PriceCatalogue]
) -> None:
    negotiated = price_file(NEGOTIATED)
    usage = tokens(input=1_000, cache_read=1_000, output=1_000)

    before = datetime.datetime(2025, 12, 31, 23, 59, tzinfo=datetime.UTC)
    assert negotiated.price("openai", "gpt-4o", usage, before) == catalogue.price("openai", "gpt-4o", usage, before)

    first = negotiated.price("openai", "gpt-4o", usage, datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC))
    assert first.total_cost == Decimal("0.011")  # 1000 x 2 + 1000 x 1 + 1000 x 8
    assert first.source == "prices.toml:gpt-4o from 2026-01-01"

    # 2026-07-01T00:00+02:00 is 2026-06-30T22:00Z: the second entry is already in force at 23:00Z.
    second = negotiated.price("openai", "gpt-4o", usage, datetime.datetime(2026, 6, 30, 23, tzinfo=datetime.UTC))
    # No cache_read rate given: reads cost plain input. 1000 x 1.80 + 1000 x 1.80 + 1000 x 7.20
    assert second.total_cost == Decimal("0.0108")
    assert second.source == "prices.toml:gpt-4o from 2026-07-01T00:00:00+02:00"
    still_first = negotiated.price("openai", "gpt-4o", usage, datetime.datetime(2026, 6, 30, 21, tzinfo=datetime.UTC))
    assert still_first.total_cost == Decimal("0.011")


def test_price_file_entry_covers_dated_snapshots_of_its_model(price_file: Callable[[str], PriceCatalogue]) -> None:
    priced = price_file(NEGOTIATED).price("openai", "gpt-4o-2024-08-06", tokens(input=1_000), NOW)
    assert priced.source == "prices.toml:gpt-4o from 2026-07-01T00:00:00+02:00"
    assert priced.total_cost == Decimal("0.0018")


def test_price_file_service_tier_multiplier(price_file: Callable[[str], PriceCatalogue]) -> None:
    at = datetime.datetime(2026, 3, 1, tzinfo=datetime.UTC)
    priced = price_file(NEGOTIATED).price(
        "openai", "gpt-4o", tokens(input=1_000, output=1_000), at, service_tier="batch"
    )
    assert priced.rates == rates("1", "0.5", "1", "1", "4")
    assert priced.total_cost == Decimal("0.005")
    assert priced.source == "prices.toml:gpt-4o from 2026-01-01 batch x0.5"


def test_price_file_adds_a_self_hosted_model_with_tiers(price_file: Callable[[str], PriceCatalogue]) -> None:
    catalogue = price_file(
        """
        [[models]]
        provider = "openai"
        model = "llama-local"
        effective_from = 2026-01-01
        input = 0.10
        cache_write_5m = 0.125
        output = 0.40
        [[models.tiers]]
        above = 100000
        input = 0.20
        output = 0.80
        """
    )
    small = catalogue.price("openai", "llama-local", tokens(input=100_000, cache_write_5m=0, output=10), NOW)
    assert small.rates == rates("0.10", "0.10", "0.125", "0.125", "0.40")
    assert small.total_cost == Decimal("0.010004")  # 100000 x 0.10 + 10 x 0.40
    large = catalogue.price("openai", "llama-local", tokens(input=100_000, cache_write_5m=1, output=10), NOW)
    assert large.rates == rates("0.20", "0.20", "0.20", "0.20", "0.80")
    assert large.total_cost == Decimal("0.0200082")  # 100001 x 0.20 + 10 x 0.80
    assert large.tier == "prompt>100000"


def test_no_price_file_entry_before_its_first_date_leaves_a_new_model_unpriced(
    price_file: Callable[[str], PriceCatalogue],
) -> None:
    catalogue = price_file(
        '[[models]]\nprovider = "gemini"\nmodel = "gemini-9"\neffective_from = 2027-01-01\ninput = 1\noutput = 2\n'
    )
    assert catalogue.price("gemini", "gemini-9", tokens(input=1), NOW).status == "unpriced"
    later = datetime.datetime(2027, 1, 1, tzinfo=datetime.UTC)
    assert catalogue.price("gemini", "gemini-9", tokens(input=1), later).status == "priced"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            "effective_from = 2026-01-01\ninput = 1\n",
            r"models\[0\] \(openai/my-model\): `input` and `output` go together",
        ),
        ("effective_from = 2026-01-01\n", r"needs token rates \(`input` and `output`\) or per-image prices"),
        (
            'effective_from = 2026-01-01\nimages = [{ quality = "hd", size = "1024x1024", usd = 0.08 }, '
            '{ quality = "HD", size = "1024x1024", usd = 0.09 }]\n',
            r"`images` names a \(quality, size\) twice",
        ),
        (
            'effective_from = 2026-01-01\nimages = [{ quality = "hd", size = "big", usd = 0.08 }]\n',
            r"\(openai/my-model\): .*`images\[0\].size`",
        ),
        (
            'effective_from = 2026-01-01\nimages = [{ quality = "hd", size = "1024x1024", usd = -1 }]\n',
            r"`images\[hd, 1024x1024\].usd` must be a finite rate >= 0",
        ),
        (
            'effective_from = 2026-01-01\noutput_image = 3\nimages = [{ quality = "hd", size = "1x1", usd = 1 }]\n',
            r"\['output_image'\] need the token rates",
        ),
        (
            "effective_from = 2026-01-01\ninput = -1\noutput = 1\n",
            r"\(openai/my-model\): `input` must be a finite rate >= 0",
        ),
        (
            "effective_from = 2026-01-01\ninput = 1\nouput = 1\n",
            r"\(openai/my-model\): Object contains unknown field `ouput`",
        ),
        ('effective_from = 2026-01-01\ninput = "cheap"\noutput = 1\n', r"\(openai/my-model\): .*`input`"),
        (
            "effective_from = 2026-01-01T00:00:00\ninput = 1\noutput = 1\n",
            r"\(openai/my-model\): .*timezone.* at `effective_from`",
        ),
        (
            "effective_from = 2026-01-01\ninput = 1\noutput = 1\n[[models.tiers]]\nabove = 5\ninput = 2\noutput = 2\n"
            "[[models.tiers]]\nabove = 5\ninput = 3\noutput = 3\n",
            r"\(openai/my-model\): `tiers` must be in strictly increasing order",
        ),
        (
            "effective_from = 2026-01-01\ninput = 0.0000000000001\noutput = 1\n",
            r"`input` has more than 12 decimal places",
        ),
        ("effective_from = 2026-01-01\ninput = 1\noutput = 1\nservice_tiers = { default = 0.5 }\n", "standard tier"),
    ],
)
def test_malformed_price_file_names_the_model_and_field(
    price_file: Callable[[str], PriceCatalogue], entry: str, message: str
) -> None:
    with pytest.raises(PriceFileError, match=message):
        price_file(f'[[models]]\nprovider = "openai"\nmodel = "my-model"\n{entry}')


def test_price_file_refuses_unknown_providers_duplicates_and_bad_toml(
    price_file: Callable[[str], PriceCatalogue],
) -> None:
    with pytest.raises(PriceFileError, match=r"\(gemni/x\): Invalid enum value 'gemni' - at `provider`"):
        price_file('[[models]]\nprovider = "gemni"\nmodel = "x"\neffective_from = 2026-01-01\ninput = 1\noutput = 1\n')
    entry = '[[models]]\nprovider = "openai"\nmodel = "x"\neffective_from = 2026-01-01\ninput = 1\noutput = 1\n'
    with pytest.raises(
        PriceFileError, match=r"models\[1\] \(openai/x\): `effective_from` 2026-01-01 repeats models\[0\]"
    ):
        price_file(entry + entry)
    with pytest.raises(PriceFileError, match="not valid TOML"):
        price_file("[[models]\n")


# --- Properties -----------------------------------------------------------------------------------------------------

bucket_counts = st.integers(min_value=0, max_value=1_500_000)
usages = st.builds(tokens, bucket_counts, bucket_counts, bucket_counts, bucket_counts, bucket_counts)
REFERENCE_MODELS = [
    ("openai", "gpt-4o"),
    ("openai", "gpt-4o-mini"),
    ("anthropic", "claude-sonnet-4-5"),
    ("anthropic", "claude-haiku-4-5"),
    ("gemini", "gemini-2.5-pro"),
    ("gemini", "gemini-2.5-flash"),
]


@given(model=st.sampled_from(REFERENCE_MODELS), usage=usages)
def test_cost_is_exactly_the_sum_of_tokens_times_rates(
    catalogue: PriceCatalogue, model: tuple[str, str], usage: TokenUsage
) -> None:
    priced = catalogue.price(*model, usage, NOW)
    assert priced.rates is not None
    costs = [getattr(priced, f"cost_{bucket}") for bucket in BUCKETS]
    assert all(isinstance(cost, Decimal) for cost in [*costs, priced.total_cost])
    assert priced.total_cost == sum(costs)
    for bucket, cost in zip(BUCKETS, costs, strict=True):
        exact = Fraction(getattr(usage, bucket)) * Fraction(getattr(priced.rates, bucket)) / 1_000_000
        assert Fraction(cost) == exact


@given(model=st.sampled_from(REFERENCE_MODELS), usage=usages, bucket=st.sampled_from(BUCKETS), extra=bucket_counts)
def test_cost_never_decreases_when_a_bucket_grows_within_a_tier(
    catalogue: PriceCatalogue, model: tuple[str, str], usage: TokenUsage, bucket: str, extra: int
) -> None:
    grown = tokens(**{name: getattr(usage, name) + (extra if name == bucket else 0) for name in BUCKETS})
    before = catalogue.price(*model, usage, NOW)
    after = catalogue.price(*model, grown, NOW)
    if before.tier == after.tier:
        assert before.total_cost is not None
        assert after.total_cost is not None
        assert after.total_cost >= before.total_cost


_GENAI_TO_OURS = {"openai": "openai", "anthropic": "anthropic", "google": "gemini"}
_GENAI_SNAPSHOT = DataSnapshot(providers=genai_providers, from_auto_update=False)
_GENAI_MODELS = [
    (provider.id, model.id)
    for provider in genai_providers
    if provider.id in _GENAI_TO_OURS
    for model in provider.models
]


@settings(max_examples=300)
@given(
    model=st.sampled_from(_GENAI_MODELS),
    usage=usages,
    service_tier=st.sampled_from([None, "batch", "flex", "priority"]),
    at=st.datetimes(
        min_value=datetime.datetime(2024, 1, 1),  # noqa: DTZ001
        max_value=datetime.datetime(2027, 1, 1),  # noqa: DTZ001
        timezones=st.just(datetime.UTC),
    ),
)
def test_costs_agree_with_genai_prices_own_calculation(
    catalogue: PriceCatalogue,
    model: tuple[str, str],
    usage: TokenUsage,
    service_tier: str | None,
    at: datetime.datetime,
) -> None:
    """genai-prices' Usage is inclusive: input counts every prompt token, cache writes include the 1-hour ones."""
    genai_provider, model_id = model
    provider = _GENAI_TO_OURS[genai_provider]
    if provider == "openai":
        usage = tokens(usage.input, usage.cache_read, usage.cache_write_5m, 0, usage.output)
    priced = catalogue.price(provider, model_id, usage, at, service_tier=service_tier)
    if priced.status == "unpriced":
        return
    context = (
        None
        if service_tier is None
        else ({"processing": "batch"} if service_tier == "batch" else {"service_tier": service_tier})
    )
    genai_usage = GenaiUsage(
        input_tokens=usage.prompt_total,
        cache_read_tokens=usage.cache_read,
        cache_write_tokens=usage.cache_write_5m + usage.cache_write_1h,
        cache_write_5m_tokens=usage.cache_write_5m,
        cache_write_1h_tokens=usage.cache_write_1h,
        output_tokens=usage.output,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = _GENAI_SNAPSHOT.calc(genai_usage, model_id, genai_provider, None, at, context)
    assert priced.total_cost == expected.total_price


def test_a_service_tier_multiplier_that_would_need_rounding_is_refused(tmp_path: Path) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text(
        '[[models]]\nprovider = "openai"\nmodel = "gpt-4o"\neffective_from = 2026-01-01\n'
        "input = 0.000000000003\noutput = 1\nservice_tiers = { batch = 0.5 }\n"
    )
    with pytest.raises(PriceFileError, match=r"input x service_tiers.batch"):
        PriceCatalogue.load(prices)
