"""Train any model family on the zoo v2 task mixture (evals.tasks), through the model interface.

    python -m archrouter.evals.training --family rwkv --preset zoo --out runs/zoo/rwkv --steps 3000

Byte tokenizer with its chat template. Each step is one length bucket of `tokens_per_step` tokens
(`evals.batches`: token-share sampling over the generators of `evals/data/zoo_recipe.json`); the loss
is each row's weighted CE on the answer bytes (+ the end marker) and the item's training tags, half
and half (`encode`). AdamW, warmup then constant then linear decay (the lr per family from the
recipe), bf16 autocast on CUDA, a periodic eval of the probe generators at 1x and 4x (exact match and
first-byte accuracy on held-out items). The data stream is a pure function of (data seed, step), so
families trained with the same flags see the same items and tokens, and a resumed run continues the
same stream. `--out` holds the family's checkpoint (`save()`), `optim.pt` (optimizer + step, read
back with weights_only=True) and `training.json` (real and supervised tokens, rows and tokens per
generator, loss curve, evals, the commands); a folder with weights and training.json but no optim.pt
(a carried bf16 checkpoint) resumes with a fresh optimizer state, and says so.

On CUDA the training forward must be differentiable. The serving Triton kernels are forward-only, so
when gradients are on each recurrent family switches to its batched, differentiable training path
(`kernels/<op>/train.py`: fused Triton forward + backward kernels on CUDA for the Mamba scan, WKV-7 and
the sLSTM, torch elsewhere; mLSTM chunkwise in torch) and the Transformer to RoPE + SDPA in torch. The
periodic eval (no gradients) runs the serving kernels. ARCHROUTER_NO_TRITON=1 sends everything through
the torch references.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import shlex
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from archrouter.backends.families import family_module
from archrouter.backends.tokenizer import ByteTokenizer
from archrouter.evals.batches import Sampler, load_recipe
from archrouter.evals.tasks import GENERATORS, Item, make_item, training_length
from archrouter.policies.types import TASKS

IGNORE = -100
TOK = ByteTokenizer()


@dataclass
class TrainConfig:
    family: str
    out: str
    preset: str = "zoo"
    steps: int = 3000  # the schedule's length (the run's target)
    stop_at: int = 0  # stop (and save) at this step, e.g. the probe segment of a longer run; 0 = steps
    recipe: str = ""  # the zoo recipe (evals/data/zoo_recipe.json when empty): shares, per-family lr, buckets
    tokens_per_step: int = 0  # 0: the recipe's
    max_seq_len: int = 0  # 0: the recipe's
    lr: float = 0.0  # 0: the recipe's lr for the family
    min_lr_ratio: float = 0.1
    warmup: int = 300
    decay_frac: float = 0.25  # warmup, constant, then linear decay over the last decay_frac of the steps
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    data_seed: int = 1234
    init_seed: int = 0
    eval_every: int = 250
    eval_items: int = 64  # per generator
    eval_generators: str = ""  # comma-separated: the periodic eval's generators (empty: the recipe's probe set)
    workers: int = 2  # data-loading processes (0: in the training process)
    device: str = "auto"
    max_minutes: float = 0.0  # stop (and save) early past this wall time; 0 = no limit
    decay_minutes: float = 0.0  # also decay the lr linearly over the last decay_minutes of max_minutes, so a
    # family that cannot reach `steps` in the time (the sLSTM is sequential in time) still ends decayed
    rewarm: int = 100  # steps of linear warmup after resuming without optimizer state
    pack: str = ""  # also write the checkpoint folder (bf16 weights, config, training.json) as one tar
    progress: bool = True

    def resolved(self) -> TrainConfig:
        """A copy with the recipe's values filled in where this one says 0/empty."""
        r = load_recipe(self.recipe or None)
        c = copy.copy(self)
        c.tokens_per_step = self.tokens_per_step or int(r["tokens_per_step"])
        c.max_seq_len = self.max_seq_len or int(r["max_seq_len"])
        c.lr = self.lr or float(r["lr"].get(self.family, 2e-3))
        c.eval_generators = self.eval_generators or ",".join(r.get("probe_generators", []))
        return c


