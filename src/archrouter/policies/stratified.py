"""Routing quality per stratum (task, prompt-length bucket), scored the way RouteLLM scores routers.

Quality of a choice = the share of prompts whose chosen backend answered correctly, from per-prompt
verdicts measured beforehand (the labelled capability prompts carry a `correct:<a>+<b>` tag: the
backends whose answer the capability matrix scored right). Per stratum: the policy's quality ("routed"),
the best single backend, random routing (the expected quality of a uniform pick), the oracle (any
backend right), decision accuracy against `best_backend`, and estimated cost per query.

RouteLLM (Ong et al., "RouteLLM: Learning to Route LLMs with Preference Data", 2024, arXiv:2406.18665,
section 4.1) scores a router between a weak and a strong model: PGR = (q_router - q_weak) / (q_strong -
q_weak), the performance gap recovered; APGR, the average PGR over the share of calls sent to the strong
model as the router's threshold sweeps; CPT(x%), the smallest share of calls to the strong model at which
PGR reaches x%. Here the strong model is the stratum's best single backend and the weak one its worst;
the sweep starts from the policy's own decisions and moves calls to the strong backend, least confident
classification first, until all go there (the policy's point and the all-strong end included).

The reliability curve bins the classifier's confidence (its top task probability) and compares each
bin's mean confidence with how often that top task was right; ECE is their gap weighted by bin size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from archrouter.policies import decision_metrics as M

LENGTH_EDGES = (128, 512, 2048)  # prompt tokens: <128, 128-511, 512-2047, >=2048
CORRECT_TAG = "correct:"


def correct_from_tags(tags: Sequence[str]) -> list[str] | None:
    """The backends that answered right, from a `correct:a+b` tag (`unsolved` items: []); None: no verdicts."""
    for t in tags:
        if t.startswith(CORRECT_TAG):
            return [b for b in t[len(CORRECT_TAG):].split("+") if b and b != "none"]
    return [] if "unsolved" in tags else None


def length_bucket(tokens: int, edges: Sequence[int] = LENGTH_EDGES) -> str:
    lo = 0
    for e in edges:
        if tokens < e:
            return f"{lo}-{e - 1}"
        lo = e
    return f">={lo}"


def _confidence(row: Any) -> float:
    return max(row.features.get("task_probs", {}).values(), default=0.0)


def _stratum(rows: list[Any], backends: list[str]) -> dict[str, Any]:
    n = len(rows)

    def quality(choice: list[str]) -> float:
        return sum(b in r.answered_by for r, b in zip(rows, choice, strict=True)) / n

    def cost(choice: list[str]) -> float:
        return sum(r.estimates[b]["cost"] for r, b in zip(rows, choice, strict=True)) / n

    single = {b: quality([b] * n) for b in backends}
    strong = max(backends, key=lambda b: (single[b], -cost([b] * n)))
    weak = min(backends, key=lambda b: (single[b], cost([b] * n)))
    policy = [r.backend for r in rows]
    routed = quality(policy)
    # the sweep: least confident first, each prompt's call moves to the strong backend
    order = sorted(range(n), key=lambda i: _confidence(rows[i]))
    curve, choice = [], list(policy)
    curve.append((sum(b == strong for b in choice) / n, quality(choice)))
    for i in order:
        choice[i] = strong
        curve.append((sum(b == strong for b in choice) / n, quality(choice)))
    gap = single[strong] - single[weak]
    labelled = [r for r in rows if r.best_backend is not None]
    out: dict[str, Any] = {
        "n": n,
        "decision_accuracy": M.accuracy([r.backend for r in labelled], [r.best_backend for r in labelled]),
        "quality": {"routed": routed, "best_single": single[strong], "random": sum(single.values()) / len(single),
                    "oracle": sum(bool(r.answered_by) for r in rows) / n, "single": single},
        "strong": strong, "weak": weak,
        "cost": {"routed": cost(policy), "best_single": cost([strong] * n)},
        "pgr": M.pgr(routed, single[weak], single[strong]) if gap > 0 else None,
        "apgr": M.apgr(curve, single[weak], single[strong]) if gap > 0 else None,
        "cpt50": cpt(curve, 0.5, single[weak], single[strong]) if gap > 0 else None,
        "cpt80": cpt(curve, 0.8, single[weak], single[strong]) if gap > 0 else None,
        "strong_share": curve[0][0],
    }
    return out


def cpt(curve: Sequence[tuple[float, float]], target: float, weak: float, strong: float) -> float | None:
    """Smallest share of calls to the strong backend at which PGR reaches `target` (linear between points)."""
    pts = sorted((x, M.pgr(q, weak, strong)) for x, q in curve)
    if pts[0][1] >= target:
        return pts[0][0]
    for (x0, y0), (x1, y1) in zip(pts, pts[1:], strict=False):
        if y1 >= target > y0:
            return x0 + (x1 - x0) * (target - y0) / (y1 - y0)
    return None


def reliability(rows: Sequence[Any], bins: int = 10) -> dict[str, Any]:
    """Confidence bins: count, mean confidence, accuracy of the top task; and the expected calibration error."""
    out, ece = [], 0.0
    for k in range(bins):
        lo, hi = k / bins, (k + 1) / bins
        inb = [r for r in rows if lo <= _confidence(r) < hi or (k == bins - 1 and _confidence(r) == 1.0)]
        if not inb:
            continue
        conf = sum(_confidence(r) for r in inb) / len(inb)
        acc = sum(r.predicted_task == r.task for r in inb) / len(inb)
        out.append({"bin": [lo, hi], "n": len(inb), "confidence": conf, "accuracy": acc})
        ece += len(inb) / len(rows) * abs(conf - acc)
    return {"bins": out, "ece": ece}


def stratify(rows: Sequence[Any], backends: list[str], edges: Sequence[int] = LENGTH_EDGES) -> dict[str, Any] | None:
    """{"all", "task:<t>", "length:<bucket>"} -> stratum figures, over rows with verdicts; None without."""
    scored = [r for r in rows if getattr(r, "answered_by", None) is not None]
    if not scored:
        return None
    groups: dict[str, list[Any]] = {"all": scored}
    for r in scored:
        groups.setdefault(f"task:{r.task}", []).append(r)
    for r in sorted(scored, key=lambda r: r.prompt_tokens):
        groups.setdefault(f"length:{length_bucket(r.prompt_tokens, edges)}", []).append(r)
    return {"strata": {k: _stratum(v, backends) for k, v in groups.items()}, "length_edges": list(edges)}
