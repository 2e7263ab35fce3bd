"""The capability matrix: accuracy of each trained family per task and length, and what it costs to serve.

    python -m archrouter.evals capability --out src/archrouter/evals/results/capability/ [--families ...] [--items 200]
        [--scales 1 2 4 8] [--device cpu|cuda] [--cost-lengths 256 1024 4096 16384] [--no-cost]

**Accuracy.** For every task (policies.types.TASKS) and length scale s, `--items` held-out items
(spread evenly over the task's generators, rounded up), each generator at s x its training length
(`evals.tasks.training_length`), seeds -1, -2, ... (training draws non-negative seeds: the same
items as `archrouter.evals.training.eval_items`). Scored by `archrouter.evals.training.exact_match`: teacher-forced
greedy exact match in length-sorted batches through the model's ordinary forward (on CUDA the
Triton serving kernels, on CPU the references), in the checkpoint's served dtype. That verdict is
exactly greedy decoding's: the answer bytes, then an end token (see `exact_match` for the one
caveat, floating-point ties). Every family scores the same items, so per-item verdicts are kept too.

**Cost.** Per family on the device given: a random byte prompt of each length in `--cost-lengths`
is prefilled in chunks of the engine's `max_num_batched_tokens` (the chunk the continuous-batching
engine feeds) through `forward(ids, cache)` (the fastest of `--repeats` runs), then `--decode-steps`
single tokens are decoded with the cache, batch 1, synchronised per step (the generator's and the
engine's path). Prefill ms/token = prefill time / length; decode ms/token = median step time at that
context. State bytes = the size of one sequence's cache at that length (`Cache.snapshot` ->
`restore`, so a KV cache counts its length, not its allocated capacity). Lengths run in increasing
order and stop when the family's time budget (`--cost-budget-s`) would be exceeded; lengths past a
model's positional limit are measured and flagged. A run records the device, torch version, thread
count and the machine's load average (CPU timings mean little on a busy machine); runs on other
devices are merged (`--merge`, `capability-merge`): accuracy comes from one run, cost is kept per
device type.

capability.json (schema "archrouter-capability/1")::

    {"schema": "archrouter-capability/1",
     "families": {"<family>": {"checkpoint", "parameters", "trained", "context_length" (null: none),
                               "training": {"steps", "tokens", "wall_s", "device"} | null}},
     "accuracy": null | {
        "device", "device_type", "torch", "threads", "cpus", "dtype", "load_avg_1m", "wall_s",
        "scales": [1, 2, 4, 8], "items_per_cell",
        "seeds": "-1..-n per generator",
        "generators": {"<gen>": {"task", "training_length", "items"}},
        "prompt_tokens": {"<gen>": {"<scale>": mean prompt tokens (policies.features estimate)}},
        "task_prompt_tokens": {"<task>": {"<scale>": median prompt tokens over the task's items}},
        "families": {"<family>": {
            "per_task": {"<task>": {"<scale>": accuracy}},
            "per_generator": {"<gen>": {"<scale>": accuracy}},
            "correct": {"<gen>": {"<scale>": "0110..."}},   # item i has seed -1-i
            "wall_s": seconds}}},
     "cost": {"<device type: cpu | cuda>": {
        "device", "device_type", "torch", "threads", "cpus", "dtype", "load_avg_1m" (before), "load_avg_1m_after",
        "prefill_chunk", "decode_steps", "budget_s",
        "families": {"<family>": {
            "points": [{"prompt_tokens", "prefill_ms", "prefill_ms_per_token", "decode_ms_per_token",
                        "state_bytes", "beyond_context"}],
            "skipped": [lengths not measured within the budget], "error": null | "message"}}}},
     "runs": [{"command", "commit", "started", "device", "parts": ["accuracy", "cost"]}]}

Scales and lengths are JSON object keys, so they are strings ("1", "2", ...).
"""

from __future__ import annotations

