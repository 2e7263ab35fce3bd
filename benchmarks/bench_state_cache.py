"""What one prefix-cache store and one hit cost per family, as the engine's two tiers pay them.

    python benchmarks/bench_state_cache.py                 # CPU, the ~0.1-0.2B shapes of bench_engine's "small"
    python benchmarks/bench_state_cache.py --device cuda   # bf16 on the GPU

A store is what the engine's step thread does when a prompt reaches a snapshot boundary; a hit what it
does when a later prompt restores that prefix (inside the later request's time to first token). Byte
tier: `Cache.snapshot` (device -> host, safetensors) and `Cache.restore` (safetensors -> device), what
every store and hit cost before states were kept on the device. Device tier: one `gather` copy on store
and one on a hit. The Transformer row is its contiguous KV cache at --tokens tokens. Prints ms per
store + hit and the ratio bytes / device; writes bench_state_cache.json to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]  # runs from a checkout without an install (GPU images)
from archrouter.backends.families import family_module  # noqa: E402
from benchmarks.bench_engine import FAMILIES, SIZES, environment  # noqa: E402


def timed(fn, device: str, repeats: int) -> float:  # noqa: ANN001
    """Median ms of fn() over `repeats` runs (synchronised on CUDA)."""
    out = []
    for _ in range(repeats + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        out.append(1e3 * (time.perf_counter() - t0))
    return sorted(out[1:])[len(out[1:]) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--size", default="small", choices=list(SIZES))
    ap.add_argument("--tokens", type=int, default=4096, help="prefix length (sizes the Transformer's KV)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=os.environ.get("OUT", "bench-out"))
    args = ap.parse_args()
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    rows = []
    with torch.inference_mode():
        for family in FAMILIES:
            preset, overrides = SIZES[args.size][family]
            mod = family_module(family)
            model = mod.from_config({**mod.random_config(preset), **overrides}).to(args.device, dtype).eval()
            cache = model.init_cache(1)
            if family == "transformer":  # its state is its KV: fill it to the prefix length
                _, cache = model(torch.randint(0, 200, (1, args.tokens), device=args.device), cache)
            cache_type = type(cache)
            data = cache.snapshot(0)
            byte_ms = timed(lambda c=cache, t=cache_type: t.restore(c.snapshot(0), device=args.device), args.device,
                            args.repeats)  # fmt: skip
            device_ms = timed(lambda c=cache: c.gather([0]).gather([0]), args.device, args.repeats)
            row = {"family": family, "preset": preset, "state_bytes": cache.nbytes(), "snapshot_bytes": len(data),
                   "bytes_tier_ms": byte_ms, "device_tier_ms": device_ms, "ratio": byte_ms / device_ms}
            rows.append(row)
            print(f"{family:12s} {preset:6s} state {row['state_bytes'] / 2**20:8.1f} MiB  store+hit: bytes "
                  f"{byte_ms:8.2f} ms, device {device_ms:7.3f} ms  (x{row['ratio']:.1f})", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_state_cache.json").write_text(json.dumps({"env": environment(args.device), "args": vars(args),
                                                             "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