# ----------------------------------------------------------------------------- data


def encode(item: Item, *, with_tags: bool = True) -> tuple[list[int], list[int], list[float]]:
    """Input ids, targets and per-position loss weights for one item.

    Targets are IGNORE except the answer bytes + END and, `with_tags`, the item's training tags at
    their prompt positions (BOS, USER come first: prompt character i is position 2 + i; prompts are
    ASCII). Weights give each row a total of 1: half on the answer and half on the tags when it has
    tags, all on the answer otherwise (a 64-tag parity row weighs what a 1-answer row does)."""
    prompt = TOK.apply_chat_template(item.messages())
    answer = [*TOK.encode(item.answer), TOK.END]
    ids = prompt + answer
    targets = [IGNORE] * (len(prompt) - 1) + answer
    tags = item.tags if with_tags else ()
    a = 0.5 if tags else 1.0
    weights = [0.0] * (len(prompt) - 1) + [a / len(answer)] * len(answer)
    for off, t in tags:
        targets[2 + off] = ord(t)
        weights[2 + off] = 0.5 / len(tags)
    return ids[:-1], targets, weights


def collate(rows: list[tuple], length: int | None = None) -> tuple[torch.Tensor, ...]:
    """Right-padded batch (causal models never see the padding before a scored position): ids,
    targets and, for rows that carry weights, the weights."""
    n = length or max(len(r[0]) for r in rows)
    x = torch.full((len(rows), n), TOK.PAD, dtype=torch.long)
    y = torch.full((len(rows), n), IGNORE, dtype=torch.long)
    w = torch.zeros((len(rows), n), dtype=torch.float32)
    for i, r in enumerate(rows):
        x[i, : len(r[0])] = torch.tensor(r[0])
        y[i, : len(r[1])] = torch.tensor(r[1])
        if len(r) > 2:
            w[i, : len(r[2])] = torch.tensor(r[2])
    return (x, y, w) if rows and len(rows[0]) > 2 else (x, y)


@functools.lru_cache(maxsize=4)
def _sampler(recipe: str, data_seed: int, tokens: int, max_len: int) -> Sampler:
    return Sampler(load_recipe(recipe or None), data_seed, tokens_per_step=tokens, max_seq_len=max_len)


def step_items(cfg: TrainConfig, step: int) -> tuple[list[Item], int]:
    c = cfg if cfg.tokens_per_step and cfg.max_seq_len else cfg.resolved()
    return _sampler(c.recipe, c.data_seed, c.tokens_per_step, c.max_seq_len).batch(step)


def train_batch(cfg: TrainConfig, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Step `step`'s batch (one length bucket, token budget `tokens_per_step`): ids, targets, weights."""
    items, length = step_items(cfg, step)
    return collate([encode(it) for it in items], length)


class _Steps(torch.utils.data.Dataset):
    """Batches of steps start.. for a DataLoader's worker processes (a batch is a function of its step)."""

    def __init__(self, cfg: TrainConfig, start: int) -> None:
        self.cfg, self.start = cfg, start

    def __len__(self) -> int:
        return max(0, (self.cfg.stop_at or self.cfg.steps) - self.start)

    def __getitem__(self, i: int):
        items, length = step_items(self.cfg, self.start + i)
        x, y, w = collate([encode(it) for it in items], length)
        counts: dict[str, list[int]] = {}
        for it in items:  # rows and real tokens per generator
            c = counts.setdefault(it.generator, [0, 0])
            c[0] += 1
            c[1] += len(it.prompt) + 4 + len(it.answer)
        return x, y, w, counts


def eval_items(n: int, scale: int = 1, names: list[str] | None = None) -> list[Item]:
    """Held-out items: n per generator at `scale` x its training length (seeds -1..-n)."""
    return [make_item(name, -1 - i, scale * training_length(name)) for name in (names or sorted(GENERATORS))
            for i in range(n)]


# ----------------------------------------------------------------------------- model


def build_model(family: str, preset: str, seed: int, device: torch.device) -> torch.nn.Module:
    mod = family_module(family)
    torch.manual_seed(seed)
    return mod.from_config(mod.random_config(preset), seed=seed).to(device)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warmup, constant, then linear decay to min_lr_ratio over the last decay_frac of the steps
    (warmup-stable-decay: the run can be extended while the decay has not started)."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    decay = max(1, round(cfg.decay_frac * cfg.steps))
    t = (step - (cfg.steps - decay)) / decay
    return cfg.lr * (1 - (1 - cfg.min_lr_ratio) * min(max(t, 0.0), 1.0))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    params = list({id(p): p for p in model.parameters() if p.requires_grad}.values())
    decay = [p for p in params if p.ndim >= 2]  # matrices and embeddings; not norms, biases, decays
    rest = [p for p in params if p.ndim < 2]
    # on CUDA the fused update: one launch for all parameters instead of a dozen per tensor group
    fused = True if params and all(p.is_cuda for p in params) else None
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8, fused=fused,
    )


def autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast(
        "cpu", enabled=False)


def loss_fn(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor | None,
            device: torch.device) -> torch.Tensor:
    """Mean over rows of each row's weighted CE (`encode`'s weights sum to 1 per row); without weights,
    the mean CE over the scored positions."""
    with autocast(device):
        logits, _ = model(x.to(device), None)
    y = y.to(device)
    if w is None:
        return F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=IGNORE)
    ce = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=IGNORE, reduction="none")
    return (ce * w.to(device).flatten()).sum() / x.shape[0]


@torch.no_grad()
def score(model: torch.nn.Module, items: list[Item], device: torch.device, *, batch_tokens: int = 16384,
          max_batch: int = 256, amp: bool = True) -> tuple[list[bool], list[bool]]:
    """Per item: the greedy exact-match verdict and whether the first answer byte is right.

    Greedy decoding of the chat prompt emits exactly the answer bytes and then stops if and only if
    the argmax at every answer position is the answer's next byte and the argmax after the last byte
    is an end token (END or EOS, the tokenizer's eos_ids), so the teacher-forced forward gives the
    greedy verdict without decoding: one batched forward instead of len(answer)+1 steps. It is the
    verdict of byte-exact decoding, stricter than `evals.tasks.check`'s case/whitespace folding (the
    answers are lowercase single-spaced, so they differ only when a model emits other case or spacing).
    The only other difference from step-by-step decoding is floating-point rounding between one long
    forward and prefill + one-token steps, which can flip an argmax on a near tie. Items are encoded
    without their training tags, so only the answer is scored.

    Items are sorted by length and batched under `batch_tokens` (padded rows x length), right-padded:
    causal models never see the padding before the positions scored. `amp`: bf16 autocast on CUDA
    (training's periodic eval); the capability run passes False to score the served dtype.
    """
    was_training = model.training
    model.eval()
    enc = [encode(it, with_tags=False)[:2] for it in items]
    order = sorted(range(len(items)), key=lambda i: len(enc[i][0]))
    correct = [False] * len(items)
    first = [False] * len(items)
    ends = torch.tensor(sorted(TOK.eos_ids))
    s = 0
    while s < len(order):
        # the longest row is the last one of a length-sorted chunk, so its length sizes the batch
        n = 1
        while s + n < len(order) and n < max_batch and (n + 1) * len(enc[order[s + n]][0]) <= batch_tokens:
            n += 1
        chunk = order[s : s + n]
        x, y = collate([enc[i] for i in chunk])
        with autocast(device) if amp else torch.autocast(device.type, enabled=False):
            logits, _ = model(x.to(device), None)
        pred = logits.argmax(-1).cpu()
        mask = y != IGNORE
        is_end = torch.zeros_like(mask)
        is_end[mask] = y[mask] == TOK.END
        ok = (((pred == y) | ~mask) | (is_end & torch.isin(pred, ends))).all(-1)
        pos = mask.float().argmax(-1)  # the first scored position: the answer's first byte
        hit = pred.gather(1, pos[:, None])[:, 0] == y.gather(1, pos[:, None])[:, 0]
        for j, i in enumerate(chunk):
            correct[i] = bool(ok[j])
            first[i] = bool(hit[j])
        s += n
    model.train(was_training)
    return correct, first


