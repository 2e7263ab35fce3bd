"""Our Llama decoder vs transformers' LlamaForCausalLM, same weights, side by side in one process.

    python benchmarks/transformer_decode.py            # CUDA, bf16, the "base" preset
    python benchmarks/transformer_decode.py --smoke    # CPU, fp32, the "tiny" preset, small shapes

Measures prefill (B x T tokens) and one decode step at context T for batch sizes B, both with
`triton.testing.do_bench` (median) on CUDA and a median of wall-clock repeats on CPU. A decode
step is timed from a cache reset to the prefilled length before each call (ours: set the
lengths back; transformers: DynamicCache.crop), so every call does the same work.
Before timing, each shape checks our logits against transformers' (prefill and decode).
Writes JSON and a text table under $OUT (default ./bench-out); prints the table last.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]  # runs from a checkout without an install (GPU images)

from archrouter.backends import transformer as tr  # noqa: E402


def bench(fn, cuda: bool) -> float:
    """Median milliseconds."""
    if cuda:
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=25, rep=100, return_mode="median"))
    fn()
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on CPU")
    ap.add_argument("--preset", default=None, help="random_config preset (default: base; tiny with --smoke)")
    args = ap.parse_args()

    from transformers import DynamicCache, LlamaForCausalLM

    cuda = torch.cuda.is_available() and not args.smoke
    device = "cuda" if cuda else "cpu"
    dtype = torch.bfloat16 if cuda else torch.float32
    preset = args.preset or ("tiny" if args.smoke else "base")
    shapes = [(1, 64), (4, 64)] if args.smoke else [(1, 512), (8, 512), (32, 512), (8, 2048)]
    # bf16 logits of a random 25M model are O(1); two implementations that round differently
    # drift by a few bf16 ulps per layer
    tol = 0.5 if dtype == torch.bfloat16 else 1e-4

    with tempfile.TemporaryDirectory() as tmp:
        ours = tr.from_config(tr.random_config(preset), seed=0)
        tr.save(ours, tmp)
        ours = tr.load(tmp, device=device, dtype=dtype)
        hf = LlamaForCausalLM.from_pretrained(tmp, dtype=dtype).to(device).eval()
    vocab = ours.vocab_size

    rows = []
    with torch.inference_mode():
        for B, T in shapes:
            ids = torch.randint(0, vocab, (B, T + 1), device=device)
            prompt, nxt = ids[:, :T], ids[:, T:]

            # correctness at this shape
            ref = hf(ids).logits.float()
            full, _ = ours(ids)
            _, cache = ours(prompt)
            step, _ = ours(nxt, cache.gather(range(B)))
            err_prefill = (full - ref).abs().max().item()
            err_decode = (step[:, -1] - ref[:, -1]).abs().max().item()
            assert err_prefill < tol and err_decode < tol, (B, T, err_prefill, err_decode)

            # prefill
            ours_prefill = bench(lambda p=prompt: ours(p), cuda)
            hf_prefill = bench(lambda p=prompt: hf(p, use_cache=True), cuda)

            # one decode step at context T
            base_len = cache.lengths.clone()

            def ours_step(c=cache, n=nxt, L=base_len):
                c.tensors["lengths"] = L
                ours(n, c)

            hf_cache = DynamicCache(config=hf.config)
            hf(prompt, past_key_values=hf_cache, use_cache=True)

            def hf_step(c=hf_cache, n=nxt, L=T):
                extra = c.get_seq_length() - L
                if extra > 0:
                    c.crop(-extra)  # a negative count removes tokens in every transformers version
                hf(n, past_key_values=c, use_cache=True)

            ours_decode = bench(ours_step, cuda)
            hf_decode = bench(hf_step, cuda)
            rows.append(
                {
                    "batch": B,
                    "context": T,
                    "prefill_ms_ours": ours_prefill,
                    "prefill_ms_hf": hf_prefill,
                    "prefill_ratio": ours_prefill / hf_prefill,
                    "decode_ms_ours": ours_decode,
                    "decode_ms_hf": hf_decode,
                    "decode_ratio": ours_decode / hf_decode,
                    "max_abs_err_prefill": err_prefill,
                    "max_abs_err_decode": err_decode,
                }
            )

    import transformers

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    result = {
        "benchmark": "transformer_decode",
        "command": " ".join([sys.executable, *sys.argv]),
        "device": torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
        "torch": torch.__version__,
        "triton": triton_version,
        "transformers": transformers.__version__,
        "dtype": str(dtype),
        "preset": preset,
        "parameters": ours.num_parameters(),
        "tolerance": tol,
        "rows": rows,
    }
    head = (
        f"{'B':>3} {'T':>5} | {'prefill ours':>12} {'hf':>8} {'ratio':>6} | "
        f"{'decode ours':>11} {'hf':>8} {'ratio':>6} | {'err':>8}"
    )
    lines = [
        f"transformer_decode on {result['device']} ({dtype}, {preset}, "
        f"{result['parameters'] / 1e6:.1f}M params); ms, median; ratio = ours / transformers",
        head,
        "-" * len(head),
    ]
    for r in rows:
        lines.append(
            f"{r['batch']:>3} {r['context']:>5} | {r['prefill_ms_ours']:>12.3f} {r['prefill_ms_hf']:>8.3f} "
            f"{r['prefill_ratio']:>6.2f} | {r['decode_ms_ours']:>11.3f} {r['decode_ms_hf']:>8.3f} "
            f"{r['decode_ratio']:>6.2f} | {max(r['max_abs_err_prefill'], r['max_abs_err_decode']):>8.1e}"
        )
    table = "\n".join(lines)
    out = Path(os.environ.get("OUT", "bench-out"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "transformer_decode.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "transformer_decode.txt").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
