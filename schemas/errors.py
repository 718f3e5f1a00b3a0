"""The tRPC error contract: every error code with its JSON-RPC number and HTTP status, and the error shape.

Server and clients share this table so that a code means the same thing on both sides of the wire. The numbers are
tRPC v11's ``TRPC_ERROR_CODES_BY_KEY``; several codes share -32603, so the name in ``data.code`` is what identifies
an error, never the number alone.
"""

from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final

import msgspec

from schemas.budgets import BudgetPeriod, BudgetScope
from schemas.money import Money


class ErrorCode(StrEnum):
    PARSE_ERROR = "PARSE_ERROR"
    BAD_REQUEST = "BAD_REQUEST"
    UNAUTHORIZED = "UNAUTHORIZED"
    PAYMENT_REQUIRED = "PAYMENT_REQUIRED"
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    METHOD_NOT_SUPPORTED = "METHOD_NOT_SUPPORTED"
    TIMEOUT = "TIMEOUT"
    CONFLICT = "CONFLICT"
    PRECONDITION_FAILED = "PRECONDITION_FAILED"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    UNPROCESSABLE_CONTENT = "UNPROCESSABLE_CONTENT"
    PRECONDITION_REQUIRED = "PRECONDITION_REQUIRED"
    TOO_MANY_REQUESTS = "TOO_MANY_REQUESTS"
    CLIENT_CLOSED_REQUEST = "CLIENT_CLOSED_REQUEST"
    INTERNAL_SERVER_ERROR = "INTERNAL_SERVER_ERROR"
    NOT_IMPLEMENTED = "NOT_IMPLEMENTED"
    BAD_GATEWAY = "BAD_GATEWAY"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    GATEWAY_TIMEOUT = "GATEWAY_TIMEOUT"


@dataclass(frozen=True, slots=True)
class CodeInfo:
    json_rpc: int
    http_status: int


ERROR_CODES: Final = MappingProxyType(
    {
        ErrorCode.PARSE_ERROR: CodeInfo(-32700, 400),
        ErrorCode.BAD_REQUEST: CodeInfo(-32600, 400),
        ErrorCode.UNAUTHORIZED: CodeInfo(-32001, 401),
        ErrorCode.PAYMENT_REQUIRED: CodeInfo(-32002, 402),
        ErrorCode.FORBIDDEN: CodeInfo(-32003, 403),
        ErrorCode.NOT_FOUND: CodeInfo(-32004, 404),
        ErrorCode.METHOD_NOT_SUPPORTED: CodeInfo(-32005, 405),
        ErrorCode.TIMEOUT: CodeInfo(-32008, 408),
        ErrorCode.CONFLICT: CodeInfo(-32009, 409),
        ErrorCode.PRECONDITION_FAILED: CodeInfo(-32012, 412),
        ErrorCode.PAYLOAD_TOO_LARGE: CodeInfo(-32013, 413),
        ErrorCode.UNSUPPORTED_MEDIA_TYPE: CodeInfo(-32015, 415),
        ErrorCode.UNPROCESSABLE_CONTENT: CodeInfo(-32022, 422),
        ErrorCode.PRECONDITION_REQUIRED: CodeInfo(-32028, 428),
        ErrorCode.TOO_MANY_REQUESTS: CodeInfo(-32029, 429),
        ErrorCode.CLIENT_CLOSED_REQUEST: CodeInfo(-32099, 499),
        ErrorCode.INTERNAL_SERVER_ERROR: CodeInfo(-32603, 500),
        ErrorCode.NOT_IMPLEMENTED: CodeInfo(-32603, 501),
        ErrorCode.BAD_GATEWAY: CodeInfo(-32603, 502),
        ErrorCode.SERVICE_UNAVAILABLE: CodeInfo(-32603, 503),
        ErrorCode.GATEWAY_TIMEOUT: CodeInfo(-32603, 504),
    }
)

RETRYABLE_CODES: Final = frozenset(
    {
        ErrorCode.INTERNAL_SERVER_ERROR,
        ErrorCode.BAD_GATEWAY,
        ErrorCode.SERVICE_UNAVAILABLE,
        ErrorCode.GATEWAY_TIMEOUT,
    }
)
"""Codes after which @trpc/client's httpSubscriptionLink reconnects instead of failing the subscription."""


def code_for_http_status(status: int) -> ErrorCode:
    """The code a bare HTTP status stands for, for responses that carry no tRPC error (a proxy's 502 page)."""
    for code, info in ERROR_CODES.items():
        if info.http_status == status:
            return code
    return ErrorCode.BAD_REQUEST if 400 <= status < 500 else ErrorCode.INTERNAL_SERVER_ERROR


class BudgetRefusal(msgspec.Struct, rename="camel", kw_only=True, frozen=True):
    """The hard budget that refused a call (PAYMENT_REQUIRED), as it stood at that moment.

    ``requestedUsd`` is the call's worst-case cost, null when its model has no known price (never taken as free);
    ``resetsAt`` is when the budget's period ends, null for a ``total`` budget.
    """

    budget_id: uuid.UUID
    scope: BudgetScope
    subject_id: uuid.UUID | None
    period: BudgetPeriod
    limit_usd: Money
    spent_usd: Money
    reserved_usd: Money
    requested_usd: Money | None
    resets_at: datetime.datetime | None


class ErrorData(msgspec.Struct, rename="camel", omit_defaults=True, kw_only=True, frozen=True):
    """``data`` of an error shape; ``path`` is absent when the error is not about one call, ``stack`` outside debug,
    ``budget`` outside PAYMENT_REQUIRED.

    Not a ``WireInput``: like a ``WireOutput``, it ignores unknown fields, so clients keep accepting error shapes when
    a server adds a field.
    """

    code: str
    http_status: int
    path: str | None = None
    stack: str | None = None
    budget: BudgetRefusal | None = None


class ErrorShape(msgspec.Struct, kw_only=True, frozen=True):
    """tRPC's ``TRPCDefaultErrorShape``: what ``{"error": ...}`` holds, and what an SSE ``serialized-error`` carries."""

    message: str
    code: int
    data: ErrorData


class ErrorEnvelope(msgspec.Struct, kw_only=True, frozen=True):
    error: ErrorShape
