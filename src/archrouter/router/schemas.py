"""OpenAI request and response bodies (the subset we serve), validated by pydantic.

Unknown fields are rejected so a typo never silently changes behaviour; OpenAI fields we do
not implement are rejected by name rather than ignored.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

Role = Literal["system", "developer", "user", "assistant"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _no_control(text: str) -> str:
    if m := _CONTROL.search(text):
        raise ValueError(f"control character U+{ord(m.group()):04X} at offset {m.start()} is not allowed")
    return text


Text = Annotated[str, AfterValidator(_no_control)]


class TextPart(_Strict):
    type: Literal["text"]
    text: Text


class Message(_Strict):
    role: Role
    content: Text | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class StreamOptions(_Strict):
    include_usage: bool = False


class JsonSchemaFormat(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ResponseFormat(_Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type 'json_schema' needs a json_schema object ({name, schema})")
        if self.type != "json_schema" and self.json_schema is not None:
            raise ValueError(f"json_schema is only read with type 'json_schema' (got type {self.type!r})")
        return self


MAX_N = 16  # choices per prompt (each one a sequence in the batch)
MAX_LOGPROBS = 20


def _token_bias(v: dict[str, float] | None) -> dict[str, float] | None:
    for key, bias in (v or {}).items():
        if not key.isdigit():
            raise ValueError(f"keys are token ids (integers as strings); got {key!r}")
        if not -100.0 <= bias <= 100.0:
            raise ValueError(f"bias for token {key} is {bias}; biases lie in [-100, 100]")
    return v


class _Sampling(_Strict):
    model: str = Field(min_length=1, examples=["auto"])  # "auto" routes; a backend name pins it
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 1.0
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    top_k: Annotated[int, Field(ge=0)] = 0  # extension, as vLLM accepts it
    min_p: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0  # extension, as vLLM accepts it
    repetition_penalty: Annotated[float, Field(gt=0.0, le=10.0)] = 1.0  # extension, as vLLM accepts it
    n: Annotated[int, Field(ge=1, le=MAX_N)] = 1
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    seed: int | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None  # caller hints the policy can read as metadata.<key>
    presence_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] = 0.0
    frequency_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] = 0.0
    logit_bias: Annotated[dict[str, float], Field(max_length=1024), AfterValidator(_token_bias)] | None = None
    # OpenAI's is for chat only; accepted on completions too, as vLLM does
    response_format: ResponseFormat | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> list[str]:
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        if any(not s or len(s) > 256 for s in stops):
            raise ValueError("stop sequences must be 1 to 256 characters")
        return stops

    def stops(self) -> list[str]:
        return list(self.stop or [])

    def token_bias(self) -> dict[int, float] | None:
        return {int(k): float(v) for k, v in self.logit_bias.items()} if self.logit_bias else None

    def prompts(self) -> int:
        return 1


class ChatCompletionRequest(_Sampling):
    messages: list[Message] = Field(min_length=1)
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    logprobs: bool = False
    top_logprobs: Annotated[int, Field(ge=0, le=MAX_LOGPROBS)] | None = None

    @model_validator(mode="after")
    def _last_turn(self) -> ChatCompletionRequest:
        if self.messages[-1].role == "assistant":
            raise ValueError("the last message must not be from the assistant")
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        return self

    def logprobs_k(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    def limit(self) -> int:
        return self.max_completion_tokens or self.max_tokens or 256

    def message_dicts(self) -> list[dict[str, str]]:
        # "developer" is OpenAI's newer name for the system role
        return [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in self.messages]


MAX_PROMPTS = 32  # prompts in one /v1/completions request (each with n choices)


class CompletionRequest(_Sampling):
    prompt: Text | Annotated[list[Text], Field(min_length=1, max_length=MAX_PROMPTS)]
    max_tokens: Annotated[int, Field(ge=1)] = 16  # OpenAI's default for completions
    echo: Literal[False] = False
    logprobs: Annotated[int, Field(ge=0, le=MAX_LOGPROBS)] | None = None

    @model_validator(mode="after")
    def _choices(self) -> CompletionRequest:
        if self.prompts() * self.n > MAX_PROMPTS:
            raise ValueError(f"{self.prompts()} prompts x n={self.n} is {self.prompts() * self.n} choices; "
                             f"at most {MAX_PROMPTS} per request")
        return self

    def prompt_list(self) -> list[str]:
        return self.prompt if isinstance(self.prompt, list) else [self.prompt]

    def prompts(self) -> int:
        return len(self.prompt_list())

    def logprobs_k(self) -> int | None:
        return self.logprobs

    def limit(self) -> int:
        return self.max_tokens


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0  # restored from the backend's prefix/state cache instead of prefilled


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


# Response bodies, declared for the OpenAPI document (the handlers build plain dicts of this shape).


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None = None
    refusal: None = None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]
    logprobs: ChoiceLogprobs | None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]] | None = None
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: Literal["stop", "length"]
    logprobs: CompletionLogprobs | None = None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage
