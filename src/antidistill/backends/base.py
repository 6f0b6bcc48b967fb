"""The Backend protocol and the plain data that crosses it.

A backend turns one GenerationRequest into a Completion (``complete``) or a stream of Chunks
(``stream``). Requests are already validated and capped by the gateway. Backends raise only
``antidistill.errors.BackendError`` subclasses (or InvalidRequestError for things only the model
can know, such as a prompt longer than its context).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

FinishReason = Literal["stop", "length", "content_filter"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str
    content: str


@dataclass(frozen=True, slots=True)
class SamplingParams:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    n: int = 1
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0


class TokenSampler(Protocol):
    """Chooses the next token of one sequence from its logits; this is where watermarks live.

    ``context`` is every token id of the sequence so far (prompt + generated), ``logits`` the raw
    next-token logits (float32, vocabulary-sized; the sampler must not modify them in place),
    ``params`` the request's sampling parameters. Returns the chosen token id.
    """

    def sample(self, context: Sequence[int], logits: np.ndarray, params: SamplingParams) -> int: ...


@dataclass(frozen=True, slots=True)
class WatermarkAssignment:
    """What the gateway tells a backend about watermarking one request."""

    sampler: TokenSampler
    key_id: str
    config_hash: str
    canary_key_id: str | None = None  # watermark_canary: the KGW canary key also applied


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    request_id: str
    model: str  # the served model id the client asked for
    kind: Literal["chat", "completion"]
    params: SamplingParams
    messages: tuple[ChatMessage, ...] = ()
    prompt: str = ""
    watermark: WatermarkAssignment | None = None
    # the validated client body, for upstream passthrough of fields we do not interpret
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class Choice:
    index: int
    text: str
    finish_reason: FinishReason
    reasoning: str | None = None  # a reasoning trace, for backends that emit one


@dataclass(frozen=True, slots=True)
class Completion:
    choices: tuple[Choice, ...]
    usage: Usage
    watermark_key_id: str | None = None
    watermark_config_hash: str | None = None


@dataclass(frozen=True, slots=True)
class Chunk:
    """One streamed piece. ``usage`` is set only on the final chunk of the whole response."""

    index: int = 0
    text: str = ""
    finish_reason: FinishReason | None = None
    reasoning: str | None = None
    usage: Usage | None = None


@runtime_checkable
class Backend(Protocol):
    name: str

    async def start(self) -> None:
        """Load models / open connection pools. Called once in the app's lifespan."""
        ...

    async def complete(self, req: GenerationRequest) -> Completion: ...

    def stream(self, req: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        """Yield chunks as they are generated. Closing the iterator (client gone) must stop the
        generation for this request. The last chunk carries ``usage``."""
        ...

    async def aclose(self) -> None: ...

    def model_ids(self) -> list[str]:
        """The served model ids this backend answers for."""
        ...
