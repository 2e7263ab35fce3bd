"""What the router may know about a backend: requests in, streamed chunks out.

The in-process generator and the Ray Serve handle client both implement `BackendClient`,
so the router does not know where a backend lives. Everything here is plain data that
pickles (it crosses Ray's process boundary).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

FinishReason = Literal["stop", "length"]


@dataclass
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: off
    max_tokens: int = 256
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    min_p: float = 0.0  # 0: off
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0  # 1: off (HF / vLLM meaning: prompt and output tokens)
    logit_bias: dict[int, float] | None = None  # token id -> added to its logit
    logprobs: int | None = None  # None: off; k: the chosen token's logprob and the k most likely
    grammar: str | None = None  # llguidance grammar (from response_format) the output must match
    n: int = 1  # sequences per prompt, forked from one prefill


@dataclass
class TokenLogprob:
    """One generated token's logprob and the most likely alternatives, as OpenAI reports them."""

    token: str
    bytes: list[int]
    logprob: float
    top: list[tuple[str, list[int], float]] = field(default_factory=list)


@dataclass
class GenerationRequest:
    request_id: str
    sampling: SamplingParams
    prompt: str | list[str] | None = None  # /v1/completions (a list: one choice group per prompt, in order)
    messages: list[dict[str, str]] | None = None  # /v1/chat/completions, rendered by the backend's template
    session: str | None = None  # the caller's `user`: Ray Serve keeps a session's turns on one replica


@dataclass
class GenerationChunk:
    """A piece of streamed output for one choice. Choices interleave in a stream; each choice's last chunk
    has `finish_reason` set, and the stream ends after every choice has ended."""

    text: str
    token_ids: list[int]
    prompt_tokens: int
    completion_tokens: int  # cumulative, for this choice
    finish_reason: FinishReason | None = None
    index: int = 0  # the choice: prompt number * n + sample number
    logprobs: list[TokenLogprob] | None = None  # one per sampled token (the end token's too), when asked for
    cached_tokens: int = 0  # prompt tokens restored from a cached prefix, not prefilled (OpenAI's cached_tokens)


@dataclass
class BackendInfo:
    name: str
    family: str
    context_length: int
    checkpoint: str
    trained: bool
    parameters: int


class BackendError(Exception):
    """A backend could not serve a request; the router may try a fallback."""


class ContextLengthExceeded(BackendError):
    def __init__(self, prompt_tokens: int, limit: int, backend: str):
        super().__init__(
            f"prompt is {prompt_tokens} tokens; backend {backend!r} accepts at most {limit} "
            "(prompt plus max_tokens)"
        )
        self.prompt_tokens, self.limit, self.backend = prompt_tokens, limit, backend

    def __reduce__(self):  # crosses Ray's process boundary intact
        return type(self), (self.prompt_tokens, self.limit, self.backend)


class InvalidRequest(BackendError):
    """The request cannot be served by any backend as asked (e.g. a grammar that does not compile): HTTP 400."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.message, self.param = message, param

    def __reduce__(self):  # crosses Ray's process boundary intact
        return type(self), (self.message, self.param)


class BackendOverloaded(BackendError):
    """The backend's queue is full; retry later or use a fallback."""


@runtime_checkable
class BackendClient(Protocol):
    info: BackendInfo

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        """Stream the completion; raises BackendError subclasses before the first chunk."""
        ...

    async def ready(self) -> bool: ...

    async def close(self) -> None: ...
