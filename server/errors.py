"""The domain's errors, in the domain's terms: any layer may raise them, none of them knows the wire protocol.

    TollboothError                  message reaches the caller verbatim: never a secret in it
    ├── NotFoundError
    │   └── ConversationNotFoundError
    ├── ConflictError
    │   └── StreamRequestUsedError
    └── LLMError                    a model call with no answer: failure, error_type, billable

The transport classifies them in one table (``server.rpc.errors``); the domain never picks a tRPC code.
"""

from __future__ import annotations

import uuid
from enum import StrEnum

__all__ = (
    "ConflictError",
    "ConversationNotFoundError",
    "LLMError",
    "LLMFailure",
    "NotFoundError",
    "StreamRequestUsedError",
    "TollboothError",
)


class TollboothError(Exception):
    """A failure the caller is told about. ``message`` reaches the caller verbatim: never put secrets in it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFoundError(TollboothError):
    """The thing asked for does not exist, or does not belong to the caller (which of the two is not said)."""


class ConflictError(TollboothError):
    """The request contradicts what has already happened, and repeating it will not help."""


class ConversationNotFoundError(NotFoundError):
    """No conversation with this id belongs to the caller (whether it exists for someone else is not said)."""

    def __init__(self, conversation_id: uuid.UUID) -> None:
        super().__init__(f"conversation {conversation_id} not found")


class StreamRequestUsedError(ConflictError):
    """The caller already started a chat.streamMessage with this ``requestId``: it never runs twice."""

    def __init__(self, request_id: uuid.UUID) -> None:
        super().__init__(
            f"chat.streamMessage with requestId {request_id} already ran (or is running) and is never run again, so "
            "that a reconnect cannot bill the message twice: send a new requestId to send it again"
        )


class LLMFailure(StrEnum):
    """Why a model call produced no answer."""

    UNKNOWN_MODEL = "UNKNOWN_MODEL"
    """The model name belongs to no provider family."""
    NOT_CONFIGURED = "NOT_CONFIGURED"
    """The model's provider has no API key on this server."""
    INVALID_REQUEST = "INVALID_REQUEST"
    """The provider refused the request as it was sent (an unknown model, a prompt too long...)."""
    CREDENTIALS_REJECTED = "CREDENTIALS_REJECTED"
    """The provider refused the server's API key: the server's fault, not the caller's."""
    RATE_LIMITED = "RATE_LIMITED"
    TIMEOUT = "TIMEOUT"
    OVERLOADED = "OVERLOADED"
    UNREACHABLE = "UNREACHABLE"
    """No connection to the provider, or it broke off mid-answer."""
    UPSTREAM_ERROR = "UPSTREAM_ERROR"
    """The provider failed (a 5xx other than overloaded, or an error no rule above names)."""
    BAD_RESPONSE = "BAD_RESPONSE"
    """The provider answered outside its API's contract: malformed, or a usage report missing or impossible."""
    INVALID_OUTPUT = "INVALID_OUTPUT"
    """The model answered, but not in the format asked for, even when asked again."""


class LLMError(TollboothError):
    """A model call that could not produce an answer. ``error_type`` names the failure in ``ai_usage_logs``.

    ``billable``: the provider had begun to answer (a stream that broke off or ended without its usage report), so
    it bills the call and the record carries an estimate of its usage rather than nothing.
    """

    def __init__(self, failure: LLMFailure, message: str, *, error_type: str, billable: bool = False) -> None:
        super().__init__(message)
        self.failure = failure
        self.error_type = error_type
        self.billable = billable

    def __repr__(self) -> str:
        return f"LLMError({self.failure.value}, {self.message!r}, error_type={self.error_type!r})"