import copy
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from archrouter.backends import families as fam
from archrouter.evals.tasks import GENERATORS, Item, make_item, training_length
from archrouter.evals.training import exact_match, n_params, score
from archrouter.policies.types import TASKS

SCHEMA = "archrouter-capability/1"
FAMILY_ORDER = tuple(fam.FAMILIES)
DEFAULT_SCALES = (1, 2, 4, 8)
DEFAULT_COST_LENGTHS = (256, 1024, 4096, 16384)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

Log = Callable[[str], None]


# ----------------------------------------------------------------------------- items


def generators_of(task: str) -> list[str]:
    return [g for g in sorted(GENERATORS) if GENERATORS[g][0] == task]


def per_generator(items_per_cell: int, task: str) -> int:
    """Items per generator so the task's cell holds at least `items_per_cell`."""
    return math.ceil(items_per_cell / len(generators_of(task)))


def cell_items(items_per_cell: int, scale: int) -> list[Item]:
    """Every task's held-out items at `scale` x training length (seeds -1..-n per generator)."""
    out: list[Item] = []
    for task in TASKS:
        n = per_generator(items_per_cell, task)
        for g in generators_of(task):
            out += [make_item(g, -1 - i, scale * training_length(g)) for i in range(n)]
    return out


def prompt_tokens(item: Item) -> int:
    """The router's prompt_tokens feature for the item sent as one user message."""
    from archrouter.policies.features import estimate_prompt_tokens  # pydantic: imported where the lengths are needed

    return estimate_prompt_tokens(item.messages())


# recall load sweep: accuracy against load (pairs, words to copy) up to past where fixed recurrent
# states saturate, inside the Transformer's 4,096-token context (mqar 512 pairs ~ 3,850 tokens)
SWEEP_LOADS: dict[str, tuple[int, ...]] = {
    "mqar": (8, 16, 32, 64, 96, 128, 192, 256, 384, 512),
    "copy_span": (8, 16, 32, 64, 96, 128, 192, 256, 384),
}


def measure_sweep(model: torch.nn.Module, device: torch.device, items: int, *, batch_tokens: int,
                  loads: dict[str, Iterable[int]] | None = None) -> dict[str, Any]:
    """Exact-match and first-byte accuracy per (generator, load) on `items` held-out items each."""
    out: dict[str, Any] = {}
    for g, ns in (loads or SWEEP_LOADS).items():
        for n in ns:
            its = [make_item(g, -1 - i, n) for i in range(items)]
            ok, first = score(model, its, device, batch_tokens=batch_tokens, amp=False)
            out.setdefault(g, {})[str(n)] = {"accuracy": sum(ok) / len(ok), "first_byte": sum(first) / len(first),
                                              "prompt_tokens": round(sum(len(i.prompt) + 4 for i in its) / len(its))}
    return out


# ----------------------------------------------------------------------------- models


def discover(models_dir: Path, wanted: Iterable[str] | None = None) -> dict[str, Path]:
    """family -> checkpoint folder (models_dir/<family> holding config.json), in FAMILY_ORDER."""
    names = list(wanted) if wanted else list(FAMILY_ORDER)
    found: dict[str, Path] = {}
    for f in names:
        if f not in fam.FAMILIES:
            raise ValueError(f"unknown family {f!r}; known: {', '.join(fam.FAMILIES)}")
        path = models_dir / f
        if (path / "config.json").is_file():
            found[f] = path
        elif wanted:
            raise FileNotFoundError(f"no checkpoint for {f} at {path} (config.json missing)")
    if not found:
        raise FileNotFoundError(f"no family checkpoints under {models_dir}")
    return found


