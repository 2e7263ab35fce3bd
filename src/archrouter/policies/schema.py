"""The policy file's schema (pydantic v2). Every model forbids unknown keys so a typo is an error.

Conditions (`when`) are kept as plain YAML data here and checked by `policies.conditions`, which
knows the features, their types and the catalogue's backend names.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from archrouter.policies.types import Task

Family = Literal["transformer", "mamba", "rwkv", "xlstm"]
DType = Literal["float32", "bfloat16", "float16"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PrefillCost(_Strict):
    """Milliseconds to prefill n tokens: base + per_token*n + per_token_sq*n^2.

    Attention has a quadratic term; recurrent families set per_token_sq to 0.
    """

    base: float = Field(0.0, ge=0)
    per_token: float = Field(0.0, ge=0)
    per_token_sq: float = Field(0.0, ge=0)


class DecodeCost(_Strict):
    """Milliseconds per decoded token at context c: base + per_context*c (recurrent: per_context 0)."""

    base: float = Field(0.0, ge=0)
    per_context: float = Field(0.0, ge=0)


class CostModel(_Strict):
    prefill_ms: PrefillCost = PrefillCost()
    decode_ms: DecodeCost = DecodeCost()
    price_per_1m_input: float = Field(0.0, ge=0)
    price_per_1m_output: float = Field(0.0, ge=0)
    # When set, the estimated compute time is charged too: latency_ms / 3.6e6 * price_per_gpu_hour.
    price_per_gpu_hour: float = Field(0.0, ge=0)


class InitSpec(_Strict):
    """How `archrouter init-models` makes a random-weight checkpoint when none exists yet."""

    preset: str = Field(min_length=1)  # the family module's random_config preset
    seed: int = 0


class BackendSpec(_Strict):
    name: str = Field(min_length=1)
    family: Family
    checkpoint: str = Field(min_length=1)
    context_length: int = Field(gt=0)
    dtype: DType | None = None
    cost: CostModel = CostModel()
    init: InitSpec | None = None


class RouteChoice(_Strict):
    """`{cheapest: [a, b]}` or `{fastest: [a, b]}`: pick among candidates under the cost model."""

    cheapest: list[str] | None = Field(None, min_length=1)
    fastest: list[str] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _exactly_one(self) -> RouteChoice:
        if (self.cheapest is None) == (self.fastest is None):
            raise ValueError("give exactly one of 'cheapest' or 'fastest'")
        return self

    @property
    def by(self) -> Literal["cheapest", "fastest"]:
        return "cheapest" if self.cheapest is not None else "fastest"

    @property
    def candidates(self) -> list[str]:
        return list(self.cheapest if self.cheapest is not None else self.fastest or [])


Route = str | RouteChoice


class Rule(_Strict):
    name: str = Field(min_length=1)
    description: str | None = None
    when: Any  # checked and compiled by policies.conditions
    route: Route
    # None: for cheapest/fastest, the other candidates in order of the metric; otherwise none.
    fallbacks: list[str] | None = None


class DefaultRoute(_Strict):
    route: Route
    fallbacks: list[str] | None = None


class TaskCapability(_Strict):
    """One task's measured accuracy per backend in length buckets.

    `bounds` are the prompt-token boundaries between buckets (ascending): a prompt of n tokens falls in
    the first bucket whose bound exceeds n, else in the last; each backend lists one accuracy per bucket.
    """

    bounds: list[int] = []
    accuracy: dict[str, list[float]] = Field(min_length=1)

    @model_validator(mode="after")
    def _shape(self) -> TaskCapability:
        if self.bounds != sorted(set(self.bounds)):
            raise ValueError("bounds must be strictly ascending")
        for name, accs in self.accuracy.items():
            if len(accs) != len(self.bounds) + 1:
                raise ValueError(f"{name}: {len(accs)} accuracies for {len(self.bounds) + 1} length buckets")
            if any(not 0.0 <= a <= 1.0 for a in accs):
                raise ValueError(f"{name}: accuracies must lie in [0, 1]")
        return self

    def bucket(self, prompt_tokens: int) -> int:
        return next((i for i, b in enumerate(self.bounds) if prompt_tokens < b), len(self.bounds))


class Capability(_Strict):
    """The capability matrix a policy was fitted from (`archrouter policy fit` writes it): fallbacks
    without a static list go to the best remaining backend for the request's task and length."""

    source: str | None = None
    tasks: dict[Task, TaskCapability] = Field(min_length=1)

    def expected(self, task: str, prompt_tokens: int) -> dict[str, float]:
        """Backend -> measured accuracy for this task and prompt length ({} when the task is unmeasured)."""
        t = self.tasks.get(task)  # type: ignore[call-overload]
        if t is None:
            return {}
        i = t.bucket(prompt_tokens)
        return {name: accs[i] for name, accs in t.accuracy.items()}


class PolicySpec(_Strict):
    name: str = Field(min_length=1)
    version: str | None = Field(None, min_length=1)  # None: the first 12 hex digits of the file's sha256
    classifier: str = Field(min_length=1)
    backends: list[BackendSpec]
    rules: list[Rule] = []
    default: DefaultRoute
    capability: Capability | None = None

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, v: Any) -> Any:
        # `version: 1` or `version: 1.2` in YAML reads as a number; the id wants text.
        if isinstance(v, int | float) and not isinstance(v, bool):
            return str(v)
        return v
