"""What the OpenAI sampling features cost: the engine with each feature on vs the same burst without it.

    python benchmarks/bench_sampling_features.py                 # CPU, tiny random configs, every family
    python benchmarks/bench_sampling_features.py --device cuda   # the same on a GPU
    python benchmarks/bench_sampling_features.py --smoke         # seconds: the script end to end

Part 1 (engine), per family: a burst of --streams concurrent requests (seeded prompts, max_tokens
--tokens, the end tokens banned through logit_bias in every variant so every answer is --tokens long)
through one Engine, once per variant, the variants interleaved over --repeats rounds; the median wall
time per variant. Variants: `plain` (the anchor: only the end-token ban), `plain-again` (the anchor
once more: the noise floor), `n=4` (streams/4 requests of 4 choices each, the same number of
sequences), `logprobs` (top 5), `penalties` (presence + frequency + repetition), `min_p+top_k`,
`json_schema` (a grammar mask every step), `all` (everything but n at once). Reported: output tokens/s
and the ratio variant / plain (1.0 = free).

Part 2 (sampler), the batched sampling call alone, [B, vocab] logits, per variant, ours with the
feature / ours without it (fastest of the timed repeats), and the plain call against the bare draw that
was the whole sampler before these features (`draw only (anchor)`): what the features cost unused.

Results go to --out (default $OUT or ./bench-out) as bench_sampling_features.{json,txt} with the device,
versions, command and commit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]  # runs from a checkout without an install (GPU images)

from archrouter.backends.engine import Engine, EngineConfig  # noqa: E402
from archrouter.backends.families import FAMILIES, init_random  # noqa: E402
from archrouter.backends.protocol import GenerationRequest, SamplingParams  # noqa: E402
from archrouter.backends.sampling import TokenCounts, _draw, sample_rows  # noqa: E402

WORDS = "the ledger moves alice pays bob three then carol reads the log and swaps cup one with cup two".split()
SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 40},
                                          "items": {"type": "array", "items": {"type": "integer"}}},
          "required": ["name", "items"]}


def grammar() -> str:
    from llguidance import LLMatcher

    return LLMatcher.grammar_from_json_schema(json.dumps(SCHEMA), defaults={"whitespace_flexible": False})


def variants(no_end: dict[int, float]) -> dict[str, dict]:
    g = grammar()
    base = {"logit_bias": no_end}
    return {
        "plain": base,
        "plain-again": base,
        "n=4": {**base, "n": 4},
        "logprobs": {**base, "logprobs": 5},
        "penalties": {**base, "presence_penalty": 0.5, "frequency_penalty": 0.5, "repetition_penalty": 1.2},
        "min_p+top_k": {**base, "min_p": 0.05, "top_k": 20},
        "json_schema": {**base, "grammar": g},
        "all": {**base, "logprobs": 5, "presence_penalty": 0.5, "frequency_penalty": 0.5,
                "repetition_penalty": 1.2, "min_p": 0.05, "top_k": 20, "grammar": g},
    }


async def burst(engine: Engine, prompts: list[str], tokens: int, extra: dict) -> tuple[float, int]:
    n = extra.get("n", 1)
    sp = extra
    # the same number of sequences for every variant: n=4 sends a quarter of the requests
    reqs = prompts[:: n] if n > 1 else prompts

    async def one(i: int, prompt: str) -> int:
        params = SamplingParams(temperature=1.0, seed=i, max_tokens=tokens, **sp)
        out = 0
        async for c in engine.generate(GenerationRequest(f"r{i}", params, prompt=prompt)):
            if c.finish_reason:  # each choice's last chunk carries its token count
                out += c.completion_tokens
        return out

    t0 = time.perf_counter()
    counts = await asyncio.gather(*(one(i, p) for i, p in enumerate(reqs)))
    wall = time.perf_counter() - t0
    return wall, sum(counts)


async def bench_engine(family: str, args, root: Path) -> list[dict]:
    ckpt = root / family
    init_random(family, "tiny", ckpt, seed=0)
    cfg = EngineConfig(max_num_seqs=max(32, args.streams), max_num_batched_tokens=2048, state_cache="off")
    engine = Engine.from_checkpoint(family, family, ckpt, context_length=1024, device=args.device, config=cfg)
    rnd = random.Random(0)
    prompts = [" ".join(rnd.choice(WORDS) for _ in range(rnd.randint(8, 24))) for _ in range(args.streams)]
    vs = variants({t: -100.0 for t in engine.tokenizer.eos_ids})
    try:
        for extra in vs.values():  # warm every path once (grammar compile, allocations)
            await burst(engine, prompts[:4], 4, extra)
        walls: dict[str, list[float]] = {k: [] for k in vs}
        toks: dict[str, int] = {}
        for _ in range(args.repeats):
            for name, extra in vs.items():
                wall, n = await burst(engine, prompts, args.tokens, extra)
                walls[name].append(wall)
                toks[name] = n
    finally:
        await engine.close()
    plain = statistics.median(walls["plain"])
    rows = []
    for name in vs:
        med = statistics.median(walls[name])
        rows.append({"family": family, "variant": name, "wall_s": round(med, 4), "tokens": toks[name],
                     "tokens_per_s": round(toks[name] / med, 1), "ratio_vs_plain_time": round(med / plain, 3)})
    return rows


def bench_sampler(args) -> list[dict]:
    dev = torch.device(args.device)
    rows = []
    from archrouter.backends.grammar import words

    for vocab in (263, 65536):
        b = 32
        logits = torch.randn(b, vocab, device=dev)
        counts = TokenCounts(vocab, dev)
        slots = torch.tensor([counts.alloc(list(range(50))) for _ in range(b)], device=dev)
        c, seen = counts.rows(slots)
        mask = torch.full((b, words(vocab)), 0x0F0F0F0F, dtype=torch.int32)
        gens = [None] * b
        cases = {
            "plain": ([SamplingParams(temperature=1.0)] * b, {}),
            "logprobs(5)": ([SamplingParams(temperature=1.0, logprobs=5)] * b, {}),
            "penalties": ([SamplingParams(temperature=1.0, presence_penalty=0.5, frequency_penalty=0.5,
                                          repetition_penalty=1.2)] * b, {"counts": c, "prompt_seen": seen}),
            "logit_bias(8)": ([SamplingParams(temperature=1.0, logit_bias={i: 1.0 for i in range(8)})] * b, {}),
            "bitmask": ([SamplingParams(temperature=1.0)] * b, {"bitmask": mask}),
            "min_p+top_k": ([SamplingParams(temperature=1.0, min_p=0.05, top_k=20)] * b, {}),
        }
        times = {}
        # the anchor: the bare draw (temperature, top-k/p, the race), i.e. the sampler before these features
        plain_params = cases["plain"][0]
        cases = {"draw only (anchor)": (plain_params, None), **cases}
        for name, (params, kw) in cases.items():
            def call(params=params, kw=kw, logits=logits, gens=gens):  # noqa: ANN202
                if kw is None:
                    return _draw(logits, params, gens).tolist()
                return sample_rows(logits, params, gens, **kw).packed().tolist()

            for _ in range(3):
                call()
            ts = []
            for _ in range(args.sampler_repeats):
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                call()
                ts.append(time.perf_counter() - t0)
            times[name] = min(ts)  # the least disturbed run: other processes share these cores
        for name, t in times.items():
            rows.append({"vocab": vocab, "batch": b, "variant": name, "us": round(t * 1e6, 1),
                         "ratio_vs_plain": round(t / times["plain"], 3)})
    return rows


def header(args) -> dict:
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    import llguidance

    dev = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu ({platform.processor() or 'x86_64'}, " \
        f"{torch.get_num_threads()} threads)"
    return {"device": dev, "torch": torch.__version__, "llguidance": llguidance.__version__ if hasattr(
        llguidance, "__version__") else "?", "python": platform.python_version(), "commit": commit,
            "command": " ".join(["python", *sys.argv])}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--families", nargs="+", default=list(FAMILIES))
    ap.add_argument("--streams", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sampler-repeats", type=int, default=50)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--out", default=os.environ.get("OUT", "bench-out"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.smoke:
        args.streams, args.tokens, args.repeats, args.sampler_repeats = 4, 4, 1, 3
        args.families = args.families[:1]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {**header(args), "engine": [], "sampler": []}
    lines = [f"# {k}: {v}" for k, v in header(args).items()]
    with tempfile.TemporaryDirectory() as tmp:
        for fam in args.families:
            rows = asyncio.run(bench_engine(fam, args, Path(tmp)))
            result["engine"] += rows
            for r in rows:
                lines.append(f"{r['family']:12s} {r['variant']:12s} {r['tokens_per_s']:9.1f} tok/s  "
                             f"time x{r['ratio_vs_plain_time']:.3f} of plain")
                print(lines[-1], flush=True)
        with torch.inference_mode():
            result["sampler"] = bench_sampler(args)
        for r in result["sampler"]:
            lines.append(f"sampler vocab={r['vocab']:6d} B={r['batch']} {r['variant']:14s} {r['us']:9.1f} us  "
                         f"x{r['ratio_vs_plain']:.3f} of plain")
            print(lines[-1], flush=True)
    (out / "bench_sampling_features.json").write_text(json.dumps(result, indent=1))
    (out / "bench_sampling_features.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
