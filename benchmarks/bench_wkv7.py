"""WKV-7 kernels on the GPU: ours vs the plain-PyTorch reference vs fla's chunk_rwkv7 /
fused_recurrent_rwkv7, side by side in one process; then end-to-end decode of a 0.1B RWKV-7.

    python benchmarks/bench_wkv7.py            # H100: ~3-4 minutes
    python benchmarks/bench_wkv7.py --smoke    # CPU, TRITON_INTERPRET=1, tiny shapes, fla skipped
    python benchmarks/bench_wkv7.py --only prefill --budget-s 480 --out $OUT   # the 6 prefill shapes
    python benchmarks/bench_wkv7.py --only prefill --shapes 1x16384x4096 --chunks 64

Writes results.json and table.txt under --out (default $OUT, else ./bench-out), rewritten after every
prefill shape (a run cut short keeps what it measured), and prints the table last.
fla (fla-core) is optional: without it the fla columns say why.

Prefill: bf16 inputs, fp32 state in and out, heads of 64. Decode: one token per sequence, bf16
inputs, fp32 state pool read and written in place (ours) or returned (fla). Bandwidth counts the
state read + write and the inputs/outputs, against 3.0 TB/s and against the copy measured here.
Correctness: every shape against the reference recurrence (naive.py, fp32 math) on the first
sequence over its whole length; error is max|ours - ref| / max|ref| (bf16 outputs: <= 1e-2).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
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

from archrouter.kernels.wkv7 import naive_wkv7  # noqa: E402
from archrouter.kernels.wkv7.chunk import chunk_wkv7, default_chunk_size  # noqa: E402
from archrouter.kernels.wkv7.fused_recurrent import fused_recurrent_wkv7  # noqa: E402

PEAK_COPY_TBS = 3.0  # measured H100 device copy (anchors.md)
REL_TOL = 1e-2  # bf16 outputs vs the fp32-math reference, relative to the output's scale

PREFILL = [  # (batch, length, width)
    (8, 4096, 2048),
    (1, 16384, 4096),
    (16, 1024, 4096),
    (2, 8192, 1024),
    (4, 2048, 768),
    (16, 512, 768),
]
DECODE = [  # (batch, width)
    (1, 2048), (16, 2048), (64, 2048), (256, 2048), (64, 4096), (256, 4096), (256, 768),
]
E2E_BATCHES = [1, 32]
FLA_DEFAULT = "--fla-default" in sys.argv  # also time fla's default (unbounded-gate) chunk path
FLA_VARLEN = "--fla-varlen" in sys.argv  # also fla on the packed ragged batch
T0 = time.time()

SMOKE_PREFILL = [(2, 37, 64), (1, 70, 128)]
SMOKE_DECODE = [(3, 64), (4, 128)]


# ----------------------------------------------------------------------------- helpers


def make_inputs(B, T, H, N, dtype, device, seed=0):
    g = torch.Generator(device=device).manual_seed(seed)  # on the device: the big cases are 10^8 numbers

    def rnd(*s):
        return torch.randn(*s, generator=g, device=device)

    r, k, v = rnd(B, T, H, N), rnd(B, T, H, N) * 0.5, rnd(B, T, H, N)
    w = -math.exp(-0.5) * torch.sigmoid(rnd(B, T, H, N) * 2)  # RWKV-7's log-decay range
    kk = F.normalize(rnd(B, T, H, N), dim=-1)
    gate = torch.sigmoid(rnd(B, T, H, N))
    return [x.to(dtype) for x in (r, w, k, v, -kk, kk * gate)]


class Timer:
    def __init__(self, cuda: bool):
        self.cuda = cuda

    def __call__(self, fn, reps: int = 3) -> float:
        """Median milliseconds."""
        if self.cuda:
            from triton.testing import do_bench

            return float(do_bench(fn, warmup=25, rep=100, return_mode="median"))
        fn()
        ts = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t) * 1e3)
        return sorted(ts)[len(ts) // 2]

    def once(self, fn) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if self.cuda:
            torch.cuda.synchronize()
        return (time.perf_counter() - t) * 1e3


def rel_err(y, ref) -> float:
    y, ref = y.float(), ref.float()
    return float((y - ref).abs().max() / ref.abs().max().clamp_min(1e-6))


def load_fla():
    try:
        from fla.ops.rwkv7 import chunk_rwkv7, fused_recurrent_rwkv7

        return chunk_rwkv7, fused_recurrent_rwkv7, None
    except Exception as e:  # absent or broken: the table says so
        return None, None, f"{type(e).__name__}: {e}"


def fmt(x, spec=".3f"):
    return "—" if x is None else format(x, spec)


# ----------------------------------------------------------------------------- sections


def bench_copy(timer: Timer, device) -> float | None:
    if device.type != "cuda":
        return None
    src = torch.empty(1 << 28, dtype=torch.float32, device=device)  # 1 GiB
    dst = torch.empty_like(src)
    ms = timer(lambda: dst.copy_(src))
    return 2 * (1 << 30) / (ms * 1e-3) / 1e12


def bench_prefill(cases, timer, device, fla_chunk, fla_why, deadline, smoke, chunks=(16, 32, 64), bf16mm=False,
                  on_row=None):
    rows = []
    dtype = torch.bfloat16
    for B, T, width in cases:
        H, N = width // 64, 64
        row = {"batch": B, "length": T, "width": width, "heads": H, "tokens": B * T}
        print(f"[{time.time() - T0:.0f} s] prefill B{B} T{T} width {width}", flush=True)
        if time.time() > deadline:
            row["skipped"] = "time budget"
            rows.append(row)
            continue
        try:
            x = make_inputs(B, T, H, N, dtype, device, seed=B * 7 + T)
            s0 = (torch.randn(B, H, N, N, device=device) * 0.1).float()
            # correctness: first sequence, whole length, reference in fp32 math
            ref_pool = s0[:1].clone()
            y_ref = naive_wkv7(*(t[:1] for t in x), ref_pool)
            best = None
            for C in chunks:
                pool = s0.clone()
                y = chunk_wkv7(*x, pool, chunk_size=C)
                err = rel_err(y[:1], y_ref)
                serr = rel_err(pool[:1], ref_pool)
                # in place on the pool, as serving does (the state evolves across repeats, bounded by decay)
                ms = timer(lambda C=C, pool=pool, x=x: chunk_wkv7(*x, pool, chunk_size=C))
                row[f"ours_c{C}_ms"], row[f"ours_c{C}_err"], row[f"ours_c{C}_state_err"] = ms, err, serr
                if best is None or ms < best[1]:
                    best = (C, ms, err, serr)
            row["ours_chunk"], row["ours_ms"], row["ours_err"], row["ours_state_err"] = best
            if bf16mm:  # bf16 matmul operands at C = 64: faster tensor cores, larger error (chunk.py)
                pool = s0.clone()
                y = chunk_wkv7(*x, pool, chunk_size=64, bf16_matmuls=True)
                row["bf16mm_err"], row["bf16mm_state_err"] = rel_err(y[:1], y_ref), rel_err(pool[:1], ref_pool)
                row["bf16mm_ms"] = timer(lambda pool=pool, x=x: chunk_wkv7(*x, pool, chunk_size=64,
                                                                             bf16_matmuls=True))
            row["default_chunk"] = default_chunk_size(T)  # what wkv7() takes without chunk_size
            row["default_ms"] = row.get(f"ours_c{row['default_chunk']}_ms")
            row["ours_ok"] = best[2] <= REL_TOL and best[3] <= REL_TOL
            row["ours_mtok_s"] = B * T / (best[1] * 1e-3) / 1e6
            if T * B <= 8192:  # the reference's per-token Python loop: time it only where it is short
                row["ref_ms"] = timer.once(lambda x=x, s0=s0: naive_wkv7(*x, s0.clone()))
            if fla_chunk is None:
                row["fla"] = fla_why
            else:
                # fla: state [N, H, K, V] = ours transposed; default chunking and its bounded-gate mode
                h0 = s0.transpose(-1, -2).contiguous()
                # fla autotunes ~130 configs per code path on first use (minutes on a fresh machine):
                # the bounded-gate path (its faster one; anchors.md has the default path's figures) by
                # default, both with --fla-default
                variants = [("fla_lb", {"lower_bound": -math.exp(-0.5)})]
                if FLA_DEFAULT:
                    variants.insert(0, ("fla", {}))
                for name, kw in variants:
                    try:
                        o, ht = fla_chunk(*x, scale=1.0, initial_state=h0.clone(), output_final_state=True,
                                          **kw)
                        row[f"{name}_err"] = rel_err(o[:1], y_ref)
                        row[f"{name}_state_err"] = rel_err(ht[:1].transpose(-1, -2), ref_pool)
                        row[f"{name}_ms"] = timer(lambda kw=kw, x=x, h0=h0: fla_chunk(
                            *x, scale=1.0, initial_state=h0, output_final_state=True, **kw))
                    except Exception as e:
                        row[f"{name}_error"] = f"{type(e).__name__}: {e}"[:300]
                fla_best = min((row[k] for k in ("fla_ms", "fla_lb_ms") if k in row), default=None)
                if fla_best:
                    row["fla_best_ms"] = fla_best
                    row["ratio_ours_over_fla"] = fla_best / row["ours_ms"]  # > 1: ours faster
                    if row["default_ms"]:
                        row["ratio_default_over_fla"] = fla_best / row["default_ms"]
        except Exception as e:
            row["error"] = f"{type(e).__name__}: {e}"[:500]
            traceback.print_exc()
        rows.append(row)
        print("prefill", json.dumps(row), flush=True)
        if on_row is not None:
            on_row(rows)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def bench_varlen(lens, width, timer, device, fla_chunk, fla_why, deadline) -> dict:
    """One packed ragged batch (cu_seqlens), states in a pool larger than the batch at shuffled
    slots; pool rows no sequence names must come back bit-identical."""
    H, N = width // 64, 64
    row = {"lens": lens, "width": width, "tokens": sum(lens)}
    if time.time() > deadline:
        row["skipped"] = "time budget"
        return row
    try:
        cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], device=device)
        x = make_inputs(1, sum(lens), H, N, torch.bfloat16, device, seed=len(lens))
        n = len(lens)
        pool0 = (torch.randn(2 * n, H, N, N, device=device) * 0.1).float()
        slots = torch.randperm(2 * n, device=device)[:n].to(torch.int32)
        pool = pool0.clone()
        y = chunk_wkv7(*x, pool, slots, cu)
        untouched = torch.ones(2 * n, dtype=torch.bool, device=device)
        untouched[slots.long()] = False
        row["untouched_rows_identical"] = bool(torch.equal(pool[untouched], pool0[untouched]))
        s0 = int(slots[0])
        ref_pool = pool0[s0 : s0 + 1].clone()
        y_ref = naive_wkv7(*(t[:, : lens[0]] for t in x), ref_pool)
        row["ours_err"] = rel_err(y[:, : lens[0]], y_ref)
        row["ours_state_err"] = rel_err(pool[s0 : s0 + 1], ref_pool)
        row["ours_ms"] = timer(lambda: chunk_wkv7(*x, pool, slots, cu))
        row["ours_mtok_s"] = sum(lens) / (row["ours_ms"] * 1e-3) / 1e6
        if fla_chunk is None or not FLA_VARLEN:
            row["fla"] = fla_why or "not run: its varlen path autotunes ~130 more configs (--fla-varlen)"
        else:
            h0 = pool0[slots.long()].transpose(-1, -2).contiguous()
            kw = {"cu_seqlens": cu, "cu_seqlens_cpu": cu.cpu(), "lower_bound": -math.exp(-0.5)}
            try:
                o, _ = fla_chunk(*x, scale=1.0, initial_state=h0, output_final_state=True, **kw)
                row["fla_lb_err"] = rel_err(o[:, : lens[0]], y_ref)
                row["fla_lb_ms"] = timer(lambda: fla_chunk(*x, scale=1.0, initial_state=h0,
                                                           output_final_state=True, **kw))
                row["ratio_ours_over_fla"] = row["fla_lb_ms"] / row["ours_ms"]
            except Exception as e:
                row["fla_error"] = f"{type(e).__name__}: {e}"[:300]
    except Exception as e:
        row["error"] = f"{type(e).__name__}: {e}"[:500]
        traceback.print_exc()
    print("varlen", json.dumps(row), flush=True)
    return row


def bench_decode(cases, timer, device, fla_rec, fla_why, deadline, copy_tbs):
    rows = []
    dtype = torch.bfloat16
    for B, width in cases:
        H, N = width // 64, 64
        row = {"batch": B, "width": width, "heads": H}
        print(f"[{time.time() - T0:.0f} s] decode B{B} width {width}", flush=True)
        if time.time() > deadline:
            row["skipped"] = "time budget"
            rows.append(row)
            continue
        try:
            x = make_inputs(B, 1, H, N, dtype, device, seed=B + width)
            s0 = (torch.randn(B, H, N, N, device=device) * 0.1).float()
            ref_pool = s0.clone()
            y_ref = naive_wkv7(*x, ref_pool)
            pool = s0.clone()
            y = fused_recurrent_wkv7(*x, pool)
            row["ours_err"], row["ours_state_err"] = rel_err(y, y_ref), rel_err(pool, ref_pool)
            row["ours_ok"] = row["ours_err"] <= REL_TOL and row["ours_state_err"] <= 1e-4
            # in place on a pool: timing repeats the step on the evolving state (as decode does)
            row["ours_ms"] = timer(lambda x=x, pool=pool: fused_recurrent_wkv7(*x, pool))
            row["ref_ms"] = timer(lambda x=x, pool=pool: naive_wkv7(*x, pool))
            state_bytes = 2 * B * H * N * N * 4
            io_bytes = 6 * B * H * N * 2
            row["bytes"] = state_bytes + io_bytes
            row["ours_tbs"] = row["bytes"] / (row["ours_ms"] * 1e-3) / 1e12
            row["ours_frac_of_3tbs"] = row["ours_tbs"] / PEAK_COPY_TBS
            if copy_tbs:
                row["ours_frac_of_measured_copy"] = row["ours_tbs"] / copy_tbs
            row["ours_tok_s"] = B / (row["ours_ms"] * 1e-3)
            if fla_rec is None:
                row["fla"] = fla_why
            else:
                h0 = s0.transpose(-1, -2).contiguous()
                try:
                    o, ht = fla_rec(*x, scale=1.0, initial_state=h0, output_final_state=True)
                    row["fla_err"] = rel_err(o, y_ref)
                    row["fla_state_err"] = rel_err(ht.transpose(-1, -2), ref_pool)
                    row["fla_ms"] = timer(lambda x=x, h0=h0: fla_rec(
                        *x, scale=1.0, initial_state=h0, output_final_state=True))
                    row["fla_tbs"] = row["bytes"] / (row["fla_ms"] * 1e-3) / 1e12
                    row["ratio_ours_over_fla"] = row["fla_ms"] / row["ours_ms"]  # > 1: ours faster
                except Exception as e:
                    row["fla_error"] = f"{type(e).__name__}: {e}"[:300]
        except Exception as e:
            row["error"] = f"{type(e).__name__}: {e}"[:500]
            traceback.print_exc()
        rows.append(row)
        print("decode", json.dumps(row), flush=True)
    return rows


def e2e_model(device, smoke):
    from archrouter.backends import rwkv

    cfg = rwkv.random_config("tiny" if smoke else "0.1b")
    dtype = torch.float32 if smoke else torch.bfloat16
    return rwkv.from_config(cfg, seed=0, device=device, dtype=dtype)


def bench_e2e(model, batches, timer, device, deadline, smoke):
    """Decode tokens/s of a random-weight RWKV-7 (0.1B shape), WKV by our kernels vs by the
    plain-PyTorch reference (ARCHROUTER_NO_TRITON=1); the rest of the model is the same code."""
    cfg = model.config
    rows = []
    prompt_len = 8 if smoke else 64
    for B in batches:
        row = {"model": "rwkv7-" + ("tiny" if smoke else "0.1b"), "params_m": model.num_parameters() / 1e6,
               "batch": B, "prompt": prompt_len}
        print(f"[{time.time() - T0:.0f} s] e2e B{B}", flush=True)
        if time.time() > deadline:
            row["skipped"] = "time budget"
            rows.append(row)
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
                    step_logits, _ = model(nxt, cache)
                    logits[name] = step_logits.float()
                    row[f"{name}_eager_ms"] = timer(lambda cache=cache, nxt=nxt: model(nxt, cache))
                    if device.type == "cuda":
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
                        row[f"{name}_graph_ms"] = timer(graph.replay)
                        del graph
                best = min(row[k] for k in (f"{name}_eager_ms", f"{name}_graph_ms") if k in row)
                row[f"{name}_tok_s"] = B / (best * 1e-3)
            os.environ.pop("ARCHROUTER_NO_TRITON", None)
            row["logits_rel_err"] = rel_err(logits["ours"], logits["torch"])
            row["ratio_ours_over_torch"] = row["ours_tok_s"] / row["torch_tok_s"]
        except Exception as e:
            os.environ.pop("ARCHROUTER_NO_TRITON", None)
            row["error"] = f"{type(e).__name__}: {e}"[:500]
            traceback.print_exc()
        rows.append(row)
        print("e2e", json.dumps(row), flush=True)
    return rows


def bench_cost_curve(model, timer, device, smoke) -> dict:
    """Batch-1 latency of the 0.1B config through our kernels, fitted as the catalogue's cost curve:
    prefill_ms = base + per_token * T (linear: no attention), decode_ms = constant (fixed-size state)."""
    cfg = model.config
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
    mx = sum(t for t, _ in pts) / n
    my = sum(m for _, m in pts) / n
    slope = sum((t - mx) * (m - my) for t, m in pts) / sum((t - mx) ** 2 for t, _ in pts)
    return {"model": "rwkv7-" + ("tiny" if smoke else "0.1b"), "batch": 1, "prefill_points_ms": pts,
            "prefill_ms": {"base": my - slope * mx, "per_token": slope, "per_token_sq": 0},
            "decode_ms": {"base": decode_eager, "per_context": 0}, "decode_timing": "eager, batch 1"}


# ----------------------------------------------------------------------------- report


def table(res) -> str:
    env = res["env"]
    lines = [f"# bench_wkv7 on {env['device']} (torch {env['torch']}, triton {env['triton']})",
             f"# command: {res['env']['command']}",
             f"# device copy measured: {fmt(res.get('copy_tbs'), '.2f')} TB/s", "",
             "## prefill (bf16 in, fp32 state; ratio = fla_best_ms / ours_ms, >1 means ours faster; "
             "C = best chunk size; def = at the chunk size wkv7() picks by default; err / serr = output / final "
             "state vs the reference, relative to max, ok = both <= 1e-2; c16..c64 = ours per chunk size; "
             "bf16mm = ours with bf16 matmul operands at C 64)",
             f"{'B':>3} {'T':>6} {'width':>5} | {'ours ms':>8} {'C':>3} {'Mtok/s':>7} {'err':>8} {'serr':>8} "
             f"{'ok':>3} | {'c16':>6} {'c32':>6} {'c64':>6} | "
             f"{'def C':>5} {'def ratio':>9} | {'fla ms':>8} {'fla_lb ms':>9} {'fla err':>8} | {'ratio':>6} | "
             f"{'bf16mm':>6} {'err':>8} | {'ref ms':>8}"]
    for r in res["prefill"]:
        if "skipped" in r or "error" in r:
            why = r.get("skipped") or r.get("error")
            lines.append(f"{r['batch']:>3} {r['length']:>6} {r['width']:>5} | {why}")
            continue
        lines.append(
            f"{r['batch']:>3} {r['length']:>6} {r['width']:>5} | {fmt(r['ours_ms']):>8} {r['ours_chunk']:>3} "
            f"{fmt(r['ours_mtok_s'], '.2f'):>7} {fmt(r['ours_err'], '.1e'):>8} "
            f"{fmt(r.get('ours_state_err'), '.1e'):>8} {'yes' if r.get('ours_ok') else 'NO':>3} | "
            f"{fmt(r.get('ours_c16_ms')):>6} {fmt(r.get('ours_c32_ms')):>6} {fmt(r.get('ours_c64_ms')):>6} | "
            f"{r.get('default_chunk'):>5} {fmt(r.get('ratio_default_over_fla'), '.2f'):>9} | "
            f"{fmt(r.get('fla_ms')):>8} "
            f"{fmt(r.get('fla_lb_ms')):>9} {fmt(r.get('fla_lb_err', r.get('fla_err')), '.1e'):>8} | "
            f"{fmt(r.get('ratio_ours_over_fla'), '.2f'):>6} | {fmt(r.get('bf16mm_ms')):>6} "
            f"{fmt(r.get('bf16mm_err'), '.1e'):>8} | {fmt(r.get('ref_ms'), '.1f'):>8}")
    v = res.get("varlen") or {}
    if v:
        lines += ["", f"## varlen prefill: {len(v['lens'])} sequences, {v['tokens']} tokens, "
                  f"width {v['width']}: "
                  f"ours {fmt(v.get('ours_ms'))} ms ({fmt(v.get('ours_mtok_s'), '.2f')} Mtok/s, err "
                  f"{fmt(v.get('ours_err'), '.1e')}, untouched pool rows identical: "
                  f"{v.get('untouched_rows_identical')}); fla_lb {fmt(v.get('fla_lb_ms'))} ms; "
                  f"ratio {fmt(v.get('ratio_ours_over_fla'), '.2f')} {v.get('error', '')}"]
    lines += ["", "## decode step (one token per sequence; ratio = fla_ms / ours_ms)",
              f"{'B':>4} {'width':>5} | {'ours ms':>8} {'TB/s':>5} {'/3.0':>5} {'/copy':>5} {'tok/s':>10} "
              f"{'err':>8} | {'fla ms':>8} {'fla TB/s':>8} | {'ratio':>6} | {'ref ms':>7}"]
    for r in res["decode"]:
        if "skipped" in r or "error" in r:
            lines.append(f"{r['batch']:>4} {r['width']:>5} | {r.get('skipped') or r.get('error')}")
            continue
        lines.append(
            f"{r['batch']:>4} {r['width']:>5} | {fmt(r['ours_ms'], '.4f'):>8} {fmt(r['ours_tbs'], '.2f'):>5} "
            f"{fmt(r['ours_frac_of_3tbs'], '.2f'):>5} {fmt(r.get('ours_frac_of_measured_copy'), '.2f'):>5} "
            f"{r['ours_tok_s']:>10.0f} {fmt(r['ours_err'], '.1e'):>8} | {fmt(r.get('fla_ms'), '.4f'):>8} "
            f"{fmt(r.get('fla_tbs'), '.2f'):>8} | {fmt(r.get('ratio_ours_over_fla'), '.2f'):>6} | "
            f"{fmt(r.get('ref_ms'), '.3f'):>7}")
    lines += ["", "## end-to-end decode (random weights; ours = Triton WKV, torch = reference WKV)",
              f"{'model':>12} {'B':>3} | {'ours eager':>10} {'ours graph':>10} {'tok/s':>9} | "
              f"{'torch eager':>11} {'torch graph':>11} {'tok/s':>9} | {'ratio':>5} {'logit err':>9}"]
    for r in res["e2e"]:
        if "skipped" in r or "error" in r:
            lines.append(f"{r['model']:>12} {r['batch']:>3} | {r.get('skipped') or r.get('error')}")
            continue
        lines.append(
            f"{r['model']:>12} {r['batch']:>3} | {fmt(r['ours_eager_ms']):>10} "
            f"{fmt(r.get('ours_graph_ms')):>10} "
            f"{r['ours_tok_s']:>9.0f} | {fmt(r['torch_eager_ms']):>11} {fmt(r.get('torch_graph_ms')):>11} "
            f"{r['torch_tok_s']:>9.0f} | {r['ratio_ours_over_torch']:>5.2f} {r['logits_rel_err']:>9.1e}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on CPU under TRITON_INTERPRET=1")
    ap.add_argument("--budget-s", type=float, default=200.0,
                    help="cases starting later than this are skipped (prefill 70%%, decode and e2e 15%% each; "
                         "the sections run get all of it between them)")
    ap.add_argument("--fla-varlen", action="store_true", help="also fla on the varlen case (slow first use)")
    ap.add_argument("--fla-default", action="store_true", help="also fla's default chunk path (slow first use)")
    ap.add_argument("--only", default=None, help="comma-separated sections: prefill,decode,e2e")
    ap.add_argument("--shapes", default=None,
                    help="prefill shapes to run, comma-separated BxTxWIDTH (e.g. 1x16384x4096); default all")
    ap.add_argument("--chunks", default="16,32,64", help="chunk sizes of ours to time at each prefill shape")
    ap.add_argument("--bf16mm", action="store_true", help="also ours with bf16 matmul operands at C = 64")
    ap.add_argument("--out", default=None, help="output folder (default $OUT, else ./bench-out)")
    args = ap.parse_args()
    t_start = time.time()
    sections = ["prefill", "decode", "e2e"] if args.only is None else args.only.split(",")
    # each section gets a share of the budget, so a slow one cannot starve the next; a section run
    # alone gets all of it
    share = {"prefill": 0.7, "decode": 0.15, "e2e": 0.15}
    total = sum(share[s] for s in sections if s in share) or 1.0
    deadline, acc = {}, 0.0
    for sec in ("prefill", "decode", "e2e"):
        acc += share[sec] / total if sec in sections else 0.0
        deadline[sec] = t_start + acc * args.budget_s
    out = Path(args.out or os.environ.get("OUT", "./bench-out"))
    out.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available() and not args.smoke
    device = torch.device("cuda" if cuda else "cpu")
    timer = Timer(cuda)
    import triton

    env = {
        "device": torch.cuda.get_device_name() if cuda
        else f"cpu {platform.machine()} (smoke: both e2e paths take the reference on CPU)",
        "torch": torch.__version__, "triton": triton.__version__, "python": platform.python_version(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "triton_interpret": os.environ.get("TRITON_INTERPRET", "0"),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    fla_chunk, fla_rec, fla_why = load_fla() if cuda else (None, None, "skipped: no CUDA (smoke)")
    if fla_chunk is not None:
        import fla

        env["fla"] = getattr(fla, "__version__", "?")
    res = {"env": env}
    res.update(prefill=[], decode=[], e2e=[])

    def want(section: str) -> bool:
        return section in sections

    def save() -> None:  # after every shape and section: a crash or a cut later leaves what was measured
        (out / "results.json").write_text(json.dumps(res, indent=2) + "\n")
        try:
            (out / "table.txt").write_text(table(res) + f"\n\n# partial: {time.time() - t_start:.0f} s in\n")
        except Exception:  # a half-filled row must not lose the JSON
            traceback.print_exc()

    def on_prefill_row(rows) -> None:
        res["prefill"] = rows
        save()

    res["copy_tbs"] = bench_copy(timer, device)
    if want("prefill"):
        cases = SMOKE_PREFILL if args.smoke else PREFILL
        if args.shapes:
            wanted = [tuple(int(n) for n in s.lower().split("x")) for s in args.shapes.split(",")]
            unknown = [s for s in wanted if s not in cases]
            if unknown:
                ap.error(f"--shapes {unknown} not among {cases}")
            cases = [c for c in cases if c in wanted]
        chunks = tuple(int(c) for c in args.chunks.split(","))
        res["prefill"] = bench_prefill(cases, timer, device, fla_chunk, fla_why, deadline["prefill"], args.smoke,
                                       chunks=chunks, bf16mm=args.bf16mm, on_row=on_prefill_row)
        save()
    if want("prefill"):
        lens = [13, 40, 9] if args.smoke else [3000, 517, 8191, 64, 1, 2048, 4000, 1200]
        res["varlen"] = bench_varlen(lens, 64 if args.smoke else 2048, timer, device, fla_chunk, fla_why,
                                     deadline["prefill"] + 10)
        save()
    if want("decode"):
        res["decode"] = bench_decode(SMOKE_DECODE if args.smoke else DECODE, timer, device, fla_rec, fla_why,
                                     deadline["decode"], res["copy_tbs"])
        save()
    if want("e2e"):
        batches = [1, 2] if args.smoke else E2E_BATCHES
        model = e2e_model(device, args.smoke)
        res["e2e"] = bench_e2e(model, batches, timer, device, deadline["e2e"], args.smoke)
        save()
        try:
            if time.time() > deadline["e2e"] + 20:
                raise TimeoutError("time budget")
            res["cost_curve"] = bench_cost_curve(model, timer, device, args.smoke)
        except Exception as e:
            res["cost_curve"] = {"error": f"{type(e).__name__}: {e}"[:300]}
        print("cost_curve", json.dumps(res["cost_curve"]), flush=True)
    from archrouter.kernels.wkv7 import _tune

    res["tuned_configs"] = _tune.chosen()
    res["elapsed_s"] = time.time() - t_start
    cc = res.get("cost_curve") or {}
    text = (table(res) + f"\n\n## cost curve ({cc.get('model')}, batch 1): "
            f"prefill_ms {cc.get('prefill_ms')}, decode_ms {cc.get('decode_ms')}"
            f"\n\n# elapsed {res['elapsed_s']:.1f} s")
    (out / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    (out / "table.txt").write_text(text + "\n")
    print("\n" + text)


if __name__ == "__main__":
    main()
