"""The project price file (TOML): negotiated rates, models genai-prices lacks, self-hosted models.

Example::

    [[models]]
    provider = "anthropic"              # "openai" | "anthropic" | "gemini"
    model = "claude-sonnet-4-5"         # also matches dated snapshots, e.g. claude-sonnet-4-5-20250929
    effective_from = 2026-01-01         # a date (00:00 UTC) or a datetime with a UTC offset
    input = 2.70                        # USD per 1M tokens; TOML floats are read as exact decimals
    cache_read = 0.27                   # optional, defaults to input
    cache_write_5m = 3.375              # optional, defaults to input
    cache_write_1h = 5.40               # optional, defaults to cache_write_5m
    output = 13.50
    output_image = 40.00                # optional: generated image tokens (images API), defaults to output
    service_tiers = { batch = 0.5 }     # optional: multipliers of every rate for that service tier

    [[models.tiers]]                    # optional cliffs: above this prompt total, every token at these rates
    above = 200000
    input = 5.40
    output = 20.25

A bucket without its own rate is billed like its parent bucket, as genai-prices does: cache reads and writes
as plain input, 1-hour writes as default writes, image output as output.

Models billed per image rather than per token (dall-e-2, dall-e-3) list a price per generated image by quality and
size; such an entry needs no token rates (give ``input`` and ``output`` both or neither)::

    [[models]]
    provider = "openai"
    model = "dall-e-3"
    effective_from = 2023-11-06
    images = [                          # USD per image; a size or quality not listed is unpriced
        { quality = "standard", size = "1024x1024", usd = 0.04 },
        { quality = "hd", size = "1024x1792", usd = 0.12 },
    ]

The service bundles ``bundled_prices.toml`` (next to this module: the per-image models) under ``PRICE_FILE``: an
entry of ``PRICE_FILE`` replaces every bundled entry of its model. Files are read once at start-up; nothing here is
on the hot path.
"""

from __future__ import annotations

import datetime
import tomllib
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import msgspec

__all__ = [
    "MAX_RATE_DECIMALS",
    "PriceFileError",
    "PriceFileImage",
    "PriceFileModel",
    "PriceFileTier",
    "load_price_file",
]

MAX_RATE_DECIMALS = 12
"""Costs are tokens x rate / 10**6 and are stored in NUMERIC(38, 18): a finer rate could not be stored exactly."""

STANDARD_SERVICE_TIERS = frozenset({"default", "standard", "auto"})
"""Names providers give their ordinary tier; they select the standard rates, never a multiplier."""


class PriceFileError(ValueError):
    """The price file is unreadable or names an impossible price; the message names the model and field."""


def _check_rate(field: str, value: Decimal | None) -> None:
    if value is None:
        return
    if not value.is_finite() or value < 0:
        raise ValueError(f"`{field}` must be a finite rate >= 0, got {value}")
    exponent = value.normalize().as_tuple().exponent
    if isinstance(exponent, int) and exponent < -MAX_RATE_DECIMALS:
        raise ValueError(f"`{field}` has more than {MAX_RATE_DECIMALS} decimal places: {value}")


_RATE_FIELDS: Final = ("input", "output", "cache_read", "cache_write_5m", "cache_write_1h", "output_image")