def exact_match(model: torch.nn.Module, items: list[Item], device: torch.device, *, batch_tokens: int = 16384,
                max_batch: int = 256, amp: bool = True) -> list[bool]:
    """Greedy exact match per item (see `score`), in order."""
    return score(model, items, device, batch_tokens=batch_tokens, max_batch=max_batch, amp=amp)[0]


def summarise(items: list[Item], correct: list[bool], first: list[bool] | None = None) -> dict[str, Any]:
    """Accuracy overall, per task (in TASKS order) and per generator (+ first-byte accuracy per generator)."""
    per_task: dict[str, list[bool]] = {}
    per_gen: dict[str, list[bool]] = {}
    per_first: dict[str, list[bool]] = {}
    for i, (it, c) in enumerate(zip(items, correct, strict=True)):
        per_task.setdefault(it.task, []).append(c)
        per_gen.setdefault(it.generator, []).append(c)
        if first is not None:
            per_first.setdefault(it.generator, []).append(first[i])
    out = {
        "accuracy": sum(correct) / max(1, len(correct)),
        "per_task": {t: sum(v) / len(v) for t, v in sorted(per_task.items(), key=lambda kv: TASKS.index(kv[0]))},
        "per_generator": {g: sum(v) / len(v) for g, v in sorted(per_gen.items())},
        "items": len(items),
    }
    if first is not None:
        out["first_byte"] = {g: sum(v) / len(v) for g, v in sorted(per_first.items())}
    return out


def evaluate(model: torch.nn.Module, items: list[Item], device: torch.device, batch_size: int = 64
             ) -> dict[str, Any]:
    """Held-out accuracy summary (training's periodic and final eval): `score` + `summarise`."""
    return summarise(items, *score(model, items, device, max_batch=batch_size))


def evaluate_guarded(model: torch.nn.Module, items: list[Item], device: torch.device) -> dict[str, Any]:
    """`evaluate`, which on CUDA runs the serving Triton kernels; should they fail, the references
    (ARCHROUTER_NO_TRITON=1) evaluate instead, so a long run is never lost before its checkpoint is
    written. The result says which paths ran ("paths")."""
    try:
        return {**evaluate(model, items, device), "paths": "kernels" if device.type == "cuda" else "torch"}
    except Exception as e:  # reported on stderr and in the record, not swallowed
        if device.type != "cuda" or os.environ.get("ARCHROUTER_NO_TRITON") == "1":
            raise
        print(f"eval on the Triton kernels failed ({type(e).__name__}: {e}); evaluating on the references",
              file=sys.stderr)  # fmt: skip
        os.environ["ARCHROUTER_NO_TRITON"] = "1"
        try:
            return {**evaluate(model, items, device), "paths": f"references ({type(e).__name__}: {e})"[:300]}
        finally:
            del os.environ["ARCHROUTER_NO_TRITON"]


# ----------------------------------------------------------------------------- checkpoints


def save_checkpoint(model, opt, cfg: TrainConfig, step: int, record: dict[str, Any]) -> None:
    out = Path(cfg.out)
    family_module(cfg.family).save(model, out)
    torch.save({"optimizer": opt.state_dict(), "step": step}, out / "optim.pt")
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")


def pack(model: torch.nn.Module, family: str, record: dict[str, Any], tar_path: Path) -> None:
    """The checkpoint as served and committed: bf16 weights, config.json and training.json in one
    uncompressed tar (flat names); `load(..., dtype=torch.float32)` upcasts the weights."""
    import tempfile

    tar_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        half = copy.deepcopy(model).to(torch.bfloat16).cpu()
        family_module(family).save(half, Path(tmp))
        (Path(tmp) / "training.json").write_text(json.dumps(record, indent=2) + "\n")
        with tarfile.open(tar_path, "w") as tar:
            for f in sorted(Path(tmp).iterdir()):
                tar.add(f, arcname=f.name)


