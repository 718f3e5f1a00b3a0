"""Errors of the LLM core. Each carries the tRPC error code a caller sees and the error type that is logged."""

from __future__ import annotations


class LLMError(Exception):
    """A model call that could not produce an answer; ``code`` is a tRPC error code name such as BAD_GATEWAY."""

    def __init__(self, code: str, message: str, *, error_type: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.error_type = error_type
