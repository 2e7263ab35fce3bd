"""Seconds per training step of each zoo family: forward + backward + clip + AdamW, as evals.training runs it.

    python benchmarks/bench_training_step.py --out bench-out/training_step.json            # H100: ~1-2 min
    python benchmarks/bench_training_step.py --compare-torch --out bench-out/ts.json        # + the torch paths
    python benchmarks/bench_training_step.py --device cpu --batch-size 2 --steps 2 --warmup 1   # CPU smoke

One fixed batch from the training stream (the first step whose length bucket is --seq-len, with
--batch-size x --seq-len tokens per step), bf16 autocast on CUDA, the same model, optimizer and
loss as `archrouter.evals.training`. Each step is timed between device synchronisations; the median over
--steps steps after --warmup steps (the first compiles the Triton kernels) is reported with tokens/s
(batch x seq_len positions per step, padding included, as training counts them) and peak GPU memory.
--compare-torch repeats each family with ARCHROUTER_NO_TRITON=1: the plain-PyTorch training paths
(on CPU both runs take those; each row's "triton_training_kernels" says which ran).
--tiles also times Mamba and RWKV-7 at other channel / value-row blocks and warp counts of the training
kernels (kernels/selective_scan/train_triton.BLOCK_D, kernels/wkv7/train_triton.BLOCK_V, NUM_WARPS).
--profile prints torch.profiler's top ops (device and host time) over 3 steps per family.
Batch building (Python, one core) is timed separately: training builds one batch per step.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]  # runs from a checkout without an install (GPU images)

import torch  # noqa: E402

from archrouter.evals.training import (  # noqa: E402
    TrainConfig,
    build_model,
    loss_fn,
    make_optimizer,
    n_params,
    train_batch,
)
from archrouter.kernels._dispatch import use_triton  # noqa: E402
from archrouter.kernels.selective_scan import train_triton as scan_train  # noqa: E402
from archrouter.kernels.wkv7 import train_triton as wkv7_train  # noqa: E402

FAMILIES = ("transformer", "mamba", "rwkv", "xlstm")
# family -> (module, block-size constant, (block, num_warps) pairs to try with --tiles)
TILES = {
    "mamba": (scan_train, "BLOCK_D", ((16, 1), (16, 2), (32, 2), (32, 4), (64, 4))),
    "rwkv": (wkv7_train, "BLOCK_V", ((8, 1), (8, 2), (16, 2), (16, 4), (32, 8))),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_family(family: str, cfg: TrainConfig, device: torch.device, steps: int, warmup: int,
                profile: bool = False) -> dict:
    model = build_model(family, cfg.preset, cfg.init_seed, device).train()
    for p in model.parameters():
        p.requires_grad_(True)
    opt = make_optimizer(model, cfg)
    x, y, w = fixed_batch(cfg)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> torch.Tensor:
        loss = loss_fn(model, x, y, w, device)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        return loss

    times = []
    for i in range(warmup + steps):
        _sync(device)
        t0 = time.perf_counter()
        loss = step()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with torch_profile(activities=acts) as prof:
            for _ in range(3):
                step()
            _sync(device)
        key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        print(f"--- profile: {family}, 3 steps, by {key}")
        print(prof.key_averages().table(sort_by=key, row_limit=15, max_name_column_width=60), flush=True)
    s = statistics.median(times)
    row = {
        "family": family,
        "parameters": n_params(model),
        "s_per_step": round(s, 5),
        "min_s": round(min(times), 5),
        "tokens_per_s": round(x.numel() / s),
        "final_loss": round(loss.item(), 4),
    }
    if device.type == "cuda":
        row["peak_mem_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return row


def fixed_batch(cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The first training step whose bucket is the longest allowed (max_seq_len): a full-length batch."""
    for step in range(cfg.warmup, cfg.warmup + 1000):
        x, y, w = train_batch(cfg, step)
        if x.shape[1] == cfg.max_seq_len:
            return x, y, w
    raise RuntimeError(f"no step with a {cfg.max_seq_len}-token bucket in 1000 steps")


def time_batches(cfg: TrainConfig, n: int) -> float:
    times = []
    for step in range(1, n + 1):
        t0 = time.perf_counter()
        train_batch(cfg, step)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--preset", default="zoo")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20, help="timed steps (median reported)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--compare-torch", action="store_true", help="also time with ARCHROUTER_NO_TRITON=1")
    ap.add_argument("--tiles", action="store_true", help="also sweep the training kernels' block sizes")
    ap.add_argument("--profile", action="store_true", help="print the top ops of 3 profiled steps per family")
    ap.add_argument("--out", default="", help="write the results as JSON here")
    args = ap.parse_args()
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # as archrouter.evals.training
    cfg = TrainConfig(family="", out="", preset=args.preset, tokens_per_step=args.batch_size * args.seq_len,
                      max_seq_len=args.seq_len)
    rows = []
    for family in args.families.split(","):
        runs = [("kernels", None, None)] + ([("torch", "1", None)] if args.compare_torch else [])
        if args.tiles and family in TILES:
            module, name, values = TILES[family]
            current = (getattr(module, name), module.NUM_WARPS)
            runs += [(f"kernels {name}={b},warps={w}", None, (b, w)) for b, w in values if (b, w) != current]
        for paths, flag, tile in runs:
            old = os.environ.pop("ARCHROUTER_NO_TRITON", None)
            if flag:
                os.environ["ARCHROUTER_NO_TRITON"] = flag
            if tile is not None:
                module, name, _ = TILES[family]
                default = (getattr(module, name), module.NUM_WARPS)
                setattr(module, name, tile[0])
                module.NUM_WARPS = tile[1]
            try:
                profile = args.profile and paths == "kernels"
                row = {"paths": paths, "triton_training_kernels": use_triton(torch.empty(0, device=device)),
                       **time_family(family, cfg, device, args.steps, args.warmup, profile)}
            except Exception as e:  # one family's failure (say, a kernel that does not compile) is reported, not fatal
                row = {"paths": paths, "family": family, "error": f"{type(e).__name__}: {e}"}
            finally:
                os.environ.pop("ARCHROUTER_NO_TRITON", None)
                if old is not None:
                    os.environ["ARCHROUTER_NO_TRITON"] = old
                if tile is not None:
                    setattr(module, name, default[0])
                    module.NUM_WARPS = default[1]
            rows.append(row)
            if "error" in row:
                print(f"{family:12s} {paths:26s} ERROR {row['error']}", flush=True)
            else:
                print(f"{family:12s} {paths:26s} {row['s_per_step']:.4f} s/step  {row['tokens_per_s']:>9,d} tok/s"
                      + (f"  peak {row['peak_mem_gib']} GiB" if "peak_mem_gib" in row else ""), flush=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    batch_s = time_batches(cfg, 20)
    print(f"batch building (Python, one core): {batch_s * 1e3:.2f} ms per {args.batch_size} x {args.seq_len} batch")
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "preset": args.preset,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "steps": args.steps,
        "warmup": args.warmup,
        "autocast": "bf16" if device.type == "cuda" else "off",
        "batch_build_s": round(batch_s, 5),
        "rows": rows,
    }
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    if any("error" in r for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
