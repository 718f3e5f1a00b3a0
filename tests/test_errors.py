"""Domain errors reach the wire through one table: their tRPC code, their message, a log line when 5xx."""

from __future__ import annotations

import logging
import uuid

import pytest

from schemas.errors import ErrorCode
from schemas.validation import InvalidInput
from server.errors import ConversationNotFoundError, LLMError, LLMFailure, StreamRequestUsedError, TollboothError
from server.rpc.errors import CODES, GENERIC_INTERNAL_MESSAGE, to_trpc_error


@pytest.mark.parametrize("failure", list(LLMFailure))
def test_every_llm_failure_has_a_trpc_code(failure: LLMFailure) -> None:
    error = to_trpc_error(LLMError(failure, "the model said nothing", error_type="Test"))
    assert (error.code, error.message) == (CODES[failure], "the model said nothing")


@pytest.mark.parametrize(
    ("raised", "code"),
    [
        (ConversationNotFoundError(uuid.UUID(int=7)), ErrorCode.NOT_FOUND),
        (StreamRequestUsedError(uuid.UUID(int=7)), ErrorCode.CONFLICT),
        (InvalidInput("limit", "`limit` must be between 1 and 100"), ErrorCode.BAD_REQUEST),
        (LLMError(LLMFailure.NOT_CONFIGURED, "no gemini key", error_type="X"), ErrorCode.PRECONDITION_FAILED),
    ],
)
def test_a_domain_error_becomes_its_code_with_its_message_verbatim(raised: Exception, code: ErrorCode) -> None:
    error = to_trpc_error(raised)
    assert (error.code, error.message, error.__cause__) == (code, str(raised), raised)


def test_a_domain_error_without_a_mapped_class_stays_hidden_behind_the_generic_message() -> None:
    error = to_trpc_error(TollboothError("an internal detail"))
    assert (error.code, error.message) == (ErrorCode.INTERNAL_SERVER_ERROR, GENERIC_INTERNAL_MESSAGE)


def test_a_5xx_domain_error_is_logged_only_when_it_has_a_cause(caplog: pytest.LogCaptureFixture) -> None:
    plain = LLMError(LLMFailure.UPSTREAM_ERROR, "openai failed with HTTP 500", error_type="InternalServerError")
    with_cause = LLMError(LLMFailure.UPSTREAM_ERROR, "openai call failed", error_type="OSError")
    with_cause.__cause__ = OSError("connection reset")
    with caplog.at_level(logging.ERROR, logger="tollbooth.rpc"):
        to_trpc_error(plain, "chat.sendMessage")
        to_trpc_error(with_cause, "chat.sendMessage")
    assert [record.exc_info[1] if record.exc_info else None for record in caplog.records] == [with_cause]
