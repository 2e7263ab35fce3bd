"""Attention kernels on the GPU, ours vs PyTorch SDPA, side by side in one process (bf16).

    python benchmarks/bench_attention.py            # H100, ~5 minutes, results under $OUT
    TRITON_INTERPRET=1 python benchmarks/bench_attention.py --smoke   # tiny shapes on CPU

Sections (each bounded by a shared time budget; shapes left out are listed as skipped):
- prefill: causal, GQA 8:1 (32 query / 4 kv heads), head dim 64 and 128, T 512..32k, TFLOP/s of ours
  (packed varlen kernel) vs SDPA flash and cuDNN backends (K/V expanded with repeat_interleave, as
  their fused GQA paths need), ratio ours / SDPA-flash, fraction of the 989 TFLOP/s bf16 peak;
  correctness against SDPA-flash at every shape and the fp32 reference where it fits.
- decode: one query per sequence, GQA 32:8, hd 128, batch 1..256, context 1k..128k; ours over a
  paged cache (16-token blocks, shuffled) vs SDPA over a contiguous cache (K/V pre-expanded);
  achieved K+V read bandwidth as a fraction of the device copy bandwidth measured in this run.
- rope: the fused Triton q+k kernel vs the separate PyTorch ops (Llama/HF style), and its time next
  to one layer's prefill attention (what folding it into the attention kernel could save at most).
- e2e: decode tokens/s of a 1B-class Llama (random weights) at batch 1 and 64, our kernels + paged
  cache vs the plain-PyTorch path of the same model (skipped with a message if the Transformer
  family is absent); prefill / decode latencies at B=1 fitted to the policy's cost curve.
- memory: KV bytes per sequence, paged (with and without a shared prompt prefix) vs a
  contiguous max-length cache, from real allocator state.
Writes $OUT/bench_attention.json and $OUT/bench_attention.txt; prints the table last.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

if "--smoke" in sys.argv:
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before Triton defines any kernel

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]  # runs from a checkout without an install (GPU images)

from archrouter.backends.paged_cache import PagedKVPool  # noqa: E402
from archrouter.kernels.attention import decode, naive, prefill, rope  # noqa: E402

PEAK_TFLOPS = 989.0  # H100 SXM dense bf16
BF16_ATOL = 2e-2  # two bf16 flash implementations: P rounded to bf16 and output rounding, |o| <~ 3


class Budget:
    """The sweep's wall-clock budget, shared out: each section may start shapes until its share ends."""

    SHARES = {"prefill": 0.40, "decode": 0.65, "e2e": 1.0}  # cumulative fractions of the budget

    def __init__(self, seconds: float):
        self.start = time.monotonic()
        self.seconds = seconds
        self.section = "prefill"

    def left(self) -> float:
        """Seconds left in the current section's share."""
        return self.start + self.SHARES[self.section] * self.seconds - time.monotonic()


def bench(fn: Callable[[], object], smoke: bool) -> float:
    """Median milliseconds (triton.testing.do_bench on CUDA; a few wall-clock runs on CPU)."""
    if smoke:
        fn()
        times = []
        for _ in range(2):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
        return sorted(times)[len(times) // 2]
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=10, rep=40))


def copy_bandwidth(dev: str, smoke: bool) -> float:
    """Device copy bandwidth (read + write) in GB/s over 1 GiB (1 MiB on CPU smoke)."""
    n = (1 << 20 if smoke else 1 << 30) // 2
    a = torch.empty(n, dtype=torch.bfloat16, device=dev)
    b = torch.empty_like(a)
    ms = bench(lambda: b.copy_(a), smoke)
    return 2 * a.numel() * 2 / ms / 1e6


def _sdpa_backends(smoke: bool) -> dict[str, object]:
    if smoke:
        return {"sdpa_math": None}
    from torch.nn.attention import SDPBackend

    return {"sdpa_flash": SDPBackend.FLASH_ATTENTION, "sdpa_cudnn": SDPBackend.CUDNN_ATTENTION}


