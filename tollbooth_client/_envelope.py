"""Decoding tRPC response envelopes into the procedure's output type, in one msgspec pass."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import msgspec

from schemas import codec
from schemas.errors import ErrorShape
from tollbooth_client.errors import TRPCClientError

OutputT = TypeVar("OutputT")


class _Result(msgspec.Struct, Generic[OutputT]):
    data: OutputT


class _Envelope(msgspec.Struct, Generic[OutputT]):
    result: _Result[OutputT] | None = None
    error: ErrorShape | None = None


class EnvelopeDecoder(Generic[OutputT]):
    """Built once per procedure: decodes ``{"result":{"data":...}}`` or raises the ``{"error":...}`` it holds."""

    def __init__(self, output: type[OutputT], path: str) -> None:
        self._decoder = codec.decoder(_Envelope[output])  # type: ignore[valid-type]
        self._path = path

    def decode(self, body: bytes | msgspec.Raw, http_status: int) -> OutputT:
        try:
            envelope: _Envelope[OutputT] = self._decoder.decode(body)
        except msgspec.DecodeError as exc:
            raise TRPCClientError.from_status(
                http_status, f"Unexpected response from the server: {exc}", self._path
            ) from exc
        if envelope.error is not None:
            raise TRPCClientError.from_shape(envelope.error, self._path)
        if envelope.result is None:
            raise TRPCClientError.from_status(http_status, "Response holds neither result nor error", self._path)
        return envelope.result.data


_error_decoder = codec.decoder(_Envelope[Any])
_shape_decoder = codec.decoder(ErrorShape)


def error_of(body: bytes, http_status: int, path: str | None) -> TRPCClientError:
    """The error a whole-request failure holds (one envelope answering every call of a batch)."""
    try:
        envelope = _error_decoder.decode(body)
    except msgspec.DecodeError:
        envelope = None
    if envelope is not None and envelope.error is not None:
        return TRPCClientError.from_shape(envelope.error, path)
    return TRPCClientError.from_status(http_status, f"Unexpected response from the server (HTTP {http_status})", path)


def shape_error(data: str, path: str) -> TRPCClientError:
    """The error of an SSE ``serialized-error`` event."""
    try:
        return TRPCClientError.from_shape(_shape_decoder.decode(data), path)
    except msgspec.DecodeError as exc:
        return TRPCClientError.from_status(500, f"Malformed serialized-error event: {exc}", path)
