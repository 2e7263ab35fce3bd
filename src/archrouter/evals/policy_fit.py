"""From a capability matrix to a readable routing policy (`archrouter policy fit`).

    archrouter policy fit --capability src/archrouter/evals/results/capability/capability.json --out policy.yaml
        [--base config/policy.yaml] [--names transformer=transformer,mamba=mamba,...] [--cost-device cuda]

**Catalogue.** One backend per measured family (names from `--names`, default the family names),
checkpoint and parameters from capability.json, context length from the base policy's entry of the
same name (else the model's positional limit, or RECURRENT_CONTEXT for recurrent families). Cost
curves are least-squares fits (non-negative, relative error) of the measured points on one device:
prefill_ms(n) = base + per_token*n + per_token_sq*n^2 on the total prefill time, decode_ms(c) = base +
per_context*c on the per-token decode time; the n^2 and per-context terms are kept only for families
whose state grows with length (attention). Prices are the measured time at a notional GPU-hour price
(`--gpu-hour-price`), so `cheapest` ranks by measured compute time on that device.

**Rules.** For every task and length scale, the families whose accuracy is within the margin of
the best (`margin = max(MIN_MARGIN, z * standard error of the difference)`, `z` = `--z`) are
"tied at the top"; quality decides first, so the route is that one family, or `{cheapest: [...]}`
of the tied ones (the cost model then decides). When no family reaches FLOOR accuracy the cell says
nothing about quality and every family is tied. Adjacent scales with the same tied set merge; the
boundary between two scales is the geometric mean of their median prompt lengths. One rule per
(task, length segment), in TASKS order, shortest first; each carries a comment naming the numbers it
rests on. A first rule sends prompts past the smallest context length to the families that fit.
The default route is the family with the best mean accuracy over all cells (ties: cheapest).
A task whose whole length range routes like the default gets no rule (the default covers it).

**Capability.** The matrix itself goes into the policy's `capability:` section (accuracy per task,
length bucket and backend), and rules carry no static `fallbacks:`: the router's fallback is the best
remaining backend for the request's task and length by that section, ties by cost.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from archrouter.evals.capability import cost_device, scales_of, task_accuracy, task_items
from archrouter.policies.types import TASKS

MIN_MARGIN = 0.02
FLOOR = 0.05
RECURRENT_CONTEXT = 16384
DEFAULT_GPU_HOUR_PRICE = 2.0
DEFAULT_MAX_TOKENS = 256  # policies.features' default; prompts past context - this go to those that fit


# ----------------------------------------------------------------------------- cost curves


def nnls(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative least squares for a handful of columns: the best of every column subset."""
    best, best_err = np.zeros(a.shape[1]), float(np.sum(y**2))
    for k in range(1, a.shape[1] + 1):
        for cols in itertools.combinations(range(a.shape[1]), k):
            coef, *_ = np.linalg.lstsq(a[:, cols], y, rcond=None)
            if np.all(coef >= 0):
                err = float(np.sum((a[:, cols] @ coef - y) ** 2))
                if err < best_err - 1e-15:
                    full = np.zeros(a.shape[1])
                    full[list(cols)] = coef
                    best, best_err = full, err
    return best


def grows(points: list[dict[str, Any]]) -> bool:
    """Whether the state grows with length (attention's KV cache) rather than staying fixed."""
    if len(points) < 2:
        return False
    lo, hi = min(points, key=lambda p: p["prompt_tokens"]), max(points, key=lambda p: p["prompt_tokens"])
    return hi["state_bytes"] > 1.5 * lo["state_bytes"]


def _rel_fit(cols: list[list[float]], y: list[float]) -> list[float]:
    a = np.array(cols, dtype=float).T
    yy = np.array(y, dtype=float)
    w = 1.0 / np.maximum(yy, 1e-12)  # relative error: short and long prompts count alike
    return [float(c) for c in nnls(a * w[:, None], yy * w)]


def fit_cost(points: list[dict[str, Any]], *, gpu_hour_price: float = DEFAULT_GPU_HOUR_PRICE) -> dict[str, Any]:
    """A catalogue `cost:` mapping (policies.schema.CostModel) from measured points."""
    if not points:
        raise ValueError("no cost points to fit")
    n = [float(p["prompt_tokens"]) for p in points]
    quad = grows(points)
    ones = [1.0] * len(n)
    pre_cols = [ones, n, [x * x for x in n]] if quad else [ones, n]
    pre = _rel_fit(pre_cols, [p["prefill_ms"] for p in points]) + ([] if quad else [0.0])
    dec_y = [p["decode_ms_per_token"] for p in points]
    dec = _rel_fit([ones, n], dec_y) if quad else [float(np.median(dec_y)), 0.0]
    return {
        "prefill_ms": {"base": _sig(pre[0]), "per_token": _sig(pre[1]), "per_token_sq": _sig(pre[2])},
        "decode_ms": {"base": _sig(dec[0]), "per_context": _sig(dec[1])},
        "price_per_1m_input": 0.0,
        "price_per_1m_output": 0.0,
        "price_per_gpu_hour": gpu_hour_price,
    }


