"""Turn a request into the `Features` the rules read."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from archrouter.policies.cost import estimate_all
from archrouter.policies.labelled import render_messages
from archrouter.policies.schema import BackendSpec
from archrouter.policies.types import TASKS, Features

DEFAULT_MAX_TOKENS = 256  # when the request gives none (OpenAI's "up to the context" is not a cost estimate)
# Special tokens the chat template adds around each message (a role marker and an end-of-turn marker).
# The router knows the exact template; it passes `prompt_tokens` when it has already tokenised.
CHAT_TOKENS_PER_MESSAGE = 2
BOS_TOKENS = 1


class Classifier(Protocol):
    """What the rules need from a classifier (policies.classifier.TaskClassifier provides it)."""

    def predict(self, text: str) -> tuple[dict[str, float], float]: ...


def message_text(message: Any) -> str:
    """The text of one OpenAI chat message (a dict or an object); content parts of type text are joined."""
    content = message.get("content") if isinstance(message, Mapping) else getattr(message, "content", None)
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:  # [{"type": "text", "text": "..."}, ...]
        text = part.get("text") if isinstance(part, Mapping) else getattr(part, "text", None)
        if isinstance(text, str):
            parts.append(text)
    return "\n".join(parts)


def message_role(message: Any) -> str:
    role = message.get("role") if isinstance(message, Mapping) else getattr(message, "role", None)
    return str(role or "")


def render_text(messages: Sequence[Any] | None = None, prompt: str | None = None) -> str:
    """The text the classifier reads: the prompt, or the chat rendered exactly as the classifier's
    training data was (`policies.labelled.render_messages`), so serving matches training. The
    classifier truncates long texts itself."""
    if messages:
        return render_messages(messages)
    return prompt or ""


def estimate_prompt_tokens(messages: Sequence[Any] | None = None, prompt: str | None = None) -> int:
    """Prompt length in tokens, counted as UTF-8 bytes.

    Exact for the byte-level tokenizers of our checkpoints (one token per byte, plus BOS); for chat
    requests it adds the template's special tokens per message. A checkpoint that ships its own
    `tokenizer.json` uses fewer tokens than bytes, so this is then an upper bound.
    """
    if messages:
        body = sum(len(message_text(m).encode("utf-8")) for m in messages)
        return BOS_TOKENS + body + CHAT_TOKENS_PER_MESSAGE * len(messages)
    return BOS_TOKENS + len((prompt or "").encode("utf-8"))


def extract(
    *,
    messages: Sequence[Any] | None = None,
    prompt: str | None = None,
    max_tokens: int | None = None,
    metadata: Mapping[str, Any] | None = None,
    session_id: str | None = None,
    classifier: Classifier,
    catalogue: Iterable[BackendSpec],
    queue_depth: Mapping[str, int] | None = None,
    prompt_tokens: int | None = None,
) -> Features:
    """Features of one request: give `messages` (chat) or `prompt` (completion).

    `prompt_tokens` overrides the byte-count estimate when the caller has tokenised already;
    `queue_depth` is what the engines report (backend -> waiting requests).
    """
    if prompt_tokens is None:
        prompt_tokens = estimate_prompt_tokens(messages, prompt)
    if max_tokens is None:
        max_tokens = DEFAULT_MAX_TOKENS
    raw_probs, state_score = classifier.predict(render_text(messages, prompt))
    probs = {t: float(raw_probs.get(t, 0.0)) for t in TASKS}
    task = max(TASKS, key=lambda t: probs[t])  # ties go to the earlier task in TASKS
    turns = sum(1 for m in messages if message_role(m) == "user") if messages else 1
    return Features(
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
        task=task,
        task_probs=probs,
        state_tracking=min(max(float(state_score), 0.0), 1.0),
        turns=turns,
        session_id=session_id,
        metadata={str(k): _metadata_value(v) for k, v in (metadata or {}).items()},
        estimates=estimate_all(catalogue, prompt_tokens, max_tokens),
        queue_depth=dict(queue_depth or {}),
    )


def _metadata_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"  # as JSON writes it, so `metadata.x: true` in a rule matches
    return str(value)
