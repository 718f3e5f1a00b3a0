"""The registry of actions ``chat.executeAction`` can run. Each asks the model for JSON of one result type."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from schemas.chat import ActionName, ActionResult, ClassifyIntentResult, DraftReplyResult, ExtractTasksResult
from server.llm.recorder import MetadataValue
from server.llm.structured import object_schema


@dataclass(frozen=True, slots=True)
class Action:
    name: ActionName
    result_type: type[ActionResult]
    instructions: str
    schema_version: int
    labels: Callable[[ActionResult], Mapping[str, MetadataValue]] = lambda _: {}
    """Labels of a result for the usage record's metadata (never its content)."""
    json_schema: Mapping[str, Any] = field(init=False)
    decoder: msgspec.json.Decoder[ActionResult] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "json_schema", object_schema(self.result_type))
        object.__setattr__(self, "decoder", msgspec.json.Decoder(self.result_type))


ACTIONS: Final[Mapping[ActionName, Action]] = {
    action.name: action
    for action in (
        Action(
            name="draft_reply",
            result_type=DraftReplyResult,
            instructions=(
                "You draft a reply to the message the user gives you. Match its language. Choose the tone the "
                "message calls for. Give a subject line only when the message is an e-mail, else null."
            ),
            schema_version=1,
        ),
        Action(
            name="extract_tasks",
            result_type=ExtractTasksResult,
            instructions=(
                "You extract every concrete task from the text the user gives you: who owns it (null if nobody is "
                "named), when it is due as written in the text (null if not said), and its priority. Return an "
                "empty list when there are none."
            ),
            schema_version=1,
        ),
        Action(
            name="classify_intent",
            result_type=ClassifyIntentResult,
            instructions=(
                "You classify the intent of the message the user gives you, with your confidence from 0 to 1 and "
                "a one-sentence rationale."
            ),
            schema_version=1,
            labels=lambda result: {"intent": result.intent} if isinstance(result, ClassifyIntentResult) else {},
        ),
    )
}
