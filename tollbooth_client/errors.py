"""The one exception a failed call raises."""

from __future__ import annotations

from schemas.errors import ERROR_CODES, BudgetRefusal, ErrorCode, ErrorShape, code_for_http_status

__all__ = ("TRPCClientError",)


class TRPCClientError(Exception):
    """A call failed: ``code`` is the tRPC code name (compare with ``ErrorCode``), ``json_rpc_code`` its number,
    ``http_status`` the status of that call (not the 207 of a batch), ``path`` the procedure. ``budget`` names the
    hard budget that refused a call (PAYMENT_REQUIRED), else None.

    Network failures are not wrapped: they raise httpx's ``TransportError``.
    """

    def __init__(
        self,
        message: str,
        *,
        code: str,
        json_rpc_code: int,
        http_status: int,
        path: str | None,
        budget: BudgetRefusal | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.json_rpc_code = json_rpc_code
        self.http_status = http_status
        self.path = path
        self.budget = budget

    @classmethod
    def from_shape(cls, shape: ErrorShape, path: str | None) -> TRPCClientError:
        return cls(
            shape.message,
            code=shape.data.code,
            json_rpc_code=shape.code,
            http_status=shape.data.http_status,
            path=shape.data.path or path,
            budget=shape.data.budget,
        )

    @classmethod
    def from_status(cls, status: int, message: str, path: str | None) -> TRPCClientError:
        """For an answer that is not a tRPC envelope (a proxy's error page, a truncated body)."""
        code = code_for_http_status(status) if status >= 400 else ErrorCode.INTERNAL_SERVER_ERROR
        return cls(message, code=code.value, json_rpc_code=ERROR_CODES[code].json_rpc, http_status=status, path=path)

    def __repr__(self) -> str:
        return f"TRPCClientError({self.code}, {self.message!r}, path={self.path!r})"

    def __str__(self) -> str:
        return f"{self.code} ({self.http_status}) on {self.path}: {self.message}"
