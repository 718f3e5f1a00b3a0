"""What tests tell the simulator to answer, and what the simulator saw.

Scripts are queued per provider and API (``chat``, or OpenAI's ``images``) and consumed first in, first out, one per
provider request, so a test can describe a whole conversation (or a retry sequence) up front, and image calls made
alongside chat calls never take each other's scripts. A provider request that finds its queue empty gets the
deterministic default answer, which is what lets the simulator serve as the offline provider.
"""

from __future__ import annotations

from collections import deque
from typing import Annotated, Any, Final, Literal

import msgspec

Provider = Literal["openai", "anthropic", "gemini"]
PROVIDERS: Final[tuple[Provider, ...]] = ("openai", "anthropic", "gemini")
Api = Literal["chat", "images"]
"""``chat``: each provider's chat API; ``images``: OpenAI's ``/images/generations``."""

DEFAULT_MAX_RECORDED_REQUESTS: Final = 1000

_NonNegative = Annotated[int, msgspec.Meta(ge=0)]

_USAGE_FIELDS: Final[dict[Provider, frozenset[str]]] = {
    "openai": frozenset({"prompt", "cached", "completion", "reasoning"}),
    "gemini": frozenset({"prompt", "cached", "completion", "thoughts"}),
    "anthropic": frozenset({"input", "cache_write_5m", "cache_write_1h", "cache_read", "output"}),
}