def _sig(x: float, digits: int = 4) -> float:
    return 0.0 if x <= 0 else float(f"{x:.{digits}g}")


def cost_models(cap: dict[str, Any], device: str | None = None, *, gpu_hour_price: float = DEFAULT_GPU_HOUR_PRICE
                ) -> tuple[str, dict[str, dict[str, Any]]]:
    """(device type used, family -> fitted cost mapping) for every family with measured points."""
    dev = cost_device(cap, device)
    if dev is None:
        raise ValueError("the capability file has no cost measurements")
    fams = cap["cost"][dev]["families"]
    return dev, {f: fit_cost(r["points"], gpu_hour_price=gpu_hour_price) for f, r in fams.items() if r.get("points")}


def estimate_ms(cost: dict[str, Any], prompt_tokens: int, max_tokens: int) -> float:
    """archrouter.policies.cost.estimate's latency for a fitted cost mapping."""
    from archrouter.policies.cost import estimate
    from archrouter.policies.schema import CostModel

    return estimate(CostModel.model_validate(cost), prompt_tokens, max_tokens).latency_ms


# ----------------------------------------------------------------------------- rules


@dataclass
class Segment:
    task: str
    scales: list[str]
    upper: int | None  # prompt_tokens < upper; None: no bound
    tied: list[str]  # families tied at the top, best first
    accs: dict[str, list[float]]  # family -> accuracy per scale of the segment
    floor: bool  # no family reached FLOOR anywhere in the segment


def margin(p1: float, p2: float, n: int, z: float) -> float:
    se = math.sqrt(max(p1 * (1 - p1), 0.0) / n + max(p2 * (1 - p2), 0.0) / n)
    return max(MIN_MARGIN, z * se)


def tied_at_top(accs: dict[str, float], n: int, z: float) -> tuple[list[str], bool]:
    best = max(accs.values())
    if best < FLOOR:
        return sorted(accs, key=lambda f: -accs[f]), True
    tied = [f for f in accs if best - accs[f] <= margin(best, accs[f], n, z)]
    return sorted(tied, key=lambda f: -accs[f]), False


def segments(cap: dict[str, Any], families: list[str], z: float) -> list[Segment]:
    acc = cap["accuracy"]
    scales = scales_of(cap)
    out: list[Segment] = []
    for task in TASKS:
        if task not in acc.get("task_prompt_tokens", {}):
            continue
        n = task_items(cap, task)
        cells = []
        for s in scales:
            a = {f: task_accuracy(cap, f, task, s) for f in families}
            if any(v is None for v in a.values()):
                continue
            tied, low = tied_at_top(a, n, z)
            cells.append((s, tied, a, low))
        toks = acc["task_prompt_tokens"][task]
        merged: list[list] = []
        for s, tied, a, low in cells:
            if merged and set(merged[-1][1]) == set(tied):
                merged[-1][0].append(s)
                merged[-1][2].append(a)
                merged[-1][3] = merged[-1][3] and low
            else:
                merged.append([[s], tied, [a], low])
        for i, (ss, tied, aa, low) in enumerate(merged):
            upper = None
            if i + 1 < len(merged):
                nxt = merged[i + 1][0][0]
                upper = round(math.sqrt(toks[ss[-1]] * toks[nxt]))
            # rank the tied families by their mean accuracy over the segment
            mean = {f: sum(a[f] for a in aa) / len(aa) for f in families}
            out.append(Segment(task, ss, upper, sorted(tied, key=lambda f: -mean[f]),
                               {f: [a[f] for a in aa] for f in families}, low))
    return out


def _flow(obj: Any) -> str:
    text = yaml.safe_dump(obj, default_flow_style=True, sort_keys=False, width=10_000)
    return text.removesuffix("...\n").strip()  # a bare scalar comes with a document-end marker


def _route(names: list[str]) -> Any:
    return names[0] if len(names) == 1 else {"cheapest": names}


