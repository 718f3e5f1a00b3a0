"""Secrets and content stay out of logs: database passwords are redacted, SDK debug logs stay quiet."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import pytest

from schemas.chat import Email, SummarizeEmailInput
from server.cli import QUIET_LOGGERS, configure_logging
from server.database import redact
from server.services import build_services
from server.settings import Settings
from server.simulator import RunningSimulator
from server.users import create_user
from tests.conftest import app_database, simulator_env


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://app:hunter2@db:5432/app", "postgresql://app:***@db:5432/app"),
        (
            "postgresql://app@db/app?password=hunter2&sslmode=require",
            "postgresql://app@db/app?password=***&sslmode=require",
        ),
        ("postgresql://app@db/app", "postgresql://app@db/app"),
    ],
)
def test_database_urls_are_logged_without_their_password(url: str, shown: str) -> None:
    assert redact(url) == shown


async def test_debug_logging_never_prints_the_email_sent_to_a_provider(
    sim: RunningSimulator, db: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    configure_logging("DEBUG")
    assert all(logging.getLogger(name).level == logging.WARNING for name in QUIET_LOGGERS)
    settings = Settings.from_env(simulator_env(sim, DATA_DIR=str(tmp_path), LOG_LEVEL="DEBUG"))
    services = build_services(settings, app_database())
    user = await create_user("logger")
    secret = f"merger-{uuid.uuid4()}"
    with caplog.at_level(logging.DEBUG):
        await services.chat.summarize_email(
            user.id, SummarizeEmailInput(email=Email(body=f"The {secret} closes Friday."), model="claude-haiku-4-5")
        )
        await services.chat.summarize_email(
            user.id, SummarizeEmailInput(email=Email(body=f"The {secret} closes Friday."), model="gpt-4o")
        )
        logging.getLogger("tollbooth.test.probe").debug("probe %s", "captured")
    assert "probe captured" in caplog.text, "debug records must be captured, or this test proves nothing"
    assert secret not in caplog.text
