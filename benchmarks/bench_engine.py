"""Continuous-batching engine vs one-request-at-a-time generation, and the recurrent-state cache.

    python benchmarks/bench_engine.py                      # CPU, tiny random configs, every family present
    python benchmarks/bench_engine.py --device cuda        # ~100M-200M configs, bf16 (the lent H100)
    python benchmarks/bench_engine.py --device cuda --size large   # ~0.7B Llama, mamba-1.4b shape
    python benchmarks/bench_engine.py --smoke              # seconds: checks the script end to end

Part 1, per family and for 1, 8, 32, 128 concurrent streams: the same requests (prompt lengths and
max_tokens drawn once from a seeded RNG, greedy) through the Engine and through the sequential
Generator (its lock serialises them, as main's router did before the engine). Reported: output
tokens/s over the whole burst, time to first token p50/p99 (from submission, queueing included) and
inter-token latency p50/p99 (gaps between streamed tokens), and the engine/sequential ratios.

Part 2, per family: a 10-turn chat over a ~4k-token document (system message), the next question
appended to the previous answer each turn; time to first token of each turn with the state cache off
and on (fresh engines, in-memory store). Reported: turn-10 TTFT both ways and their ratio.

Results go to $OUT (default ./bench-out): bench_engine.json and bench_engine.txt (with the device,
torch / triton versions, the command and the git commit); the short table is printed last.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backends.engine import Engine, EngineConfig, MemoryStateStore  # noqa: E402
from backends.families import FAMILIES, family_module  # noqa: E402
from backends.generator import Generator  # noqa: E402
from backends.protocol import GenerationRequest, SamplingParams  # noqa: E402

WORDS = ("the ledger moves alice pays bob three then carol reads the log and swaps cup one with cup two "
         "while the server reports an error on line seven of the parity function").split()

# family -> (preset, config overrides) per mode. CUDA: the ~100M-200M shapes of each family.
PRESETS = {
    "cpu": {f: ("tiny", {}) for f in FAMILIES},
    "cuda": {
        # Llama-style, ~180M parameters with the byte vocabulary
        "transformer": ("base", {"hidden_size": 1024, "num_hidden_layers": 16, "num_attention_heads": 16,
                                 "num_key_value_heads": 8, "head_dim": 64, "intermediate_size": 2816,
                                 "max_position_embeddings": 8192}),
        "mamba": ("130m", {}),
        "rwkv": ("0.1b", {}),
        "xlstm": ("125m", {}),
    },
    # --size large: ~0.7B Llama and the mamba-1.4b shape; RWKV-7 and xLSTM keep their largest presets
    "cuda-large": {
        "transformer": ("base", {"hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 32,
                                 "num_key_value_heads": 8, "head_dim": 64, "intermediate_size": 5632,
                                 "max_position_embeddings": 8192}),
        "mamba": ("130m", {"hidden_size": 2048, "num_hidden_layers": 48, "intermediate_size": 4096,
                           "time_step_rank": 128}),
        "rwkv": ("0.1b", {}),
        "xlstm": ("125m", {}),
    },
}


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def text_of(n_words: int, rnd: random.Random) -> str:
    return " ".join(rnd.choice(WORDS) for _ in range(n_words))


def make_checkpoint(family: str, mode: str, root: Path) -> Path:
    preset, overrides = PRESETS[mode][family]
    mod = family_module(family)
    torch.manual_seed(0)
    cfg = {**mod.random_config(preset), **overrides}
    path = root / family
    mod.save(mod.from_config(cfg), path)
    return path


# ----------------------------------------------------------------------------- part 1: batching


async def burst(client, prompts: list[str], max_tokens: int) -> dict:
    """All requests submitted at once; per-request arrival times of every streamed token."""
    async def one(i: int, prompt: str) -> tuple[float, list[float], int, list[int]]:
        req = GenerationRequest(f"b{i}", SamplingParams(temperature=0.0, max_tokens=max_tokens), prompt=prompt)
        t0, times, n, ids = time.perf_counter(), [], 0, []
        async for chunk in client.generate(req):
            if chunk.token_ids or chunk.finish_reason:
                times.append(time.perf_counter())
            n = chunk.completion_tokens
            ids += chunk.token_ids
        return t0, times, n, ids

    start = time.perf_counter()
    results = await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts)))
    wall = time.perf_counter() - start
    ttft = [times[0] - t0 for t0, times, _, _ in results]
    itl = [b - a for _, times, _, _ in results for a, b in zip(times, times[1:], strict=False)]
    tokens = sum(n for _, _, n, _ in results)
    return {"streams": len(prompts), "tokens": tokens, "wall_s": wall, "tok_per_s": tokens / wall,
            "ids": [ids for *_, ids in results],
            "ttft_p50_ms": 1e3 * pct(ttft, 0.5), "ttft_p99_ms": 1e3 * pct(ttft, 0.99),
            "itl_p50_ms": 1e3 * pct(itl, 0.5), "itl_p99_ms": 1e3 * pct(itl, 0.99)}


async def bench_batching(family: str, ckpt: Path, args, device: str, dtype: torch.dtype) -> list[dict]:
    ctx = args.context
    engine = Engine.from_checkpoint(family, family, ckpt, context_length=ctx, device=device, dtype=dtype,
                                    config=EngineConfig(max_num_seqs=max(args.streams), max_waiting=1024,
                                                        max_num_batched_tokens=args.step_tokens,
                                                        state_cache="off", redis_url=None, queue_timeout_s=3600))
    seq = Generator.from_checkpoint(family, family, ckpt, context_length=ctx, device=device, dtype=dtype)
    rows = []
    try:
        for client in (engine, seq):  # warm-up: first-call allocations, kernel compilation
            await burst(client, ["warm up"] * 2, 4)
        for n in args.streams:
            rnd = random.Random(n)
            lo, hi = args.prompt_words
            prompts = [text_of(rnd.randint(lo, hi), rnd) for _ in range(n)]
            e = await burst(engine, prompts, args.max_tokens)
            if n <= args.seq_max_streams:
                s = await burst(seq, prompts, args.max_tokens)
            else:
                s = None
            e_ids = e["ids"]
            # greedy parity at these shapes: fp32 on CPU should match exactly; bf16 on GPU may drift where a
            # batched matmul rounds differently from a single row's (reported, not asserted)
            e.pop("ids")
            same = sum(a == b for a, b in zip(e_ids, s.pop("ids"), strict=True)) / n if s else None
            rows.append({"family": family, "streams": n, "engine": e, "sequential": s, "greedy_identical": same,
                         "throughput_ratio": e["tok_per_s"] / s["tok_per_s"] if s else None,
                         "ttft_p50_ratio": s["ttft_p50_ms"] / e["ttft_p50_ms"] if s else None})
            print(f"  {family:12s} {n:4d} streams: engine {e['tok_per_s']:8.1f} tok/s"
                  + (f", sequential {s['tok_per_s']:8.1f} tok/s, x{rows[-1]['throughput_ratio']:.2f}" if s else ""),
                  flush=True)
    finally:
        await engine.close()
    return rows


# ----------------------------------------------------------------------------- part 2: state cache


def document(tokenizer, n_tokens: int) -> str:
    rnd, words = random.Random(7), []
    while True:
        words += [text_of(50, rnd)]
        text = " ".join(words)
        if len(tokenizer.encode(text)) >= n_tokens:
            return text


async def conversation(engine: Engine, doc: str, turns: int, max_tokens: int) -> list[dict]:
    messages = [{"role": "system", "content": doc}]
    out = []
    for t in range(turns):
        messages.append({"role": "user", "content": f"Question {t + 1}: who holds cup {t % 3 + 1} now?"})
        req = GenerationRequest(f"c{t}", SamplingParams(temperature=0.0, max_tokens=max_tokens),
                                messages=list(messages))
        before = engine.stats()
        t0, ttft, text, ids = time.perf_counter(), None, "", []
        async for chunk in engine.generate(req):
            ttft = ttft if ttft is not None else time.perf_counter() - t0
            text += chunk.text
            ids += chunk.token_ids
        after = engine.stats()
        out.append({"turn": t + 1, "prompt_tokens": len(engine.encode(req)), "ttft_ms": 1e3 * ttft,
                    "saved_tokens": after["prefix_saved_tokens"] - before["prefix_saved_tokens"],
                    "prefilled_tokens": after["prefill_tokens"] - before["prefill_tokens"], "ids": ids})
        messages.append({"role": "assistant", "content": text})
    return out


async def bench_state_cache(family: str, ckpt: Path, args, device: str, dtype: torch.dtype) -> dict:
    runs = {}
    for mode in ("off", "on"):
        engine = Engine.from_checkpoint(family, family, ckpt, context_length=args.context, device=device,
                                        dtype=dtype, config=EngineConfig(state_cache=mode, redis_url=None,
                                                                         max_num_batched_tokens=args.step_tokens),
                                        state_store=MemoryStateStore() if mode == "on" else None)
        try:
            await conversation(engine, "warm up " * 8, 1, 2)  # first-call costs out of the figures
            doc = document(engine.tokenizer, args.doc_tokens)
            runs[mode] = await conversation(engine, doc, args.turns, args.turn_tokens)
        finally:
            await engine.close()
    same = [r["ids"] for r in runs["on"]] == [r["ids"] for r in runs["off"]]
    last_off, last_on = runs["off"][-1], runs["on"][-1]
    res = {"family": family, "turns": args.turns, "doc_tokens": args.doc_tokens,
           "turn_prompt_tokens": last_on["prompt_tokens"],
           "ttft_last_off_ms": last_off["ttft_ms"], "ttft_last_on_ms": last_on["ttft_ms"],
           "ttft_ratio_off_over_on": last_off["ttft_ms"] / last_on["ttft_ms"],
           "last_turn_saved_tokens": last_on["saved_tokens"], "last_turn_prefilled_on": last_on["prefilled_tokens"],
           "last_turn_prefilled_off": last_off["prefilled_tokens"], "identical_outputs": same,
           "per_turn": {m: [{k: v for k, v in r.items() if k != "ids"} for r in runs[m]] for m in runs}}
    print(f"  {family:12s} turn {args.turns}: TTFT {last_off['ttft_ms']:.1f} ms without, {last_on['ttft_ms']:.1f} ms "
          f"with the state cache (x{res['ttft_ratio_off_over_on']:.1f}); outputs identical: {same}", flush=True)
    return res


# ----------------------------------------------------------------------------- main


def environment(device: str) -> dict:
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"device": torch.cuda.get_device_name(0) if device == "cuda" else f"cpu: {cpu}",
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_average": os.getloadavg(), "torch": torch.__version__, "triton": triton_version,
            "python": platform.python_version(), "command": " ".join([sys.executable, *sys.argv]),
            "commit": commit, "interpret": os.environ.get("TRITON_INTERPRET")}


def table(results: dict) -> str:
    lines = [f"device: {results['env']['device']}  torch {results['env']['torch']}  "
             f"triton {results['env']['triton']}  commit {results['env']['commit'][:10]}",
             f"command: {results['env']['command']}", "",
             "family       streams  engine tok/s  seq tok/s  x thru | TTFT p50/p99 ms engine   sequential"
             "   | ITL p50/p99 ms engine  sequential | greedy same"]
    for r in results["batching"]:
        e, s = r["engine"], r["sequential"]
        seq_t = f"{s['tok_per_s']:9.1f}  {r['throughput_ratio']:6.2f}" if s else f"{'-':>9s}  {'-':>6s}"
        seq_ttft = f"{s['ttft_p50_ms']:8.1f}/{s['ttft_p99_ms']:<8.1f}" if s else f"{'-':>17s}"
        seq_itl = f"{s['itl_p50_ms']:6.1f}/{s['itl_p99_ms']:<6.1f}" if s else f"{'-':>13s}"
        lines.append(f"{r['family']:12s} {r['streams']:7d}  {e['tok_per_s']:12.1f}  {seq_t} | "
                     f"{e['ttft_p50_ms']:8.1f}/{e['ttft_p99_ms']:<8.1f} {seq_ttft} | "
                     f"{e['itl_p50_ms']:6.1f}/{e['itl_p99_ms']:<6.1f} {seq_itl} | "
                     + (f"{r['greedy_identical']:.0%}" if r["greedy_identical"] is not None else "-"))
    lines += ["", "family       turns  doc tok  turn-N prompt  TTFT off ms  TTFT on ms  off/on  saved tok  identical"]
    for r in results["state_cache"]:
        lines.append(f"{r['family']:12s} {r['turns']:5d}  {r['doc_tokens']:7d}  {r['turn_prompt_tokens']:13d}  "
                     f"{r['ttft_last_off_ms']:11.1f}  {r['ttft_last_on_ms']:10.1f}  {r['ttft_ratio_off_over_on']:6.1f}"
                     f"  {r['last_turn_saved_tokens']:9d}  {r['identical_outputs']}")
    return "\n".join(lines)


def available(families: list[str]) -> list[str]:
    out = []
    for f in families:
        try:
            family_module(f)
        except ImportError as exc:
            print(f"skipping {f}: {exc}", flush=True)
            continue
        out.append(f)
    return out


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--families", nargs="+", default=list(FAMILIES))
    ap.add_argument("--streams", nargs="+", type=int, default=[1, 8, 32, 128])
    ap.add_argument("--seq-max-streams", type=int, default=128,
                    help="run the sequential baseline only up to this many streams (it is slow)")
    ap.add_argument("--max-tokens", type=int, default=None)
    ap.add_argument("--prompt-words", nargs=2, type=int, default=None, help="prompt length range, in words")
    ap.add_argument("--step-tokens", type=int, default=None, help="engine max_num_batched_tokens")
    ap.add_argument("--doc-tokens", type=int, default=4096)
    ap.add_argument("--turns", type=int, default=10)
    ap.add_argument("--turn-tokens", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--size", default="small", choices=["small", "large"],
                    help="CUDA model sizes: small ~0.1-0.2B, large ~0.7-1.4B (Transformer, Mamba)")
    ap.add_argument("--smoke", action="store_true", help="tiny run on CPU to check the script")
    ap.add_argument("--skip-conversation", action="store_true")
    args = ap.parse_args()
    cuda = args.device == "cuda"
    if args.smoke:
        args.device, cuda = "cpu", False
        args.streams, args.doc_tokens, args.turns = [1, 4], 256, 3
    args.max_tokens = args.max_tokens or (32 if cuda else 4 if args.smoke else 16)
    args.turn_tokens = args.turn_tokens or (16 if cuda else 4)
    args.prompt_words = args.prompt_words or ([16, 96] if cuda else [2, 8])
    args.step_tokens = args.step_tokens or (2048 if cuda else 512)
    args.context = args.doc_tokens + 1024
    if args.threads:
        torch.set_num_threads(args.threads)
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device")
    dtype = torch.bfloat16 if cuda else torch.float32
    out_dir = Path(os.environ.get("OUT", "bench-out"))
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {"env": environment(args.device), "args": {k: v for k, v in vars(args).items()},
               "batching": [], "state_cache": []}
    with tempfile.TemporaryDirectory() as tmp:
        for family in available(args.families):
            mode = ("cuda-large" if args.size == "large" else "cuda") if cuda else "cpu"
            ckpt = make_checkpoint(family, mode, Path(tmp))
            results["batching"] += await bench_batching(family, ckpt, args, args.device, dtype)
            if not args.skip_conversation:
                results["state_cache"].append(await bench_state_cache(family, ckpt, args, args.device, dtype))
            (out_dir / "bench_engine.json").write_text(json.dumps(results, indent=1))
    text = table(results)
    (out_dir / "bench_engine.txt").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    asyncio.run(main())
