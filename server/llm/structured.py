"""Structured output: the JSON Schema a model is asked to follow, asking for it (again once if invalid), and reading
its JSON answer back."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Final, Generic, TypeVar

import msgspec

from server.errors import LLMError, LLMFailure
from server.llm.core import Attribution, LLMCore, LLMResult
from server.llm.providers import ChatTurn, CompletionRequest
from server.llm.recorder import MetadataValue
from server.llm.response_cache import CachePolicy

logger: Final = logging.getLogger("tollbooth.llm")
ResultT = TypeVar("ResultT")

_FENCE: Final = re.compile(r"^\s*```(?:json)?\s*\n(?P<body>.*?)\n?```\s*$", re.DOTALL)


def object_schema(struct_type: type[msgspec.Struct]) -> dict[str, Any]:
    """The JSON Schema of ``struct_type`` with the object at its root.

    msgspec puts every Struct in ``$defs`` behind a root ``$ref``; providers' structured-output modes want the root
    to be the object itself (OpenAI rejects a bare ``$ref`` root).
    """
    schema = msgspec.json.schema(struct_type)
    definitions: dict[str, Any] = dict(schema.get("$defs", {}))
    root_name = schema["$ref"].rsplit("/", 1)[1]
    root = dict(definitions.pop(root_name))
    if definitions:
        root["$defs"] = definitions
    return root


def strip_code_fence(text: str) -> str:
    """Models asked for JSON sometimes wrap it in a Markdown code fence; the JSON inside is what was asked for."""
    match = _FENCE.match(text)
    return match["body"] if match else text


class StructuredAnswer(Generic[ResultT]):
    """Reads a structured answer once, for the usage record's labels and for the caller.

    ``check`` finds what the schema cannot say (a list of the requested length): a problem makes the answer invalid
    as a decoding error does."""

    def __init__(
        self,
        decoder: msgspec.json.Decoder[ResultT],
        labels: Callable[[ResultT], Mapping[str, MetadataValue]],
        check: Callable[[ResultT], str | None] | None = None,
    ) -> None:
        self._decoder = decoder
        self._labels = labels
        self._check = check
        self.value: ResultT | None = None
        self.problem = ""

    def read(self, text: str) -> Mapping[str, MetadataValue]:
        try:
            value = self._decoder.decode(strip_code_fence(text))
        except msgspec.DecodeError as error:
            self.problem = str(error)
            return {"output_valid": False}
        problem = self._check(value) if self._check is not None else None
        if problem is not None:
            self.problem = problem
            return {"output_valid": False}
        self.value = value
        return {"output_valid": True, **self._labels(value)}


async def ask_structured(
    llm: LLMCore,
    user_id: uuid.UUID,
    *,
    procedure: str,
    conversation_id: uuid.UUID | None,
    model: str,
    system: str,
    content: str,
    schema: Mapping[str, Any],
    schema_name: str,
    decoder: msgspec.json.Decoder[ResultT],
    metadata: Mapping[str, MetadataValue],
    labels: Callable[[ResultT], Mapping[str, MetadataValue]] = lambda _: {},
    check: Callable[[ResultT], str | None] | None = None,
    max_tokens: int | None = None,
    cache: CachePolicy | None = None,
    first_labels: Mapping[str, MetadataValue] | None = None,
) -> tuple[list[LLMResult], ResultT]:
    """Ask for JSON valid against ``schema`` (and ``check``); an invalid answer is asked again once, with the first
    answer and what was wrong with it. Every attempt is recorded and costed.

    ``cache`` (the response cache of single calls) and ``first_labels`` (metadata labels) apply to the first attempt,
    the caller's request: an invalid answer is never stored, and the second attempt's request holds the first's
    answer. Two invalid answers: ``LLMError(INVALID_OUTPUT)`` (BAD_GATEWAY) after both are recorded."""
    turns = [ChatTurn(role="user", content=content)]
    results: list[LLMResult] = []
    for attempt in (1, 2):
        answer = StructuredAnswer(decoder, labels, check)
        request = CompletionRequest(
            model=model,
            messages=tuple(turns),
            system=system,
            max_tokens=max_tokens,
            json_schema=schema,
            json_schema_name=schema_name,
        )
        extra = first_labels if attempt == 1 and first_labels else {}
        attribution = Attribution(
            user_id=user_id,
            procedure=procedure,
            conversation_id=conversation_id,
            metadata={**metadata, **extra, "attempt": attempt},
            check_owner=conversation_id is not None,  # the claim proves the conversation is the caller's
        )
        result = await llm.invoke(request, attribution, annotate=answer.read, cache=cache if attempt == 1 else None)
        results.append(result)
        if answer.value is not None:
            return results, answer.value
        turns += [
            ChatTurn(role="assistant", content=result.text),
            ChatTurn(role="user", content=f"That answer is invalid ({answer.problem}). Answer again with JSON only."),
        ]
    # Both calls succeeded, so LLMCore logged nothing; the procedure fails all the same. Not the problem's text:
    # msgspec quotes the invalid value, which is the model's output.
    logger.warning(
        "structured answer invalid twice: procedure=%s provider=%s model=%r failure=%s",
        procedure,
        results[-1].provider,
        model,
        LLMFailure.INVALID_OUTPUT.value,
    )
    raise LLMError(
        LLMFailure.INVALID_OUTPUT,
        f"the model's answer did not match the expected format twice ({answer.problem})",
        error_type="InvalidModelOutput",
    )
