"""Settings, read once from the environment and validated at start-up.

Every error names the variable and what is wrong with it, so a misconfigured deployment fails with one clear line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Final

from server.llm.routing import MODEL_FAMILIES, model_family

DEFAULT_GEMINI_BASE_URL: Final = "https://generativelanguage.googleapis.com/v1beta/openai/"
LOG_LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
IMAGE_MODEL_PREFIXES: Final = ("gpt-image-", "chatgpt-image-", "dall-e-")
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})
S3_ADDRESSING_STYLES: Final = ("auto", "path", "virtual")
_S3_SETTINGS: Final = (
    "S3_ENDPOINT_URL",
    "S3_REGION",
    "S3_ACCESS_KEY_ID",
    "S3_SECRET_ACCESS_KEY",
    "S3_PUBLIC_BASE_URL",
    "S3_URL_TTL_SECONDS",
    "S3_KEY_PREFIX",
    "S3_ADDRESSING_STYLE",
)
_S3_BUCKET: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,253}[A-Za-z0-9]")
_S3_KEY_PREFIX: Final = re.compile(r"[A-Za-z0-9._/-]*")


class SettingsError(ValueError):
    """A variable of the environment has a value the service cannot run with."""


@dataclass(frozen=True, slots=True)
class ProviderSettings:
    """How to reach one provider; ``api_key`` is None when it is not configured."""

    api_key: str | None = field(repr=False)
    base_url: str | None


@dataclass(frozen=True, slots=True)
class S3Settings:
    """The S3-compatible bucket generated media go to (README, "Images and storage").

    ``access_key_id`` and ``secret_access_key`` are both set or both None (None: the AWS default credential chain).
    ``public_base_url`` set: the bucket is public there and an object's URL is that base plus its key; None: URLs are
    presigned GETs valid ``url_ttl_seconds``. Keys are ``key_prefix`` + the content's SHA-256 + an extension.
    """

    bucket: str
    endpoint_url: str | None = None
    region: str | None = None
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    public_base_url: str | None = None
    url_ttl_seconds: int = 3600
    key_prefix: str = "media/"
    addressing_style: str = "auto"


@dataclass(frozen=True, slots=True)
class Settings:
    """The service's configuration; ``from_env`` reads it (README, "Configuration", lists every variable).

    Units are in the names (``provider_timeout_seconds``, ``max_body_bytes``); ``database_url`` None means the
    embedded PostgreSQL under ``data_dir``; a provider whose ``api_key`` is None is not configured, and with none
    configured the service is ``offline`` (the built-in simulator answers). ``alert_webhook_url`` None means alerts
    are kept but not posted; ``alert_spike_factor`` 0 turns spike alerts off. ``metrics_token`` None leaves
    ``/metrics`` open; ``workers`` is how many processes ``python -m server`` runs. ``console_secret`` None means
    the console signs its session cookies with a key made at start-up (sessions then end with the process).
    ``from_env`` raises ``SettingsError`` naming the variable for any value it cannot use. Secrets (and the webhook
    URL, which may hold a token) are left out of ``repr``.
    """

    database_url: str | None = field(repr=False)
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path(".data")
    log_level: str = "INFO"
    enable_usage_logging: bool = True
    openai: ProviderSettings = ProviderSettings(None, None)
    anthropic: ProviderSettings = ProviderSettings(None, None)
    gemini: ProviderSettings = ProviderSettings(None, DEFAULT_GEMINI_BASE_URL)
    default_model: str = "gpt-4o-mini"
    price_file: Path | None = None
    provider_timeout_seconds: float = 60.0
    provider_max_retries: int = 2
    database_pool_size: int = 20
    claim_lease_margin_seconds: float = 30.0
    claim_sweep_interval_seconds: float = 30.0
    idempotency_ttl_seconds: float = 86_400.0
    max_batch_size: int = 16
    max_body_bytes: int = 1_048_576
    cors_origins: tuple[str, ...] = ()
    debug: bool = False
    alert_webhook_url: str | None = field(default=None, repr=False)
    alert_webhook_secret: str | None = field(default=None, repr=False)
    alert_spike_factor: float = 3.0
    # Media storage (generated images): an S3-compatible bucket when S3_BUCKET is set, else files under DATA_DIR/media.
    s3: S3Settings | None = None
    public_base_url: str | None = None
    # Metrics and worker processes (issues 13 and 15).
    metrics_enabled: bool = True
    metrics_token: str | None = field(default=None, repr=False)
    workers: int = 1
    # The admin console (/console).
    console_secret: str | None = field(default=None, repr=False)
    console_session_ttl_seconds: float = 28_800.0
    # personas.generate and request de-duplication
    persona_image_model: str = "gpt-image-1.5"
    persona_image_concurrency: int = 4
    dedup_window_seconds: float = 300.0

    @property
    def offline(self) -> bool:
        """No provider key is configured: the service answers from the built-in simulator."""
        return not (self.openai.api_key or self.anthropic.api_key or self.gemini.api_key)

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "usage-spool"

    @property
    def media_dir(self) -> Path:
        """Where generated media are stored when no bucket is configured (``s3`` None)."""
        return self.data_dir / "media"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        reader = _Reader(env)
        settings = cls(
            database_url=reader.text("DATABASE_URL"),
            host=reader.text("HOST") or "127.0.0.1",
            port=reader.integer("PORT", 8000, low=1, high=65535),
            data_dir=Path(reader.text("DATA_DIR") or ".data"),
            log_level=reader.choice("LOG_LEVEL", "INFO", LOG_LEVELS),
            enable_usage_logging=reader.boolean("ENABLE_USAGE_LOGGING", True),
            openai=ProviderSettings(reader.text("OPENAI_API_KEY"), reader.url("OPENAI_BASE_URL")),
            anthropic=ProviderSettings(reader.text("ANTHROPIC_API_KEY"), reader.url("ANTHROPIC_BASE_URL")),
            gemini=ProviderSettings(
                reader.text("GEMINI_API_KEY"), reader.url("GEMINI_BASE_URL") or DEFAULT_GEMINI_BASE_URL
            ),
            default_model=reader.model("DEFAULT_MODEL", "gpt-4o-mini"),
            price_file=reader.existing_file("PRICE_FILE"),
            provider_timeout_seconds=reader.number("PROVIDER_TIMEOUT_SECONDS", 60.0, low=0.1, high=3600.0),
            provider_max_retries=reader.integer("PROVIDER_MAX_RETRIES", 2, low=0, high=10),
            database_pool_size=reader.integer("DATABASE_POOL_SIZE", 20, low=2, high=1000),
            claim_lease_margin_seconds=reader.number("CLAIM_LEASE_MARGIN_SECONDS", 30.0, low=0.0, high=86_400.0),
            claim_sweep_interval_seconds=reader.number("CLAIM_SWEEP_INTERVAL_SECONDS", 30.0, low=0.05, high=86_400.0),
            idempotency_ttl_seconds=reader.number("IDEMPOTENCY_TTL_SECONDS", 86_400.0, low=1.0, high=31_536_000.0),
            max_batch_size=reader.integer("MAX_BATCH_SIZE", 16, low=1, high=1000),
            max_body_bytes=reader.integer("MAX_BODY_BYTES", 1_048_576, low=1024, high=1 << 30),
            cors_origins=reader.items("CORS_ORIGINS"),
            debug=reader.boolean("DEBUG", False),
            alert_webhook_url=reader.url("ALERT_WEBHOOK_URL", secret=True),
            alert_webhook_secret=reader.text("ALERT_WEBHOOK_SECRET"),
            alert_spike_factor=reader.number("ALERT_SPIKE_FACTOR", 3.0, low=0.0, high=1000.0),
            s3=_s3_settings(reader),
            public_base_url=reader.url("PUBLIC_BASE_URL"),
            # Metrics and worker processes (issues 13 and 15).
            metrics_enabled=reader.boolean("METRICS_ENABLED", True),
            metrics_token=reader.text("METRICS_TOKEN"),
            workers=reader.integer("WORKERS", 1, low=1, high=256),
            # The admin console (/console).
            console_secret=reader.text("CONSOLE_SECRET"),
            console_session_ttl_seconds=reader.number(
                "CONSOLE_SESSION_TTL_SECONDS", 28_800.0, low=1.0, high=31_536_000.0
            ),
            # personas.generate and request de-duplication
            persona_image_model=reader.image_model("PERSONA_IMAGE_MODEL", "gpt-image-1.5"),
            persona_image_concurrency=reader.integer("PERSONA_IMAGE_CONCURRENCY", 4, low=1, high=64),
            dedup_window_seconds=reader.number("DEDUP_WINDOW_SECONDS", 300.0, low=0.0, high=86_400.0),
        )
        if settings.console_secret is not None and len(settings.console_secret) < 32:
            raise SettingsError("CONSOLE_SECRET must be at least 32 characters: it signs the console's session cookies")
        if settings.alert_webhook_url is not None and settings.alert_webhook_secret is None:
            raise SettingsError("ALERT_WEBHOOK_SECRET must be set when ALERT_WEBHOOK_URL is: alerts are signed with it")
        if settings.database_url is not None and not settings.database_url.startswith(("postgres://", "postgresql://")):
            raise SettingsError("DATABASE_URL must be a PostgreSQL URL (postgresql://user@host:port/db)")
        return settings


def _s3_settings(reader: _Reader) -> S3Settings | None:
    bucket = reader.text("S3_BUCKET")
    if bucket is None:
        stray = [name for name in _S3_SETTINGS if reader.text(name) is not None]
        if stray:
            raise SettingsError(f"{stray[0]} is set but S3_BUCKET is not: set S3_BUCKET to store media in S3")
        return None
    if not _S3_BUCKET.fullmatch(bucket):
        raise SettingsError(f"S3_BUCKET must be a bucket name (letters, digits, '.', '-', '_'), got {bucket!r}")
    access_key_id = reader.text("S3_ACCESS_KEY_ID")
    secret_access_key = reader.text("S3_SECRET_ACCESS_KEY")
    if (access_key_id is None) != (secret_access_key is None):
        raise SettingsError(
            "S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY must be set together (or neither: the AWS default chain)"
        )
    prefix = reader.env.get("S3_KEY_PREFIX", "media/").strip()
    segments = prefix.split("/")
    if (
        not _S3_KEY_PREFIX.fullmatch(prefix)
        or prefix.startswith("/")
        or any(s in ("", ".", "..") for s in segments[:-1])
    ):
        raise SettingsError(
            "S3_KEY_PREFIX must be empty or a relative key prefix of letters, digits, '.', '-', '_' and '/' "
            f"(no leading '/', no '..'), got {prefix!r}"
        )
    style = (reader.text("S3_ADDRESSING_STYLE") or "auto").lower()
    if style not in S3_ADDRESSING_STYLES:
        raise SettingsError(f"S3_ADDRESSING_STYLE must be one of {', '.join(S3_ADDRESSING_STYLES)}, got {style!r}")
    return S3Settings(
        bucket=bucket,
        endpoint_url=reader.url("S3_ENDPOINT_URL"),
        region=reader.text("S3_REGION"),
        access_key_id=access_key_id,
        secret_access_key=secret_access_key,
        public_base_url=reader.url("S3_PUBLIC_BASE_URL"),
        url_ttl_seconds=reader.integer("S3_URL_TTL_SECONDS", 3600, low=1, high=604_800),
        key_prefix=prefix,
        addressing_style=style,
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment on first use."""
    return Settings.from_env()


