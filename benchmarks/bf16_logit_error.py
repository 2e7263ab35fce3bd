"""Where a family's bf16 logit error comes from: the kernels, or bf16 rounding of the model itself.

    python benchmarks/bf16_logit_error.py --device cuda          # the ~0.1-0.2B bench_engine shapes
    python benchmarks/bf16_logit_error.py --size tiny            # CPU check of the script

Per family, random weights (the bench_engine `small` presets), a prompt of --tokens tokens at batch 1
and --batch, four runs of the same forward compared with the fp32 plain-PyTorch path (the reference
kernels, ARCHROUTER_NO_TRITON=1) as the truth:

  fp32 kernels   : Triton kernels in fp32              -> how far the kernels are from their reference
  bf16 kernels   : Triton kernels, bf16 weights        -> the error a user sees
  bf16 reference : plain PyTorch, bf16 weights         -> the error of bf16 itself, no Triton involved
  per block      : relative error of each block's output (bf16 kernels vs fp32 reference), to show where
                   it grows

If `bf16 kernels` ~ `bf16 reference` while `fp32 kernels` is ~1e-6, the error is bf16 rounding of the
model (growing block by block), not a kernel defect. Error = max |logit difference| / max |reference
logit| over the last position of every row (and max abs difference, reported too).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from archrouter.backends.families import FAMILIES, family_module  # noqa: E402

PRESETS = {"small": {"transformer": "180m", "mamba": "130m", "rwkv": "0.1b", "xlstm": "125m"},
           "tiny": dict.fromkeys(FAMILIES, "tiny")}


@contextlib.contextmanager
def reference_kernels(on: bool):
    old = os.environ.get("ARCHROUTER_NO_TRITON")
    if on:
        os.environ["ARCHROUTER_NO_TRITON"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("ARCHROUTER_NO_TRITON", None)
        else:
            os.environ["ARCHROUTER_NO_TRITON"] = old


def blocks_of(model: torch.nn.Module) -> torch.nn.ModuleList:
    for path in ("model.layers", "backbone.layers", "blocks", "xlstm_block_stack.blocks", "backbone.blocks"):
        obj = model
        try:
            for part in path.split("."):
                obj = obj[part] if isinstance(obj, torch.nn.ModuleDict) else getattr(obj, part)
        except (AttributeError, KeyError):
            continue
        if isinstance(obj, torch.nn.ModuleList):
            return obj
    raise ValueError(f"no block list in {type(model).__name__}")


def run(model: torch.nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Last-position logits [B, V] (fp32) and every block's output (fp32, last position)."""
    outs: list[torch.Tensor] = []

    def hook(_m, _i, out):  # noqa: ANN001, ANN202
        h = out[0] if isinstance(out, tuple) else out
        outs.append(h[:, -1].float())

    def pre(_m, inputs):  # noqa: ANN001, ANN202
        outs.append(inputs[0][:, -1].float())

    blocks = blocks_of(model)
    if type(blocks[0]).forward is torch.nn.Module.forward:  # RWKV-7: the model calls att/ffn itself; the
        # residual stream entering each later block is what its ln1 reads (and ln_out after the last)
        points = [b.ln1 for b in blocks[1:]] + [model.ln_out]
        handles = [m.register_forward_pre_hook(pre) for m in points]
    else:
        handles = [b.register_forward_hook(hook) for b in blocks]
    try:
        with torch.inference_mode():
            logits, _ = model(ids)
    finally:
        for h in handles:
            h.remove()
    return logits[:, -1].float(), outs


def err(x: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    d = (x - ref).abs().max().item()
    return d / ref.abs().max().item(), d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--size", default=None, choices=list(PRESETS))
    ap.add_argument("--families", nargs="+", default=["xlstm", "mamba", "rwkv", "transformer"])
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--out", default=os.environ.get("OUT", "bench-out"))
    args = ap.parse_args()
    size = args.size or ("small" if args.device == "cuda" else "tiny")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {"device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
                     "torch": torch.__version__, "tokens": args.tokens, "families": {}}
    lines = [f"device {results['device']}  torch {torch.__version__}  prompt {args.tokens} tokens  "
             "error = max|dlogit| / max|logit| (max|dlogit|) vs the fp32 plain-PyTorch path",
             f"{'family':12s} {'batch':>5s}  {'fp32 kernels':>22s}  {'bf16 kernels':>22s}  {'bf16 reference':>22s}"
             "  per-block rel. error (bf16 kernels), first -> last"]
    for family in args.families:
        mod = family_module(family)
        model32 = mod.from_config(mod.random_config(PRESETS[size][family]), seed=0).to(args.device).eval()
        model16 = mod.from_config(mod.random_config(PRESETS[size][family]), seed=0).to(args.device,
                                                                                        torch.bfloat16).eval()
        if family == "mamba":  # SSM parameters stay fp32 (mamba._cast), as the engine loads them
            from archrouter.backends.mamba import _cast

            model16 = _cast(model16, args.device, torch.bfloat16)
        vocab = min(model32.vocab_size, 250)
        gen = torch.Generator().manual_seed(1)
        fam: dict = {}
        for batch in (1, args.batch):
            ids = torch.randint(3, vocab, (batch, args.tokens), generator=gen).to(args.device)
            with reference_kernels(True):
                ref, ref_blocks = run(model32, ids)
                ref16, _ = run(model16, ids)
            k32, _ = run(model32, ids)
            k16, k16_blocks = run(model16, ids)
            per_block = [err(a, b)[0] for a, b in zip(k16_blocks, ref_blocks, strict=True)]
            row = {"fp32_kernels": err(k32, ref), "bf16_kernels": err(k16, ref), "bf16_reference": err(ref16, ref),
                   "per_block_bf16": per_block}
            fam[batch] = row

            def cell(v: tuple[float, float]) -> str:
                return f"{v[0]:9.2e} ({v[1]:8.2e})"

            blocks = " ".join(f"{e:.1e}" for e in per_block[:: max(1, len(per_block) // 6)])
            lines.append(f"{family:12s} {batch:5d}  {cell(row['fp32_kernels'])}  {cell(row['bf16_kernels'])}  "
                         f"{cell(row['bf16_reference'])}  {blocks} -> {per_block[-1]:.1e}")
            print(lines[-1], flush=True)
        results["families"][family] = fam
        del model32, model16
        # after every family: a run cut by a time limit keeps what it measured
        (out / "bf16_logit_error.json").write_text(json.dumps(results, indent=1))
        (out / "bf16_logit_error.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
