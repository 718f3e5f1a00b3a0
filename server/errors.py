"""The domain's errors, in the domain's terms: any layer may raise them, none of them knows the wire protocol.

    TollboothError                  message reaches the caller verbatim: never a secret in it
    ├── NotFoundError
    │   ├── ConversationNotFoundError
    │   ├── BudgetNotFoundError
    │   └── BudgetSubjectNotFoundError
    ├── ConflictError
    │   └── StreamRequestUsedError
    ├── BudgetExceededError         a hard budget cannot take the call's worst-case cost
    ├── ServiceUnavailableError     a dependency is down; retrying later may work
    │   ├── DatabaseUnavailableError
    │   └── StorageUnavailableError  (also a StorageError)
    ├── StorageError                media storage refused the write or read: missing bucket, no credentials
    └── LLMError                    a model call with no answer: failure, error_type, billable

The transport classifies them in one table (``server.rpc.errors``); the domain never picks a tRPC code.
"""

from __future__ import annotations

import datetime
import uuid
from decimal import Decimal
from enum import StrEnum

from schemas.budgets import BudgetPeriod, BudgetScope
from schemas.money import format_money

__all__ = (
    "BudgetExceededError",
    "BudgetNotFoundError",
    "BudgetSubjectNotFoundError",
    "ConflictError",
    "ConversationNotFoundError",
    "DatabaseUnavailableError",
    "LLMError",
    "LLMFailure",
    "NotFoundError",
    "ServiceUnavailableError",
    "StorageError",
    "StorageUnavailableError",
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


class BudgetExceededError(TollboothError):
    """A hard budget would go over its limit with this call's worst-case cost (or the model has no known price,
    ``requested_usd`` None, which a hard budget never takes as free). Nothing was sent to the provider."""

    def __init__(
        self,
        *,
        budget_id: uuid.UUID,
        scope: BudgetScope,
        subject_id: uuid.UUID | None,
        period: BudgetPeriod,
        limit_usd: Decimal,
        spent_usd: Decimal,
        reserved_usd: Decimal,
        requested_usd: Decimal | None,
        resets_at: datetime.datetime | None,
    ) -> None:
        whose = "the global" if subject_id is None else f"{scope} {subject_id}'s"
        window = {"day": "daily", "week": "weekly", "month": "monthly"}.get(period, period)
        why = (
            "the model has no known price, which a hard budget never takes as free"
            if requested_usd is None
            else f"this call may cost up to {format_money(requested_usd)}"
        )
        super().__init__(
            f"{whose} {window} budget of USD {format_money(limit_usd)} would be exceeded: "
            f"{format_money(spent_usd)} spent, {format_money(reserved_usd)} reserved by calls in flight, and {why}"
            + ("" if resets_at is None else f"; it resets at {resets_at.isoformat()}")
        )
        self.budget_id = budget_id
        self.scope = scope
        self.subject_id = subject_id
        self.period = period
        self.limit_usd = limit_usd
        self.spent_usd = spent_usd
        self.reserved_usd = reserved_usd
        self.requested_usd = requested_usd
        self.resets_at = resets_at


class ServiceUnavailableError(TollboothError):
    """Something the request needs is down for now; the same request may succeed later."""


class DatabaseUnavailableError(ServiceUnavailableError):
    """PostgreSQL cannot be reached (refused, reset, shutting down, too many connections); the message says why
    without credentials."""


class StorageError(TollboothError):
    """Media could not be stored or addressed, and retrying will not help until the server is configured anew (the
    bucket does not exist, the credentials are missing or refused). The message names the bucket, never a secret."""


class StorageUnavailableError(StorageError, ServiceUnavailableError):
    """The media storage cannot be reached or answered with a server error; the same request may succeed later."""


class ConversationNotFoundError(NotFoundError):
    """No conversation with this id belongs to the caller (whether it exists for someone else is not said)."""

    def __init__(self, conversation_id: uuid.UUID) -> None:
        super().__init__(f"conversation {conversation_id} not found")


class BudgetNotFoundError(NotFoundError):
    """No budget has this id."""

    def __init__(self, budget_id: uuid.UUID) -> None:
        super().__init__(f"budget {budget_id} not found")


class BudgetSubjectNotFoundError(NotFoundError):
    """A budget's ``subjectId`` names no user (or conversation) of its scope."""

    def __init__(self, scope: BudgetScope, subject_id: uuid.UUID) -> None:
        super().__init__(f"{scope} {subject_id} not found (subjectId): a {scope} budget needs an existing {scope}")


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
    it bills the call and the record carries an estimate of its usage rather than nothing. ``record``: the usage
    record ``LLMCore`` wrote of the failed call (a ``server.llm.recorder.UsageRecord``; None when nothing was sent),
    for a caller that reports it; typed ``object`` so that this neutral module imports nothing of the core.
    """

    def __init__(self, failure: LLMFailure, message: str, *, error_type: str, billable: bool = False) -> None:
        super().__init__(message)
        self.failure = failure
        self.error_type = error_type
        self.billable = billable
        self.record: object | None = None

    def __repr__(self) -> str:
        return f"LLMError({self.failure.value}, {self.message!r}, error_type={self.error_type!r})"