def describe_family(family: str, path: Path, model: torch.nn.Module) -> dict[str, Any]:
    training = None
    tj = path / "training.json"
    if tj.is_file():
        t = json.loads(tj.read_text())
        training = {k: t.get(k) for k in ("steps", "tokens", "wall_s", "device", "final_loss")}
    return {
        "checkpoint": str(path),
        "parameters": n_params(model),  # tied embeddings once
        "trained": training is not None,
        "context_length": model.context_length,
        "training": training,
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def environment(device: torch.device, dtype: str) -> dict[str, Any]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()
    return {"device": name, "device_type": device.type, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "dtype": dtype,
            # CPU timings are only as good as the machine is idle: the 1-minute load average says how busy it was
            "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


# ----------------------------------------------------------------------------- accuracy


def measure_accuracy(model: torch.nn.Module, items_by_scale: dict[int, list[Item]], device: torch.device,
                     *, batch_tokens: int) -> dict[str, Any]:
    """One family over every (scale, item): per-task and per-generator accuracy and per-item verdicts."""
    t0 = time.perf_counter()
    per_task: dict[str, dict[str, float]] = {}
    per_gen: dict[str, dict[str, float]] = {}
    correct: dict[str, dict[str, str]] = {}
    for scale, items in items_by_scale.items():
        verdicts = exact_match(model, items, device, batch_tokens=batch_tokens, amp=False)
        by_task: dict[str, list[bool]] = {}
        by_gen: dict[str, list[bool]] = {}
        for it, ok in zip(items, verdicts, strict=True):
            by_task.setdefault(it.task, []).append(ok)
            by_gen.setdefault(it.generator, []).append(ok)
        for t, v in by_task.items():
            per_task.setdefault(t, {})[str(scale)] = sum(v) / len(v)
        for g, v in by_gen.items():
            per_gen.setdefault(g, {})[str(scale)] = sum(v) / len(v)
            correct.setdefault(g, {})[str(scale)] = "".join("1" if ok else "0" for ok in v)
    return {
        "per_task": {t: per_task[t] for t in TASKS if t in per_task},
        "per_generator": dict(sorted(per_gen.items())),
        "correct": dict(sorted(correct.items())),
        "wall_s": round(time.perf_counter() - t0, 2),
    }


def ensure_lengths(cap: dict[str, Any]) -> dict[str, Any]:
    """Fill accuracy.prompt_tokens / task_prompt_tokens when missing (they depend on the items only,
    so a run on a machine without the policies' dependencies leaves them to the reader)."""
    acc = cap.get("accuracy")
    if acc and not acc.get("task_prompt_tokens"):
        per = {t: math.ceil(acc["items_per_cell"] / len(generators_of(t))) for t in TASKS}
        by_scale = {}
        for s in acc["scales"]:
            by_scale[s] = [make_item(g, -1 - i, s * training_length(g))
                           for t in TASKS for g in generators_of(t) for i in range(per[t])]
        acc["prompt_tokens"], acc["task_prompt_tokens"] = item_lengths(by_scale)
    return cap


def item_lengths(items_by_scale: dict[int, list[Item]]) -> tuple[dict, dict]:
    by_gen: dict[str, dict[str, float]] = {}
    by_task: dict[str, dict[str, float]] = {}
    for scale, items in items_by_scale.items():
        g_tok: dict[str, list[int]] = {}
        t_tok: dict[str, list[int]] = {}
        for it in items:
            n = prompt_tokens(it)
            g_tok.setdefault(it.generator, []).append(n)
            t_tok.setdefault(it.task, []).append(n)
        for g, v in g_tok.items():
            by_gen.setdefault(g, {})[str(scale)] = round(sum(v) / len(v), 1)
        for t, v in t_tok.items():
            by_task.setdefault(t, {})[str(scale)] = float(statistics.median(v))
    return dict(sorted(by_gen.items())), {t: by_task[t] for t in TASKS if t in by_task}


# ----------------------------------------------------------------------------- cost


def state_bytes(cache: Any) -> int:
    """One sequence's state at its current length (a KV cache trimmed to it, not its capacity)."""
    return type(cache).restore(cache.snapshot(0)).nbytes()


@torch.inference_mode()
def _prefill(model, ids: torch.Tensor, chunk: int):
    cache = model.init_cache(1)
    logits = None
    for s in range(0, ids.shape[1], chunk):
        logits, cache = model(ids[:, s : s + chunk], cache)
    return logits, cache


@torch.inference_mode()
def measure_cost(model: torch.nn.Module, lengths: Iterable[int], device: torch.device, *, decode_steps: int = 16,
                 prefill_chunk: int = 512, budget_s: float = 90.0, repeats: int = 3, seed: int = 0,
                 log: Log = print) -> dict[str, Any]:
    """Prefill and decode time per token and state bytes at each prompt length, batch 1 (see module doc)."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    ctx = model.context_length
    points, skipped = [], []
    # warm-up: first calls compile / autotune kernels and fill allocator pools
    warm = torch.randint(0, 256, (1, min(64, min(lengths))), generator=gen).to(device)
    logits, cache = _prefill(model, warm, prefill_chunk)
    for _ in range(2):
        logits, cache = model(logits[:, -1:].argmax(-1), cache)
    _sync(device)
    t_start = time.perf_counter()
    last: tuple[int, float] | None = None
    for n in sorted(set(lengths)):
        spent = time.perf_counter() - t_start
        if last is not None:
            # predict this length's time from the last one (per-token time grows at most linearly here)
            m, secs = last
            guess = (secs * (n / m) ** 2 if ctx is not None else secs * (n / m))
            if spent + guess > budget_s:
                skipped.append(n)
                continue
        ids = torch.randint(0, 256, (1, n), generator=gen).to(device)
        prefill_s = math.inf
        for r in range(repeats):  # the fastest of a few: other work on the machine only ever adds time
            if r and time.perf_counter() - t_start + prefill_s > budget_s:
                break
            _sync(device)
            t0 = time.perf_counter()
            logits, cache = _prefill(model, ids, prefill_chunk)
            _sync(device)
            prefill_s = min(prefill_s, time.perf_counter() - t0)
        token = logits[:, -1:].argmax(-1)
        steps = []
        for _ in range(decode_steps):
            t1 = time.perf_counter()
            logits, cache = model(token, cache)
            token = logits[:, -1:].argmax(-1)
            _sync(device)
            steps.append(time.perf_counter() - t1)
        decode_s = statistics.median(steps)
        points.append({
            "prompt_tokens": n,
            "prefill_ms": round(1e3 * prefill_s, 4),
            "prefill_ms_per_token": round(1e3 * prefill_s / n, 6),
            "decode_ms_per_token": round(1e3 * decode_s, 4),
            "state_bytes": state_bytes(cache),
            "beyond_context": ctx is not None and n + decode_steps > ctx,
        })
        log(f"  {n:>6} tokens: prefill {1e3 * prefill_s / n:.4f} ms/token, decode {1e3 * decode_s:.3f} ms/token, "
            f"state {points[-1]['state_bytes'] / 2**20:.2f} MiB")
        last = (n, prefill_s + decode_s * decode_steps)
        del cache, logits
    return {"points": points, "skipped": skipped, "error": None}


# ----------------------------------------------------------------------------- the run


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def empty() -> dict[str, Any]:
    return {"schema": SCHEMA, "families": {}, "accuracy": None, "cost": {}, "runs": []}


def run(
    *,
    models_dir: Path,
    families: list[str] | None = None,
    items: int = 200,
    scales: Iterable[int] = DEFAULT_SCALES,
    device: str = "cpu",
    dtype: str = "float32",
    accuracy: bool = True,
    cost: bool = True,
    cost_lengths: Iterable[int] = DEFAULT_COST_LENGTHS,
    decode_steps: int = 16,
    prefill_chunk: int | None = None,
    cost_budget_s: float = 90.0,
    batch_tokens: int | None = None,
    repeats: int = 3,
    threads: int | None = None,
    command: str | None = None,
    sweep_items: int = 0,
    log: Log = print,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Measure and return a capability dict (module docstring). `progress` gets the dict so far after
    each family (the CLI writes it out, so a run cut short by a time limit keeps what it measured)."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda given but torch.cuda.is_available() is False on this machine")
    if prefill_chunk is None:
        try:
            from archrouter.backends.engine.config import EngineConfig

            prefill_chunk = EngineConfig().max_num_batched_tokens
        except ImportError:  # a bare GPU image without pydantic-settings: the engine's default
            prefill_chunk = 512
    if batch_tokens is None:
        batch_tokens = 131_072 if dev.type == "cuda" else 16_384
    if threads:
        torch.set_num_threads(threads)
    scales = list(scales)
    found = discover(models_dir, families)
    env = environment(dev, dtype)
    cap = empty()
    items_by_scale: dict[int, list[Item]] = {}
    if accuracy:
        items_by_scale = {s: cell_items(items, s) for s in scales} if items else {}  # 0: the load sweep alone
        cap["accuracy"] = {
            **env, "wall_s": 0.0, "scales": scales, "items_per_cell": items,
            "seeds": "-1..-n per generator (training uses seeds >= 0)",
            "generators": {g: {"task": GENERATORS[g][0], "training_length": training_length(g),
                               "items": per_generator(items, GENERATORS[g][0])} for g in sorted(GENERATORS)},
            "families": {},
        }
        try:
            ensure_lengths(cap)
        except ImportError as exc:  # filled in later by whoever reads the file (policy fit, doc, merge)
            log(f"prompt lengths left for later ({exc})")
    if cost:
        cap["cost"][dev.type] = {**env, "prefill_chunk": prefill_chunk, "decode_steps": decode_steps,
                                 "budget_s": cost_budget_s, "families": {}}
    t_all = time.perf_counter()
    for f, path in found.items():
        model = fam.load(f, path, device=device, dtype=DTYPES[dtype]).eval()
        cap["families"][f] = describe_family(f, path, model)
        if accuracy:
            n_items = sum(len(v) for v in items_by_scale.values())
            log(f"{f}: accuracy on {n_items} items at scales {scales} ...")
            res = measure_accuracy(model, items_by_scale, dev, batch_tokens=batch_tokens)
            cap["accuracy"]["families"][f] = res
            summary = ", ".join(f"{t} {'/'.join(f'{v:.2f}' for v in res['per_task'][t].values())}"
                                for t in res["per_task"])
            log(f"{f}: {res['wall_s']:.1f} s; {summary}")
            if sweep_items:
                t1 = time.perf_counter()
                res["load_sweep"] = measure_sweep(model, dev, sweep_items, batch_tokens=batch_tokens)
                cap["accuracy"]["load_sweep"] = {"items": sweep_items, "seeds": "-1..-n per (generator, load)",
                                                 "loads": {g: list(v) for g, v in SWEEP_LOADS.items()}}
                log(f"{f}: load sweep {time.perf_counter() - t1:.1f} s; " + "; ".join(
                    f"{g} " + " ".join(f"{n}:{v['accuracy']:.2f}" for n, v in r.items())
                    for g, r in res["load_sweep"].items()))
        if cost:
            log(f"{f}: cost at {sorted(set(cost_lengths))} tokens on {env['device']} ...")
            try:
                c = measure_cost(model, cost_lengths, dev, decode_steps=decode_steps, prefill_chunk=prefill_chunk,
                                 budget_s=cost_budget_s, repeats=repeats, log=log)
            except Exception as exc:  # a failed kernel must not lose the accuracy already measured
                c = {"points": [], "skipped": sorted(set(cost_lengths)), "error": f"{type(exc).__name__}: {exc}"}
                log(f"{f}: cost measurement failed: {c['error']}")
            cap["cost"][dev.type]["families"][f] = c
        del model
        if dev.type == "cuda":
            torch.cuda.empty_cache()
        if progress is not None:
            progress(cap)
    if accuracy:
        cap["accuracy"]["wall_s"] = round(time.perf_counter() - t_all, 2)
    if cost and hasattr(os, "getloadavg"):
        cap["cost"][dev.type]["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    cap["runs"].append({
        "command": command or shlex.join([sys.executable, "-m", "archrouter.evals", *sys.argv[1:]]),
        "commit": git_commit(), "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "device": env["device"], "parts": [p for p, on in (("accuracy", accuracy), ("cost", cost)) if on],
        "wall_s": round(time.perf_counter() - t_all, 2), "host": platform.node(), "pid": os.getpid(),
    })
    return cap


# ----------------------------------------------------------------------------- files


def merge(base: dict[str, Any], other: dict[str, Any], *, accuracy_from: str = "base") -> dict[str, Any]:
    """Combine two runs: cost per device type (other's replaces base's for the same type), families'
    records united, accuracy from one run (`accuracy_from`: "base" keeps base's when it has one,
    "other" prefers other's)."""
    for c in (base, other):
        if c.get("schema") != SCHEMA:
            raise ValueError(f"not a capability file (schema {c.get('schema')!r}, expected {SCHEMA!r})")
    out = copy.deepcopy(base)
    for f, rec in other.get("families", {}).items():
        out["families"].setdefault(f, rec)
    first, second = (base, other) if accuracy_from == "base" else (other, base)
    out["accuracy"] = copy.deepcopy(first.get("accuracy") or second.get("accuracy"))
    for dev, rec in other.get("cost", {}).items():
        out["cost"][dev] = copy.deepcopy(rec)
    out["runs"] = [*base.get("runs", []), *other.get("runs", [])]
    return out


def combine(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One capability dict from runs that measured parts of the accuracy (a family each, or the matrix and
    the load sweep apart, as a GPU call runs them side by side): the first run with a matrix gives the
    accuracy header; each family's per-task / per-generator / per-item results and its load sweep are
    taken from whichever run measured them. Families' records, cost and runs are united."""
    for c in parts:
        if c.get("schema") != SCHEMA:
            raise ValueError(f"not a capability file (schema {c.get('schema')!r}, expected {SCHEMA!r})")
    if not parts:
        raise ValueError("nothing to combine")
    with_matrix = [c for c in parts if (c.get("accuracy") or {}).get("items_per_cell")]
    base = with_matrix[0] if with_matrix else parts[0]
    out = copy.deepcopy(base)
    acc = out.get("accuracy")
    for c in parts:
        if c is base:
            continue
        for f, rec in c.get("families", {}).items():
            out["families"].setdefault(f, rec)
        for dev, rec in (c.get("cost") or {}).items():
            out["cost"].setdefault(dev, {**rec, "families": {}})["families"].update(rec.get("families", {}))
        a = c.get("accuracy") or {}
        if acc is not None:
            if a.get("load_sweep"):
                acc["load_sweep"] = a["load_sweep"]
            for f, rec in a.get("families", {}).items():
                mine = acc["families"].setdefault(f, {})
                if rec.get("per_task") and not mine.get("per_task"):
                    mine.update({k: v for k, v in rec.items() if k != "load_sweep"})
                if rec.get("load_sweep"):
                    mine["load_sweep"] = rec["load_sweep"]
        out["runs"] = [*out.get("runs", []), *c.get("runs", [])]
    if acc is not None:
        acc["families"] = {f: acc["families"][f] for f in FAMILY_ORDER if f in acc["families"]}
    out["families"] = {f: out["families"][f] for f in FAMILY_ORDER if f in out["families"]}
    return out


def load(path: str | Path) -> dict[str, Any]:
    cap = json.loads(Path(path).read_text())
    if cap.get("schema") != SCHEMA:
        raise ValueError(f"{path}: not a capability file (schema {cap.get('schema')!r}, expected {SCHEMA!r})")
    return ensure_lengths(cap)


def save(cap: dict[str, Any], out_dir: Path) -> list[Path]:
    """capability.json and the figures into out_dir; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "capability.json"
    path.write_text(json.dumps(cap, indent=1) + "\n")
    try:
        from archrouter.evals import capability_plots
    except ImportError as exc:  # no matplotlib where it ran: `capability-merge` of the file draws them later
        print(f"figures not drawn ({exc}); `python -m archrouter.evals capability-merge {path} --out {out_dir}` "
              "draws them", file=sys.stderr)
        return [path]
    return [path, *capability_plots.render(cap, out_dir)]


# ----------------------------------------------------------------------------- reading


def scales_of(cap: dict[str, Any]) -> list[str]:
    return [str(s) for s in cap["accuracy"]["scales"]]


def task_accuracy(cap: dict[str, Any], family: str, task: str, scale: int | str) -> float | None:
    acc = cap.get("accuracy") or {}
    return acc.get("families", {}).get(family, {}).get("per_task", {}).get(task, {}).get(str(scale))


def task_items(cap: dict[str, Any], task: str) -> int:
    """Items scored per (task, scale) cell."""
    gens = cap["accuracy"]["generators"]
    return sum(g["items"] for g in gens.values() if g["task"] == task)


def cost_device(cap: dict[str, Any], prefer: str | None = None) -> str | None:
    """The device type whose cost to use: `prefer` if measured, else cuda, else cpu, else any."""
    have = list(cap.get("cost") or {})
    for d in (prefer, "cuda", "cpu", *have):
        if d and d in have:
            return d
    return None


# ----------------------------------------------------------------------------- plain entry point


def main(argv: list[str] | None = None) -> None:
    """`python -m archrouter.evals.capability`: the measurement alone (torch only, no typer / pydantic / matplotlib
    needed), for bare GPU images; `python -m archrouter.evals capability` is the same run with the project's CLI."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m archrouter.evals.capability", description=main.__doc__)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--models-dir", type=Path, default=Path("models"))
    p.add_argument("--families", nargs="+", default=None)
    p.add_argument("--items", type=int, default=200)
    p.add_argument("--scales", type=int, nargs="+", default=list(DEFAULT_SCALES))
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=list(DTYPES))
    p.add_argument("--no-accuracy", action="store_true")
    p.add_argument("--no-cost", action="store_true")
    p.add_argument("--cost-lengths", type=int, nargs="+", default=list(DEFAULT_COST_LENGTHS))
    p.add_argument("--decode-steps", type=int, default=16)
    p.add_argument("--cost-budget-s", type=float, default=90.0)
    p.add_argument("--batch-tokens", type=int, default=None)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--sweep-items", type=int, default=0, help="items per (generator, load) of the recall load sweep")
    a = p.parse_args(argv)
    out: Path = a.out

    def partial(cap: dict[str, Any]) -> None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "capability.partial.json").write_text(json.dumps(cap, indent=1))

    cap = run(models_dir=a.models_dir, families=a.families, items=a.items, scales=a.scales, device=a.device,
              dtype=a.dtype, accuracy=not a.no_accuracy, cost=not a.no_cost, cost_lengths=a.cost_lengths,
              decode_steps=a.decode_steps, cost_budget_s=a.cost_budget_s, batch_tokens=a.batch_tokens,
              repeats=a.repeats, threads=a.threads, sweep_items=a.sweep_items,
              log=lambda m: print(m, file=sys.stderr, flush=True),
              progress=partial)
    written = save(cap, out)
    (out / "capability.partial.json").unlink(missing_ok=True)
    print("wrote " + ", ".join(str(x) for x in written))


if __name__ == "__main__":
    main()