class PriceFileTier(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    above: Annotated[int, msgspec.Meta(ge=0)]
    """The tier applies when the prompt total (input + cache reads + cache writes) exceeds this."""
    input: Decimal
    output: Decimal
    cache_read: Decimal | None = None
    cache_write_5m: Decimal | None = None
    cache_write_1h: Decimal | None = None
    output_image: Decimal | None = None

    def __post_init__(self) -> None:
        for field in _RATE_FIELDS:
            _check_rate(f"tiers.above={self.above}.{field}", getattr(self, field))


class PriceFileImage(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The price of one generated image of a per-image model, at one quality and size."""

    quality: Annotated[str, msgspec.Meta(min_length=1, max_length=40)]
    """As the images API takes it (``standard``, ``hd``), compared case-insensitively."""
    size: Annotated[str, msgspec.Meta(pattern=r"^[1-9][0-9]{0,4}x[1-9][0-9]{0,4}$")]
    """``WIDTHxHEIGHT`` in pixels, as the images API takes it (``1024x1792``)."""
    usd: Decimal
    """USD per image."""

    def __post_init__(self) -> None:
        _check_rate(f"images[{self.quality}, {self.size}].usd", self.usd)


class PriceFileModel(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    provider: Literal["openai", "anthropic", "gemini"]
    model: Annotated[str, msgspec.Meta(min_length=1)]
    effective_from: Annotated[datetime.datetime, msgspec.Meta(tz=True)]
    input: Decimal | None = None
    output: Decimal | None = None
    cache_read: Decimal | None = None
    cache_write_5m: Decimal | None = None
    cache_write_1h: Decimal | None = None
    output_image: Decimal | None = None
    tiers: tuple[PriceFileTier, ...] = ()
    service_tiers: dict[str, Decimal] = {}
    images: tuple[PriceFileImage, ...] = ()
    """Per-image prices, for models billed per image (by quality and size) rather than per token."""

    def __post_init__(self) -> None:
        for field in _RATE_FIELDS:
            _check_rate(field, getattr(self, field))
        if (self.input is None) != (self.output is None):
            raise ValueError("`input` and `output` go together: give both token rates, or neither")
        if self.input is None:
            if not self.images:
                raise ValueError("an entry needs token rates (`input` and `output`) or per-image prices (`images`)")
            token_fields = ("cache_read", "cache_write_5m", "cache_write_1h", "output_image", "tiers", "service_tiers")
            stray = [field for field in token_fields if getattr(self, field)]
            if stray:
                raise ValueError(f"{stray} need the token rates `input` and `output`")
        variants = [(image.quality.lower(), image.size) for image in self.images]
        if len(variants) != len(set(variants)):
            raise ValueError(f"`images` names a (quality, size) twice: {variants}")
        thresholds = [tier.above for tier in self.tiers]
        if thresholds != sorted(set(thresholds)):
            raise ValueError(f"`tiers` must be in strictly increasing order of `above`, got {thresholds}")
        rates = [(field, getattr(self, field)) for field in _RATE_FIELDS]
        rates += [(f"tiers.above={t.above}.{field}", getattr(t, field)) for t in self.tiers for field in _RATE_FIELDS]
        for name, multiplier in self.service_tiers.items():
            if name.lower() in STANDARD_SERVICE_TIERS:
                raise ValueError(f"`service_tiers.{name}` is the standard tier; its rates are the entry's own")
            _check_rate(f"service_tiers.{name}", multiplier)
            # The scaled rates must be exact at the stored precision too, or a cost would be rounded when stored.
            for field, rate in rates:
                if rate is not None:
                    _check_rate(f"{field} x service_tiers.{name}", rate * multiplier)

    @property
    def token_rates(self) -> bool:
        """Whether the entry prices tokens (``input`` and ``output``); else it prices images only."""
        return self.input is not None

    @property
    def effective_label(self) -> str:
        """How the effective date is shown in a price source: the plain date when it starts at midnight UTC."""
        start = self.effective_from.astimezone(datetime.UTC)
        if start.time() == datetime.time(0):
            return start.date().isoformat()
        return self.effective_from.isoformat()


class _PriceFile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    models: tuple[dict[str, Any], ...] = ()


def _as_utc_datetime(value: object) -> object:
    """TOML has separate date and datetime types; a bare date means that day from 00:00 UTC."""
    if isinstance(value, datetime.date) and not isinstance(value, datetime.datetime):
        return datetime.datetime.combine(value, datetime.time(0), tzinfo=datetime.UTC)
    return value


def _parse_model(path: Path, index: int, raw: Mapping[str, Any]) -> PriceFileModel:
    label = f"{raw.get('provider', '?')}/{raw.get('model', '?')}"
    data = dict(raw)
    if "effective_from" in data:
        data["effective_from"] = _as_utc_datetime(data["effective_from"])
    if isinstance(data.get("service_tiers"), Mapping):
        data["service_tiers"] = {str(key).lower(): value for key, value in data["service_tiers"].items()}
    try:
        return msgspec.convert(data, PriceFileModel)
    except msgspec.ValidationError as exc:
        message = str(exc).replace("$.", "")
        raise PriceFileError(f"{path}: models[{index}] ({label}): {message}") from exc


def load_price_file(path: Path) -> tuple[PriceFileModel, ...]:
    """Read and validate every entry, refusing the whole file on the first mistake.

    A half-loaded price file would price some calls at stale rates without anyone noticing.
    """
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"), parse_float=Decimal)
    except OSError as exc:
        raise PriceFileError(f"{path}: cannot read the price file: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise PriceFileError(f"{path}: not valid TOML: {exc}") from exc
    try:
        price_file = msgspec.convert(document, _PriceFile)
    except msgspec.ValidationError as exc:
        raise PriceFileError(f"{path}: {exc}; expected `[[models]]` tables") from exc

    entries = tuple(_parse_model(path, index, raw) for index, raw in enumerate(price_file.models))
    seen: dict[tuple[str, str, datetime.datetime], int] = {}
    for index, entry in enumerate(entries):
        key = (entry.provider, entry.model.lower(), entry.effective_from)
        if key in seen:
            raise PriceFileError(
                f"{path}: models[{index}] ({entry.provider}/{entry.model}): `effective_from` "
                f"{entry.effective_label} repeats models[{seen[key]}]"
            )
        seen[key] = index
    return entries
