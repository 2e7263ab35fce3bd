"""One xLSTM training step (forward + backward) with the sLSTM on the Triton training kernels vs the
PyTorch training path (kernels/slstm/train.py), at the zoo training shape, as backends.training runs it
(bf16 autocast on CUDA, fp32 weights, a fresh cache). Same model, same batch; prints one JSON line.

    python benchmarks/bench_slstm_train.py                      # H100: the zoo preset, B 64 x T 256
    python benchmarks/bench_slstm_train.py --preset tiny --batch 2 --seq 12 --reps 1   # CPU smoke

On CPU the "triton" side runs in the Triton interpreter (TRITON_INTERPRET=1 is set here): slow, for a
smoke test only. Besides the times it reports the loss and the largest relative gradient difference
between the two paths.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch.nn.functional as F  # noqa: E402

from backends.families import family_module  # noqa: E402


def step(model, ids: torch.Tensor) -> torch.Tensor:
    model.zero_grad(set_to_none=True)
    with torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=ids.is_cuda):
        logits, _ = model(ids, None)
    loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())
    loss.backward()
    return loss.detach()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="zoo")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    mod = family_module("xlstm")
    model = mod.from_config(mod.random_config(args.preset), seed=0).to(dev).train()
    for prm in model.parameters():
        prm.requires_grad_(True)
    ids = torch.randint(0, 256, (args.batch, args.seq), generator=torch.Generator().manual_seed(0)).to(dev)
    out: dict = {"device": torch.cuda.get_device_name() if dev == "cuda" else "cpu", **vars(args)}
    grads = {}
    for backend in ("triton", "torch"):
        os.environ["ARCHROUTER_SLSTM_TRAIN"] = backend
        loss = step(model, ids)  # warm-up (compiles the kernels)
        grads[backend] = {k: q.grad.float().clone() for k, q in model.named_parameters() if q.grad is not None}
        if dev == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(args.reps):
            step(model, ids)
        if dev == "cuda":
            torch.cuda.synchronize()
        out[f"{backend}_s_per_step"] = round((time.perf_counter() - t0) / args.reps, 4)
        out[f"{backend}_loss"] = round(float(loss), 5)
    os.environ.pop("ARCHROUTER_SLSTM_TRAIN")
    out["speedup"] = round(out["torch_s_per_step"] / out["triton_s_per_step"], 1)
    out["max_rel_grad_diff"] = max(
        float((grads["triton"][k] - g).abs().max() / g.abs().max().clamp_min(1e-12)) for k, g in grads["torch"].items()
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
