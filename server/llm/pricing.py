"""Exact Decimal cost of a call's canonical token buckets, at the price in force when the call was made.

Rates come from genai-prices' bundled data (never fetched) and from the project price file, which wins from
each entry's ``effective_from``. Rates are resolved into one small plan per (provider, model) and reused, so
that pricing a call costs a dictionary lookup and five multiplications (six with image tokens). Every result carries
the rates it used and where they came from, so a stored cost can always be re-derived.

Generated image tokens are priced at the image-output rate (genai-prices' ``output_image_mtok``, else its output
rate, which for an image model without a separate image rate is its image rate). Models billed per image (dall-e)
are priced by ``PriceCatalogue.price_image`` from the per-image prices of the price files, by quality and size.
"""

from __future__ import annotations

import datetime
import functools
import logging
import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from decimal import Context, Decimal, DivisionByZero, Inexact, InvalidOperation, Overflow
from pathlib import Path
from typing import Final, Literal

import msgspec
from genai_prices import __version__ as genai_prices_version
from genai_prices.data import providers as genai_providers
from genai_prices.data_snapshot import DataSnapshot
from genai_prices.types import (
    ModelInfo,
    ModelPrice,
    PriceContext,
    Provider,
    StartDateConstraint,
    TieredPrices,
    TimeOfDateConstraint,
)

from server.llm._price_file import STANDARD_SERVICE_TIERS, PriceFileError, PriceFileModel, load_price_file
from server.llm.usage import TokenUsage
from server.money import tidy

__all__ = ["FREE", "BucketRates", "PriceCatalogue", "PriceFileError", "PricedUsage", "PricingStatus"]

PricingStatus = Literal["priced", "unpriced"]

logger = logging.getLogger("tollbooth.pricing")

_EXACT = Context(prec=38, traps=[Inexact, InvalidOperation, Overflow, DivisionByZero])
"""Every cost is exact: should a product ever need more than 38 digits this raises rather than rounds."""

_PER_MILLION_EXPONENT = -6
_MAX_CACHED_MODELS = 1024
"""Model names come from provider responses; bounding the cache keeps a misbehaving upstream from growing it."""

BUNDLED_PRICE_FILE: Final = Path(__file__).with_name("bundled_prices.toml")
"""The project's own prices (per-image models), read under ``PRICE_FILE``."""

_GENAI_PROVIDER_IDS = {"openai": "openai", "anthropic": "anthropic", "gemini": "google"}
_SNAPSHOT_SUFFIX = re.compile(r"^(?P<base>.+?)(?:-\d{4}-\d{2}-\d{2}|-\d{8})$")


