"""Types shared between the policy and its callers (router, evals). No torch here."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

TASKS: tuple[str, ...] = ("chat", "recall", "state_tracking", "long_document", "sequential_data", "code")
Task = Literal["chat", "recall", "state_tracking", "long_document", "sequential_data", "code"]


@dataclass
class Estimate:
    latency_ms: float
    cost: float


@dataclass
class Features:
    prompt_tokens: int
    max_tokens: int
    task: str
    task_probs: dict[str, float]
    state_tracking: float
    turns: int = 1
    session_id: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)  # caller hints from the request
    estimates: dict[str, Estimate] = field(default_factory=dict)  # per backend, from the cost model
    queue_depth: dict[str, int] = field(default_factory=dict)  # per backend, from the engines

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RuleTrace:
    rule: str
    fired: bool
    why: str


@dataclass
class Decision:
    backend: str
    rule: str
    reason: str
    fallbacks: list[str]
    policy: str  # "<name>@<version or hash>"
    estimates: dict[str, Estimate] = field(default_factory=dict)
    trace: list[RuleTrace] = field(default_factory=list)
    # backend -> measured accuracy for this task and length bucket (the policy's `capability:`; {} without)
    expected_accuracy: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