def fit_policy(
    cap: dict[str, Any],
    *,
    base: dict[str, Any] | None = None,
    names: dict[str, str] | None = None,
    cost_dev: str | None = None,
    z: float = 1.96,
    gpu_hour_price: float = DEFAULT_GPU_HOUR_PRICE,
    source: str = "capability.json",
    name: str | None = None,
) -> str:
    """The policy YAML text (comments included) proposed from the capability matrix."""
    if not cap.get("accuracy"):
        raise ValueError("the capability file has no accuracy measurements")
    base = base or {}
    acc = cap["accuracy"]
    families = [f for f in acc["families"]]
    names = {f: (names or {}).get(f, f) for f in families}
    dev, costs = cost_models(cap, cost_dev, gpu_hour_price=gpu_hour_price)
    missing = [f for f in families if f not in costs]
    if missing:
        raise ValueError(f"no {dev} cost points for {', '.join(missing)}")
    base_backends = {b.get("name"): b for b in base.get("backends", []) if isinstance(b, dict)}
    scales = scales_of(cap)
    sx = lambda ss: f"{ss[0]}x" if len(ss) == 1 else f"{ss[0]}x..{ss[-1]}x"  # noqa: E731

    L: list[str] = []
    L.append(f"# Routing policy fitted from the capability matrix ({source}) by `archrouter policy fit`.")
    L.append("# Quality first: for each task and length the families within the margin of the best accuracy")
    L.append(f"# (max({MIN_MARGIN}, {z} x standard error)); among those, cost decides. Numbers are exact-match")
    L.append(f"# accuracy at {', '.join(s + 'x' for s in scales)} the training length "
             f"({acc['items_per_cell']} items per task and length, measured on {acc['device']}).")
    L.append(f"# Cost curves: least-squares fits of {dev} measurements ({cap['cost'][dev]['device']}, "
             f"{cap['cost'][dev]['dtype']}, torch {cap['cost'][dev]['torch']});")
    L.append(f"# prices = measured time at a notional {gpu_hour_price}/GPU-hour, so `cheapest` ranks by compute time.")
    L.append(f"name: {_flow(name or base.get('name') or 'capability')}")
    L.append(f"classifier: {_flow(base.get('classifier') or 'models/classifier/task-classifier.json.gz')}")
    L.append("")
    L.append("backends:")
    ctx: dict[str, int] = {}
    for f in families:
        info = cap["families"].get(f, {})
        b = base_backends.get(names[f], {})
        c = b.get("context_length") or info.get("context_length") or RECURRENT_CONTEXT
        ctx[f] = int(c)
        pts = cap["cost"][dev]["families"][f]["points"]
        lens = ", ".join(str(p["prompt_tokens"]) for p in pts)
        L.append(f"  # {f}: {info.get('parameters', 0):,} parameters"
                 + (f", trained {info['training']['steps']} steps / {info['training']['tokens']:,} tokens"
                    if info.get("training") else ""))
        L.append(f"  # cost fitted to {dev} points at {lens} prompt tokens; "
                 + ("state grows with length" if grows(pts) else "fixed-size state"))
        L.append(f"  - name: {_flow(names[f])}")
        L.append(f"    family: {f}")
        # the measured checkpoint, whatever the base pointed at: the numbers are about it
        L.append(f"    checkpoint: {_flow(info.get('checkpoint') or b.get('checkpoint') or f'models/{f}')}")
        L.append(f"    context_length: {ctx[f]}")
        L.append(f"    dtype: {_flow(acc.get('dtype') or cap['cost'][dev].get('dtype') or 'float32')}")
        cm = costs[f]
        L.append("    cost:")
        L.append(f"      prefill_ms: {_flow(cm['prefill_ms'])}")
        L.append(f"      decode_ms: {_flow(cm['decode_ms'])}")
        L.append(f"      price_per_gpu_hour: {cm['price_per_gpu_hour']}")
    L.append("")

    # the default: best mean accuracy over every (task, scale) cell; ties by cost
    cells = [(t, s) for t in TASKS for s in scales if task_accuracy(cap, families[0], t, s) is not None]
    mean = {f: sum(task_accuracy(cap, f, t, s) for t, s in cells) / len(cells) for f in families}
    n_all = sum(task_items(cap, t) for t in TASKS if t in acc.get("task_prompt_tokens", {})) * len(scales)
    default_tied, _ = tied_at_top(mean, max(1, n_all), z)
    default_route = _route([names[f] for f in default_tied])

    L.append("rules:")
    n_rules = 0
    limited = sorted({c for c in ctx.values() if c < max(ctx.values())})
    if limited:
        lim = limited[0]
        fits = [f for f in sorted(families, key=lambda f: -mean[f]) if ctx[f] > lim]
        L.append(f"  # Past {lim - DEFAULT_MAX_TOKENS} prompt tokens (a {lim}-token context less a "
                 f"{DEFAULT_MAX_TOKENS}-token answer) only {', '.join(fits)} fit; the")
        L.append(f"  # matrix stops at {scales[-1]}x, so cost decides among them.")
        L.append("  # Context lengths: " + ", ".join(f"{f} {ctx[f]}" for f in families) + ".")
        L.append("  - name: beyond-context")
        short = ", ".join(f for f in families if ctx[f] <= lim)
        L.append(f"    description: {_flow(f'prompt past the {lim}-token context of {short}')}")
        L.append(f"    when: {_flow({'prompt_tokens': {'gt': lim - DEFAULT_MAX_TOKENS}})}")
        L.append(f"    route: {_flow(_route([names[f] for f in fits]))}")
        n_rules += 1
    skipped: list[str] = []
    segs = segments(cap, families, z)
    for task in TASKS:
        ts = [s for s in segs if s.task == task]
        if not ts:
            continue
        if len(ts) == 1 and _route([names[f] for f in ts[0].tied]) == default_route:
            skipped.append(task)
            continue
        lower = None
        for s in ts:
            accs = ", ".join(f"{f} {'/'.join(f'{v:.2f}' for v in s.accs[f])}"
                             for f in sorted(families, key=lambda f: -sum(s.accs[f])))
            bound = "" if s.upper is None else f"prompt_tokens < {s.upper}"
            if lower is not None:
                bound = f"prompt_tokens >= {lower}" + (f" and < {s.upper}" if s.upper is not None else "")
            L.append(f"  # {task} at {sx(s.scales)}{f' ({bound})' if bound else ''}, accuracy at "
                     f"{'/'.join(x + 'x' for x in s.scales)} ({source}):")
            L.append(f"  #   {accs}.")
            if s.floor:
                L.append(f"  # No family reaches {FLOOR} here, so quality does not decide: the cheapest answers.")
            elif len(s.tied) > 1:
                L.append(f"  # {', '.join(s.tied)} are within the margin of the best, so the cheapest of them answers.")
            else:
                L.append(f"  # {s.tied[0]} is best by more than the margin.")
            when: dict[str, Any] = {"task": task}
            if s.upper is not None:
                when["prompt_tokens"] = {"lt": s.upper}
            rname = task.replace("_", "-") + ("" if len(ts) == 1 else f"-{sx(s.scales).replace('..', '-')}")
            L.append(f"  - name: {rname}")
            L.append(f"    description: {_flow(f'{task} at {sx(s.scales)} the training length')}")
            L.append(f"    when: {_flow(when)}")
            L.append(f"    route: {_flow(_route([names[f] for f in s.tied]))}")
            n_rules += 1
            lower = s.upper
    if n_rules == 0:
        L[-1] = "rules: []"
    L.append("")
    L.append(f"# Default: the best mean accuracy over all tasks and lengths ({source}):")
    L.append("#   " + ", ".join(f"{f} {mean[f]:.3f}" for f in sorted(families, key=lambda f: -mean[f])) + ".")
    if skipped:
        L.append(f"# No rule for {', '.join(skipped)}: the measured choice there is the default route.")
    L.append("default:")
    L.append(f"  route: {_flow(default_route)}")
    L.append("")
    L.extend(capability_lines(cap, families, names, source))
    return "\n".join(L) + "\n"


