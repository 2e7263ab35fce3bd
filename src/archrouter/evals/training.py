"""Train any model family on the synthetic task mixture (evals.tasks), through the model interface.

    python -m archrouter.evals.training --family rwkv --preset zoo --out runs/zoo/rwkv --steps 1200

Byte tokenizer with its chat template; the loss is taken on the answer bytes (+ the end marker)
only. AdamW, linear warmup then cosine decay, bf16 autocast on CUDA, periodic eval (exact-match
accuracy per task on held-out items at training length). The data stream is a pure function of
(data seed, step, row), so families trained with the same flags see the same items and the same
number of tokens, and a resumed run continues the same stream. `--out` holds the family's checkpoint
(`save()`), `optim.pt` (optimizer + step, read back with weights_only=True) and `training.json`.

On CUDA the training forward must be differentiable. The serving Triton kernels are forward-only, so
when gradients are on each recurrent family switches to its batched, differentiable training path
(`kernels/<op>/train.py`: fused Triton forward + backward kernels on CUDA for the Mamba scan, WKV-7 and
the sLSTM, torch elsewhere; mLSTM chunkwise in torch) and the Transformer to RoPE + SDPA in torch. The
periodic eval (no gradients) runs the serving kernels. ARCHROUTER_NO_TRITON=1 sends everything through
the torch references.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
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
from archrouter.evals.tasks import GENERATORS, Item, make_item, training_length
from archrouter.policies.types import TASKS

IGNORE = -100
TOK = ByteTokenizer()


@dataclass
class TrainConfig:
    family: str
    out: str
    preset: str = "zoo"
    steps: int = 1200
    batch_size: int = 32
    seq_len: int = 256
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup: int = 50
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    data_seed: int = 1234
    init_seed: int = 0
    eval_every: int = 200
    eval_items: int = 32  # per generator
    device: str = "auto"
    max_minutes: float = 0.0  # stop (and save) early past this wall time; 0 = no limit
    pack: str = ""  # also write the checkpoint folder (weights, config, training.json) as one tar
    progress: bool = True


# ----------------------------------------------------------------------------- data


def encode(item: Item) -> tuple[list[int], list[int]]:
    """Input ids and targets (next-token, IGNORE outside the answer) for one item."""
    prompt = TOK.apply_chat_template(item.messages())
    answer = [*TOK.encode(item.answer), TOK.END]
    ids = prompt + answer
    targets = [IGNORE] * (len(prompt) - 1) + answer
    return ids[:-1], targets


def collate(rows: list[tuple[list[int], list[int]]], length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded batch (causal models never see the padding before the answer)."""
    n = length or max(len(x) for x, _ in rows)
    x = torch.full((len(rows), n), TOK.PAD, dtype=torch.long)
    y = torch.full((len(rows), n), IGNORE, dtype=torch.long)
    for i, (ids, tgt) in enumerate(rows):
        x[i, : len(ids)] = torch.tensor(ids)
        y[i, : len(tgt)] = torch.tensor(tgt)
    return x, y