@dataclass(frozen=True, slots=True)
class _Reader:
    env: Mapping[str, str]

    def text(self, name: str) -> str | None:
        value = self.env.get(name, "").strip()
        return value or None

    def integer(self, name: str, default: int, *, low: int, high: int) -> int:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
        if not low <= value <= high:
            raise SettingsError(f"{name} must be between {low} and {high}, got {value}")
        return value

    def number(self, name: str, default: float, *, low: float, high: float) -> float:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise SettingsError(f"{name} must be a number, got {raw!r}") from None
        if not low <= value <= high:
            raise SettingsError(f"{name} must be between {low} and {high}, got {value}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        raw = self.text(name)
        if raw is None:
            return default
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise SettingsError(f"{name} must be true or false, got {raw!r}")

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        raw = self.text(name)
        if raw is None:
            return default
        if raw.upper() not in choices:
            raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
        return raw.upper()

    def url(self, name: str, *, secret: bool = False) -> str | None:
        """An http(s) URL; a ``secret`` one (it may hold a token) is not quoted in the error."""
        raw = self.text(name)
        if raw is not None and not raw.startswith(("http://", "https://")):
            got = "" if secret else f", got {raw!r}"
            raise SettingsError(f"{name} must be an http:// or https:// URL{got}")
        return raw

    def model(self, name: str, default: str) -> str:
        """A model name that routes to a provider: one that does not would fail every call that names no model."""
        raw = self.text(name)
        if raw is None:
            return default
        if model_family(raw) is None:
            raise SettingsError(f"{name} must be a model of a known family: {MODEL_FAMILIES}; got {raw!r}")
        return raw

    def image_model(self, name: str, default: str) -> str:
        """An image model of the OpenAI images API (as ``server.llm.images.image_provider_for_model`` routes)."""
        raw = self.text(name)
        if raw is None:
            return default
        if not raw.lower().startswith(IMAGE_MODEL_PREFIXES):
            raise SettingsError(f"{name} must be an image model ({', '.join(IMAGE_MODEL_PREFIXES)}...); got {raw!r}")
        return raw

    def existing_file(self, name: str) -> Path | None:
        raw = self.text(name)
        if raw is None:
            return None
        path = Path(raw)
        if not path.is_file():
            raise SettingsError(f"{name} names {raw!r}, which is not a readable file")
        return path

    def items(self, name: str) -> tuple[str, ...]:
        raw = self.text(name)
        return tuple(item.strip() for item in raw.split(",") if item.strip()) if raw else ()