def capability_lines(cap: dict[str, Any], families: list[str], names: dict[str, str], source: str) -> list[str]:
    """The policy's `capability:` section: accuracy per task, length bucket and backend, from which the
    router ranks fallbacks when a rule gives no static `fallbacks:` list (best first, ties by cost)."""
    acc = cap["accuracy"]
    scales = scales_of(cap)
    L = [
        f"# Measured accuracy per task and length bucket ({source}): when the chosen backend cannot answer",
        "# (cooling down, overloaded, unhealthy, over its context) and the rule lists no `fallbacks:`, the",
        "# router tries the others best first here (ties by cost). Bucket i covers prompt_tokens < bounds[i];",
        "# bounds are the geometric means of adjacent scales' median prompt lengths.",
        "capability:",
        f"  source: {_flow(source)}",
        "  tasks:",
    ]
    for task in TASKS:
        toks = acc.get("task_prompt_tokens", {}).get(task)
        if not toks:
            continue
        ss = [x for x in scales if task_accuracy(cap, families[0], task, x) is not None]
        if not ss:
            continue
        bounds = [round(math.sqrt(toks[a] * toks[b])) for a, b in zip(ss, ss[1:], strict=False)]
        L.append(f"    {task}:  # scales {', '.join(x + 'x' for x in ss)}")
        L.append(f"      bounds: {_flow(bounds)}")
        L.append("      accuracy:")
        for f in families:
            L.append(f"        {_flow(names[f])}: {_flow([round(task_accuracy(cap, f, task, x), 3) for x in ss])}")
    return L


def parse_names(text: str | None) -> dict[str, str]:
    """'transformer=zoo-transformer,mamba=zoo-mamba' -> {family: backend name}."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        fam, eq, name = part.partition("=")
        if not eq or not fam.strip() or not name.strip():
            raise ValueError(f"--names wants family=name pairs separated by commas, got {part!r}")
        out[fam.strip()] = name.strip()
    return out


def read_base(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
