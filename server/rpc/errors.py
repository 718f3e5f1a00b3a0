"""tRPC errors, and the one place where any exception becomes the error shape a client receives.

Unknown exceptions become INTERNAL_SERVER_ERROR with a generic message: their text may hold internals or secrets, so
it goes to the server log only.
"""

from __future__ import annotations

import logging
import traceback
from typing import Final

from litestar.exceptions import HTTPException

from schemas.errors import ERROR_CODES, ErrorCode, ErrorData, ErrorEnvelope, ErrorShape, code_for_http_status
from schemas.validation import InvalidInput

__all__ = ("ErrorCode", "TRPCError", "error_shape", "to_trpc_error")

logger: Final = logging.getLogger("tollbooth.rpc")

GENERIC_INTERNAL_MESSAGE: Final = "Internal server error"


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
        if exc.http_status >= 500 and exc.__cause__ is not None:
            logger.error("procedure %s failed with %s", path, exc.code.value, exc_info=exc)
        return exc
    if isinstance(exc, InvalidInput):
        return TRPCError(ErrorCode.BAD_REQUEST, str(exc), cause=exc)
    if isinstance(exc, HTTPException) and exc.status_code < 500:
        return TRPCError(code_for_http_status(exc.status_code), exc.detail, cause=exc)
    logger.error("procedure %s raised an unexpected exception", path, exc_info=exc)
    return TRPCError(ErrorCode.INTERNAL_SERVER_ERROR, GENERIC_INTERNAL_MESSAGE, cause=exc)


def error_shape(error: TRPCError, path: str | None, *, debug: bool) -> ErrorShape:
    info = ERROR_CODES[error.code]
    stack = "".join(traceback.format_exception(error)) if debug else None
    return ErrorShape(
        message=error.message,
        code=info.json_rpc,
        data=ErrorData(code=error.code.value, http_status=info.http_status, path=path, stack=stack),
    )


def error_envelope(error: TRPCError, path: str | None, *, debug: bool) -> ErrorEnvelope:
    return ErrorEnvelope(error=error_shape(error, path, debug=debug))
