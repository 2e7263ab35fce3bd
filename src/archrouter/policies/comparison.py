"""Compare two policies on the same labelled prompts, and gate CI on the result."""

from __future__ import annotations

import re
from typing import Any

from archrouter.policies.evaluation import Row

_CONDITION = re.compile(r"^\s*(accuracy|task_accuracy|cost|latency)\s*([<>]=?)\s*([0-9.]+)(x?)\s*$")


def changed(a: list[Row], b: list[Row]) -> list[dict[str, Any]]:
    return [
        {"id": ra.id, "task": ra.task, "best_backend": ra.best_backend, "a": {"backend": ra.backend, "rule": ra.rule},
         "b": {"backend": rb.backend, "rule": rb.rule}}
        for ra, rb in zip(a, b, strict=True) if (ra.backend, ra.rule) != (rb.backend, rb.rule)
    ]


def headline(summary: dict[str, Any]) -> dict[str, float | None]:
    pol = summary["baselines"]["policy"]
    return {"accuracy": summary["decision_accuracy"], "task_accuracy": summary["task_accuracy"],
            "cost": pol["cost"], "latency": pol["latency_ms"]}


def deltas(sa: dict[str, Any], sb: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    ha, hb = headline(sa), headline(sb)
    return {k: {"a": ha[k], "b": hb[k], "delta": None if ha[k] is None or hb[k] is None else hb[k] - ha[k]}
            for k in ha}


def failures(spec: str, sa: dict[str, Any], sb: dict[str, Any]) -> list[str]:
    """Conditions like "accuracy<0.9,cost>1.2x" that hold for policy B (x: relative to policy A)."""
    ha, hb = headline(sa), headline(sb)
    out = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        m = _CONDITION.match(part)
        if not m:
            raise ValueError(f"--fail-if: cannot read {part!r}; use e.g. accuracy<0.9,cost>1.2x")
        metric, op, num, rel = m.groups()
        value, bound = hb[metric], float(num) * (ha[metric] if rel else 1.0)
        if value is None:
            raise ValueError(f"--fail-if: {metric} is not available for this data (no labels?)")
        hit = {"<": value < bound, "<=": value <= bound, ">": value > bound, ">=": value >= bound}[op]
        if hit:
            out.append(f"{part}: {metric} is {value:.4g}" + (f" ({value / ha[metric]:.3g}x of A)" if rel else ""))
    return out