def _run_sdpa(backend: object, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    if backend is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    from torch.nn.attention import sdpa_kernel

    with sdpa_kernel(backend):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def bench_prefill(dev: str, smoke: bool, budget: Budget, skipped: list[str]) -> list[dict]:
    dims = [64] if smoke else [64, 128]
    lengths = [48, 80] if smoke else [512, 2048, 8192, 32768]
    rows = []
    for d in dims:
        for t in lengths:
            if budget.left() < 0:
                skipped.append(f"prefill d={d} T={t} (time budget)")
                continue
            rows.append(_prefill_shape(dev, smoke, d, t))
            _free(dev)
    return rows


def _prefill_shape(dev: str, smoke: bool, d: int, t: int) -> dict:
    hq, hkv = (8, 1) if smoke else (32, 4)
    bsz = max(1, (96 if smoke else 16384) // t)  # about the same tokens per launch at every length
    q = torch.randn(bsz, hq, t, d, device=dev, dtype=torch.bfloat16)
    k = torch.randn(bsz, hkv, t, d, device=dev, dtype=torch.bfloat16)
    v = torch.randn(bsz, hkv, t, d, device=dev, dtype=torch.bfloat16)
    # ours: the packed layout [B*T, H, D] with cumulative offsets
    qp, kp, vp = (x.transpose(1, 2).reshape(bsz * t, x.shape[1], d).contiguous() for x in (q, k, v))
    cu = torch.arange(0, (bsz + 1) * t, t, dtype=torch.int32, device=dev)
    ke, ve = k.repeat_interleave(hq // hkv, 1), v.repeat_interleave(hq // hkv, 1)
    flops = 4 * bsz * hq * t * t * d / 2  # two matmuls, causal half
    row: dict = {"d": d, "T": t, "B": bsz, "Hq": hq, "Hkv": hkv}
    out = prefill.attention_varlen(qp, kp, vp, cu, cu, t).view(bsz, t, hq, d).transpose(1, 2)
    row["ours_ms"] = bench(lambda: prefill.attention_varlen(qp, kp, vp, cu, cu, t), smoke)
    row["ours_tflops"] = flops / row["ours_ms"] / 1e9
    row["config"] = str(getattr(prefill._attn_fwd_tuned, "best_config", "fixed (interpreter)"))
    for name, backend in _sdpa_backends(smoke).items():
        try:
            ref = _run_sdpa(backend, q, ke, ve)
            row[f"{name}_ms"] = bench(lambda b=backend: _run_sdpa(b, q, ke, ve), smoke)
        except RuntimeError as e:  # backend not available for this shape / build
            row[f"{name}_error"] = str(e).splitlines()[0][:120]
            continue
        row[f"{name}_tflops"] = flops / row[f"{name}_ms"] / 1e9
        row[f"max_err_vs_{name}"] = (out.float() - ref.float()).abs().max().item()
    anchor = "sdpa_math" if smoke else "sdpa_flash"
    if f"{anchor}_ms" in row:
        row["ratio_vs_sdpa_flash"] = row[f"{anchor}_ms"] / row["ours_ms"]
    if "sdpa_cudnn_ms" in row:
        row["ratio_vs_sdpa_cudnn"] = row["sdpa_cudnn_ms"] / row["ours_ms"]
    row["frac_peak"] = row["ours_tflops"] / PEAK_TFLOPS
    if hq * t * t * 4 <= 2**31:  # the fp32 reference on sequence 0, where its score matrix fits in 2 GiB
        want = naive.attention_varlen(qp[:t], kp[:t], vp[:t], cu[:2], cu[:2])
        row["max_err_vs_fp32_ref"] = (out[0].transpose(0, 1).float() - want.float()).abs().max().item()
    errs = [val for key, val in row.items() if key.startswith("max_err")]
    row["correct"] = bool(errs) and max(errs) <= BF16_ATOL
    return row


def bench_decode(dev: str, smoke: bool, copy_gbs: float, budget: Budget, skipped: list[str]) -> list[dict]:
    batches = [1, 4] if smoke else [1, 8, 32, 64, 256]
    contexts = [40, 300] if smoke else [1024, 4096, 16384, 131072]
    cap = 1200 if smoke else 1 << 20  # batch x context tokens per shape (16 GiB of expanded SDPA K/V)
    rows = []
    for ctx in contexts:
        for bsz in batches:
            if bsz * ctx > cap:
                skipped.append(f"decode B={bsz} ctx={ctx} (over {cap} cached tokens)")
            elif budget.left() < 0:
                skipped.append(f"decode B={bsz} ctx={ctx} (time budget)")
            else:
                rows.append(_decode_shape(dev, smoke, copy_gbs, bsz, ctx))
                _free(dev)
    return rows


def _decode_shape(dev: str, smoke: bool, copy_gbs: float, bsz: int, ctx: int) -> dict:
    hq, hkv, d, page = (8, 2, 32, 16) if smoke else (32, 8, 128, 16)
    per_seq = -(-ctx // page)
    nb = bsz * per_seq
    k_cache = torch.randn(nb, page, hkv, d, device=dev, dtype=torch.bfloat16)
    v_cache = torch.randn(nb, page, hkv, d, device=dev, dtype=torch.bfloat16)
    tables = torch.randperm(nb, device=dev).view(bsz, per_seq).to(torch.int32)  # a fragmented pool
    lens = torch.full((bsz,), ctx, dtype=torch.int32, device=dev)
    q = torch.randn(bsz, hq, d, device=dev, dtype=torch.bfloat16)
    out = decode.paged_decode(q, k_cache, v_cache, tables, lens, max_context_len=ctx)
    row: dict = {"B": bsz, "ctx": ctx, "Hq": hq, "Hkv": hkv, "d": d, "page": page,
                 "splits": decode.choose_splits(bsz, hkv, ctx, q.device)}  # fmt: skip
    ours = lambda: decode.paged_decode(q, k_cache, v_cache, tables, lens, max_context_len=ctx)  # noqa: E731
    row["ours_ms"] = bench(ours, smoke)
    row["config"] = str(getattr(decode._paged_decode_tuned, "best_config", "fixed (interpreter)"))
    row["ours_gbs"] = 2 * bsz * ctx * hkv * d * 2 / row["ours_ms"] / 1e6  # K and V, bf16
    row["ours_frac_copy_bw"] = row["ours_gbs"] / copy_gbs
    # SDPA over a contiguous cache holding the same values, K/V expanded to the query heads
    flat = (tables.long()[:, :, None] * page + torch.arange(page, device=dev)).view(bsz, -1)[:, :ctx]
    ke = k_cache.flatten(0, 1)[flat].permute(0, 2, 1, 3).repeat_interleave(hq // hkv, 1)  # [B, Hq, ctx, D]
    ve = v_cache.flatten(0, 1)[flat].permute(0, 2, 1, 3).repeat_interleave(hq // hkv, 1)
    q4 = q[:, :, None]
    ref = F.scaled_dot_product_attention(q4, ke, ve)[:, :, 0]
    row["sdpa_ms"] = bench(lambda: F.scaled_dot_product_attention(q4, ke, ve), smoke)
    row["sdpa_gbs_expanded"] = 2 * ke.numel() * 2 / row["sdpa_ms"] / 1e6
    row["speedup_vs_sdpa"] = row["sdpa_ms"] / row["ours_ms"]
    row["max_err_vs_sdpa"] = (out.float() - ref.float()).abs().max().item()
    row["correct"] = row["max_err_vs_sdpa"] <= BF16_ATOL
    return row


def _rope_torch(q: torch.Tensor, k: torch.Tensor, pos: torch.Tensor, table: torch.Tensor):
    """What a plain PyTorch Llama does: gather cos/sin, rotate_half, multiply-add, for q and for k."""
    half = table.shape[-1] // 2
    cos = table[pos, :half].repeat(1, 2)[:, None].to(q.dtype)
    sin = table[pos, half:].repeat(1, 2)[:, None].to(q.dtype)

    def rot(x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x[..., :half], x[..., half:]
        return torch.cat((-x2, x1), dim=-1)

    return q * cos + rot(q) * sin, k * cos + rot(k) * sin


def bench_rope(dev: str, smoke: bool, prefill_rows: list[dict]) -> list[dict]:
    hq, hkv, d = (8, 2, 32) if smoke else (32, 8, 128)
    table = naive.rope_cos_sin(1.0 / (500000.0 ** (torch.arange(0, d, 2, device=dev).float() / d)), 1 << 15)
    rows = []
    for n in [64, 96] if smoke else [64, 16384]:
        q = torch.randn(n, hq, d, device=dev, dtype=torch.bfloat16)
        k = torch.randn(n, hkv, d, device=dev, dtype=torch.bfloat16)
        pos = torch.randint(0, table.shape[0], (n,), device=dev)
        pairs = list(zip(rope.apply_rope(q, k, pos, table), naive.apply_rope(q, k, pos, table), strict=True))
        row = {"tokens": n, "Hq": hq, "Hkv": hkv, "d": d,
               "fused_ms": bench(lambda: rope.apply_rope(q, k, pos, table), smoke),  # noqa: B023
               "separate_ms": bench(lambda: _rope_torch(q, k, pos, table), smoke),  # noqa: B023
               "max_err_vs_ref": max((a.float() - b.float()).abs().max().item() for a, b in pairs),
               # one bf16 ulp at |x| in [4, 8) is 2^-5: a rounding flip, so a relative bound
               "correct": all(torch.allclose(a.float(), b.float(), atol=1e-2, rtol=1e-2)
                              for a, b in pairs)}  # fmt: skip
        row["speedup_fused"] = row["separate_ms"] / row["fused_ms"]
        attn = [r for r in prefill_rows if r["d"] == d and r["B"] * r["T"] == n]
        if attn:  # the same tokens' attention in one layer: the most that folding RoPE into it could save
            row["fused_share_of_prefill_attention"] = row["fused_ms"] / min(a["ours_ms"] for a in attn)
        rows.append(row)
    return rows


def memory_per_sequence(smoke: bool) -> dict:
    """KV bytes per sequence for a 1B-class Llama (16 layers, 8 kv heads, hd 64, bf16) from real
    allocator state (tensors on the meta device: bookkeeping only)."""
    layers, hkv, d, page, max_len = 16, 8, 64, 16, 8192
    g = torch.Generator().manual_seed(0)
    n_seqs = 8 if smoke else 256
    lens = torch.randint(64, 4096, (n_seqs,), generator=g).tolist()
    per_token = 2 * layers * hkv * d * 2
    pool = PagedKVPool(layers, sum(-(-n // page) for n in lens) + 64, page, hkv, d, torch.bfloat16, "meta")
    caches = []
    for i, n in enumerate(lens):  # distinct token ids: no two sequences share a block by accident
        c = pool.new_cache(1)
        c.prepare(torch.full((1, n), 1_000_000 + i, dtype=torch.long))
        c.commit()
        caches.append(c)
    paged = pool.allocator.num_used * pool.block_bytes / n_seqs
    for c in caches:
        c.release()
    # the same sequences all opening with one 512-token system prompt: its 32 blocks are shared
    system = list(range(512))
    caches = []
    for i, n in enumerate(lens):
        c = pool.new_cache(1)
        prompt = system + [10_000 + i] * max(n - 512, 1)
        cached = c.reuse_prefix(0, prompt)
        c.prepare(torch.tensor([prompt[cached:]]))
        c.commit()
        caches.append(c)
    shared = pool.allocator.num_used * pool.block_bytes / n_seqs
    return {
        "config": {"layers": layers, "kv_heads": hkv, "head_dim": d, "dtype": "bfloat16", "block_size": page},
        "sequences": n_seqs, "mean_len": sum(lens) / n_seqs, "max_len": max_len,
        "contiguous_max_len_bytes": max_len * per_token,
        "paged_bytes": paged,
        "paged_shared_prefix_bytes": shared,
        "exact_bytes": sum(lens) / n_seqs * per_token,
    }  # fmt: skip


# Llama-3.2-1B's public config (random weights here): 16 layers, 32 query / 8 kv heads of 64, 128k vocab
LLAMA_1B = {
    "model_type": "llama", "vocab_size": 128256, "hidden_size": 2048, "intermediate_size": 8192,
    "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
    "hidden_act": "silu", "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "tie_word_embeddings": True,
    "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
                        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    "initializer_range": 0.02,
}  # fmt: skip


def _build(tr, cfg: dict, dev: str, dtype: torch.dtype):  # noqa: ANN001, ANN202
    with torch.device(dev):  # initialise on the device: a 1B model's CPU init would take a while
        model = tr.Transformer(cfg)
        model.init_weights()
    return model.to(dtype).eval()


def _kernels_off(off: bool) -> None:
    if off:
        os.environ["ARCHROUTER_NO_TRITON"] = "1"
    else:
        os.environ.pop("ARCHROUTER_NO_TRITON", None)


def _decode_cache(model, bsz: int, ctx: int, room: int, paged: bool):  # noqa: ANN001, ANN202
    """A cache already holding `ctx` tokens per row (values irrelevant to timing), with room for more."""
    if paged:
        per_seq = -(-(ctx + room) // 16)
        model.use_paged_cache(num_blocks=bsz * per_seq + bsz, block_size=16)
        cache = model.init_cache(bsz)
        cache.prepare(torch.randint(0, 1000, (bsz, ctx)))
        cache.commit()
        return cache
    model.kv_pool = None
    cache = model.init_cache(bsz)
    cache.reserve(-(-(ctx + room) // 16) * 16)  # a multiple of 16: flash-decoding reads it in place
    cache.tensors["lengths"] = torch.full((bsz,), ctx, dtype=torch.long, device=cache.lengths.device)
    return cache


def _decode_tps(model, bsz: int, ctx: int, steps: int, paged: bool, dev: str) -> float:  # noqa: ANN001
    """Tokens per second of `steps` batched decode steps at context ~ctx (wall clock, synchronised)."""
    cache = _decode_cache(model, bsz, ctx, steps + 2, paged)
    ids = torch.randint(0, model.vocab_size, (bsz, 1), device=dev)
    with torch.inference_mode():
        model(ids, cache)  # warm-up (compiles / autotunes at this shape)
        model(ids, cache)
        _sync(dev)
        t = time.perf_counter()
        for _ in range(steps):
            model(ids, cache)
        _sync(dev)
    return bsz * steps / (time.perf_counter() - t)


def _step_ms(model, dev: str, smoke: bool, *, prefill: int = 0, ctx: int = 0) -> float:  # noqa: ANN001
    """B=1 latency of one prefill of `prefill` tokens from empty, or one decode step at context `ctx`."""
    with torch.inference_mode():
        if prefill:
            ids = torch.randint(0, model.vocab_size, (1, prefill), device=dev)
            return bench(lambda: model(ids), smoke)
        cache = _decode_cache(model, 1, ctx, 16, paged=False)
        ids = torch.randint(0, model.vocab_size, (1, 1), device=dev)
        lengths = cache.lengths.clone()

        def step() -> None:
            cache.tensors["lengths"] = lengths  # back to ctx: every call does the same work
            model(ids, cache)

        return bench(step, smoke)


def _fit(xs: list[float], ys: list[float], powers: tuple[int, ...]) -> dict[str, float]:
    """Least squares y ~ sum c_p x^p with every c_p >= 0 (the best of the non-negative subset fits)."""
    import itertools

    best, best_err = {p: 0.0 for p in powers}, float("inf")
    for r in range(1, len(powers) + 1):
        for sub in itertools.combinations(powers, r):
            a = torch.tensor([[float(x) ** p for p in sub] for x in xs], dtype=torch.float64)
            y = torch.tensor(ys, dtype=torch.float64)[:, None]
            coef = torch.linalg.lstsq(a, y).solution[:, 0]
            if (coef < 0).any():
                continue
            err = float(((a @ coef[:, None] - y) ** 2).sum())
            if err < best_err:
                best, best_err = {p: 0.0 for p in powers}, err
                best.update({p: float(c) for p, c in zip(sub, coef.tolist(), strict=True)})
    return best


def cost_curve(model, dev: str, smoke: bool, lengths: list[int], contexts: list[int]) -> dict:  # noqa: ANN001
    """Measured B=1 prefill and decode latencies and the policy catalogue's curve fitted to them."""
    pre = {n: _step_ms(model, dev, smoke, prefill=n) for n in lengths}
    dec = {c: _step_ms(model, dev, smoke, ctx=c) for c in contexts}
    p = _fit(list(pre), list(pre.values()), (0, 1, 2))
    d = _fit(list(dec), list(dec.values()), (0, 1))
    return {
        "prefill_ms_measured": pre, "decode_ms_measured": dec,
        "prefill_ms": {"base": round(p[0], 4), "per_token": float(f"{p[1]:.4g}"), "per_token_sq": float(f"{p[2]:.4g}")},
        "decode_ms": {"base": round(d[0], 4), "per_context": float(f"{d[1]:.4g}")},
    }  # fmt: skip


def bench_e2e(dev: str, smoke: bool, budget: Budget, skipped: list[str]) -> dict:
    try:
        from archrouter.backends import transformer as tr
    except ImportError:
        msg = "e2e: backends.transformer is not in this tree (Transformer family not merged); skipped"
        skipped.append(msg)
        return {"skipped": msg}
    out: dict = {}
    dtype = torch.float32 if smoke else torch.bfloat16
    cfg = tr.random_config("tiny") if smoke else LLAMA_1B
    model = _build(tr, cfg, dev, dtype)
    out["model"] = {"config": "tiny preset" if smoke else "Llama-3.2-1B shape", "parameters": model.num_parameters(),
                    "dtype": str(dtype).removeprefix("torch.")}  # fmt: skip
    ctx, steps = (32, 3) if smoke else (1024, 32)
    rows = []
    for bsz in [1, 4] if smoke else [1, 64]:
        if budget.left() < 20:
            skipped.append(f"e2e decode B={bsz} (time budget)")
            continue
        row = {"B": bsz, "ctx": ctx, "steps": steps}
        _kernels_off(True)
        row["plain_tok_s"] = _decode_tps(model, bsz, ctx, steps, paged=False, dev=dev)
        _kernels_off(False)
        row["ours_paged_tok_s"] = _decode_tps(model, bsz, ctx, steps, paged=True, dev=dev)
        row["ours_contiguous_tok_s"] = _decode_tps(model, bsz, ctx, steps, paged=False, dev=dev)
        row["speedup_paged_vs_plain"] = row["ours_paged_tok_s"] / row["plain_tok_s"]
        rows.append(row)
        _free(dev)
    out["decode"] = rows
    model.kv_pool = None
    # cost curves (B=1, the generator's default contiguous cache with our kernels) for the 1B shape and
    # for the catalogue's presets at the catalogue's dtype (float32)
    curves = {}
    plans = [("llama-1b-bf16", model, [64, 128] if smoke else [128, 512, 2048, 8192],
              [32, 64] if smoke else [512, 2048, 8192, 32768])]  # fmt: skip
    for preset, top in [("tiny", 2048), ("small", 2048), ("base", 4096)]:
        plans.append((f"transformer-{preset}", None, [32, 64] if smoke else [128, 512, 1024, top],
                      [32, 64] if smoke else [128, 512, 1024, top]))  # fmt: skip
    for name, m, lengths, contexts in plans:
        if budget.left() < 5:
            skipped.append(f"cost curve {name} (time budget)")
            continue
        if m is None:
            m = _build(tr, tr.random_config(name.removeprefix("transformer-")), dev, torch.float32)
        curves[name] = cost_curve(m, dev, smoke, lengths, contexts)
        del m
        _free(dev)
    out["cost_curves"] = curves
    return out


def _sync(dev: str) -> None:
    if dev == "cuda":
        torch.cuda.synchronize()


def _free(dev: str) -> None:
    if dev == "cuda":
        torch.cuda.empty_cache()


def _fmt(x: object) -> str:
    if isinstance(x, float):
        return f"{x:.3g}" if abs(x) < 1e4 else f"{x:.0f}"
    return str(x)


def _table(rows: list[dict], cols: list[str]) -> str:
    lines = ["  ".join(f"{c:>12}" for c in cols)]
    lines += ["  ".join(f"{_fmt(r.get(c, '-')):>12}" for c in cols) for r in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on CPU under TRITON_INTERPRET=1")
    ap.add_argument("--budget", type=float, default=270.0, help="seconds for the whole sweep")
    args = ap.parse_args()
    smoke = args.smoke
    dev = "cpu" if smoke else "cuda"
    if not smoke and not torch.cuda.is_available():
        sys.exit("no CUDA device: run with --smoke on CPU")
    import triton

    out_dir = Path(os.environ.get("OUT", "./bench-out"))
    out_dir.mkdir(parents=True, exist_ok=True)
    budget = Budget(args.budget)
    skipped: list[str] = []
    torch.manual_seed(0)
    res: dict = {
        "env": {
            "device": torch.cuda.get_device_name() if dev == "cuda" else platform.processor() or "cpu",
            "torch": torch.__version__, "triton": triton.__version__, "python": platform.python_version(),
            "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
            "interpret": os.environ.get("TRITON_INTERPRET") == "1",
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },  # fmt: skip
    }
    res["copy_gbs"] = copy_bandwidth(dev, smoke)
    res["prefill"] = bench_prefill(dev, smoke, budget, skipped)
    budget.section = "decode"
    res["decode"] = bench_decode(dev, smoke, res["copy_gbs"], budget, skipped)
    res["rope"] = bench_rope(dev, smoke, res["prefill"])
    res["memory"] = memory_per_sequence(smoke)
    budget.section = "e2e"
    res["e2e"] = bench_e2e(dev, smoke, budget, skipped)
    res["wall_s"] = time.monotonic() - budget.start
    res["skipped"] = skipped
    res["all_correct"] = all(r["correct"] for r in res["prefill"] + res["decode"] + res["rope"])

    (out_dir / "bench_attention.json").write_text(json.dumps(res, indent=1))
    mem = res["memory"]
    text = "\n\n".join([
        f"device {res['env']['device']}  torch {res['env']['torch']}  triton {res['env']['triton']}  "
        f"copy {res['copy_gbs']:.3g} GB/s  all_correct {res['all_correct']}",
        "prefill (causal, GQA 8:1, bf16)\n" + _table(res["prefill"], [
            "d", "T", "B", "ours_tflops", "sdpa_flash_tflops", "sdpa_cudnn_tflops", "ratio_vs_sdpa_flash",
            "ratio_vs_sdpa_cudnn", "frac_peak", "correct"]),
        "decode (paged, GQA 32:8, hd 128, bf16)\n" + _table(res["decode"], [
            "B", "ctx", "splits", "ours_ms", "ours_gbs", "ours_frac_copy_bw", "sdpa_ms", "speedup_vs_sdpa",
            "correct"]),
        "rope (q+k)\n" + _table(res["rope"], [
            "tokens", "fused_ms", "separate_ms", "speedup_fused", "fused_share_of_prefill_attention"]),
        f"memory per sequence (1B Llama, bf16, mean len {mem['mean_len']:.0f}): contiguous@{mem['max_len']} "
        f"{mem['contiguous_max_len_bytes'] / 2**20:.1f} MiB, paged {mem['paged_bytes'] / 2**20:.1f} MiB, "
        f"paged+shared 512-token prefix {mem['paged_shared_prefix_bytes'] / 2**20:.1f} MiB",
        "e2e decode tokens/s (1B-class Llama, random weights)\n" + _table(res["e2e"].get("decode", []), [
            "B", "ctx", "plain_tok_s", "ours_paged_tok_s", "ours_contiguous_tok_s", "speedup_paged_vs_plain"]),
        "cost curves for config/policy.yaml (ms; B=1)\n" + "\n".join(
            f"  {name}: prefill_ms: {json.dumps(c['prefill_ms'])}  decode_ms: {json.dumps(c['decode_ms'])}"
            for name, c in res["e2e"].get("cost_curves", {}).items()),
        "skipped: " + ("; ".join(skipped) if skipped else "none"),
    ])  # fmt: skip
    (out_dir / "bench_attention.txt").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
