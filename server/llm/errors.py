"""Errors of the LLM core: tRPC errors, so the protocol maps them, that also carry the error type to log."""

from __future__ import annotations

from schemas.errors import ErrorCode
from server.rpc.errors import TRPCError


class LLMError(TRPCError):
    """A model call that could not produce an answer. ``error_type`` names the failure in ``ai_usage_logs``.

    ``billable``: the provider had begun to answer (a stream that broke off or ended without its usage report), so
    it bills the call and the record carries an estimate of its usage rather than nothing.
    """

    def __init__(self, code: ErrorCode | str, message: str, *, error_type: str, billable: bool = False) -> None:
        super().__init__(ErrorCode(code), message)
        self.error_type = error_type
        self.billable = billable
