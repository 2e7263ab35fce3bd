"""Continuous-batching engine vs one-request-at-a-time generation, and the recurrent-state cache.

    python benchmarks/bench_engine.py --threads 1          # CPU, tiny random configs, every family
    python benchmarks/bench_engine.py --device cuda        # ~0.1-0.2B configs, bf16, bounded by --budget-s (330)
    python benchmarks/bench_engine.py --device cuda --size large   # ~1B Llama, mamba-1.4b shape
    python benchmarks/bench_engine.py --smoke              # seconds: checks the script end to end
    python benchmarks/bench_engine.py --size small --smoke # the GPU-sized models through the engine on CPU

Part 1, per family and for 1, 8, 32, 128 concurrent streams: the same requests (prompt lengths and
max_tokens drawn once from a seeded RNG, greedy) through the Engine and through the sequential
Generator (its lock serialises them, as main's router did before the engine); both share one model.
Reported: output tokens/s over the whole burst, time to first token p50/p99 (from submission,
queueing included) and inter-token latency p50/p99 (gaps between streamed tokens), and the
engine/sequential ratios. Each stream count first runs once untimed through the engine, so Triton's
compiles and autotuning for that count's shapes (prompt-length and batch buckets) are paid before
either side is timed, not by whichever runs first. The sequential baseline runs up to
--seq-max-streams (8 on CUDA: it is slow); beyond, its throughput is the last measured one
(one request at a time does not get faster with more waiting) and the row says `seq_estimated`.

Beside each engine row on CUDA (--anchors, default there), on the same prompts (token ids) and
max_tokens: Hugging Face transformers' static-batch `generate()` (left-padded, greedy, min_new_tokens =
max_tokens) and its continuous-batching `generate_batch()` where HF supports the family (Llama and Mamba
load our checkpoints as LlamaForCausalLM / MambaForCausalLM; HF has no RWKV-7 and no xlstm-package
model), and the family's ceiling: its own decode loop without the engine (the same slot pool, prompts
prefilled in one packed forward, then `max_tokens` decode steps replayed from the captured graph with
argmax on the device, nothing read back until the end; and the same with the prompts' one packed
prefill forward counted in). Reported as ratios: engine / HF generate and engine / ceiling.

Part 2, per family: a 10-turn chat over a ~4k-token document (system message), the next question
appended to the previous answer each turn; time to first token of each turn with the state cache off
and on (fresh engines, states kept on the device, no Redis). Each engine first holds a 2-turn chat over
another document of the same length, untimed, so long-prefill shapes, state copies and restores are
warm. Reported: turn-10 TTFT both ways and their ratio.

Time: --budget-s bounds the whole run (default 330 s on CUDA, none on CPU); each family gets an equal
share of what is left when it starts, and a phase that would run past its share is cut and marked.
Results are written after every row to --out (default $OUT or ./bench-out): bench_engine.json and
bench_engine.txt (device, torch / triton versions, command, git commit), so a cut run leaves results.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
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
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]  # runs from a checkout without an install (GPU images)

from archrouter.backends import families  # noqa: E402
from archrouter.backends.engine import Engine, EngineConfig  # noqa: E402
from archrouter.backends.families import FAMILIES, family_module  # noqa: E402
from archrouter.backends.generator import Generator, is_trained  # noqa: E402
from archrouter.backends.protocol import BackendInfo, GenerationRequest, SamplingParams  # noqa: E402
from archrouter.backends.tokenizer import load_tokenizer  # noqa: E402

WORDS = ("the ledger moves alice pays bob three then carol reads the log and swaps cup one with cup two "
         "while the server reports an error on line seven of the parity function").split()

# family -> (preset, config overrides) per --size
SIZES = {
    "tiny": {f: ("tiny", {}) for f in FAMILIES},
    # ~0.1-0.2B: Llama 189M (byte vocab), the shapes of mamba-130m, RWKV-7 0.1B and a 125M xLSTM[7:1]
    "small": {"transformer": ("180m", {}), "mamba": ("130m", {}), "rwkv": ("0.1b", {}), "xlstm": ("125m", {})},
    # ~1B Llama and the mamba-1.4b shape; RWKV-7 and xLSTM keep their largest presets
    "large": {
        "transformer": ("1b", {}),
        "mamba": ("130m", {"hidden_size": 2048, "num_hidden_layers": 48, "intermediate_size": 4096,
                           "time_step_rank": 128}),
        "rwkv": ("0.1b", {}),
        "xlstm": ("125m", {}),
    },
}


class Budget:
    """Wall-clock bounds: the whole run, and the running family's share of what is left."""

    def __init__(self, total_s: float | None):
        self.end = time.monotonic() + total_s if total_s else math.inf
        self.family_end = self.end

    def start_family(self, families_left: int) -> None:
        self.family_end = time.monotonic() + self.left() / max(families_left, 1)

    def left(self) -> float:
        return self.end - time.monotonic()

    def family_left(self) -> float:
        return min(self.family_end, self.end) - time.monotonic()


