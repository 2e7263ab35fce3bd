"""Mamba-1 kernels on the GPU: ours (Triton) vs the plain-PyTorch reference vs mamba-ssm.

Sections (each prints ours/anchor ratios and checks ours against the reference at the same shapes):
  decode   one-step state update, batch 1-256, d_inner 1536-5120, d_state 16, bf16 inputs, fp32
           state: ours vs mamba-ssm's Triton `selective_state_update` (eager and CUDA graph),
           achieved bandwidth as a fraction of 3.0 TB/s (the H100's measured copy rate);
  prefill  selective scan, batch 1-16, d_inner 1536-5120, lengths 512-16k: tokens/s, a small
           config sweep, ours vs our reference and mamba-ssm's pure-torch `selective_scan_ref`
           (its CUDA scan is not built on the bench machine) where those finish in time;
  conv     causal conv1d prefill (ours vs F.conv1d on the [B, D, T] layout) and decode update;
  e2e      decode tokens/s of a 130M-class Mamba (random weights, bf16) at batch 1 and 32:
           our kernels (eager and CUDA-graph captured) vs the plain-PyTorch path.

mamba-ssm: extract its sdist, empty mamba_ssm/__init__.py, put the folder on PYTHONPATH
(see anchors.md). Absent, its columns are skipped.

    PYTHONPATH=.device/mamba:$PWD python benchmarks/bench_selective_scan.py
    python benchmarks/bench_selective_scan.py --smoke      # CPU, TRITON_INTERPRET=1, tiny shapes

Writes results.json and results.txt under $OUT (default ./bench-out); prints a short table last.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

SMOKE = "--smoke" in sys.argv
if SMOKE:
    os.environ["TRITON_INTERPRET"] = "1"  # before triton decorates any kernel

import torch  # noqa: E402
import triton  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]  # runs from a checkout without an install (GPU images)

from archrouter.backends import mamba  # noqa: E402
from archrouter.kernels.selective_scan import (  # noqa: E402
    causal_conv1d_ref,
    causal_conv1d_update_ref,
    selective_scan_ref,
    selective_state_update_ref,
)
from archrouter.kernels.selective_scan.conv1d import causal_conv1d_triton, causal_conv1d_update_triton  # noqa: E402
from archrouter.kernels.selective_scan.scan import selective_scan_triton  # noqa: E402
from archrouter.kernels.selective_scan.step import selective_state_update_triton  # noqa: E402

COPY_BW = 3.0e12  # bytes/s, H100 device-to-device copy measured (anchors.md)
PEAK_BW = 3.35e12  # bytes/s, H100 SXM HBM3 datasheet
DSTATE = 16
# bf16 outputs of fp32 math: compare at bf16 resolution (2^-8 relative) plus absolute slack
BF16_ATOL, BF16_RTOL = 3e-2, 2e-2
STATE_RTOL = 1e-3  # fp32 state, exp2-vs-exp rounding accumulated over up to 16k steps


def _anchor():
    try:
        from mamba_ssm.ops.triton.selective_state_update import selective_state_update as mss_step
    except Exception as e:  # noqa: BLE001 - any import failure means "anchor absent"
        print(f"mamba-ssm selective_state_update unavailable: {e!r}")
        mss_step = None
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_ref as mss_scan_ref
    except Exception as e:  # noqa: BLE001
        print(f"mamba-ssm selective_scan_ref unavailable: {e!r}")
        mss_scan_ref = None
    return mss_step, mss_scan_ref


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def timeit(fn: Callable[[], object], dev: torch.device, *, rep: int = 100, graph: bool = False) -> float:
    """Median milliseconds; triton's do_bench (or do_bench_cudagraph) on CUDA, a wall clock on CPU."""
    if dev.type == "cuda":
        if graph:
            return float(triton.testing.do_bench_cudagraph(fn, rep=rep, return_mode="median"))
        return float(triton.testing.do_bench(fn, warmup=25, rep=rep, return_mode="median"))
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return sorted(times)[0]


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-6))


