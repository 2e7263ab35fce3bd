"""Decide every labelled prompt with a policy, in process, and summarise the decisions."""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from tqdm import tqdm

from archrouter.policies import decision_metrics as M
from archrouter.policies.engine import Policy
from archrouter.policies.labelled import LabelledPrompt
from archrouter.policies.stratified import correct_from_tags, reliability, stratify
from archrouter.policies.types import TASKS


@dataclass
class Row:
    id: str
    task: str
    predicted_task: str
    state_tracking: bool
    state_tracking_score: float
    best_backend: str | None
    backend: str
    rule: str
    fallbacks: list[str]
    prompt_tokens: int
    max_tokens: int
    decision_ms: float
    estimates: dict[str, dict[str, float]]  # backend -> {latency_ms, cost}
    features: dict[str, Any] = field(default_factory=dict)
    answered_by: list[str] | None = None  # backends whose answer was scored right (a `correct:` tag), if known

    @property
    def correct(self) -> bool | None:
        return None if self.best_backend is None else self.backend == self.best_backend

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "correct": self.correct}


def decide_all(policy: Policy, records: list[LabelledPrompt], *, max_tokens: int = 256,
               progress: bool = True) -> list[Row]:
    rows = []
    for i, rec in enumerate(tqdm(records, desc=f"deciding with {policy.id}", disable=not progress, unit="prompt")):
        messages = [m.model_dump() for m in rec.messages] if rec.messages is not None else None
        t0 = time.perf_counter()
        f = policy.features(messages=messages, prompt=rec.prompt, max_tokens=max_tokens)
        d = policy.decide(f)
        ms = (time.perf_counter() - t0) * 1000
        rows.append(Row(
            id=rec.id or f"#{i + 1}", task=rec.task, predicted_task=f.task, state_tracking=rec.tracks_state(),
            state_tracking_score=f.state_tracking, best_backend=rec.best_backend, backend=d.backend, rule=d.rule,
            fallbacks=list(d.fallbacks), prompt_tokens=f.prompt_tokens, max_tokens=f.max_tokens, decision_ms=ms,
            estimates={b: {"latency_ms": e.latency_ms, "cost": e.cost} for b, e in f.estimates.items()},
            features={"task_probs": f.task_probs, "turns": f.turns}, answered_by=correct_from_tags(rec.tags),
        ))
    return rows


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def summarise(policy: Policy, rows: list[Row], *, seed: int = 0) -> dict[str, Any]:
    backends = list(policy.backends)
    labelled = [r for r in rows if r.best_backend is not None]
    task_per = M.per_class([r.predicted_task for r in rows], [r.task for r in rows], TASKS)

    def cost_of(choice: list[str]) -> dict[str, float]:
        return {"cost": _mean([r.estimates[b]["cost"] for r, b in zip(rows, choice, strict=True)]),
                "latency_ms": _mean([r.estimates[b]["latency_ms"] for r, b in zip(rows, choice, strict=True)])}

    def acc_of(choice: list[str]) -> float | None:
        pairs = [(b, r.best_backend) for r, b in zip(rows, choice, strict=True) if r.best_backend is not None]
        return sum(b == g for b, g in pairs) / len(pairs) if pairs else None

    rnd = random.Random(seed)
    strategies: dict[str, list[str]] = {"policy": [r.backend for r in rows]}
    strategies.update({f"always:{b}": [b] * len(rows) for b in backends})
    strategies["random"] = [rnd.choice(backends) for _ in rows]
    if labelled:
        strategies["oracle"] = [r.best_backend if r.best_backend in policy.backends else r.backend for r in rows]
    baselines = {name: {**cost_of(choice), "accuracy": acc_of(choice)} for name, choice in strategies.items()}
    times = [r.decision_ms for r in rows]
    return {
        "policy": policy.id,
        "prompts": len(rows),
        "labelled_backend": len(labelled),
        "decision_accuracy": M.accuracy([r.backend for r in labelled], [r.best_backend for r in labelled]),
        "task_accuracy": M.accuracy([r.predicted_task for r in rows], [r.task for r in rows]),
        "task_macro_f1": M.macro_f1(task_per),
        "task_per_class": task_per,
        "task_confusion": {"labels": list(TASKS),
                           "matrix": M.confusion([r.predicted_task for r in rows], [r.task for r in rows], TASKS)},
        "backend_confusion": {"labels": backends, "matrix": M.confusion(
            [r.backend for r in labelled], [r.best_backend for r in labelled], backends)},
        "rule_counts": M.counts([r.rule for r in rows]),
        "backend_counts": M.counts([r.backend for r in rows]),
        "no_rule_matched": sum(r.rule == "default" for r in rows),
        "baselines": baselines,
        "decision_latency_ms": {"p50": M.percentile(times, 50), "p99": M.percentile(times, 99),
                                "mean": _mean(times)},
        "stratified": stratify(rows, backends),
        "reliability": reliability(rows),
    }
