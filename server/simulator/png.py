"""Real PNG files, small and deterministic, built with zlib and struct (no imaging library).

A PNG is its signature and three chunks here: ``IHDR`` (width, height, 8-bit RGB), ``IDAT`` (the zlib-compressed
scanlines, each prefixed with filter type 0) and ``IEND``; each chunk is its length, type, data and the CRC-32 of
type and data (RFC 2083 / ISO 15948). Any decoder reads them.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from functools import lru_cache
from typing import Final

PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
SIDE_PIXELS: Final = 64


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@lru_cache(maxsize=256)
def solid_png(red: int, green: int, blue: int, side: int = SIDE_PIXELS) -> bytes:
    """A ``side`` x ``side`` PNG of one colour."""
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)  # 8-bit truecolour, no interlace
    scanline = b"\x00" + bytes((red, green, blue)) * side
    return (
        PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(scanline * side)) + _chunk(b"IEND", b"")
    )


def png_for(prompt: str, index: int = 0) -> bytes:
    """The simulator's picture of ``prompt`` (the ``index``-th of a request's images): a colour from its hash."""
    digest = hashlib.sha256(f"{index}:{prompt}".encode()).digest()
    return solid_png(digest[0], digest[1], digest[2])
