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


@dataclass
class GenerationRequest:
    request_id: str
    sampling: SamplingParams
    prompt: str | None = None  # /v1/completions
    messages: list[dict[str, str]] | None = None  # /v1/chat/completions, rendered by the backend's template


@dataclass
class GenerationChunk:
    """A piece of streamed output. The last chunk of a stream has `finish_reason` set."""

    text: str
    token_ids: list[int]
    prompt_tokens: int
    completion_tokens: int  # cumulative
    finish_reason: FinishReason | None = None


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
