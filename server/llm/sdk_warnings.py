"""The SDKs' own warnings in the service's log: a model reaching its end of life, a deprecated parameter.

The ``openai`` and ``anthropic`` SDKs warn through ``warnings.warn``, mostly with ``DeprecationWarning``, which Python
ignores outside ``__main__``; and they point each warning at a frame above them (``stacklevel``: asyncio's, or
``LLMCore``'s), so no module filter, and not ``logging.captureWarnings`` alone, can single them out. Instead the
deprecation categories are let through and the warning is told apart by the code that raised it.
"""

from __future__ import annotations

import logging
import sys
import warnings
from types import FrameType
from typing import Final, TextIO

__all__ = ("SDK_PACKAGES", "route_sdk_warnings")

SDK_PACKAGES: Final = frozenset({"openai", "anthropic"})
_REMEMBERED: Final = 256
"""Distinct messages remembered as logged; past this many each is logged every time Python shows it."""

logger: Final = logging.getLogger("tollbooth.sdk")


def route_sdk_warnings() -> None:
    """Log every warning the SDKs raise, as a WARNING of ``tollbooth.sdk``, each distinct message once per process.

    Call once, at start-up, after logging is configured. Warnings of any other origin go where they went before:
    deprecation warnings, which Python ignored, are still dropped, unless the operator chose filters (``-W``,
    ``PYTHONWARNINGS``), which are then kept as they are and decide what reaches the log.
    """
    previous = warnings.showwarning
    quieted = not sys.warnoptions
    logged: set[tuple[type[Warning], str]] = set()

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        sdk = _raising_package(sys._getframe(1))
        if sdk not in SDK_PACKAGES:
            if not (quieted and issubclass(category, DeprecationWarning | PendingDeprecationWarning)):
                previous(message, category, filename, lineno, file, line)
            return
        text = " ".join(str(message).split())  # one log line: the SDKs' messages may hold newlines
        if (category, text) in logged:
            return
        if len(logged) < _REMEMBERED:
            logged.add((category, text))
        logger.warning("%s SDK: %s: %s", sdk, category.__name__, text)

    warnings.showwarning = show
    if quieted:
        warnings.filterwarnings("default", category=DeprecationWarning)
        warnings.filterwarnings("default", category=PendingDeprecationWarning)


def _raising_package(frame: FrameType | None) -> str | None:
    """The top-level package of the code that called ``warnings.warn``: the first frame outside ``warnings``."""
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module != "warnings":
            return str(module).partition(".")[0]
        frame = frame.f_back
    return None
