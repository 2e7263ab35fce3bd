"""xLSTM kernels on the GPU: ours vs plain PyTorch vs NX-AI's mlstm_kernels vs torch SDPA, side by
side in one process; then end-to-end decode of a ~125M xLSTM (mLSTM + sLSTM blocks).

    python benchmarks/bench_xlstm.py            # H100: ~3-4 minutes
    python benchmarks/bench_xlstm.py --smoke    # CPU, TRITON_INTERPRET=1, tiny shapes, anchors skipped

Writes results.json and table.txt under $OUT (default ./bench-out) and prints the table last.

- mLSTM prefill: bf16 q, k, v and gates, fp32 state pool read and written in place (ours) or
  returned (mlstm_kernels ``chunkwise--triton_limit_chunk``, return_last_states=True); plain PyTorch
  = mlstm_kernels ``chunkwise--native_autograd``; SDPA = causal attention at the same (B, H, T, dqk, dhv).
  ``chunkwise--triton_xl_chunk`` is never called: it aborts in LLVM on Triton 3.6 (anchors.md).
- mLSTM decode: one token per sequence, fp32 state; bandwidth counts C and n read + written.
- sLSTM: our fused scan / step vs the same recurrence as batched PyTorch ops (the xlstm package's
  "vanilla" formulation).
- Correctness: every shape against the fp32 reference (kernels/*/naive.py) on the first sequence;
  error = max|ours - ref| / max|ref| (bf16 inputs and outputs: <= 2e-2).
- Before anything, ``--preflight`` compiles every kernel variant in a child process, so an LLVM abort
  (seen with Triton 3.6 on other kernels) only changes the warp count instead of killing the run.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

if "--smoke" in sys.argv:
    os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported anywhere

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]  # runs from a checkout without an install (GPU images)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from archrouter.kernels.mlstm.chunk import chunk_layout, mlstm_chunkwise_triton  # noqa: E402
from archrouter.kernels.mlstm.naive import mlstm_chunkwise_naive, mlstm_step_naive  # noqa: E402
from archrouter.kernels.mlstm.step import mlstm_step_triton  # noqa: E402
from archrouter.kernels.slstm.fused_recurrent import slstm_scan_triton  # noqa: E402
from archrouter.kernels.slstm.naive import slstm_cell_naive, slstm_scan_naive  # noqa: E402

PEAK_TBS = 3.0  # measured H100 device copy (anchors.md)
REL_TOL = 2e-2

PREFILL = [  # (B, H, T, dqk, dhv)
    (8, 8, 4096, 256, 512),  # anchors.md shape
    (1, 8, 16384, 256, 512),  # anchors.md shape
    (16, 4, 512, 128, 128),
    (4, 8, 2048, 128, 256),
    (2, 4, 8192, 512, 512),
    (1, 8, 1024, 256, 512),
]
DECODE = [
    (1, 8, 256, 512),
    (16, 8, 256, 512),
    (64, 8, 256, 512),
    (256, 8, 256, 512),
    (64, 4, 128, 128),
    (256, 4, 512, 512),
]  # (B, H, dqk, dhv)
SLSTM = [
    (16, 4, 64, 512),
    (1, 12, 64, 2048),
    (4, 4, 128, 1024),
    (1, 12, 64, 1),
    (64, 12, 64, 1),
    (256, 4, 64, 1),
]  # (B, NH, D, T); T = 1 is the decode step
E2E_BATCHES = [1, 32]

SMOKE_PREFILL = [(2, 2, 37, 16, 32), (1, 2, 70, 32, 16)]
SMOKE_DECODE = [(3, 2, 16, 32), (2, 2, 32, 16)]
SMOKE_SLSTM = [(2, 2, 16, 9), (3, 2, 16, 1)]


def fmt(x, spec=".3f") -> str:
    return "-" if x is None else format(x, spec)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1e-30)).item()


class Timer:
    def __init__(self, cuda: bool):
        self.cuda = cuda

    def __call__(self, fn) -> float:
        if self.cuda:
            import triton

            return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))
        fn()
        best = math.inf
        for _ in range(2):
            t = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t)
        return best * 1e3


def mlstm_inputs(B, H, T, K, V, device, dtype, seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    q = torch.randn(B * T, H, K, generator=g).to(device, dtype)
    k = torch.randn(B * T, H, K, generator=g).to(device, dtype)
    v = torch.randn(B * T, H, V, generator=g).to(device, dtype)
    i = torch.randn(B * T, H, generator=g).to(device, dtype)
    f = (torch.randn(B * T, H, generator=g) + 3.0).to(device, dtype)  # mostly-open forget gates
    return q, k, v, i, f


def zero_pool(B, H, K, V, device):
    return (
        torch.zeros(B, H, K, V, device=device),
        torch.zeros(B, H, K, device=device),
        torch.zeros(B, H, device=device),
    )


def load_mlstm_kernels():
    try:
        from mlstm_kernels.torch import get_mlstm_kernel, get_mlstm_step_kernel

        return (
            get_mlstm_kernel("chunkwise--triton_limit_chunk"),
            get_mlstm_kernel("chunkwise--native_autograd"),
            get_mlstm_step_kernel("triton"),
            None,
        )
    except Exception as e:  # not installed: the columns say why
        return None, None, None, f"mlstm_kernels unavailable: {type(e).__name__}: {e}"[:200]


# ----------------------------------------------------------------------------- mLSTM


def run_cases(section, shapes, keys, case, deadline, device) -> list[dict]:
    """One row per shape: `case(row, *shape)` fills it; errors and the time budget are recorded."""
    rows = []
    for shape in shapes:
        row = dict(zip(keys, shape, strict=True))
        if time.time() > deadline:
            row["skipped"] = "time budget"
        else:
            try:
                case(row, *shape)
            except Exception as e:
                row["error"] = f"{type(e).__name__}: {e}"[:500]
                traceback.print_exc()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        rows.append(row)
        print(section, json.dumps(row), flush=True)
    return rows


def prefill_case(row, B, H, T, K, V, *, timer, device, anchors) -> None:
    limit_chunk, native, _, why = anchors
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    q, k, v, i, f = mlstm_inputs(B, H, T, K, V, device, dtype)
    cu = torch.arange(0, (B + 1) * T, T, dtype=torch.int32, device=device)
    slots = torch.arange(B, dtype=torch.int32, device=device)
    layout = chunk_layout(cu, 64)
    pool = zero_pool(B, H, K, V, device)
    h = mlstm_chunkwise_triton(q, k, v, i, f, *pool, slots, cu, layout=layout)
    ref_pool = zero_pool(1, H, K, V, device)
    first = [x[:T].float() for x in (q, k, v, i, f)]
    h_ref = mlstm_chunkwise_naive(*first, *ref_pool, slots[:1], cu[:2])
    row["ours_err"] = rel_err(h[:T], h_ref)
    row["ours_state_err"] = rel_err(pool[0][:1], ref_pool[0])

    def ours():
        return mlstm_chunkwise_triton(q, k, v, i, f, *pool, slots, cu, layout=layout)

    row["ours_ms"] = timer(ours)
    if (B, H, T, K, V) in PREFILL[:2]:  # pipelining depth: Triton's default vs 1 (mlstm_kernels' choice)
        row["ours_default_stages_ms"] = row["ours_ms"]
        row["ours_stages1_ms"] = timer(
            lambda: mlstm_chunkwise_triton(q, k, v, i, f, *pool, slots, cu, layout=layout, num_stages=1)
        )
        row["ours_ms"] = min(row["ours_ms"], row["ours_stages1_ms"])
    row["ours_mtok_s"] = B * T / row["ours_ms"] / 1e3
    # the same tensors in the (B, H, T, D) layout the anchors take
    qb, kb, vb = (x.view(B, T, H, -1).transpose(1, 2).contiguous() for x in (q, k, v))
    ib, fb = (x.view(B, T, H).transpose(1, 2).contiguous() for x in (i, f))
    kw = dict(return_last_states=True, autocast_kernel_dtype=dtype, chunk_size=64)
    if limit_chunk is not None:
        ha = limit_chunk(qb, kb, vb, ib, fb, **kw)[0]
        row["mk_err"] = rel_err(ha[0].transpose(0, 1), h_ref)
        row["mk_ms"] = timer(lambda: limit_chunk(qb, kb, vb, ib, fb, **kw))
        row["ratio_mk_over_ours"] = row["mk_ms"] / row["ours_ms"]
    else:
        row["mk"] = why
    if native is not None and B * T <= 32768:
        row["torch_ms"] = timer(lambda: native(qb, kb, vb, ib, fb, **kw))
    try:
        row["sdpa_ms"] = timer(lambda: F.scaled_dot_product_attention(qb, kb, vb, is_causal=True))
        row["ratio_sdpa_over_ours"] = row["sdpa_ms"] / row["ours_ms"]
    except Exception as e:
        row["sdpa"] = f"{type(e).__name__}: {e}"[:200]


def decode_case(row, B, H, K, V, *, timer, device, anchors) -> None:
    _, _, step_anchor, why = anchors
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    q, k, v, i, f = mlstm_inputs(B, H, 1, K, V, device, dtype, seed=1)
    g = torch.Generator(device="cpu").manual_seed(2)
    pool = (
        torch.randn(B, H, K, V, generator=g).to(device) * 0.1,
        torch.randn(B, H, K, generator=g).to(device).abs(),
        torch.randn(B, H, generator=g).to(device),
    )
    ref = tuple(t.clone() for t in pool)
    anchor_state = (pool[0].clone(), pool[1].clone(), pool[2][..., None].clone())
    slots = torch.arange(B, dtype=torch.int32, device=device)
    h = mlstm_step_triton(q, k, v, i, f, *pool, slots)
    h_ref = mlstm_step_naive(q.float(), k.float(), v.float(), i.float(), f.float(), *ref, slots)
    row["ours_err"] = max(rel_err(h, h_ref), rel_err(pool[0], ref[0]))
    row["ours_ms"] = timer(lambda: mlstm_step_triton(q, k, v, i, f, *pool, slots))
    nbytes = 2 * 4 * B * H * (K * V + K + 1) + 2 * B * H * (2 * K + 2 * V)
    row["ours_tbs"] = nbytes / (row["ours_ms"] * 1e-3) / 1e12
    row["ours_frac_of_3tbs"] = row["ours_tbs"] / PEAK_TBS
    row["ours_tok_s"] = B / (row["ours_ms"] * 1e-3)
    row["torch_ms"] = timer(lambda: mlstm_step_naive(q, k, v, i, f, *ref, slots))
    if step_anchor is not None:
        args = (q, k, v, i[..., None], f[..., None], *anchor_state)
        row["mk_err"] = rel_err(step_anchor(*args)[0], h_ref)
        row["mk_ms"] = timer(lambda: step_anchor(*args))
        row["ratio_mk_over_ours"] = row["mk_ms"] / row["ours_ms"]
    else:
        row["mk"] = why


# ----------------------------------------------------------------------------- sLSTM


def slstm_torch(x, R, b, h, c, n, m):
    """The recurrence as batched PyTorch ops over equal-length sequences (xlstm 'vanilla' style)."""
    T = x.shape[1]
    ys = []
    Rf, bf = R.float(), b.float()
    for t in range(T):
        raw = x[:, t].float() + torch.einsum("hgoi,bhi->bgho", Rf, h) + bf
        h, c, n, m = slstm_cell_naive(raw, c, n, m)
        ys.append(h)
    return torch.stack(ys, 1)


def slstm_case(row, B, NH, D, T, *, timer, device) -> None:
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    g = torch.Generator(device="cpu").manual_seed(3)
    x = (torch.randn(B * T, 4, NH, D, generator=g) * 2).to(device, dtype)
    R = (torch.randn(NH, 4, D, D, generator=g) / D**0.5).to(device, dtype)
    b = torch.randn(4, NH, D, generator=g).to(device, dtype)

    def fresh(rows=B):
        z = torch.zeros(rows, NH, D, device=device)
        return z.clone(), z.clone(), z.clone(), torch.full_like(z, float("-inf"))

    cu = torch.arange(0, (B + 1) * T, T, dtype=torch.int32, device=device)
    slots = torch.arange(B, dtype=torch.int32, device=device)
    y = slstm_scan_triton(x, R, b, *fresh(), slots, cu)
    y_ref = slstm_scan_naive(x[:T].float(), R.float(), b.float(), *fresh(1), slots[:1], cu[:2])
    row["ours_err"] = rel_err(y[:T], y_ref)
    pool = fresh()
    row["ours_ms"] = timer(lambda: slstm_scan_triton(x, R, b, *pool, slots, cu))
    row["ours_mtok_s"] = B * T / row["ours_ms"] / 1e3
    xb = x.view(B, T, 4, NH, D)
    row["torch_ms"] = timer(lambda: slstm_torch(xb, R, b, *fresh()))
    row["ratio_torch_over_ours"] = row["torch_ms"] / row["ours_ms"]


# ----------------------------------------------------------------------------- model


def build_model(preset, device, dtype):
    from archrouter.backends import xlstm

    cfg = xlstm.random_config(preset)
    return xlstm.init_weights(xlstm.build(cfg), seed=0).to(device, dtype).eval(), cfg


def graph_ms(model, nxt, cache, timer) -> float | None:
    """One decode step captured in a CUDA graph (the cache is updated in place, so replays advance it)."""
    try:
        static_ids = nxt.clone()
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                model(static_ids, cache)
        torch.cuda.current_stream().wait_stream(s)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            model(static_ids, cache)
        return timer(graph.replay)
    except Exception:
        traceback.print_exc()
        return None


def bench_e2e(batches, timer, device, deadline, smoke):
    """Decode tokens/s of the random-weight 125m preset (mLSTM + 2 sLSTM blocks): kernels by Triton
    (ours) vs the plain-PyTorch references (ARCHROUTER_NO_TRITON=1); the rest is the same code."""
    preset = "tiny" if smoke else "125m"
    model, cfg = build_model(preset, device, torch.float32 if smoke else torch.bfloat16)
    rows = []
    prompt_len = 8 if smoke else 64
    for B in batches:
        row = {
            "model": f"xlstm-{preset}",
            "params_m": model.num_parameters() / 1e6,
            "batch": B,
            "prompt": prompt_len,
        }
        if time.time() > deadline:
            rows.append({**row, "skipped": "time budget"})
            continue
        try:
            g = torch.Generator().manual_seed(B)
            prompt = torch.randint(0, cfg["vocab_size"], (B, prompt_len), generator=g).to(device)
            nxt = torch.randint(0, cfg["vocab_size"], (B, 1), generator=g).to(device)
            logits = {}
            for name, no_triton in (("ours", "0"), ("torch", "1")):
                os.environ["ARCHROUTER_NO_TRITON"] = no_triton
                with torch.no_grad():
                    _, cache = model(prompt)
                    logits[name] = model(nxt, cache)[0].float()
                    row[f"{name}_eager_ms"] = timer(lambda cache=cache, nxt=nxt: model(nxt, cache))
                    if device.type == "cuda":
                        row[f"{name}_graph_ms"] = graph_ms(model, nxt, cache, timer)
                best = min(row[k] for k in (f"{name}_eager_ms", f"{name}_graph_ms") if row.get(k))
                row[f"{name}_tok_s"] = B / (best * 1e-3)
            row["logits_rel_err"] = rel_err(logits["ours"], logits["torch"])
            row["ratio_ours_over_torch"] = row["ours_tok_s"] / row["torch_tok_s"]
        except Exception as e:
            row["error"] = f"{type(e).__name__}: {e}"[:500]
            traceback.print_exc()
        finally:
            os.environ.pop("ARCHROUTER_NO_TRITON", None)
        rows.append(row)
        print("e2e", json.dumps(row), flush=True)
    return rows


def bench_cost_curve(timer, device, smoke) -> dict:
    """Batch-1 latency of the 125m preset through our kernels, fitted as the catalogue's cost curve:
    prefill_ms = base + per_token * T (no attention: linear), decode_ms = constant (fixed-size state)."""
    preset = "tiny" if smoke else "125m"
    model, cfg = build_model(preset, device, torch.float32 if smoke else torch.bfloat16)
    lengths = [16, 32, 64] if smoke else [64, 256, 1024, 4096]
    pts = []
    with torch.no_grad():
        for T in lengths:
            ids = torch.randint(0, cfg["vocab_size"], (1, T)).to(device)
            pts.append((T, timer(lambda ids=ids: model(ids))))
        _, cache = model(ids)
        one = ids[:, :1]
        decode_eager = timer(lambda: model(one, cache))
    n = len(pts)
    mx, my = sum(t for t, _ in pts) / n, sum(m for _, m in pts) / n
    slope = sum((t - mx) * (m - my) for t, m in pts) / sum((t - mx) ** 2 for t, _ in pts)
    return {
        "model": f"xlstm-{preset}",
        "batch": 1,
        "prefill_points_ms": pts,
        "prefill_ms": {"base": my - slope * mx, "per_token": slope, "per_token_sq": 0},
        "decode_ms": {"base": decode_eager, "per_context": 0},
        "decode_timing": "eager, batch 1",
    }


# ----------------------------------------------------------------------------- preflight


def preflight(device) -> None:
    """Compile (and run once) every kernel variant the benchmark will use, at tiny lengths."""

    dtype = torch.bfloat16
    kv = {(K, V) for *_, K, V in PREFILL} | {(K, V) for *_, K, V in DECODE} | {(384, 384)}  # 125m: 1536 / 4
    for K, V in sorted(kv):
        q, k, v, i, f = mlstm_inputs(2, 2, 70, K, V, device, dtype)
        pool = zero_pool(2, 2, K, V, device)
        cu = torch.tensor([0, 70, 140], dtype=torch.int32, device=device)
        slots = torch.arange(2, dtype=torch.int32, device=device)
        mlstm_chunkwise_triton(q, k, v, i, f, *pool, slots, cu)
        if (K, V) in {(k_, v_) for *_, k_, v_ in PREFILL[:2]}:
            mlstm_chunkwise_triton(q, k, v, i, f, *pool, slots, cu, num_stages=1)
        for N in (1, 64):  # narrow and wide V-blocks of the step kernel
            q, k, v, i, f = mlstm_inputs(N, 8, 1, K, V, device, dtype)
            pool = zero_pool(N, 8, K, V, device)
            mlstm_step_triton(q, k, v, i, f, *pool, torch.arange(N, dtype=torch.int32, device=device))
    for D in sorted({D for _, _, D, _ in SLSTM}):
        x = torch.randn(5, 4, 2, D, device=device, dtype=dtype)
        z = torch.zeros(1, 2, D, device=device)
        slstm_scan_triton(
            x,
            torch.zeros(2, 4, D, D, device=device, dtype=dtype),
            torch.zeros(4, 2, D, device=device, dtype=dtype),
            z,
            z.clone(),
            z.clone(),
            z.clone(),
            torch.zeros(1, dtype=torch.int32, device=device),
            torch.tensor([0, 5], dtype=torch.int32, device=device),
        )
    if device.type == "cuda":
        torch.cuda.synchronize()
    print("preflight ok", flush=True)


def choose_warps(env_info: dict) -> None:
    """Run the preflight in child processes; keep the first warp count that compiles everywhere."""
    for warps in ("4", "8", "2"):
        env = {**os.environ, "ARCHROUTER_MLSTM_NUM_WARPS": warps}
        t = time.time()
        p = subprocess.run(
            [sys.executable, __file__, "--preflight"], env=env, capture_output=True, text=True, timeout=300
        )
        env_info.setdefault("preflight", []).append(
            {
                "mlstm_num_warps": warps,
                "rc": p.returncode,
                "s": round(time.time() - t, 1),
                "tail": (p.stdout + p.stderr)[-400:] if p.returncode else "",
            }
        )
        if p.returncode == 0:
            os.environ["ARCHROUTER_MLSTM_NUM_WARPS"] = warps
            return
    # every variant failed: go on with the default and let the rows record what breaks
    os.environ["ARCHROUTER_MLSTM_NUM_WARPS"] = "4"
    print("preflight failed for every warp count:", json.dumps(env_info["preflight"]), flush=True)


# ----------------------------------------------------------------------------- report


def table(res) -> str:
    env = res["env"]
    L = [
        f"# bench_xlstm on {env['device']} (torch {env['torch']}, triton {env['triton']}, "
        f"mlstm_kernels {env.get('mlstm_kernels', '-')})",
        f"# command: {env['command']}",
        "",
        "## mLSTM prefill, bf16 (mk = mlstm_kernels chunkwise--triton_limit_chunk; x/ours = x_ms / ours_ms)",
        f"{'B':>3} {'H':>2} {'T':>6} {'dqk':>4} {'dhv':>4} | {'ours ms':>8} {'Mtok/s':>7} {'err':>7} | "
        f"{'mk ms':>8} {'mk err':>7} {'mk/ours':>7} | {'sdpa ms':>8} {'sdpa/ours':>9} | {'torch ms':>8}",
    ]
    for r in res["prefill"]:
        head = f"{r['batch']:>3} {r['heads']:>2} {r['length']:>6} {r['dqk']:>4} {r['dhv']:>4} |"
        if "skipped" in r or "error" in r:
            L.append(f"{head} {r.get('skipped') or r.get('error')}")
            continue
        L.append(
            f"{head} {fmt(r['ours_ms']):>8} {fmt(r['ours_mtok_s'], '.2f'):>7} "
            f"{fmt(r['ours_err'], '.1e'):>7} | {fmt(r.get('mk_ms')):>8} {fmt(r.get('mk_err'), '.1e'):>7} "
            f"{fmt(r.get('ratio_mk_over_ours'), '.2f'):>7}"
            f" | {fmt(r.get('sdpa_ms')):>8} {fmt(r.get('ratio_sdpa_over_ours'), '.2f'):>9} | "
            f"{fmt(r.get('torch_ms')):>8}"
        )
    L += [
        "",
        "## mLSTM decode step (bf16 in, fp32 state; TB/s of state read+write)",
        f"{'B':>4} {'H':>2} {'dqk':>4} {'dhv':>4} | {'ours ms':>8} {'TB/s':>5} {'/3.0':>5} {'tok/s':>10} "
        f"{'err':>7} | {'mk ms':>8} {'mk/ours':>7} | {'torch ms':>8}",
    ]
    for r in res["decode"]:
        head = f"{r['batch']:>4} {r['heads']:>2} {r['dqk']:>4} {r['dhv']:>4} |"
        if "skipped" in r or "error" in r:
            L.append(f"{head} {r.get('skipped') or r.get('error')}")
            continue
        L.append(
            f"{head} {fmt(r['ours_ms'], '.4f'):>8} {fmt(r['ours_tbs'], '.2f'):>5} "
            f"{fmt(r['ours_frac_of_3tbs'], '.2f'):>5} {r['ours_tok_s']:>10.0f} "
            f"{fmt(r['ours_err'], '.1e'):>7} | "
            f"{fmt(r.get('mk_ms'), '.4f'):>8} {fmt(r.get('ratio_mk_over_ours'), '.2f'):>7} | "
            f"{fmt(r.get('torch_ms'), '.4f'):>8}"
        )
    L += [
        "",
        "## sLSTM fused scan (T = 1: decode step), bf16 in, fp32 state",
        f"{'B':>4} {'NH':>2} {'D':>4} {'T':>5} | {'ours ms':>8} {'Mtok/s':>7} {'err':>7} | {'torch ms':>9} "
        f"{'torch/ours':>10}",
    ]
    for r in res["slstm"]:
        head = f"{r['batch']:>4} {r['heads']:>2} {r['head_dim']:>4} {r['length']:>5} |"
        if "skipped" in r or "error" in r:
            L.append(f"{head} {r.get('skipped') or r.get('error')}")
            continue
        L.append(
            f"{head} {fmt(r['ours_ms'], '.4f'):>8} {fmt(r['ours_mtok_s'], '.3f'):>7} "
            f"{fmt(r['ours_err'], '.1e'):>7} | {fmt(r['torch_ms'], '.3f'):>9} "
            f"{fmt(r['ratio_torch_over_ours'], '.1f'):>10}"
        )
    L += [
        "",
        "## end-to-end decode (random weights; ours = Triton kernels, torch = reference kernels)",
        f"{'model':>12} {'B':>3} | {'ours eager':>10} {'ours graph':>10} {'tok/s':>9} | "
        f"{'torch eager':>11} {'torch graph':>11} {'tok/s':>9} | {'ratio':>5} {'logit err':>9}",
    ]
    for r in res["e2e"]:
        head = f"{r['model']:>12} {r['batch']:>3} |"
        if "skipped" in r or "error" in r:
            L.append(f"{head} {r.get('skipped') or r.get('error')}")
            continue
        L.append(
            f"{head} {fmt(r['ours_eager_ms']):>10} {fmt(r.get('ours_graph_ms')):>10} "
            f"{r['ours_tok_s']:>9.0f} | "
            f"{fmt(r['torch_eager_ms']):>11} {fmt(r.get('torch_graph_ms')):>11} {r['torch_tok_s']:>9.0f} | "
            f"{r['ratio_ours_over_torch']:>5.2f} {r['logits_rel_err']:>9.1e}"
        )
    bad = [r for sec in ("prefill", "decode", "slstm") for r in res[sec] if r.get("ours_err", 0) > REL_TOL]
    L += ["", f"# correctness: {'all within' if not bad else f'{len(bad)} rows OVER'} {REL_TOL} relative"]
    return "\n".join(L)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on CPU under TRITON_INTERPRET=1")
    ap.add_argument("--preflight", action="store_true", help="(internal) compile every kernel variant")
    ap.add_argument("--budget-s", type=float, default=200.0, help="skip remaining cases after this long")
    ap.add_argument("--only", default=None, help="comma-separated sections: prefill,decode,slstm,e2e")
    args = ap.parse_args()
    if args.preflight:
        preflight(torch.device("cuda"))
        return
    t_start = time.time()
    deadline = t_start + args.budget_s
    out = Path(os.environ.get("OUT", "./bench-out"))
    out.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available() and not args.smoke
    device = torch.device("cuda" if cuda else "cpu")
    timer = Timer(cuda)
    import triton

    env = {
        "device": torch.cuda.get_device_name() if cuda else f"cpu {platform.machine()} (smoke)",
        "torch": torch.__version__,
        "triton": triton.__version__,
        "python": platform.python_version(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "triton_interpret": os.environ.get("TRITON_INTERPRET", "0"),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    anchors = load_mlstm_kernels() if cuda else (None, None, None, "skipped: no CUDA (smoke)")
    if anchors[0] is not None:
        from importlib.metadata import version

        env["mlstm_kernels"] = version("mlstm_kernels")
    if cuda:
        choose_warps(env)
        env["mlstm_num_warps"] = os.environ["ARCHROUTER_MLSTM_NUM_WARPS"]
    res = {"env": env, "prefill": [], "decode": [], "slstm": [], "e2e": []}

    def want(section: str) -> bool:
        return args.only is None or section in args.only.split(",")

    def save() -> None:  # after every section: a crash later still leaves what was measured
        (out / "results.json").write_text(json.dumps(res, indent=2) + "\n")

    if want("prefill"):
        case = functools.partial(prefill_case, timer=timer, device=device, anchors=anchors)
        shapes = SMOKE_PREFILL if args.smoke else PREFILL
        keys = ("batch", "heads", "length", "dqk", "dhv")
        res["prefill"] = run_cases("prefill", shapes, keys, case, deadline, device)
        save()
    if want("decode"):
        case = functools.partial(decode_case, timer=timer, device=device, anchors=anchors)
        shapes = SMOKE_DECODE if args.smoke else DECODE
        res["decode"] = run_cases("decode", shapes, ("batch", "heads", "dqk", "dhv"), case, deadline, device)
        save()
    if want("slstm"):
        case = functools.partial(slstm_case, timer=timer, device=device)
        shapes = SMOKE_SLSTM if args.smoke else SLSTM
        res["slstm"] = run_cases(
            "slstm", shapes, ("batch", "heads", "head_dim", "length"), case, deadline, device
        )
        save()
    if want("e2e"):
        res["e2e"] = bench_e2e(
            [1, 2] if args.smoke else E2E_BATCHES, timer, device, deadline + 30, args.smoke
        )
        save()
        try:
            res["cost_curve"] = bench_cost_curve(timer, device, args.smoke)
        except Exception as e:
            res["cost_curve"] = {"error": f"{type(e).__name__}: {e}"[:300]}
            traceback.print_exc()
        print("cost_curve", json.dumps(res["cost_curve"]), flush=True)
    res["elapsed_s"] = time.time() - t_start
    cc = res.get("cost_curve") or {}
    text = (
        table(res) + f"\n\n## cost curve ({cc.get('model')}, batch 1): "
        f"prefill_ms {cc.get('prefill_ms')}, decode_ms {cc.get('decode_ms')}"
        f"\n\n# elapsed {res['elapsed_s']:.1f} s"
    )
    save()
    (out / "table.txt").write_text(text + "\n")
    print(text, flush=True)


if __name__ == "__main__":
    main()