class Cut(Exception):
    """A phase ran out of its share of the time budget."""


async def bounded(coro, budget: Budget, until: float = math.inf):  # noqa: ANN001, ANN201
    """Run `coro` within the family's share of the budget (and before `until`, a monotonic time)."""
    left = min(budget.family_left(), until - time.monotonic())
    if left <= 0:
        coro.close()
        raise Cut
    if math.isinf(left):
        return await coro
    try:
        return await asyncio.wait_for(coro, left)
    except TimeoutError:
        raise Cut from None


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def text_of(n_words: int, rnd: random.Random) -> str:
    return " ".join(rnd.choice(WORDS) for _ in range(n_words))


def make_checkpoint(family: str, size: str, root: Path) -> Path:
    preset, overrides = SIZES[size][family]
    mod = family_module(family)
    torch.manual_seed(0)
    cfg = {**mod.random_config(preset), **overrides}
    path = root / family
    mod.save(mod.from_config(cfg), path)
    return path


class Backend:
    """One model on the device, shared by the engine(s) and the sequential generator of a family."""

    def __init__(self, family: str, ckpt: Path, args, device: str, dtype: torch.dtype):  # noqa: ANN001
        self.family, self.ckpt, self.args, self.dtype = family, ckpt, args, dtype
        self.model = families.load(family, ckpt, device=device, dtype=dtype)
        self.tokenizer = family_module(family).__dict__.get("load_tokenizer", load_tokenizer)(ckpt)
        self.info = BackendInfo(name=family, family=family, context_length=args.context, checkpoint=str(ckpt),
                                trained=is_trained(ckpt), parameters=self.model.num_parameters())

    def engine(self, **config) -> Engine:  # noqa: ANN003
        cfg = EngineConfig(redis_url=None, max_num_batched_tokens=self.args.step_tokens,
                           kv_token_budget=self.args.kv_budget, cuda_graphs=self.args.cuda_graphs,
                           **config)  # fmt: skip
        return Engine(self.info, self.model, self.tokenizer, cfg, dtype=self.dtype)

    def generator(self) -> Generator:
        return Generator(self.info, self.model, self.tokenizer)


# ----------------------------------------------------------------------------- anchors and ceiling

HF_CLASSES = {"transformer": "LlamaForCausalLM", "mamba": "MambaForCausalLM"}