def close_bf16(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(torch.allclose(a.float(), b.float(), atol=BF16_ATOL, rtol=BF16_RTOL))


# ---------------------------------------------------------------------------------------- decode


def step_inputs(batch: int, dim: int, dev: torch.device, *, pool: int | None = None, seed: int = 0):
    """Decode-step inputs laid out as the model makes them: x/z views of in_proj, B/C views of x_proj."""
    g = torch.Generator(device=dev).manual_seed(seed)
    rank = max(1, dim // 32)
    xz = torch.randn(batch, 2 * dim, device=dev, generator=g).to(torch.bfloat16)
    dbc = torch.randn(batch, rank + 2 * DSTATE, device=dev, generator=g).to(torch.bfloat16)
    dt = (torch.randn(batch, dim, device=dev, generator=g) * 0.5 - 1.0).to(torch.bfloat16)
    A = -torch.exp(torch.rand(dim, DSTATE, device=dev, generator=g) * 3)
    pool = pool or batch
    state = torch.randn(pool, dim, DSTATE, device=dev, generator=g)
    slots = torch.randperm(pool, device=dev, generator=g)[:batch].to(torch.int32)
    return {
        "x": xz[:, :dim], "z": xz[:, dim:], "dt": dt, "A": A,
        "B": dbc[:, rank : rank + DSTATE], "C": dbc[:, rank + DSTATE :],
        "D": torch.randn(dim, device=dev, generator=g),
        "dt_bias": torch.randn(dim, device=dev, generator=g) * 0.5,
        "state": state, "slots": slots,
    }


def step_bytes(batch: int, dim: int) -> int:
    return (2 * batch * dim * DSTATE * 4  # state read + write, fp32
            + 4 * batch * dim * 2  # x, dt, z in; y out (bf16)
            + 2 * batch * DSTATE * 2  # B, C
            + dim * DSTATE * 4 + 2 * dim * 4)  # A, D, dt_bias


def decode_row(dev, batch: int, dim: int, mss_step) -> dict:
    p = step_inputs(batch, dim, dev)
    args = (p["x"], p["dt"], p["A"], p["B"], p["C"], p["D"], p["z"], p["dt_bias"])
    slots = p["slots"]
    row: dict = {"batch": batch, "d_inner": dim}
    # correctness vs the reference (fresh copies of the state)
    s_ref, s_ours = p["state"].clone(), p["state"].clone()
    y_ref = selective_state_update_ref(*args, s_ref, slots)
    y_ours = selective_state_update_triton(*args, s_ours, slots)
    row["ok_vs_ref"] = close_bf16(y_ours, y_ref) and rel_err(s_ours, s_ref) < STATE_RTOL
    row["max_err_y"] = float((y_ours.float() - y_ref.float()).abs().max())
    row["max_rel_err_state"] = rel_err(s_ours, s_ref)
    state = p["state"].clone()

    def ours():
        return selective_state_update_triton(*args, state, slots)

    row["ours_ms"] = timeit(ours, dev)
    if dev.type == "cuda":
        row["ours_graph_ms"] = timeit(ours, dev, graph=True)
    row["gbps"] = step_bytes(batch, dim) / (row["ours_ms"] * 1e-3) / 1e9
    row["frac_copy_bw"] = row["gbps"] * 1e9 / COPY_BW
    row["frac_peak_bw"] = row["gbps"] * 1e9 / PEAK_BW
    if "ours_graph_ms" in row:  # kernel time without Python launch cost
        row["gbps_graph"] = step_bytes(batch, dim) / (row["ours_graph_ms"] * 1e-3) / 1e9
        row["frac_copy_bw_graph"] = row["gbps_graph"] * 1e9 / COPY_BW
    if batch <= 64:
        row["ref_ms"] = timeit(lambda: selective_state_update_ref(*args, state, slots), dev, rep=50)
    if mss_step is not None and dev.type == "cuda":
        # mamba-ssm reads its state through state_batch_indices: give it the same pool and slots
        ms_state, ms_idx = p["state"].clone(), slots.long()

        def mss():
            return mss_step(ms_state, p["x"], p["dt"], p["A"], p["B"], p["C"], p["D"], z=p["z"],
                            dt_bias=p["dt_bias"], dt_softplus=True, state_batch_indices=ms_idx)

        y_ms = mss()
        row["mss_ok_vs_ref"] = close_bf16(y_ms, y_ref) and rel_err(ms_state, s_ref) < STATE_RTOL
        row["mss_ms"] = timeit(mss, dev)
        row["speedup_vs_mss"] = row["mss_ms"] / row["ours_ms"]
        if dev.type == "cuda":
            row["mss_graph_ms"] = timeit(mss, dev, graph=True)
            row["speedup_vs_mss_graph"] = row["mss_graph_ms"] / row["ours_graph_ms"]
    return row


def bench_decode(dev, smoke, mss_step, log):
    rows = []
    batches, dims = ([1, 3], [24]) if smoke else ([1, 16, 64, 256], [1536, 4096, 5120])
    for dim in dims:
        for batch in batches:
            row = decode_row(dev, batch, dim, mss_step)
            rows.append(row)
            anchor = ""
            if "mss_ms" in row:
                anchor = f" mamba-ssm {row['mss_ms'] * 1e3:8.1f} us x{row['speedup_vs_mss']:.2f}"
            log(f"decode B={batch:4d} D={dim:5d} ours {row['ours_ms'] * 1e3:8.1f} us "
                f"({row['gbps']:7.1f} GB/s, {row['frac_copy_bw']:.0%} of 3.0 TB/s){anchor} "
                f"ok={row['ok_vs_ref']}")
    return rows


def sweep_decode(dev, log):
    """A few (block_d, num_warps) for the step kernel at the bandwidth-bound shapes."""
    rows = []
    dim = 4096
    for batch in (64, 256):
        p = step_inputs(batch, dim, dev)
        args = (p["x"], p["dt"], p["A"], p["B"], p["C"], p["D"], p["z"], p["dt_bias"])
        state = p["state"].clone()
        for block_d in (64, 128, 256):
            for warps in (2, 4, 8):
                fn = functools.partial(selective_state_update_triton, *args, state, p["slots"],
                                       block_d=block_d, num_warps=warps)
                ms = timeit(fn, dev)
                rows.append({"batch": batch, "d_inner": dim, "block_d": block_d, "num_warps": warps, "ms": ms,
                             "gbps": step_bytes(batch, dim) / (ms * 1e-3) / 1e9})
        best = min((r for r in rows if r["batch"] == batch), key=lambda r: r["ms"])
        log(f"decode sweep B={batch} D={dim}: best block_d={best['block_d']} warps={best['num_warps']} "
            f"{best['ms'] * 1e3:.1f} us {best['gbps']:.0f} GB/s")
    return rows


# --------------------------------------------------------------------------------------- prefill


def scan_inputs(batch: int, seqlen: int, dim: int, dev: torch.device, seed: int = 0):
    g = torch.Generator(device=dev).manual_seed(seed)
    total = batch * seqlen
    rank = max(1, dim // 32)
    xz = torch.randn(total, 2 * dim, device=dev, generator=g).to(torch.bfloat16)
    dbc = torch.randn(total, rank + 2 * DSTATE, device=dev, generator=g).to(torch.bfloat16)
    dt = (torch.randn(total, dim, device=dev, generator=g) * 0.5 - 2.0).to(torch.bfloat16)
    return {
        "x": xz[:, :dim], "z": xz[:, dim:], "dt": dt,
        "A": -torch.exp(torch.rand(dim, DSTATE, device=dev, generator=g) * 3),
        "B": dbc[:, rank : rank + DSTATE], "C": dbc[:, rank + DSTATE :],
        "D": torch.randn(dim, device=dev, generator=g),
        "dt_bias": torch.randn(dim, device=dev, generator=g) * 0.5,
        "state": torch.zeros(batch, dim, DSTATE, device=dev),
        "cu": torch.arange(0, total + 1, seqlen, dtype=torch.int32, device=dev),
        "slots": torch.arange(batch, dtype=torch.int32, device=dev),
    }


def _scan_args(p):
    return (p["x"], p["dt"], p["A"], p["B"], p["C"], p["D"], p["z"], p["dt_bias"])


def _subset(p, n_seqs: int, n_ch: int, seqlen: int):
    """The first sequences and channels of a problem (channels are independent in Mamba-1)."""
    t = n_seqs * seqlen
    q = {k: p[k][:t, :n_ch].contiguous() for k in ("x", "z", "dt")}
    q.update({k: p[k][:t].contiguous() for k in ("B", "C")})
    q.update({"A": p["A"][:n_ch], "D": p["D"][:n_ch], "dt_bias": p["dt_bias"][:n_ch],
              "state": torch.zeros(n_seqs, n_ch, DSTATE, device=p["x"].device),
              "cu": p["cu"][: n_seqs + 1], "slots": p["slots"][:n_seqs]})
    return q


# (method, block_t, block_d, num_warps); the first is the public default
SCAN_CONFIGS = [
    # chunk tiles of block_t x block_d x 16 fp32 values, kept at <= 32 per thread per live tile
    ("chunk", 16, 16, 4), ("chunk", 32, 16, 8), ("chunk", 16, 32, 8), ("chunk", 8, 16, 4),
    ("chunk", 32, 8, 4), ("segmented", 16, 16, 4), ("segmented", 32, 16, 8),
    ("recurrent", 0, 16, 1), ("recurrent", 0, 32, 2), ("recurrent", 0, 64, 4),
]


def prefill_row(dev, batch: int, dim: int, seqlen: int, configs, mss_scan_ref, log) -> dict:
    p = scan_inputs(batch, seqlen, dim, dev)
    row: dict = {"batch": batch, "d_inner": dim, "seqlen": seqlen}
    times = {}
    for cfg in configs:
        try:
            times[cfg] = timeit(functools.partial(run_scan, p, p["state"].clone(), cfg), dev, rep=50)
        except Exception as e:  # noqa: BLE001 - a config that fails to compile is reported, not fatal
            log(f"  scan config {cfg} failed: {e!r}"[:300])
    if not times:
        raise RuntimeError("no scan config ran")
    best = min(times, key=times.get)
    row["configs_ms"] = {str(k): v for k, v in times.items()}
    row["default_ms"] = times.get(configs[0])
    row["ours_ms"], row["best_config"] = times[best], list(best)
    row["tokens_per_s"] = batch * seqlen / (row["ours_ms"] * 1e-3)
    # what the model gets: the public default (chunk, or segmented when too few programs)
    public = functools.partial(selective_scan_triton, *_scan_args(p), p["state"].clone(), p["cu"], p["slots"],
                               max_seqlen=seqlen)
    row["auto_ms"] = timeit(public, dev, rep=50)
    # correctness at this shape: the full run vs the reference on the first 2 sequences x 64
    # channels (Mamba-1 channels are independent, so a subset is an exact sub-problem)
    state = p["state"].clone()
    y = run_scan(p, state, best)
    n_seqs, n_ch = min(batch, 2), min(dim, 64)
    q = _subset(p, n_seqs, n_ch, seqlen)
    y_ref = selective_scan_ref(*_scan_args(q), q["state"], q["cu"], q["slots"])
    y_sub = y[: n_seqs * seqlen, :n_ch]
    row["ok_vs_ref"] = close_bf16(y_sub, y_ref) and rel_err(state[:n_seqs, :n_ch], q["state"]) < STATE_RTOL
    row["max_err_y"] = float((y_sub.float() - y_ref.float()).abs().max())
    row["max_rel_err_state"] = rel_err(state[:n_seqs, :n_ch], q["state"])
    # the references, timed whole only where they finish in about a second
    if batch * seqlen <= 2048:
        ref_state = p["state"].clone()
        ref = functools.partial(selective_scan_ref, *_scan_args(p), ref_state, p["cu"], p["slots"])
        row["ref_ms"] = timeit(ref, dev, rep=1)
        row["speedup_vs_ref"] = row["ref_ms"] / row["ours_ms"]
        if mss_scan_ref is not None:
            def bdl(t, width):  # [B*T, width] -> mamba-ssm's [B, width, T]
                return t.reshape(batch, seqlen, width).transpose(1, 2)

            def mss():
                return mss_scan_ref(bdl(p["x"], dim), bdl(p["dt"], dim), p["A"], bdl(p["B"], DSTATE),
                                    bdl(p["C"], DSTATE), p["D"], bdl(p["z"], dim), p["dt_bias"], True, True)

            y_ms, last = mss()
            row["mss_ref_ok_vs_ours"] = close_bf16(y_ms.transpose(1, 2).reshape(-1, dim), y) and \
                rel_err(state, last) < STATE_RTOL
            row["mss_ref_ms"] = timeit(mss, dev, rep=1)
            row["speedup_vs_mss_ref"] = row["mss_ref_ms"] / row["ours_ms"]
    return row


def bench_prefill(dev, smoke, mss_scan_ref, log):
    rows = []
    shapes = [(2, 24, 37)] if smoke else [
        (1, 1536, 512), (1, 2048, 2048), (1, 1536, 16384), (4, 2560, 4096), (16, 1536, 2048),
        (16, 5120, 1024), (1, 5120, 16384)]
    configs = [("chunk", 8, 8, 4), ("segmented", 8, 8, 4), ("recurrent", 0, 8, 1)] if smoke else SCAN_CONFIGS
    for batch, dim, seqlen in shapes:
        row = prefill_row(dev, batch, dim, seqlen, configs, mss_scan_ref, log)
        rows.append(row)
        log(f"prefill B={batch:2d} D={dim:5d} T={seqlen:5d} ours {row['ours_ms']:8.3f} ms "
            f"{row['tokens_per_s'] / 1e6:7.2f} Mtok/s best={tuple(row['best_config'])}"
            + (f" ref x{row['speedup_vs_ref']:.0f}" if "speedup_vs_ref" in row else "")
            + (f" mamba-ssm ref x{row['speedup_vs_mss_ref']:.0f}" if "speedup_vs_mss_ref" in row else "")
            + f" ok={row['ok_vs_ref']}")
    return rows


def run_scan(p, state, cfg):
    method, bt, bd, nw = cfg
    return selective_scan_triton(*_scan_args(p), state, p["cu"], p["slots"], method=method,
                                 block_t=bt or None, block_d=bd, num_warps=nw)


# ------------------------------------------------------------------------------------------ conv


def conv_prefill_row(dev, batch: int, dim: int, seqlen: int, width: int = 4) -> dict:
    import torch.nn.functional as F

    g = torch.Generator(device=dev).manual_seed(1)
    xz = torch.randn(batch * seqlen, 2 * dim, device=dev, generator=g).to(torch.bfloat16)
    x = xz[:, :dim]
    w = torch.randn(dim, width, device=dev, generator=g).to(torch.bfloat16)
    b = torch.randn(dim, device=dev, generator=g).to(torch.bfloat16)
    state = torch.zeros(batch, dim, width - 1, device=dev, dtype=torch.bfloat16)
    cu = torch.arange(0, batch * seqlen + 1, seqlen, dtype=torch.int32, device=dev)
    slots = torch.arange(batch, dtype=torch.int32, device=dev)
    y = causal_conv1d_triton(x, w, b, state.clone(), cu, slots, max_seqlen=seqlen)
    y_ref = causal_conv1d_ref(x, w, b, state.clone(), cu, slots)
    xt = x.reshape(batch, seqlen, dim).transpose(1, 2).contiguous()  # the torch path's own layout

    def torch_path():
        return F.silu(F.conv1d(xt, w[:, None, :], b, padding=width - 1, groups=dim)[..., :seqlen])

    def ours():
        return causal_conv1d_triton(x, w, b, state, cu, slots, max_seqlen=seqlen)

    row = {"batch": batch, "d_inner": dim, "seqlen": seqlen, "ok_vs_ref": close_bf16(y, y_ref),
           "ours_ms": timeit(ours, dev), "torch_conv1d_ms": timeit(torch_path, dev)}
    row["ok_torch_vs_ref"] = close_bf16(torch_path().transpose(1, 2).reshape(-1, dim), y_ref)
    row["speedup_vs_torch"] = row["torch_conv1d_ms"] / row["ours_ms"]
    row["ours_gbps"] = 2 * x.numel() * 2 / (row["ours_ms"] * 1e-3) / 1e9
    return row


def conv_decode_row(dev, batch: int, dim: int, width: int = 4) -> dict:
    g = torch.Generator(device=dev).manual_seed(2)
    x = torch.randn(batch, dim, device=dev, generator=g).to(torch.bfloat16)
    w = torch.randn(dim, width, device=dev, generator=g).to(torch.bfloat16)
    b = torch.randn(dim, device=dev, generator=g).to(torch.bfloat16)
    state = torch.randn(batch, dim, width - 1, device=dev, generator=g).to(torch.bfloat16)
    slots = torch.arange(batch, dtype=torch.int32, device=dev)
    s1, s2 = state.clone(), state.clone()
    y1 = causal_conv1d_update_triton(x, w, b, s1, slots)
    ok = close_bf16(y1, causal_conv1d_update_ref(x, w, b, s2, slots))
    return {"decode": True, "batch": batch, "d_inner": dim, "ok_vs_ref": ok and torch.equal(s1, s2),
            "ours_ms": timeit(functools.partial(causal_conv1d_update_triton, x, w, b, state, slots), dev),
            "ref_ms": timeit(functools.partial(causal_conv1d_update_ref, x, w, b, state, slots), dev)}


def bench_conv(dev, smoke, log):
    rows = []
    shapes = [(2, 24, 37)] if smoke else [(1, 1536, 16384), (16, 5120, 1024), (4, 2560, 4096)]
    for batch, dim, seqlen in shapes:
        row = conv_prefill_row(dev, batch, dim, seqlen)
        rows.append(row)
        log(f"conv prefill B={batch} D={dim} T={seqlen}: ours {row['ours_ms'] * 1e3:.1f} us "
            f"({row['ours_gbps']:.0f} GB/s), F.conv1d {row['torch_conv1d_ms'] * 1e3:.1f} us "
            f"ok={row['ok_vs_ref']}")
    for batch in [3] if smoke else [1, 64, 256]:
        row = conv_decode_row(dev, batch, 24 if smoke else 4096)
        rows.append(row)
        log(f"conv decode B={batch} D={row['d_inner']}: ours {row['ours_ms'] * 1e3:.1f} us, "
            f"torch ref {row['ref_ms'] * 1e3:.1f} us ok={row['ok_vs_ref']}")
    return rows


# ------------------------------------------------------------------------------------------- e2e


class _plain_path:
    """Route the model's kernel calls to the plain-PyTorch references (kernels/_dispatch.py's switch)."""

    def __enter__(self):
        self.old = os.environ.get("ARCHROUTER_NO_TRITON")
        os.environ["ARCHROUTER_NO_TRITON"] = "1"

    def __exit__(self, *exc):
        if self.old is None:
            os.environ.pop("ARCHROUTER_NO_TRITON", None)
        else:
            os.environ["ARCHROUTER_NO_TRITON"] = self.old


def bench_e2e(dev, smoke, log):
    rows = []
    cfg = mamba.random_config("tiny" if smoke else "130m")
    dtype = torch.float32 if smoke else torch.bfloat16
    model = mamba.from_config(cfg, seed=0, device=dev, dtype=dtype)
    prompt_len, steps = (5, 3) if smoke else (32, 64)
    log(f"e2e model: {cfg['num_hidden_layers']} layers, d_model {cfg['hidden_size']}, "
        f"{model.num_parameters() / 1e6:.0f}M params, {dtype}")
    for batch in (1, 32):
        g = torch.Generator(device=dev).manual_seed(3)
        prompt = torch.randint(0, cfg["vocab_size"], (batch, prompt_len), device=dev, generator=g)
        row = {"batch": batch, "prompt": prompt_len, "steps": steps}
        with torch.no_grad():
            # correctness: our kernels vs the plain path on prefill + a few decode steps
            logits_k, cache_k = model(prompt)
            with _plain_path():
                logits_p, cache_p = model(prompt)
            tok = logits_k[:, -1:].argmax(-1)
            step_k, _ = model(tok, cache_k)
            with _plain_path():
                step_p, _ = model(tok, cache_p)
            row["prefill_rel_err"] = rel_err(logits_k, logits_p)
            row["decode_rel_err"] = rel_err(step_k, step_p)
            # bf16 through 24 layers: compare logits at a few % of their range
            row["ok_vs_plain"] = row["prefill_rel_err"] < 0.05 and row["decode_rel_err"] < 0.05

            def decode_loop(cache, first, n):
                t = first
                for _ in range(n):
                    logits, cache = model(t, cache)
                    t = logits[:, -1:].argmax(-1)
                return t

            for name, ctx in (("ours", None), ("plain", _plain_path)):
                _, cache = model(prompt)
                if ctx is None:
                    decode_loop(cache, tok, 2)
                    _sync(dev)
                    t0 = time.perf_counter()
                    decode_loop(cache, tok, steps)
                    _sync(dev)
                else:
                    with ctx():
                        decode_loop(cache, tok, 2)
                        _sync(dev)
                        t0 = time.perf_counter()
                        decode_loop(cache, tok, steps)
                        _sync(dev)
                dt = time.perf_counter() - t0
                row[f"{name}_tok_s"] = batch * steps / dt
            if dev.type == "cuda":
                _, cache = model(prompt)
                static_tok = tok.clone()
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for _ in range(2):
                        logits, _ = model(static_tok, cache)
                torch.cuda.current_stream().wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    logits, _ = model(static_tok, cache)
                    static_tok.copy_(logits[:, -1:].argmax(-1))
                graph.replay()
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                for _ in range(steps):
                    graph.replay()
                torch.cuda.synchronize()
                row["ours_graph_tok_s"] = batch * steps / (time.perf_counter() - t0)
                row["graph_speedup_vs_plain"] = row["ours_graph_tok_s"] / row["plain_tok_s"]
            row["speedup_vs_plain"] = row["ours_tok_s"] / row["plain_tok_s"]
        rows.append(row)
        log(f"e2e decode B={batch}: ours {row['ours_tok_s']:.0f} tok/s"
            + (f", ours+graph {row['ours_graph_tok_s']:.0f} tok/s" if "ours_graph_tok_s" in row else "")
            + f", plain torch {row['plain_tok_s']:.0f} tok/s ok={row['ok_vs_plain']}")
    return rows


def pick_scan_default(prefill_rows: list[dict], log) -> None:
    """Let the model's prefill use the scan method and tiles that won most prefill shapes here."""
    from archrouter.kernels.selective_scan import scan

    wins: dict[tuple, int] = {}
    for r in prefill_rows:
        wins[tuple(r["best_config"])] = wins.get(tuple(r["best_config"]), 0) + 1
    method, bt, bd, nw = max(wins, key=wins.get)
    if method == "segmented":  # the default "chunk" switches to segments by itself when they help
        method = "chunk"
        scan.DEFAULT_TILES["segmented"] = (bt, bd, nw)
    scan.DEFAULT_METHOD = method
    scan.DEFAULT_TILES[method] = (bt or 1, bd, nw)
    log(f"model prefill uses scan method={method} tiles={scan.DEFAULT_TILES[method]} (won {wins})")


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares (intercept, slope)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    return my - slope * mx, slope


def bench_cost(dev, smoke, log):
    """The catalogue's cost curve at batch 1: prefill_ms = base + per_token * T, decode_ms = base."""
    rows = []
    lengths = [8, 16, 32] if smoke else [128, 512, 2048, 8192]
    for preset in ["tiny"] if smoke else ["base", "130m"]:
        cfg = mamba.random_config(preset)
        dtype = torch.float32 if smoke else torch.bfloat16
        model = mamba.from_config(cfg, seed=0, device=dev, dtype=dtype)
        prefill = {}
        with torch.no_grad():
            for T in lengths:
                ids = torch.randint(0, cfg["vocab_size"], (1, T), device=dev)
                prefill[T] = timeit(functools.partial(model, ids), dev, rep=50)
            _, cache = model(ids)
            tok = ids[:, -1:]
            decode_ms = timeit(functools.partial(model, tok, cache), dev)
        base, per_token = fit_line([float(t) for t in lengths], [prefill[t] for t in lengths])
        row = {"preset": preset, "dtype": str(dtype), "prefill_ms_by_len": prefill,
               "prefill_ms": {"base": round(base, 4), "per_token": round(per_token, 6), "per_token_sq": 0},
               "decode_ms": {"base": round(decode_ms, 4), "per_context": 0}}
        rows.append(row)
        log(f"cost curve {preset} ({dtype}, batch 1, our kernels, eager): prefill_ms: {row['prefill_ms']}, "
            f"decode_ms: {row['decode_ms']}")
        del model
    return rows


# ------------------------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on CPU under TRITON_INTERPRET=1")
    ap.add_argument("--only", nargs="*", default=None, help="sections: decode sweep prefill conv e2e cost")
    ap.add_argument("--budget-s", type=float, default=200.0, help="start no section after this many seconds")
    args = ap.parse_args()
    dev = torch.device("cpu" if args.smoke else "cuda")
    if not args.smoke and not torch.cuda.is_available():
        print("no CUDA device; use --smoke on CPU")
        return 2
    out = Path(os.environ.get("OUT", "./bench-out"))
    out.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []

    def log(msg: str) -> None:
        print(msg, flush=True)
        lines.append(msg)

    env = {
        "command": " ".join([sys.executable, *sys.argv]),
        "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu (TRITON_INTERPRET=1)",
        "torch": torch.__version__, "triton": triton.__version__,
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    mss_step, mss_scan_ref = _anchor()
    env["mamba_ssm"] = "present" if (mss_step or mss_scan_ref) else "absent"
    log(json.dumps(env))
    results: dict[str, object] = {"env": env}
    # most important first; the decode sweep last, so a slow machine loses the least
    sections = {
        "decode": lambda: bench_decode(dev, args.smoke, mss_step, log),
        "prefill": lambda: bench_prefill(dev, args.smoke, mss_scan_ref, log),
        "e2e": lambda: bench_e2e(dev, args.smoke, log),
        "cost": lambda: bench_cost(dev, args.smoke, log),
        "conv": lambda: bench_conv(dev, args.smoke, log),
        "sweep": (lambda: sweep_decode(dev, log)) if not args.smoke else None,
    }
    t_start = time.perf_counter()
    for name, fn in sections.items():
        if fn is None or (args.only and name not in args.only):
            continue
        if time.perf_counter() - t_start > args.budget_s:
            log(f"section {name} skipped: past the {args.budget_s:.0f} s budget")
            continue
        t0 = time.perf_counter()
        if name in ("e2e", "cost") and isinstance(results.get("prefill"), list):
            pick_scan_default(results["prefill"], log)
        try:
            results[name] = fn()
        except Exception as e:  # noqa: BLE001 - one broken section must not lose the others' figures
            log(f"section {name} FAILED: {e!r}")
            results[name] = {"error": traceback.format_exc()}
        log(f"[{name}: {time.perf_counter() - t0:.1f} s]")
        (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    results["total_s"] = time.perf_counter() - t_start
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))

    table = summary(results)
    (out / "results.txt").write_text("\n".join(lines + ["", *table]) + "\n")
    print("\n".join(table))
    return 0


def _g(r: dict, key: str, scale: float = 1.0) -> float:
    v = r.get(key)
    return float("nan") if v is None else v * scale


def summary(results: dict) -> list[str]:
    env = results["env"]
    t = [f"== Mamba-1 kernels, {env['device']}, torch {env['torch']}, triton {env['triton']} =="]
    dec = results.get("decode")
    if isinstance(dec, list):
        t.append("decode step (bf16 in, fp32 state, N=16)  us: ours / graph | mamba-ssm / graph | "
                 "speedup eager, graph | GB/s eager, graph; graph frac of 3.0 TB/s | ok")
        for r in dec:
            t.append(f"  B={r['batch']:4d} D={r['d_inner']:5d}  {_g(r, 'ours_ms', 1e3):7.1f} / "
                     f"{_g(r, 'ours_graph_ms', 1e3):6.1f} | {_g(r, 'mss_ms', 1e3):7.1f} / "
                     f"{_g(r, 'mss_graph_ms', 1e3):6.1f} | x{_g(r, 'speedup_vs_mss'):.2f}, "
                     f"x{_g(r, 'speedup_vs_mss_graph'):.2f} | {r['gbps']:5.0f}, {_g(r, 'gbps_graph'):5.0f}; "
                     f"{_g(r, 'frac_copy_bw_graph'):.2f} | "
                     f"{r['ok_vs_ref']}")
    pre = results.get("prefill")
    if isinstance(pre, list):
        t.append("prefill scan  best ms (public default ms) | Mtok/s | best (method, block_t, block_d, warps)"
                 " | x ref, x mamba-ssm ref | ok")
        for r in pre:
            t.append(f"  B={r['batch']:2d} D={r['d_inner']:5d} T={r['seqlen']:5d}  {r['ours_ms']:8.3f} "
                     f"(default {_g(r, 'auto_ms'):.3f}) | {r['tokens_per_s'] / 1e6:7.2f} | "
                     f"{r['best_config']} | "
                     f"x{_g(r, 'speedup_vs_ref'):.0f}, x{_g(r, 'speedup_vs_mss_ref'):.0f} | {r['ok_vs_ref']}")
    conv = results.get("conv")
    if isinstance(conv, list):
        for r in conv:
            if r.get("decode"):
                t.append(f"conv decode B={r['batch']} D={r['d_inner']}: ours {r['ours_ms'] * 1e3:.1f} us, "
                         f"torch {r['ref_ms'] * 1e3:.1f} us | {r['ok_vs_ref']}")
            else:
                t.append(f"conv prefill B={r['batch']} D={r['d_inner']} T={r['seqlen']}: ours "
                         f"{r['ours_ms'] * 1e3:.1f} us, F.conv1d {r['torch_conv1d_ms'] * 1e3:.1f} us "
                         f"(x{r['speedup_vs_torch']:.2f}) | {r['ok_vs_ref']}")
    e2e = results.get("e2e")
    if isinstance(e2e, list):
        for r in e2e:
            t.append(f"e2e decode B={r['batch']}: ours {r['ours_tok_s']:.0f} tok/s, graph "
                     f"{_g(r, 'ours_graph_tok_s'):.0f}, plain torch {r['plain_tok_s']:.0f} "
                     f"(x{r['speedup_vs_plain']:.1f} eager, x{_g(r, 'graph_speedup_vs_plain'):.1f} graph)"
                     f" | {r['ok_vs_plain']}")
    for r in results.get("cost") or []:
        if isinstance(r, dict) and "preset" in r:
            t.append(f"cost {r['preset']}: prefill_ms: {r['prefill_ms']}, decode_ms: {r['decode_ms']}")
    for k in ("decode", "sweep", "prefill", "conv", "e2e", "cost"):
        if isinstance(results.get(k), dict):
            t.append(f"{k}: FAILED (see results.json)")
    t.append(f"total {results.get('total_s', 0):.0f} s")
    return t


if __name__ == "__main__":
    sys.exit(main())