def train_item(data_seed: int, step: int, row: int, seq_len: int) -> Item:
    """Item `row` of step `step`: a uniform generator at a length in [L/4, L] (L its training length),
    resampled until it fits `seq_len` tokens. Seeds are >= 0; held-out eval items use seeds < 0."""
    rng = random.Random(f"train:{data_seed}:{step}:{row}")
    names = sorted(GENERATORS)
    while True:
        name = rng.choice(names)
        top = training_length(name)
        item = make_item(name, rng.randrange(2**40), rng.randint(max(1, top // 4), top))
        if len(encode(item)[0]) <= seq_len:
            return item


def train_batch(cfg: TrainConfig, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    rows = [encode(train_item(cfg.data_seed, step, r, cfg.seq_len)) for r in range(cfg.batch_size)]
    return collate(rows, cfg.seq_len)


def eval_items(n: int, scale: int = 1) -> list[Item]:
    """Held-out items: n per generator at `scale` × its training length (seeds -1..-n)."""
    return [make_item(name, -1 - i, scale * training_length(name)) for name in sorted(GENERATORS) for i in range(n)]


# ----------------------------------------------------------------------------- model


def build_model(family: str, preset: str, seed: int, device: torch.device) -> torch.nn.Module:
    mod = family_module(family)
    torch.manual_seed(seed)
    return mod.from_config(mod.random_config(preset), seed=seed).to(device)


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def lr_at(cfg: TrainConfig, step: int) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


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


def loss_fn(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> torch.Tensor:
    with autocast(device):
        logits, _ = model(x.to(device), None)
    return F.cross_entropy(logits.float().flatten(0, 1), y.to(device).flatten(), ignore_index=IGNORE)


@torch.no_grad()
def exact_match(model: torch.nn.Module, items: list[Item], device: torch.device, *, batch_tokens: int = 16384,
                max_batch: int = 256, amp: bool = True) -> list[bool]:
    """Greedy exact match per item, computed teacher-forced in batches (one verdict per item, in order).

    Greedy decoding of the chat prompt emits exactly the answer bytes and then stops if and only if
    the argmax at every answer position is the answer's next byte and the argmax after the last byte
    is an end token (END or EOS, the tokenizer's eos_ids), so the teacher-forced forward gives the
    greedy verdict without decoding: one batched forward instead of len(answer)+1 steps. It is the
    verdict of byte-exact decoding, stricter than `evals.tasks.check`'s case/whitespace folding (the
    answers are lowercase single-spaced, so they differ only when a model emits other case or spacing).
    The only other difference from step-by-step decoding is floating-point rounding between one long
    forward and prefill + one-token steps, which can flip an argmax on a near tie.

    Items are sorted by length and batched under `batch_tokens` (padded rows x length), right-padded:
    causal models never see the padding before the positions scored. `amp`: bf16 autocast on CUDA
    (training's periodic eval); the capability run passes False to score the served dtype.
    """
    was_training = model.training
    model.eval()
    enc = [encode(it) for it in items]
    order = sorted(range(len(items)), key=lambda i: len(enc[i][0]))
    correct = [False] * len(items)
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
        correct_rows = ok.tolist()
        for i, row_ok in zip(chunk, correct_rows, strict=True):
            correct[i] = bool(row_ok)
        s += n
    model.train(was_training)
    return correct


def summarise(items: list[Item], correct: list[bool]) -> dict[str, Any]:
    """Accuracy overall, per task (in TASKS order) and per generator."""
    per_task: dict[str, list[bool]] = {}
    per_gen: dict[str, list[bool]] = {}
    for it, c in zip(items, correct, strict=True):
        per_task.setdefault(it.task, []).append(c)
        per_gen.setdefault(it.generator, []).append(c)
    return {
        "accuracy": sum(correct) / max(1, len(correct)),
        "per_task": {t: sum(v) / len(v) for t, v in sorted(per_task.items(), key=lambda kv: TASKS.index(kv[0]))},
        "per_generator": {g: sum(v) / len(v) for g, v in sorted(per_gen.items())},
        "items": len(items),
    }


def evaluate(model: torch.nn.Module, items: list[Item], device: torch.device, batch_size: int = 64
             ) -> dict[str, Any]:
    """Held-out accuracy summary (training's periodic and final eval): `exact_match` + `summarise`."""
    return summarise(items, exact_match(model, items, device, max_batch=batch_size))


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


def pack(folder: Path, tar_path: Path) -> None:
    """The checkpoint folder without the optimizer state, as one uncompressed tar (flat names)."""
    tar_path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tar_path, "w") as tar:
        for f in sorted(folder.iterdir()):
            if f.is_file() and f.name != "optim.pt":
                tar.add(f, arcname=f.name)


def train(cfg: TrainConfig, command: str = "") -> dict[str, Any]:
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    out = Path(cfg.out)
    mod = family_module(cfg.family)
    start, prior_wall, losses = 0, 0.0, []
    record: dict[str, Any] = {}
    if (out / "optim.pt").exists() and (out / "training.json").exists():  # resume
        record = json.loads((out / "training.json").read_text())
        model = mod.load(out, device=str(device)).train()
        for p in model.parameters():
            p.requires_grad_(True)
        opt = make_optimizer(model, cfg)
        state = torch.load(out / "optim.pt", map_location=device, weights_only=True)
        opt.load_state_dict(state["optimizer"])
        start = int(state["step"])
        prior_wall = float(record.get("wall_s", 0.0))
        losses = list(record.get("loss_history", []))
    else:
        model = build_model(cfg.family, cfg.preset, cfg.init_seed, device).train()
        for p in model.parameters():
            p.requires_grad_(True)
        opt = make_optimizer(model, cfg)
    held_out = eval_items(cfg.eval_items)
    params = n_params(model)
    t0 = time.perf_counter()
    bar = None
    if cfg.progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, initial=start, desc=cfg.family, dynamic_ncols=True, mininterval=2.0)
    evals = list(record.get("evals", []))
    step, window, stopped_early = start, [], False
    for step in range(start, cfg.steps):
        if cfg.max_minutes and (time.perf_counter() - t0) > 60 * cfg.max_minutes:
            stopped_early = True
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, step)
        x, y = train_batch(cfg, step)
        loss = loss_fn(model, x, y, device)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        window.append(loss.item())
        if (step + 1) % 10 == 0 or step + 1 == cfg.steps:
            losses.append([step + 1, sum(window) / len(window)])
            window = []
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1][1] if losses else loss.item():.3f}", refresh=False)
        if cfg.eval_every and (step + 1) % cfg.eval_every == 0 and step + 1 < cfg.steps:
            ev = evaluate_guarded(model, held_out, device)
            evals.append({"step": step + 1, **ev})
            if bar is not None:
                bar.write(f"{cfg.family} step {step + 1}: loss {losses[-1][1]:.3f} acc {ev['accuracy']:.3f}")
    else:
        step = cfg.steps
    if window:
        losses.append([step, sum(window) / len(window)])
    if bar is not None:
        bar.close()
    final = evaluate_guarded(model, held_out, device)
    evals.append({"step": step, **final})
    wall = prior_wall + time.perf_counter() - t0
    record = {
        "family": cfg.family,
        "preset": cfg.preset,
        "trained": True,
        "data_seed": cfg.data_seed,
        "init_seed": cfg.init_seed,
        "steps": step,
        "target_steps": cfg.steps,
        "stopped_early": stopped_early,
        "batch_size": cfg.batch_size,
        "seq_len": cfg.seq_len,
        "tokens": step * cfg.batch_size * cfg.seq_len,  # positions seen, padding included (same for all)
        "final_loss": losses[-1][1] if losses else None,
        "loss_history": losses,
        "eval": final,
        "evals": evals,
        "parameters": params,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "wall_s": round(wall, 2),
        "hyperparameters": {k: v for k, v in vars(cfg).items() if k not in ("out", "pack", "progress")},
        "command": command,
    }
    save_checkpoint(model, opt, cfg, step, record)
    if cfg.pack:
        pack(out, Path(cfg.pack))
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
    print(json.dumps({k: record[k] for k in ("family", "parameters", "steps", "tokens", "final_loss", "wall_s")}))
    print(json.dumps(record["eval"]["per_task"]))


if __name__ == "__main__":
    main()
