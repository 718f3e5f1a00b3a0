from __future__ import annotations

from pathlib import Path

import pytest

from server.settings import DEFAULT_GEMINI_BASE_URL, Settings, SettingsError


def test_defaults_when_the_environment_is_empty() -> None:
    settings = Settings.from_env({})
    assert settings.database_url is None
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.data_dir == Path(".data")
    assert settings.enable_usage_logging is True
    assert settings.gemini.base_url == DEFAULT_GEMINI_BASE_URL
    assert settings.offline is True


def test_values_are_read_and_converted() -> None:
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgresql://u:secret@db:5432/app",
            "PORT": "9001",
            "ENABLE_USAGE_LOGGING": "false",
            "LOG_LEVEL": "debug",
            "OPENAI_API_KEY": "sk-live",
            "OPENAI_BASE_URL": "http://127.0.0.1:1/v1",
            "CORS_ORIGINS": "https://a.example, https://b.example",
        }
    )
    assert settings.port == 9001
    assert settings.enable_usage_logging is False
    assert settings.log_level == "DEBUG"
    assert settings.openai.api_key == "sk-live"
    assert settings.offline is False
    assert settings.cors_origins == ("https://a.example", "https://b.example")


def test_secrets_are_not_in_the_repr() -> None:
    settings = Settings.from_env({"DATABASE_URL": "postgresql://u:hunter2@db/app", "OPENAI_API_KEY": "sk-hunter3"})
    assert "hunter2" not in repr(settings)
    assert "hunter3" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PORT": "eighty"}, "PORT must be a whole number"),
        ({"PORT": "70000"}, "PORT must be between 1 and 65535"),
        ({"ENABLE_USAGE_LOGGING": "maybe"}, "ENABLE_USAGE_LOGGING must be true or false"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL must be one of"),
        ({"DATABASE_URL": "mysql://x"}, "DATABASE_URL must be a PostgreSQL URL"),
        ({"OPENAI_BASE_URL": "api.openai.com"}, "OPENAI_BASE_URL must be an http:// or https:// URL"),
        ({"PRICE_FILE": "/nonexistent/prices.toml"}, "PRICE_FILE names"),
        ({"PROVIDER_TIMEOUT_SECONDS": "0"}, "PROVIDER_TIMEOUT_SECONDS must be between"),
        ({"DATABASE_POOL_SIZE": "1"}, "DATABASE_POOL_SIZE must be between 2 and 1000"),
        ({"DEFAULT_MODEL": "llama3"}, "DEFAULT_MODEL must be a model of a known family: gpt-"),
        ({"PERSONA_IMAGE_MODEL": "gpt-4o"}, "PERSONA_IMAGE_MODEL must be an image model"),
        ({"PERSONA_IMAGE_CONCURRENCY": "0"}, "PERSONA_IMAGE_CONCURRENCY must be between 1 and 64"),
        ({"DEDUP_WINDOW_SECONDS": "-1"}, "DEDUP_WINDOW_SECONDS must be between"),
    ],
)
def test_invalid_values_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


@pytest.mark.parametrize("model", ["gpt-4o", "o3-mini", "claude-haiku-4-5", "gemini-2.5-flash"])
def test_a_default_model_of_each_family_is_accepted(model: str) -> None:
    assert Settings.from_env({"DEFAULT_MODEL": model}).default_model == model


def test_persona_and_de_duplication_settings_have_defaults_and_are_read() -> None:
    defaults = Settings.from_env({})
    assert (defaults.persona_image_model, defaults.persona_image_concurrency, defaults.dedup_window_seconds) == (
        "gpt-image-1.5",
        4,
        300.0,
    )
    env = {"PERSONA_IMAGE_MODEL": "dall-e-3", "PERSONA_IMAGE_CONCURRENCY": "8", "DEDUP_WINDOW_SECONDS": "0"}
    settings = Settings.from_env(env)
    assert (settings.persona_image_model, settings.persona_image_concurrency, settings.dedup_window_seconds) == (
        "dall-e-3",
        8,
        0.0,
    )
