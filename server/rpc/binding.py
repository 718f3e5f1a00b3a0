"""The start-up table of procedures: each registry entry with its handler, decoder and resumability.

Built once, so that serving a call is a dict lookup; building it is where a broken wiring fails loudly: a procedure
without a handler, with two, a handler for a procedure the registry does not know, or a signature that does not match.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from schemas import codec
from schemas.registry import Procedure, Registry, all_optional
from server.rpc.controller import (
    ProcedureController,
    answers_with_signed_urls,
    check_handler_signature,
    deduplicates,
    implemented_procedure,
    sequential_model_calls,
)

__all__ = ("Binding", "build_bindings")


@dataclass(slots=True)
class Binding:
    procedure: Procedure[Any, Any]
    controller: type[ProcedureController]
    method_name: str
    decoder: msgspec.json.Decoder[Any] | None
    default_input: msgspec.Struct | None
    """The input of a call that sends none, for a procedure whose input fields all have defaults; else None."""
    resumable: bool
    """A subscription whose ``lastEventId`` input is filled from ``Last-Event-ID`` and whose events carry ids."""
    deduplicate: bool = False
    """A mutation whose identical calls without an idempotency key are de-duplicated (``@implements(deduplicate=)``)."""
    model_calls: int | None = None
    """The most model calls the handler makes one after another, if it declared it (``@implements(model_calls=)``)."""
    signed_urls: bool = False
    """A mutation whose output carries expiring URLs (``@implements(signed_urls=)``)."""
    handler: Callable[..., Any] | None = field(default=None)
    """The method bound to the controller instance Litestar created; set when the router is built."""


def build_bindings(registry: Registry, controllers: Sequence[type[ProcedureController]]) -> dict[str, Binding]:
    bindings: dict[str, Binding] = {}
    problems: list[str] = []
    for controller in controllers:
        if not (isinstance(controller, type) and issubclass(controller, ProcedureController)):
            problems.append(f"{controller!r} is not a ProcedureController subclass")
            continue
        for path, method_name in controller.handlers_by_path.items():
            procedure = implemented_procedure(getattr(controller, method_name))
            where = f"{controller.__qualname__}.{method_name}"
            if procedure is None or registry.get(path) != procedure:
                problems.append(f"{where} implements {path!r}, which is not in the registry (or differs from it)")
                continue
            if path in bindings:
                other = bindings[path]
                problems.append(
                    f"{path!r} has two handlers: {other.controller.__qualname__}.{other.method_name} and {where}"
                )
                continue
            try:
                check_handler_signature(controller, method_name, procedure)
            except TypeError as exc:
                problems.append(str(exc))
                continue
            decoder = None if procedure.input is None else codec.decoder(procedure.input)
            bindings[path] = Binding(
                procedure=procedure,
                controller=controller,
                method_name=method_name,
                decoder=decoder,
                default_input=decoder.decode(b"{}") if decoder is not None and all_optional(procedure) else None,
                resumable=procedure.resumable,
                deduplicate=deduplicates(getattr(controller, method_name)),
                model_calls=sequential_model_calls(getattr(controller, method_name)),
                signed_urls=answers_with_signed_urls(getattr(controller, method_name)),
            )
    missing = [p.path for p in registry if p.path not in bindings]
    if missing:
        problems.append(f"procedures without a handler: {', '.join(missing)}")
    if problems:
        raise RuntimeError("cannot serve the procedure registry:\n  - " + "\n  - ".join(problems))
    return bindings