class HFAnchor:
    """Hugging Face transformers on our checkpoint (same weights, same prompts): what a user would run."""

    def __init__(self, backend: Backend):
        import transformers

        self.version = transformers.__version__
        cls = getattr(transformers, HF_CLASSES[backend.family])
        try:
            self.model = cls.from_pretrained(backend.ckpt, dtype=backend.dtype)
        except TypeError:  # transformers 4.x spells it torch_dtype
            self.model = cls.from_pretrained(backend.ckpt, torch_dtype=backend.dtype)
        self.model = self.model.to(backend.model.parameters().__next__().device).eval()
        self.device = next(self.model.parameters()).device
        self.pad = 0

    def generate(self, prompts: list[list[int]], max_tokens: int) -> float:
        """Static batch: one left-padded generate() call for all prompts; output tokens/s."""
        width = max(map(len, prompts))
        ids = torch.full((len(prompts), width), self.pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompts):
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        sync(self.device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                      max_new_tokens=max_tokens, min_new_tokens=max_tokens, do_sample=False,
                                      pad_token_id=self.pad)  # fmt: skip
        sync(self.device)
        return (out.shape[1] - width) * len(prompts) / (time.perf_counter() - t0)

    def generate_batch(self, prompts: list[list[int]], max_tokens: int) -> float | str:
        """HF's continuous batching (paged attention), where the model supports it; output tokens/s."""
        if not hasattr(self.model, "generate_batch") or type(self.model).__name__ != "LlamaForCausalLM":
            return "n/a"  # HF's continuous batching is attention-only
        from transformers import GenerationConfig

        gc = GenerationConfig(max_new_tokens=max_tokens, do_sample=False, eos_token_id=-1, pad_token_id=self.pad)
        sync(self.device)
        t0 = time.perf_counter()
        with torch.no_grad():  # not inference_mode: HF's worker thread writes its tensors outside that mode
            out = self.model.generate_batch(inputs=prompts, generation_config=gc)
        sync(self.device)
        return sum(len(o.generated_tokens) for o in out.values()) / (time.perf_counter() - t0)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ceiling(backend: Backend, prompts: list[list[int]], max_tokens: int) -> tuple[float, float]:
    """The family's own model without the engine: output tokens/s of `max_tokens` greedy decode steps of the
    whole batch (graph replays on the same slot pool, argmax on the device, one read at the end), and the
    same with the prompts' one packed prefill forward counted in (what the engine's workload needs)."""
    from archrouter.backends.base import PackedBatch
    from archrouter.backends.engine.graphs import DecodeGraphs
    from archrouter.backends.engine.pools import KVSlots, StatePool

    model, n = backend.model, len(prompts)
    dev = next(model.parameters()).device
    with torch.inference_mode():
        if backend.family == "transformer":
            need = sum(-(-(len(p) + 2 * max_tokens + 2) // 16) for p in prompts) + 2
            pool = KVSlots(model, model.new_kv_pool(need, 16), n)
        else:
            pool = StatePool(model, n)
        slots = [pool.alloc() for _ in prompts]
        flat = [t for p in prompts for t in p]
        pool.prefill(torch.tensor(flat[:8], device=dev), PackedBatch.build([8], slots[:1], dev), flat[:8])  # warm
        pool.reset(slots[:1]) if isinstance(pool, StatePool) else (pool.release(slots[0]), pool.alloc())
        sync(dev)
        t_prefill = time.perf_counter()
        batch = PackedBatch.build([len(p) for p in prompts], slots, dev)
        last = pool.prefill(torch.tensor(flat, device=dev), batch, flat)
        sync(dev)
        t_prefill = time.perf_counter() - t_prefill
        last_token = torch.zeros(n + 1, dtype=torch.long, device=dev)
        index = torch.tensor(slots, device=dev)
        last_token.index_copy_(0, index, last.argmax(-1))
        graphs = DecodeGraphs(pool, last_token, [n], capture=dev.type == "cuda",
                              max_context=backend.info.context_length)  # fmt: skip

        def steps(k: int) -> None:
            for _ in range(k):
                out = graphs.decode(index, slots)
                if out is None:  # no graph (CPU, or a capture failure): the same step eagerly
                    out = pool.decode(last_token.index_select(0, index)[:, None], index, slots)
                last_token.index_copy_(0, index, out.argmax(-1))

        steps(2)  # capture and warm
        sync(dev)
        t0 = time.perf_counter()
        steps(max_tokens)
        sync(dev)
        wall = time.perf_counter() - t0
        for s in slots:
            pool.release(s)
    return n * max_tokens / wall, n * max_tokens / (wall + t_prefill)


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
    # time per output token after the first, per request (decode rounds stream several tokens at once, so
    # the gaps' median alone would understate a stream's pace)
    tpot = [(times[-1] - times[0]) / (len(times) - 1) for _, times, _, _ in results if len(times) > 1]
    tokens = sum(n for _, _, n, _ in results)
    return {"streams": len(prompts), "tokens": tokens, "wall_s": wall, "tok_per_s": tokens / wall,
            "ids": [ids for *_, ids in results],
            "ttft_p50_ms": 1e3 * pct(ttft, 0.5), "ttft_p99_ms": 1e3 * pct(ttft, 0.99),
            "itl_p50_ms": 1e3 * pct(itl, 0.5), "itl_p99_ms": 1e3 * pct(itl, 0.99),
            "tpot_mean_ms": 1e3 * sum(tpot) / len(tpot) if tpot else float("nan")}


async def bench_batching(backend: Backend, args, budget: Budget, emit) -> list[dict]:  # noqa: ANN001
    family = backend.family
    engine = backend.engine(max_num_seqs=max(args.streams), max_waiting=1024, state_cache="off",
                            queue_timeout_s=3600)
    seq = backend.generator()
    rows: list[dict] = []
    last_seq: dict | None = None
    # the conversation that follows keeps 40% of the family's share
    until = time.monotonic() + budget.family_left() * (1.0 if args.skip_conversation else 0.6)
    try:
        for client in (engine, seq):  # warm-up: first-call allocations, kernel compilation
            await bounded(burst(client, ["warm up"] * 2, 4), budget, until)
        for n in args.streams:
            rnd = random.Random(n)
            lo, hi = args.prompt_words
            prompts = [text_of(rnd.randint(lo, hi), rnd) for _ in range(n)]
            row: dict = {"family": family, "streams": n}
            try:
                if args.warm_each:  # this count's shapes compiled and autotuned before anything is timed
                    await bounded(burst(engine, prompts, args.max_tokens), budget, until)
                e = await bounded(burst(engine, prompts, args.max_tokens), budget, until)
                row["engine"] = e
                s = None
                if n <= args.seq_max_streams:
                    s = await bounded(burst(seq, prompts, args.max_tokens), budget, until)
                    last_seq = s
            except Cut:
                row["cut"] = "time budget"
                if "engine" in row:
                    row["engine"].pop("ids", None)
                rows.append(row)
                emit()
                print(f"  {family:12s} {n:4d} streams: cut (time budget)", flush=True)
                break
            e_ids = e.pop("ids")
            if args.alone_check:  # a few of these prompts alone through the same engine: same greedy tokens?
                k = min(n, args.alone_check)
                alone = [(await bounded(burst(engine, [p], args.max_tokens), budget, until))["ids"][0]
                         for p in prompts[:k]]  # fmt: skip
                row["greedy_alone_same"] = sum(a == b for a, b in zip(alone, e_ids[:k], strict=True)) / k
            # greedy parity: fp32 on CPU matches exactly; bf16 on GPU may drift where a batched matmul
            # rounds differently from a single row's (reported, not asserted)
            row["greedy_identical"] = (sum(a == b for a, b in zip(e_ids, s.pop("ids"), strict=True)) / n
                                       if s else None)  # fmt: skip
            if args.anchors:
                ids = [backend.tokenizer.encode(p, add_bos=True) for p in prompts]
                row.update(anchor_row(backend, ids, args.max_tokens, e["tok_per_s"]))
            row["sequential"] = s
            st = engine.stats()
            row["decode_graphs_on"], row["decode_graph_replays"] = st["decode_graphs_on"], st["decode_graph_replays"]
            ref = s or last_seq
            row["seq_estimated"] = s is None and ref is not None
            row["throughput_ratio"] = e["tok_per_s"] / ref["tok_per_s"] if ref else None
            row["ttft_p50_ratio"] = s["ttft_p50_ms"] / e["ttft_p50_ms"] if s else None
            rows.append(row)
            emit()
            ratio = row["throughput_ratio"]
            print(f"  {family:12s} {n:4d} streams: engine {e['tok_per_s']:8.1f} tok/s"
                  + (f", sequential {ref['tok_per_s']:8.1f} tok/s{' (est.)' if not s else ''}, x{ratio:.2f}"
                     if ref else "") + anchor_text(row), flush=True)  # fmt: skip
    except Cut:
        rows.append({"family": family, "cut": "time budget (warm-up)"})
        emit()
    finally:
        await engine.close()
    return rows


def anchor_row(backend: Backend, ids: list[list[int]], max_tokens: int, engine_tok_s: float) -> dict:
    """HF generate / generate_batch and the ceiling on these prompts, with the engine's ratio to each."""
    row: dict = {}
    hf = backend.hf
    if isinstance(hf, HFAnchor):
        for key, fn in (("hf_generate", hf.generate), ("hf_generate_batch", hf.generate_batch)):
            try:
                fn(ids[:2], 4)  # warm: first-call allocations, kernel selection
                row[key] = fn(ids, max_tokens)
            except Exception as exc:  # an anchor that fails is reported, the engine's figures stand
                row[key] = f"error {type(exc).__name__}: {str(exc)[:160]}"
    else:
        row["hf_generate"] = row["hf_generate_batch"] = hf
    try:
        row["ceiling"], row["ceiling_e2e"] = ceiling(backend, ids, max_tokens)
    except Exception as exc:
        row["ceiling"] = row["ceiling_e2e"] = f"error {type(exc).__name__}: {str(exc)[:160]}"
    for key in ("hf_generate", "hf_generate_batch", "ceiling", "ceiling_e2e"):
        v = row[key]
        row[f"x_{key}"] = engine_tok_s / v if isinstance(v, float) and v > 0 else None
    return row


def anchor_text(row: dict) -> str:
    def f(key: str) -> str:
        v, x = row.get(key), row.get(f"x_{key}")
        if isinstance(v, float):
            return f"{v:9.1f} (x{x:5.2f})" if x is not None else f"{v:9.1f} (x   - )"
        return f"{str(v)[:24]:>17s}"
    if "ceiling" not in row:
        return ""
    return (f" | HF generate {f('hf_generate')}, generate_batch {f('hf_generate_batch')}, ceiling {f('ceiling')}"
            f", with prefill {f('ceiling_e2e')}")


# ----------------------------------------------------------------------------- part 2: state cache


def document(tokenizer, n_tokens: int, seed: int = 7) -> str:
    rnd, words = random.Random(seed), []
    while True:
        words += [text_of(50, rnd)]
        text = " ".join(words)
        if len(tokenizer.encode(text)) >= n_tokens:
            return text


async def conversation(engine: Engine, doc: str, turns: int, max_tokens: int, out: list[dict]) -> list[dict]:
    """Appends each finished turn to `out` (so a cut conversation keeps the turns it finished)."""
    messages = [{"role": "system", "content": doc}]
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


async def bench_state_cache(backend: Backend, args, budget: Budget) -> dict:  # noqa: ANN001
    family = backend.family
    runs: dict[str, list[dict]] = {}
    doc, other = document(backend.tokenizer, args.doc_tokens), document(backend.tokenizer, args.doc_tokens, seed=8)
    for mode in ("off", "on"):
        engine = backend.engine(state_cache=mode)
        runs[mode] = []
        # the run without the cache may take half of what is left, so the one with it always gets its turn
        until = time.monotonic() + budget.family_left() * (0.5 if mode == "off" else 1.0)
        try:
            await bounded(conversation(engine, other, 2, args.turn_tokens, []), budget, until)  # warm, not timed
            await bounded(conversation(engine, doc, args.turns, args.turn_tokens, runs[mode]), budget, until)
        except Cut:
            print(f"  {family:12s} conversation with the state cache {mode}: cut after {len(runs[mode])} turns",
                  flush=True)
            return {"family": family, "cut": f"time budget (cache {mode}, {len(runs[mode])} turns done)",
                    "per_turn": {m: [{k: v for k, v in r.items() if k != "ids"} for r in runs[m]] for m in runs}}
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
    env = results["env"]
    lines = [f"device: {env['device']}  torch {env['torch']}  triton {env['triton']}  commit {env['commit'][:10]}",
             f"command: {env['command']}", f"elapsed: {results.get('elapsed_s', 0):.0f} s", "",
             "family       streams  engine tok/s  seq tok/s  x thru | TTFT p50/p99 ms engine   sequential"
             "   | ITL p50/p99 ms engine  sequential | greedy same | TPOT ms engine"]
    for r in results["batching"]:
        if "cut" in r:
            done = f"engine {r['engine']['tok_per_s']:.1f} tok/s, then " if "engine" in r else ""
            lines.append(f"{r['family']:12s} {r.get('streams', '-')!s:>7s}  {done}cut: {r['cut']}")
            continue
        e, s = r["engine"], r["sequential"]
        if s:
            seq_t = f"{s['tok_per_s']:9.1f}  {r['throughput_ratio']:6.2f}"
        elif r["throughput_ratio"] is not None:
            seq_t = f"{'est.':>9s}  {r['throughput_ratio']:6.2f}"
        else:
            seq_t = f"{'-':>9s}  {'-':>6s}"
        seq_ttft = f"{s['ttft_p50_ms']:8.1f}/{s['ttft_p99_ms']:<8.1f}" if s else f"{'-':>17s}"
        seq_itl = f"{s['itl_p50_ms']:6.1f}/{s['itl_p99_ms']:<6.1f}" if s else f"{'-':>13s}"
        lines.append(f"{r['family']:12s} {r['streams']:7d}  {e['tok_per_s']:12.1f}  {seq_t} | "
                     f"{e['ttft_p50_ms']:8.1f}/{e['ttft_p99_ms']:<8.1f} {seq_ttft} | "
                     f"{e['itl_p50_ms']:6.1f}/{e['itl_p99_ms']:<6.1f} {seq_itl} | "
                     + (f"{r['greedy_identical']:.0%}" if r["greedy_identical"] is not None else "-")
                     + f" | {e.get('tpot_mean_ms', float('nan')):.2f}")
    anchored = [r for r in results["batching"] if "ceiling" in r]
    if anchored:
        lines += ["", "engine vs what a user would run instead (HF transformers on the same checkpoint and prompts) "
                  "and vs the family's own graph-captured decode loop (ceiling); output tok/s (engine / it)",
                  "(decode steps alone; 'with prefill': the prompts' packed prefill forward counted in)",
                  "family       streams  engine tok/s | HF generate()       | HF generate_batch() | ceiling"
                  "              | ceiling with prefill | greedy alone = in batch"]
        for r in anchored:
            def cell(key: str, r: dict = r) -> str:
                v, x = r[key], r[f"x_{key}"]
                if isinstance(v, float):
                    return f"{v:9.1f} (x{x:6.2f})" if x is not None else f"{v:9.1f} (x    - )"
                return f"{str(v)[:19]:>19s}"
            same = r.get("greedy_alone_same")
            lines.append(f"{r['family']:12s} {r['streams']:7d}  {r['engine']['tok_per_s']:12.1f} | "
                         f"{cell('hf_generate')} | {cell('hf_generate_batch')} | {cell('ceiling')} | "
                         f"{cell('ceiling_e2e')} | "
                         + (f"{same:.0%}" if same is not None else "-"))
    lines += ["", "family       turns  doc tok  turn-N prompt  TTFT off ms  TTFT on ms  off/on  saved tok  identical"]
    for r in results["state_cache"]:
        if "cut" in r:
            lines.append(f"{r['family']:12s} {r['cut']}")
            continue
        lines.append(f"{r['family']:12s} {r['turns']:5d}  {r['doc_tokens']:7d}  {r['turn_prompt_tokens']:13d}  "
                     f"{r['ttft_last_off_ms']:11.1f}  {r['ttft_last_on_ms']:10.1f}  {r['ttft_ratio_off_over_on']:6.1f}"
                     f"  {r['last_turn_saved_tokens']:9d}  {r['identical_outputs']}")
    for f, err in results.get("errors", {}).items():
        lines.append(f"{f}: {err}")
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
    ap.add_argument("--seq-max-streams", type=int, default=None,
                    help="run the sequential baseline only up to this many streams (default 8 on CUDA, all on CPU)")
    ap.add_argument("--max-tokens", type=int, default=None)
    ap.add_argument("--prompt-words", nargs=2, type=int, default=None, help="prompt length range, in words")
    ap.add_argument("--step-tokens", type=int, default=None, help="engine max_num_batched_tokens")
    ap.add_argument("--kv-budget", type=int, default=None,
                    help="engine kv_token_budget (default 262144 on CUDA: 128 streams of the longest prompts fit)")
    ap.add_argument("--doc-tokens", type=int, default=4096)
    ap.add_argument("--turns", type=int, default=10)
    ap.add_argument("--turn-tokens", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--size", default=None, choices=list(SIZES),
                    help="model sizes: tiny (CPU default), small ~0.1-0.2B (CUDA default), large ~1B")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="bound on the whole run in seconds (default 330 on CUDA, none on CPU)")
    ap.add_argument("--out", default=os.environ.get("OUT", "bench-out"), help="results folder")
    ap.add_argument("--no-warm-each", dest="warm_each", action="store_false",
                    help="skip the untimed engine run before each stream count")
    ap.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false",
                    help="engine decode steps eager (CUDA graphs are on by default on CUDA)")
    ap.add_argument("--alone-check", type=int, default=None,
                    help="this many prompts of each row also run alone through the engine: share of identical "
                         "greedy outputs (default 8 on CUDA, where bf16 may round differently in a batch; 0 on CPU)")
    ap.add_argument("--anchors", default=None, action=argparse.BooleanOptionalAction,
                    help="HF generate()/generate_batch() and the ceiling beside each engine row (default: on CUDA)")
    ap.add_argument("--smoke", action="store_true", help="tiny run on CPU to check the script")
    ap.add_argument("--skip-conversation", action="store_true")
    ap.add_argument("--skip-batching", action="store_true", help="only the state-cache conversation (part 2)")
    args = ap.parse_args()
    started = time.monotonic()
    cuda = args.device == "cuda"
    if args.smoke:
        args.device, cuda = "cpu", False
        args.streams, args.doc_tokens, args.turns = [1, 4], 256, 3
        args.max_tokens = args.max_tokens or 4
        args.turn_tokens = args.turn_tokens or 2
    args.size = args.size or ("small" if cuda else "tiny")
    args.max_tokens = args.max_tokens or (32 if cuda else 16)
    args.turn_tokens = args.turn_tokens or (8 if cuda else 4)
    args.prompt_words = args.prompt_words or ([16, 96] if cuda else [2, 8])
    args.step_tokens = args.step_tokens or (2048 if cuda else 512)
    args.kv_budget = args.kv_budget or (262_144 if cuda else 65_536)
    args.seq_max_streams = args.seq_max_streams if args.seq_max_streams is not None else (8 if cuda else 128)
    args.budget_s = args.budget_s if args.budget_s is not None else (330.0 if cuda else None)
    args.context = args.doc_tokens + 1024
    args.anchors = args.anchors if args.anchors is not None else cuda
    args.alone_check = args.alone_check if args.alone_check is not None else (8 if cuda else 0)
    if args.size == "large" and args.streams == [1, 8, 32, 128]:
        args.streams = [1, 32, 128]
    if args.threads:
        torch.set_num_threads(args.threads)
    if cuda and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device")
    dtype = torch.bfloat16 if cuda else torch.float32
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {"env": environment(args.device), "args": dict(vars(args)), "batching": [], "state_cache": [],
               "models": {}, "errors": {}}
    budget = Budget(args.budget_s)

    def emit() -> None:  # after every row: a run cut by an outer time limit still leaves its results
        results["elapsed_s"] = time.monotonic() - started
        (out_dir / "bench_engine.json").write_text(json.dumps(results, indent=1))
        try:
            (out_dir / "bench_engine.txt").write_text(table(results) + "\n")
        except Exception as exc:  # the JSON above is the record; a table bug must not end the run
            print(f"table failed: {exc!r}", flush=True)

    todo = available(args.families)
    with tempfile.TemporaryDirectory() as tmp:
        for i, family in enumerate(todo):
            budget.start_family(len(todo) - i)
            if budget.family_left() <= 0:
                results["errors"][family] = "not run: time budget spent"
                emit()
                continue
            t0 = time.monotonic()
            backend = None
            try:
                ckpt = make_checkpoint(family, args.size, Path(tmp))
                backend = Backend(family, ckpt, args, args.device, dtype)
                backend.hf = "n/a (no HF class)"
                if args.anchors and family in HF_CLASSES:
                    try:
                        backend.hf = HFAnchor(backend)
                        results["env"]["transformers"] = backend.hf.version
                    except Exception as exc:
                        backend.hf = f"error {type(exc).__name__}: {str(exc)[:160]}"
                preset = SIZES[args.size][family][0]
                results["models"][family] = {"preset": preset, "parameters": backend.info.parameters,
                                             "build_s": time.monotonic() - t0}
                print(f"{family}: {preset}, {backend.info.parameters / 1e6:.1f}M parameters, "
                      f"built in {time.monotonic() - t0:.1f} s; {budget.family_left():.0f} s for it", flush=True)
                if not args.skip_batching:
                    results["batching"] += await bench_batching(backend, args, budget, emit)
                if not args.skip_conversation:
                    results["state_cache"].append(await bench_state_cache(backend, args, budget))
            except Exception as exc:  # one family's failure is reported, the others still run
                results["errors"][family] = f"FAILED {type(exc).__name__}: {exc}"[:500]
                print(f"{family}: FAILED {exc!r}", flush=True)
            finally:
                del backend
                gc.collect()
                if cuda:
                    torch.cuda.empty_cache()
                results["models"].setdefault(family, {})["elapsed_s"] = time.monotonic() - t0
                emit()
    print(table(results))


if __name__ == "__main__":
    asyncio.run(main())
