"""Compare two policies on the same labelled prompts, and gate CI on the result."""

from __future__ import annotations

import re
from typing import Any

from archrouter.policies.evaluation import Row

# metric, optional [stratum] (all, task:<t>, length:<lo-hi>), comparison, bound, x (relative to policy A)
_CONDITION = re.compile(r"^\s*([a-z_0-9]+)(?:\[([^\]]+)\])?\s*([<>]=?)\s*([0-9.]+)(x?)\s*$")
HEADLINE = ("accuracy", "task_accuracy", "cost", "latency")
# per-stratum metrics from `summary["stratified"]` (prompts with per-backend verdicts)
STRATIFIED = ("quality", "best_single", "oracle", "random", "pgr", "apgr", "cpt50", "cpt80", "decision_accuracy",
              "routed_cost", "ece")


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


def metric(summary: dict[str, Any], name: str, stratum: str | None) -> float | None:
    """One figure of a summary: a headline metric, or a stratified one (`stratum` defaults to "all")."""
    if name in HEADLINE and stratum is None:
        return headline(summary)[name]
    if name not in STRATIFIED:
        raise ValueError(f"--fail-if: unknown metric {name!r}; use one of {', '.join(HEADLINE + STRATIFIED)}")
    st = summary.get("stratified")
    if name == "ece" and stratum is None:
        return summary["reliability"]["ece"]
    if not st:
        raise ValueError(f"--fail-if: {name} needs prompts with per-backend verdicts (a `correct:` tag)")
    if name == "ece":
        return summary["reliability"]["ece"]
    key = stratum or "all"
    if key not in st["strata"]:
        raise ValueError(f"--fail-if: no stratum {key!r}; there are {', '.join(st['strata'])}")
    s = st["strata"][key]
    q = s["quality"]
    return {"quality": q["routed"], "best_single": q["best_single"], "oracle": q["oracle"], "random": q["random"],
            "routed_cost": s["cost"]["routed"]}.get(name, s.get(name))


def failures(spec: str, sa: dict[str, Any], sb: dict[str, Any]) -> list[str]:
    """Conditions like "accuracy<0.9,cost>1.2x,apgr[task:recall]<0.5" that hold for policy B (x: relative to A)."""
    out = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        m = _CONDITION.match(part)
        if not m:
            raise ValueError(f"--fail-if: cannot read {part!r}; use e.g. accuracy<0.9,cost>1.2x,apgr[length:0-127]<0.5")
        name, stratum, op, num, rel = m.groups()
        value = metric(sb, name, stratum)
        base = metric(sa, name, stratum) if rel else 1.0
        if value is None or base is None:
            raise ValueError(f"--fail-if: {name} is not available for this data (no labels, or no gap to recover)")
        bound = float(num) * base
        hit = {"<": value < bound, "<=": value <= bound, ">": value > bound, ">=": value >= bound}[op]
        if hit:
            out.append(f"{part}: {name} is {value:.4g}" + (f" ({value / base:.3g}x of A)" if rel and base else ""))
    return out