class ScriptedUsage(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Exact token counts, in the vocabulary of the provider they are scripted for.

    OpenAI: ``prompt`` includes ``cached``, ``completion`` includes ``reasoning``.
    Gemini (OpenAI-compatible endpoint): ``prompt`` includes ``cached``; ``completion`` excludes ``thoughts``,
    which only show up in ``total_tokens``.
    Anthropic: ``input`` excludes every cache bucket; ``output`` includes thinking.
    Fields that do not belong to the provider must stay 0: a misplaced number is a test bug, not a usage.
    """

    prompt: _NonNegative = 0
    cached: _NonNegative = 0
    completion: _NonNegative = 0
    reasoning: _NonNegative = 0
    thoughts: _NonNegative = 0
    input: _NonNegative = 0
    cache_write_5m: _NonNegative = 0
    cache_write_1h: _NonNegative = 0
    cache_read: _NonNegative = 0
    output: _NonNegative = 0

    def check_for(self, provider: Provider) -> None:
        """Reject numbers the provider could never report, so a wrong script fails where it is written."""
        allowed = _USAGE_FIELDS[provider]
        misplaced = [name for name in self.__struct_fields__ if name not in allowed and getattr(self, name)]
        if misplaced:
            raise ValueError(f"usage fields {misplaced} do not exist for provider {provider!r}")
        if self.cached > self.prompt:
            raise ValueError("usage.cached cannot exceed usage.prompt (prompt includes cached tokens)")
        if self.reasoning > self.completion:
            raise ValueError("usage.reasoning cannot exceed usage.completion (completion includes reasoning)")


class ScriptedImageUsage(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Exact token counts of an images-API answer (``usage`` of a GPT Image model).

    ``input_tokens`` is ``text_input + image_input``, ``output_tokens`` is ``text_output + image_output``; with
    ``split=False`` the answer leaves out ``output_tokens_details`` (the text/image split of the output), as some
    responses do.
    """

    text_input: _NonNegative = 0
    image_input: _NonNegative = 0
    text_output: _NonNegative = 0
    image_output: _NonNegative = 0
    split: bool = True


class ScriptedResponse(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One provider answer, consumed by the next request to ``provider``'s ``api``.

    - ``api``: ``chat`` (default), or ``images`` for OpenAI's ``/images/generations`` (``provider`` "openai").
    - ``image_usage``: exact usage for an ``images`` answer; None computes it from the prompt, size and quality.

    - ``reply``: the assistant text; None keeps the default reply (or the JSON-mode object).
    - ``usage``: exact usage to report; None computes it from the text like the default does.
    - ``model``: the model name to report (e.g. a dated snapshot); None echoes the requested model.
    - ``status``: an HTTP error status (429, 500, 529...) answered with the provider's error body.
    - ``retry_after``: seconds sent in the ``retry-after`` header of that error.
    - ``delay_ms``: sleep before answering, to exercise client timeouts.
    - ``malformed``: answer 200 with a body that is not valid JSON (a broken SSE event when streamed).
    - ``stream_break_after``: when streamed, drop the connection after this many content chunks, before the
      final usage is sent.
    """

    provider: Provider
    api: Api = "chat"
    image_usage: ScriptedImageUsage | None = None
    reply: str | None = None
    usage: ScriptedUsage | None = None
    model: str | None = None
    status: Annotated[int, msgspec.Meta(ge=400, le=599)] | None = None
    retry_after: Annotated[float, msgspec.Meta(ge=0)] | None = None
    delay_ms: _NonNegative = 0
    malformed: bool = False
    stream_break_after: _NonNegative | None = None

    def __post_init__(self) -> None:
        if self.usage is not None:
            self.usage.check_for(self.provider)
        if self.retry_after is not None and self.status is None:
            raise ValueError("retry_after only makes sense with an error status")
        if self.api == "images":
            if self.provider != "openai":
                raise ValueError("only provider 'openai' has an images API")
            chat_only = [name for name in ("reply", "usage", "model", "stream_break_after") if getattr(self, name)]
            if chat_only:
                raise ValueError(f"{chat_only} belong to chat answers, not to an images answer")
        elif self.image_usage is not None:
            raise ValueError("image_usage belongs to an images answer (api='images')")


class ReceivedRequest(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A provider request as the SDK sent it; the body stays raw until someone reads it."""

    provider: Provider
    raw_body: msgspec.Raw = msgspec.field(name="body")
    api: Api = "chat"

    @property
    def body(self) -> dict[str, Any]:
        decoded: dict[str, Any] = msgspec.json.decode(self.raw_body)
        return decoded


class SimulatorState:
    """Script queues and the log of received requests, shared by the app and the test that drives it.

    Only the most recent ``max_recorded_requests`` requests are kept, so a long benchmark run does not grow
    without bound.
    """

    def __init__(self, *, max_recorded_requests: int = DEFAULT_MAX_RECORDED_REQUESTS) -> None:
        self._queues: dict[tuple[Provider, Api], deque[ScriptedResponse]] = {
            (provider, api): deque() for provider in PROVIDERS for api in ("chat", "images")
        }
        self._requests: deque[ReceivedRequest] = deque(maxlen=max_recorded_requests)
        self._sequence = 0

    def enqueue(self, *responses: ScriptedResponse) -> None:
        for response in responses:
            self._queues[response.provider, response.api].append(response)

    def reset(self) -> None:
        for queue in self._queues.values():
            queue.clear()
        self._requests.clear()
        self._sequence = 0

    def pending(self, provider: Provider, api: Api = "chat") -> int:
        """How many scripted responses ``provider``'s ``api`` has not consumed yet."""
        return len(self._queues[provider, api])

    @property
    def requests(self) -> list[ReceivedRequest]:
        """Received provider requests, oldest first."""
        return list(self._requests)

    def requests_to(self, provider: Provider, api: Api = "chat") -> list[ReceivedRequest]:
        return [request for request in self._requests if request.provider == provider and request.api == api]

    def record(self, provider: Provider, raw_body: bytes, api: Api = "chat") -> None:
        self._requests.append(ReceivedRequest(provider=provider, raw_body=msgspec.Raw(raw_body), api=api))

    def next_script(self, provider: Provider, api: Api = "chat") -> ScriptedResponse | None:
        queue = self._queues[provider, api]
        return queue.popleft() if queue else None

    def next_sequence(self) -> int:
        """A counter for response ids, so ids are unique within a run and repeatable after ``reset``."""
        self._sequence += 1
        return self._sequence