class BucketRates(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """USD per 1,000,000 tokens for each canonical bucket, as applied to one call."""

    input: Decimal
    cache_read: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    output: Decimal
    output_image: Decimal | None = None
    """Generated image tokens. Every plan sets it; None only in a record spooled before image pricing existed
    (a call without image tokens)."""

    def scaled(self, multiplier: Decimal) -> BucketRates:
        """These rates under a service-tier multiplier (batch at 0.5...), still exact."""
        mul = _EXACT.multiply
        return BucketRates(
            input=tidy(mul(self.input, multiplier)),
            cache_read=tidy(mul(self.cache_read, multiplier)),
            cache_write_5m=tidy(mul(self.cache_write_5m, multiplier)),
            cache_write_1h=tidy(mul(self.cache_write_1h, multiplier)),
            output=tidy(mul(self.output, multiplier)),
            output_image=None if self.output_image is None else tidy(mul(self.output_image, multiplier)),
        )


class PricedUsage(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The cost of one call, or the explicit absence of one (``unpriced``: every cost None, never zero)."""

    status: PricingStatus
    rates: BucketRates | None = None
    cost_input: Decimal | None = None
    cost_cache_read: Decimal | None = None
    cost_cache_write_5m: Decimal | None = None
    cost_cache_write_1h: Decimal | None = None
    cost_output: Decimal | None = None
    total_cost: Decimal | None = None
    source: str | None = None
    """Where the rates came from: ``genai-prices 0.2.3 openai/gpt-4o``, ``prices.toml:gpt-4o from 2026-01-01``, or
    for a per-image price ``bundled_prices.toml:dall-e-3 from 2023-11-06 per image (hd, 1024x1792)``."""
    tier: str | None = None
    """The prompt-size tier applied (``prompt<=200000``, ``prompt>200000``); None for a model without tiers."""
    cost_output_image: Decimal | None = None
    """Generated image tokens' cost; a per-image call's whole cost (``rates`` None, ``source`` says per image)."""


UNPRICED = PricedUsage(status="unpriced")
FREE = PricedUsage(
    status="priced",
    cost_input=Decimal(0),
    cost_cache_read=Decimal(0),
    cost_cache_write_5m=Decimal(0),
    cost_cache_write_1h=Decimal(0),
    cost_output=Decimal(0),
    total_cost=Decimal(0),
    source="no tokens",
    cost_output_image=Decimal(0),
)
"""A call that consumed no tokens (refused by the provider): it cost nothing, whatever the model's price."""


_ZERO: Final = Decimal(0)


def _cost(rate: Decimal, tokens: int) -> Decimal:
    return tidy(_EXACT.multiply(rate, tokens).scaleb(_PER_MILLION_EXPONENT, _EXACT))


class _RatePlan:
    """The rates of one model as of one period: cliff tiers by prompt total, and their provenance."""

    __slots__ = ("labels", "rates", "source", "thresholds")

    def __init__(self, thresholds: tuple[int, ...], rates: tuple[BucketRates, ...], source: str) -> None:
        self.thresholds = thresholds
        self.rates = rates
        self.source = source
        if thresholds:
            self.labels: tuple[str | None, ...] = (
                f"prompt<={thresholds[0]}",
                *(f"prompt>{threshold}" for threshold in thresholds),
            )
        else:
            self.labels = (None,)

    def with_source(self, source: str) -> _RatePlan:
        return _RatePlan(self.thresholds, self.rates, source)

    def scaled(self, multiplier: Decimal, source: str) -> _RatePlan:
        return _RatePlan(self.thresholds, tuple(rates.scaled(multiplier) for rates in self.rates), source)

    def price(self, usage: TokenUsage) -> PricedUsage:
        # Cliff: the tier is the count of thresholds strictly below the prompt total, and applies to every token.
        tier = bisect_left(self.thresholds, usage.prompt_total)
        rates = self.rates[tier]
        cost_input = _cost(rates.input, usage.input)
        cost_cache_read = _cost(rates.cache_read, usage.cache_read)
        cost_write_5m = _cost(rates.cache_write_5m, usage.cache_write_5m)
        cost_write_1h = _cost(rates.cache_write_1h, usage.cache_write_1h)
        cost_output = _cost(rates.output, usage.output)
        add = _EXACT.add
        total = add(add(add(add(cost_input, cost_cache_read), cost_write_5m), cost_write_1h), cost_output)
        cost_output_image = _ZERO
        if usage.output_image:  # chat calls have none: their hot path skips the sixth product
            assert rates.output_image is not None  # every plan sets it
            cost_output_image = _cost(rates.output_image, usage.output_image)
            total = add(total, cost_output_image)
        return PricedUsage(
            status="priced",
            rates=rates,
            cost_input=cost_input,
            cost_cache_read=cost_cache_read,
            cost_cache_write_5m=cost_write_5m,
            cost_cache_write_1h=cost_write_1h,
            cost_output=cost_output,
            total_cost=tidy(total),
            source=self.source,
            tier=self.labels[tier],
            cost_output_image=cost_output_image,
        )


def _first(*candidates: Decimal | TieredPrices | None, default: Decimal | TieredPrices) -> Decimal | TieredPrices:
    return next((rate for rate in candidates if rate is not None), default)


def _rate_above(price: Decimal | TieredPrices, prompt_total: int) -> Decimal:
    """genai-prices' own rule: the highest tier whose start the prompt total strictly exceeds."""
    if isinstance(price, Decimal):
        return tidy(price)
    applicable = price.base
    for tier in price.tiers:
        if prompt_total > tier.start:
            applicable = tier.price
    return tidy(applicable)


def _plan_from_genai(model_price: ModelPrice, source: str) -> _RatePlan | None:
    """Map genai-prices' price keys onto our buckets, tier by tier.

    genai-prices bills a usage unit without a price of its own at its parent's price (its usage counts are
    inclusive: a cache write is also an input token). The same fallback here keeps our totals equal to its
    calculation: cache reads and writes without a rate cost plain input, 1-hour writes without a rate cost a
    default write. A model without an input or output rate is not priceable by tokens, so it stays unpriced.
    """
    prices = model_price.__dict__
    input_rate = prices.get("input_mtok")
    output_rate = prices.get("output_mtok")
    if input_rate is None or output_rate is None:
        return None
    generic_write = prices.get("cache_write_mtok")
    buckets: tuple[Decimal | TieredPrices, ...] = (
        input_rate,
        _first(prices.get("cache_read_mtok"), default=input_rate),
        _first(prices.get("cache_write_5m_mtok"), generic_write, default=input_rate),
        _first(prices.get("cache_write_1h_mtok"), generic_write, default=input_rate),
        output_rate,
        _first(prices.get("output_image_mtok"), default=output_rate),
    )
    thresholds = tuple(
        sorted({tier.start for price in buckets if isinstance(price, TieredPrices) for tier in price.tiers})
    )
    probes = (0, *(threshold + 1 for threshold in thresholds))
    rates = tuple(
        BucketRates(
            input=_rate_above(buckets[0], probe),
            cache_read=_rate_above(buckets[1], probe),
            cache_write_5m=_rate_above(buckets[2], probe),
            cache_write_1h=_rate_above(buckets[3], probe),
            output=_rate_above(buckets[4], probe),
            output_image=_rate_above(buckets[5], probe),
        )
        for probe in probes
    )
    return _RatePlan(thresholds, rates, source)


def _plan_from_file(entry: PriceFileModel, source: str) -> _RatePlan | None:
    def rates(
        input_rate: Decimal,
        output: Decimal,
        cache_read: Decimal | None,
        write_5m: Decimal | None,
        write_1h: Decimal | None,
        output_image: Decimal | None,
    ) -> BucketRates:
        write_5m = input_rate if write_5m is None else write_5m
        return BucketRates(
            input=tidy(input_rate),
            cache_read=tidy(input_rate if cache_read is None else cache_read),
            cache_write_5m=tidy(write_5m),
            cache_write_1h=tidy(write_5m if write_1h is None else write_1h),
            output=tidy(output),
            output_image=tidy(output if output_image is None else output_image),
        )

    if entry.input is None or entry.output is None:  # priced per image only
        return None
    base = rates(
        entry.input, entry.output, entry.cache_read, entry.cache_write_5m, entry.cache_write_1h, entry.output_image
    )
    tiers = tuple(
        rates(tier.input, tier.output, tier.cache_read, tier.cache_write_5m, tier.cache_write_1h, tier.output_image)
        for tier in entry.tiers
    )
    return _RatePlan(tuple(tier.above for tier in entry.tiers), (base, *tiers), source)


def _no_rates_note(source: str, service_tier: str) -> str:
    return f"{source} ({service_tier}: no rates, standard applied)"


class _FileEntry:
    """One price-file entry: its standard plan and a plan per service tier it prices or was asked for (None for an
    entry that prices images only), and its per-image prices by (quality, size)."""

    __slots__ = ("_plans", "_source", "_standard", "images", "starts")

    def __init__(self, entry: PriceFileModel, file_name: str) -> None:
        self.starts = entry.effective_from
        self._source = source = f"{file_name}:{entry.model} from {entry.effective_label}"
        self._standard = standard = _plan_from_file(entry, source)
        self._plans: dict[str, _RatePlan | None] = {
            name: standard.scaled(multiplier, f"{source} {name} x{multiplier}")
            for name, multiplier in entry.service_tiers.items()
            if standard is not None
        }
        self.images = {(image.quality.lower(), image.size): tidy(image.usd) for image in entry.images}

    def plan(self, service_tier: str | None) -> _RatePlan | None:
        if service_tier is None or self._standard is None:
            return self._standard
        plan = self._plans.get(service_tier)
        if plan is None:
            plan = self._standard.with_source(_no_rates_note(self._standard.source, service_tier))
            self._plans[service_tier] = plan
        return plan

    def price_image(self, quality: str, size: str, images: int) -> PricedUsage | None:
        """``images`` images at this entry's per-image price for (quality, size); None when it lists none."""
        usd = self.images.get((quality.lower(), size))
        if usd is None:
            return None
        cost = tidy(_EXACT.multiply(usd, images))
        return PricedUsage(
            status="priced",
            cost_input=_ZERO,
            cost_cache_read=_ZERO,
            cost_cache_write_5m=_ZERO,
            cost_cache_write_1h=_ZERO,
            cost_output=_ZERO,
            cost_output_image=cost,
            total_cost=cost,
            source=f"{self._source} per image ({quality.lower()}, {size})",
        )


def _genai_context(provider_id: str, service_tier: str) -> PriceContext:
    """genai-prices keys request variants by what the provider's response reports."""
    if service_tier == "batch":
        return {"processing": "batch"}
    if provider_id == "anthropic" and service_tier == "fast":
        return {"speed": "fast"}
    return {"service_tier": service_tier}


class _GenaiModel:
    """One genai-prices model, its plans cached per price period (between start dates) and service tier."""

    __slots__ = ("_breakpoints", "_cacheable", "_model", "_own_model", "_plans", "_provider")

    def __init__(self, provider: Provider, model: ModelInfo) -> None:
        self._provider = provider
        self._model = model
        conditions: list[StartDateConstraint | TimeOfDateConstraint | None] = []
        if not isinstance(model.prices, ModelPrice):
            conditions.extend(price.constraint for price in model.prices)
        # Variants (service tiers) belong to the provider's own models, not to models found through a fallback.
        self._own_model = any(model is own for own in provider.models)
        if self._own_model:
            conditions.extend(variant.constraint for variant in model.price_variants or ())
        self._breakpoints = tuple(sorted({c.start_date for c in conditions if isinstance(c, StartDateConstraint)}))
        # Time-of-day prices (off-peak) cannot be keyed by date; such models are resolved on every call.
        self._cacheable = not any(isinstance(c, TimeOfDateConstraint) for c in conditions)
        self._plans: dict[tuple[int, str | None], _RatePlan | None] = {}

    def plan(self, at: datetime.datetime, service_tier: str | None) -> _RatePlan | None:
        period = bisect_right(self._breakpoints, at.astimezone(datetime.UTC).date())
        key = (period, service_tier)
        try:
            return self._plans[key]
        except KeyError:
            plan = self._build(at, service_tier)
            if self._cacheable:
                self._plans[key] = plan
            return plan

    def _build(self, at: datetime.datetime, service_tier: str | None) -> _RatePlan | None:
        source = f"genai-prices {genai_prices_version} {self._provider.id}/{self._model.id}"
        context: PriceContext | None = None
        if service_tier is not None:
            context = _genai_context(self._provider.id, service_tier)
            if self._variant_applies(context, at):
                source = f"{source} {service_tier}"
            else:
                context = None
                source = _no_rates_note(source, service_tier)
        return _plan_from_genai(self._model.get_prices(at, context), source)

    def _variant_applies(self, context: PriceContext, at: datetime.datetime) -> bool:
        """Whether genai-prices holds rates for this tier at this time; it silently falls back otherwise."""
        if not self._own_model:
            return False
        return any(
            (variant.constraint is None or variant.constraint.active(at))
            and all(context.get(key) == value for key, value in variant.when.items())
            for variant in self._model.price_variants or ()
        )


class _Resolution:
    """Everything that can price one (provider, model): price-file entries first, from their start, then genai."""

    __slots__ = ("_entries", "_genai", "_starts")

    def __init__(self, entries: Iterable[_FileEntry], genai: _GenaiModel | None) -> None:
        self._entries = tuple(sorted(entries, key=lambda entry: entry.starts))
        self._starts = tuple(entry.starts for entry in self._entries)
        self._genai = genai

    def plan(self, at: datetime.datetime, service_tier: str | None) -> _RatePlan | None:
        in_force = bisect_right(self._starts, at)
        if in_force:
            return self._entries[in_force - 1].plan(service_tier)
        if self._genai is not None:
            return self._genai.plan(at, service_tier)
        return None

    def file_entry(self, at: datetime.datetime) -> _FileEntry | None:
        """The price-file entry in force at ``at``, if any."""
        in_force = bisect_right(self._starts, at)
        return self._entries[in_force - 1] if in_force else None


class PriceCatalogue:
    """Prices of every known model; build once at start-up with :meth:`load` and share."""

    __slots__ = ("_file_entries", "_resolutions", "_snapshot", "_warned_unpriced")

    def __init__(
        self, file_entries: Iterable[PriceFileModel] = (), *, file_name: str = "prices.toml", bundled: bool = True
    ) -> None:
        """``file_entries`` (from ``file_name``) over the bundled project prices (``bundled``: the per-image
        models), over genai-prices: an entry of ``file_entries`` replaces every bundled entry of its model."""
        self._snapshot = DataSnapshot(providers=genai_providers, from_auto_update=False)
        self._file_entries: dict[tuple[str, str], list[_FileEntry]] = {}
        for entry in file_entries:
            key = (entry.provider, _model_key(entry.provider, entry.model))
            self._file_entries.setdefault(key, []).append(_FileEntry(entry, file_name))
        if bundled:
            overridden = set(self._file_entries)
            for entry in _bundled_entries():
                key = (entry.provider, _model_key(entry.provider, entry.model))
                if key not in overridden:
                    self._file_entries.setdefault(key, []).append(_FileEntry(entry, BUNDLED_PRICE_FILE.name))
        self._resolutions: dict[tuple[str, str], _Resolution] = {}
        self._warned_unpriced: set[tuple[str, str]] = set()

    @classmethod
    def load(cls, price_file: Path | None) -> PriceCatalogue:
        """The bundled genai-prices data and project prices, overridden by ``price_file`` when given.

        The bundled snapshot is used even if some other library started genai-prices' background updater, so
        that a price never depends on a download.
        """
        if price_file is None:
            return cls()
        return cls(load_price_file(price_file), file_name=price_file.name)

    def price(
        self,
        provider: str,
        model: str,
        usage: TokenUsage,
        at: datetime.datetime,
        *,
        service_tier: str | None = None,
    ) -> PricedUsage:
        """Cost ``usage`` at the rates in force at ``at`` for the model the provider reported.

        ``service_tier`` is what the provider's response reports (``batch``, ``flex``, ``priority``...); a
        tier the price data has no rates for is priced at standard rates and says so in ``source``. A model without
        a price in force is ``UNPRICED``, never free, and warned about once (``warn_unpriced``).
        """
        if at.tzinfo is None:
            raise ValueError("`at` must be timezone-aware; a naive time would pick prices by the server's zone")
        if service_tier is not None:
            service_tier = service_tier.lower()
            if service_tier in STANDARD_SERVICE_TIERS:
                service_tier = None
        plan = self._resolution(provider, model).plan(at, service_tier)
        if plan is None:
            self.warn_unpriced(provider, model)
            return UNPRICED
        return plan.price(usage)

    def price_image(
        self,
        provider: str,
        model: str,
        usage: TokenUsage,
        at: datetime.datetime,
        *,
        quality: str,
        size: str,
        images: int = 1,
    ) -> PricedUsage:
        """Cost an images-API call: per image when a price file prices ``model`` per image at ``at`` (by
        ``quality`` and ``size``; a quality or size it does not list is ``UNPRICED``), else by its tokens
        (``price``: text in, text and image out, image tokens at the image-output rate)."""
        if at.tzinfo is None:
            raise ValueError("`at` must be timezone-aware; a naive time would pick prices by the server's zone")
        entry = self._resolution(provider, model).file_entry(at)
        if entry is not None and entry.images:
            priced = entry.price_image(quality, size, images)
            if priced is None:
                self.warn_unpriced(provider, f"{model} ({quality}, {size})")
                return UNPRICED
            return priced
        return self.price(provider, model, usage, at)

    def is_priced(self, provider: str, model: str, at: datetime.datetime) -> bool:
        """Whether a call to ``model`` at ``at`` would be priced (at standard rates); it warns of nothing."""
        if at.tzinfo is None:
            raise ValueError("`at` must be timezone-aware; a naive time would pick prices by the server's zone")
        return self._resolution(provider, model).plan(at, None) is not None

    def warn_unpriced(self, provider: str, model: str, *, setting: str | None = None) -> None:
        """Log, once per model in this catalogue (one per process), that ``model``'s calls are recorded unpriced.

        ``setting`` names the variable that chose the model (``DEFAULT_MODEL``), for a warning given at start-up.
        Past ``_MAX_CACHED_MODELS`` models (names come from provider responses) each call warns again.
        """
        key = (provider, model)
        if key in self._warned_unpriced:
            return
        if len(self._warned_unpriced) < _MAX_CACHED_MODELS:
            self._warned_unpriced.add(key)
        logger.warning(
            "%sno known price for %s model %r: its calls are recorded unpriced (a null cost, counted in "
            "unpricedCalls; admin.unpricedCalls lists them); give it rates in PRICE_FILE",
            f"{setting}: " if setting else "",
            provider,
            model,
        )

    def _resolution(self, provider: str, model: str) -> _Resolution:
        resolution = self._resolutions.get((provider, model))
        return self._resolve(provider, model) if resolution is None else resolution

    def _resolve(self, provider: str, model: str) -> _Resolution:
        key = _model_key(provider, model)
        entries = self._file_entries.get((provider, key))
        if entries is None and (snapshot := _SNAPSHOT_SUFFIX.match(key)) is not None:
            entries = self._file_entries.get((provider, snapshot["base"]))
        resolution = _Resolution(entries or (), self._find_genai(provider, key))
        if len(self._resolutions) < _MAX_CACHED_MODELS:
            self._resolutions[(provider, model)] = resolution
        return resolution

    def _find_genai(self, provider: str, model_key: str) -> _GenaiModel | None:
        provider_id = _GENAI_PROVIDER_IDS.get(provider)
        if provider_id is None:
            return None
        try:
            genai_provider, genai_model = self._snapshot.find_provider_model(model_key, None, provider_id, None)
        except LookupError:
            return None
        return _GenaiModel(genai_provider, genai_model)


@functools.cache
def _bundled_entries() -> tuple[PriceFileModel, ...]:
    return load_price_file(BUNDLED_PRICE_FILE)


def _model_key(provider: str, model: str) -> str:
    """Model names compare case-insensitively; Gemini's native API may prefix them with ``models/``."""
    key = model.strip().lower()
    if provider == "gemini":
        key = key.removeprefix("models/")
    return key