def _evals(model, sets: dict[str, list[Item]], device: torch.device) -> dict[str, Any]:
    return {k: evaluate_guarded(model, items, device) for k, items in sets.items()}


def train(cfg: TrainConfig, command: str = "") -> dict[str, Any]:
    cfg = cfg.resolved()
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        # cuDNN's SDPA plans per shape and cost ~0.2 s a step on the H200 probe: flash/efficient/math only
        torch.backends.cuda.enable_cudnn_sdp(False)
    out = Path(cfg.out)
    mod = family_module(cfg.family)
    record: dict[str, Any] = {}
    start, resumed = 0, None
    if (out / "training.json").exists() and (out / "model.safetensors").exists():  # resume
        record = json.loads((out / "training.json").read_text())
        model = mod.load(out, device=str(device), dtype=torch.float32).train()
        for p in model.parameters():
            p.requires_grad_(True)
        opt = make_optimizer(model, cfg)
        if (out / "optim.pt").exists():
            state = torch.load(out / "optim.pt", map_location=device, weights_only=True)
            opt.load_state_dict(state["optimizer"])
            start = int(state["step"])
            resumed = f"step {start}, weights and optimizer state"
        else:  # e.g. a bf16 checkpoint carried back to a fresh machine: the optimizer restarts
            start = int(record["steps"])
            resumed = f"step {start}, weights only (optimizer state restarted)"
    else:
        model = build_model(cfg.family, cfg.preset, cfg.init_seed, device).train()
        for p in model.parameters():
            p.requires_grad_(True)
        opt = make_optimizer(model, cfg)
    prior_wall = float(record.get("wall_s", 0.0))
    losses = list(record.get("loss_history", []))
    evals = list(record.get("evals", []))
    commands = list(record.get("commands", []))
    resumes = list(record.get("resumes", [])) + ([resumed] if resumed else [])
    counts = {"real": int(record.get("tokens", 0)), "supervised": int(record.get("supervised_tokens", 0)),
              "padded": int(record.get("padded_tokens", 0))}
    gens: dict[str, dict[str, int]] = {g: dict(v) for g, v in record.get("generators", {}).items()}
    probe = [g for g in cfg.eval_generators.split(",") if g]
    periodic = {"1x": eval_items(cfg.eval_items, 1, probe), "4x": eval_items(cfg.eval_items, 4, probe)}
    final_sets = {"1x": eval_items(cfg.eval_items), "4x": eval_items(cfg.eval_items, 4, probe)}
    params = n_params(model)
    t0 = time.perf_counter()
    bar = None
    if cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=start, desc=cfg.family, dynamic_ncols=True, mininterval=2.0)
    loader = torch.utils.data.DataLoader(
        _Steps(cfg, start), batch_size=None, num_workers=cfg.workers, prefetch_factor=8 if cfg.workers else None,
        pin_memory=device.type == "cuda")
    done, window, stopped_early = start, [], False
    fresh_opt = resumed is not None and "restarted" in resumed
    for x, y, w, row_counts in loader:
        elapsed = time.perf_counter() - t0
        if cfg.max_minutes and elapsed > 60 * cfg.max_minutes:
            stopped_early = True
            break
        lr = lr_at(cfg, done)
        if cfg.max_minutes and cfg.decay_minutes:  # time-based decay, whichever is lower
            left = (60 * cfg.max_minutes - elapsed) / (60 * cfg.decay_minutes)
            lr = min(lr, cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * min(1.0, max(0.0, left))))
        if fresh_opt and cfg.rewarm:  # Adam's moments start from zero again: ramp up as at the start
            lr *= min(1.0, (done - start + 1) / cfg.rewarm)
        for g in opt.param_groups:
            g["lr"] = lr
        loss = loss_fn(model, x, y, w, device)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        done += 1
        window.append(loss.detach())
        counts["supervised"] += int((y != IGNORE).sum())
        counts["padded"] += x.numel()
        for g, (rows, toks) in row_counts.items():
            c = gens.setdefault(g, {"rows": 0, "real_tokens": 0})
            c["rows"] += int(rows)
            c["real_tokens"] += int(toks)
            counts["real"] += int(toks)
        if done % 10 == 0 or done == cfg.steps:
            losses.append([done, round(torch.stack(window).mean().item(), 5)])
            window = []
        if bar is not None:
            bar.update(1)
        if cfg.eval_every and done % cfg.eval_every == 0 and done < cfg.steps:
            ev = _evals(model, periodic, device)
            evals.append({"step": done, "wall_s": round(prior_wall + time.perf_counter() - t0, 1), **ev})
            msg = " ".join(f"{g}@{k} {v['per_generator'][g]:.2f}/{v['first_byte'][g]:.2f}"
                           for k, v in ev.items() for g in v["per_generator"])
            recent = torch.stack(window).mean().item() if window else losses[-1][1]
            print(f"{cfg.family} step {done}: loss {recent:.3f} {msg}",
                  file=sys.stderr, flush=True)
    if window:
        losses.append([done, round(torch.stack(window).mean().item(), 5)])
    if bar is not None:
        bar.close()
    final = _evals(model, final_sets, device)
    evals.append({"step": done, "wall_s": round(prior_wall + time.perf_counter() - t0, 1), **final})
    wall = prior_wall + time.perf_counter() - t0
    record = {
        "family": cfg.family,
        "preset": cfg.preset,
        "trained": True,
        "data_seed": cfg.data_seed,
        "init_seed": cfg.init_seed,
        "steps": done,
        "target_steps": cfg.steps,
        "lr_at_end": opt.param_groups[0]["lr"] if opt.param_groups else None,
        "stopped_early": stopped_early,
        "tokens_per_step": cfg.tokens_per_step,
        "max_seq_len": cfg.max_seq_len,
        "tokens": counts["real"],  # real tokens (no padding) seen, the matched budget
        "supervised_tokens": counts["supervised"],  # answer + tag positions with a target
        "padded_tokens": counts["padded"],  # positions computed, padding included
        "generators": dict(sorted(gens.items())),
        "final_loss": losses[-1][1] if losses else None,
        "loss_history": losses,
        "eval": final["1x"],
        "eval_4x_probe": final["4x"],
        "evals": evals,
        "parameters": params,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "wall_s": round(wall, 2),
        "hyperparameters": {k: v for k, v in vars(cfg).items() if k not in ("out", "pack", "progress")},
        "recipe": load_recipe(cfg.recipe or None),
        "commands": commands + ([command] if command else []),
        "resumes": resumes,
    }
    save_checkpoint(model, opt, cfg, done, record)
    if cfg.pack:
        pack(model, cfg.family, record, Path(cfg.pack))
    return record


# ----------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    p = argparse.ArgumentParser(prog="python -m archrouter.evals.training", description=__doc__.split("\n\n")[0])
    defaults = TrainConfig(family="", out="")
    p.add_argument("--family", required=True, choices=["transformer", "mamba", "rwkv", "xlstm"])
    p.add_argument("--out", required=True, help="checkpoint folder (resumed when it holds optim.pt)")
    for name, value in vars(defaults).items():
        if name in ("family", "out"):
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=value)
        else:
            p.add_argument(flag, type=type(value), default=value)
    return TrainConfig(**vars(p.parse_args(argv)))


def main(argv: list[str] | None = None) -> None:
    cfg = parse_args(argv)
    command = shlex.join([sys.executable, "-m", "archrouter.evals.training", *(argv or sys.argv[1:])])
    record = train(cfg, command=command)
    print(json.dumps({k: record[k] for k in ("family", "parameters", "steps", "tokens", "supervised_tokens",
                                            "final_loss", "wall_s")}))
    print(json.dumps(record["eval"]["per_generator"]))


if __name__ == "__main__":
    main()
