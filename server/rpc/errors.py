"""tRPC errors, and the one place where any exception becomes the error shape a client receives.

The domain raises ``server.errors`` (and wire types ``InvalidInput``); ``CODES`` is the one table that gives each its
tRPC code. Unknown exceptions become INTERNAL_SERVER_ERROR with a generic message: their text may hold internals or
secrets, so it goes to the server log only.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from litestar.exceptions import HTTPException

from schemas.errors import (
    ERROR_CODES,
    BudgetRefusal,
    ErrorCode,
    ErrorData,
    ErrorEnvelope,
    ErrorShape,
    code_for_http_status,
)
from schemas.money import Money
from schemas.validation import InvalidInput
from server.errors import (
    BudgetExceededError,
    ConflictError,
    LLMError,
    LLMFailure,
    NotFoundError,
    ServiceUnavailableError,
    StorageError,
    StorageUnavailableError,
)

__all__ = ("CODES", "ErrorCode", "TRPCError", "error_shape", "to_trpc_error")

logger: Final = logging.getLogger("tollbooth.rpc")

GENERIC_INTERNAL_MESSAGE: Final = "Internal server error"

CODES: Final[Mapping[type[Exception] | LLMFailure, ErrorCode]] = MappingProxyType(
    {
        InvalidInput: ErrorCode.BAD_REQUEST,
        NotFoundError: ErrorCode.NOT_FOUND,
        ConflictError: ErrorCode.CONFLICT,
        BudgetExceededError: ErrorCode.PAYMENT_REQUIRED,
        ServiceUnavailableError: ErrorCode.SERVICE_UNAVAILABLE,
        StorageUnavailableError: ErrorCode.SERVICE_UNAVAILABLE,
        StorageError: ErrorCode.INTERNAL_SERVER_ERROR,
        # An LLMError by its failure: what the caller can do about it, and whether @trpc/client retries (5xx).
        LLMFailure.UNKNOWN_MODEL: ErrorCode.BAD_REQUEST,
        LLMFailure.NOT_CONFIGURED: ErrorCode.PRECONDITION_FAILED,
        LLMFailure.INVALID_REQUEST: ErrorCode.BAD_REQUEST,
        LLMFailure.CREDENTIALS_REJECTED: ErrorCode.INTERNAL_SERVER_ERROR,
        LLMFailure.RATE_LIMITED: ErrorCode.TOO_MANY_REQUESTS,
        LLMFailure.TIMEOUT: ErrorCode.GATEWAY_TIMEOUT,
        LLMFailure.OVERLOADED: ErrorCode.SERVICE_UNAVAILABLE,
        LLMFailure.UNREACHABLE: ErrorCode.BAD_GATEWAY,
        LLMFailure.UPSTREAM_ERROR: ErrorCode.BAD_GATEWAY,
        LLMFailure.BAD_RESPONSE: ErrorCode.BAD_GATEWAY,
        LLMFailure.INVALID_OUTPUT: ErrorCode.BAD_GATEWAY,
    }
)
"""The tRPC code of every domain error: by class (the nearest mapped base), and of an ``LLMError`` by its failure."""


class TRPCError(Exception):
    """An error a procedure (or the protocol) reports to the caller, with the tRPC code that classifies it.

    ``message`` reaches the client verbatim: never put secrets in it. ``cause`` is kept for the log and debug stacks.
    """

    def __init__(self, code: ErrorCode, message: str, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.__cause__ = cause

    @property
    def http_status(self) -> int:
        return ERROR_CODES[self.code].http_status

    @property
    def json_rpc_code(self) -> int:
        return ERROR_CODES[self.code].json_rpc

    def __repr__(self) -> str:
        return f"TRPCError({self.code.value}, {self.message!r})"


def to_trpc_error(exc: BaseException, path: str | None = None) -> TRPCError:
    """Classify any exception; unknown ones are logged with their traceback and hidden behind a generic message."""
    if isinstance(exc, TRPCError):
        _log_server_fault(exc, exc, path)
        return exc
    code = _domain_code(exc)
    if code is not None:
        error = TRPCError(code, str(exc), cause=exc)
        _log_server_fault(error, exc, path)
        return error
    if isinstance(exc, HTTPException) and exc.status_code < 500:
        return TRPCError(code_for_http_status(exc.status_code), exc.detail, cause=exc)
    logger.error("procedure %s raised an unexpected exception", path, exc_info=exc)
    return TRPCError(ErrorCode.INTERNAL_SERVER_ERROR, GENERIC_INTERNAL_MESSAGE, cause=exc)


def _domain_code(exc: BaseException) -> ErrorCode | None:
    if isinstance(exc, LLMError):
        return CODES[exc.failure]
    return next((CODES[base] for base in type(exc).__mro__ if base in CODES), None)


def _log_server_fault(error: TRPCError, raised: BaseException, path: str | None) -> None:
    """A 5xx whose cause is known is logged with it; one without a cause says all there is to say in its message."""
    if error.http_status >= 500 and raised.__cause__ is not None:
        logger.error("procedure %s failed with %s", path, error.code.value, exc_info=raised)


def error_shape(error: TRPCError, path: str | None, *, debug: bool) -> ErrorShape:
    info = ERROR_CODES[error.code]
    stack = "".join(traceback.format_exception(error)) if debug else None
    cause = error.__cause__
    budget = _budget_refusal(cause) if isinstance(cause, BudgetExceededError) else None
    return ErrorShape(
        message=error.message,
        code=info.json_rpc,
        data=ErrorData(code=error.code.value, http_status=info.http_status, path=path, stack=stack, budget=budget),
    )


def _budget_refusal(error: BudgetExceededError) -> BudgetRefusal:
    return BudgetRefusal(
        budget_id=error.budget_id,
        scope=error.scope,
        subject_id=error.subject_id,
        period=error.period,
        limit_usd=Money(error.limit_usd),
        spent_usd=Money(error.spent_usd),
        reserved_usd=Money(error.reserved_usd),
        requested_usd=None if error.requested_usd is None else Money(error.requested_usd),
        resets_at=error.resets_at,
    )


def error_envelope(error: TRPCError, path: str | None, *, debug: bool) -> ErrorEnvelope:
    return ErrorEnvelope(error=error_shape(error, path, debug=debug))
