"""Decision latency (features + classifier + rules) and the router's overhead over the generator.

    python benchmarks/router_decision.py [--policy config/policy.yaml] [--out benchmarks/results/router_decision.json]

Decision latency is measured in process at prompt lengths of 100, 1k and 10k tokens (byte-level:
one token per byte). Overhead: the same greedy request through the HTTP server on loopback vs
calling the backend's generator directly, both in this process, median over repeats.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]  # runs from a checkout without an install (GPU images)

from archrouter.backends.families import init_random  # noqa: E402
from archrouter.backends.generator import Generator  # noqa: E402
from archrouter.backends.protocol import GenerationRequest, SamplingParams  # noqa: E402
from archrouter.policies.loader import load_policy  # noqa: E402

WORDS = (
    "the state of cup two after we swap it with cup one is then read back from the log file "
    "value key parity sum series report server time error line code function return"
).split()


def prompt_of(tokens: int, rnd: random.Random) -> str:
    out = []
    while sum(len(w) + 1 for w in out) < tokens:
        out.append(rnd.choice(WORDS))
    return " ".join(out)[:tokens]


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def decision_latency(policy_path: Path, repeats: int) -> dict:
    policy = load_policy(policy_path)
    rnd = random.Random(0)
    out = {}
    for n in (100, 1000, 10000):
        prompts = [prompt_of(n, rnd) for _ in range(20)]
        for p in prompts[:5]:  # warm-up
            policy.decide(policy.features(messages=[{"role": "user", "content": p}], prompt=None, max_tokens=256,
                                          metadata={}, session_id=None))
        times = []
        for i in range(repeats):
            p = prompts[i % len(prompts)]
            t0 = time.perf_counter()
            f = policy.features(messages=[{"role": "user", "content": p}], prompt=None, max_tokens=256,
                                metadata={}, session_id=None)
            policy.decide(f)
            times.append((time.perf_counter() - t0) * 1000)
        out[n] = {"p50_ms": statistics.median(times), "p99_ms": pct(times, 0.99), "n": repeats}
    return out


def overhead(repeats: int) -> dict:
    import uvicorn

    from archrouter.router.app import create_app
    from archrouter.router.settings import Settings
    from tests.router.conftest import free_port, policy_text

    tmp = Path(tempfile.mkdtemp())
    init_random("transformer", "tiny", tmp / "tiny", seed=1)
    init_random("transformer", "tiny", tmp / "small", seed=2)
    (tmp / "policy.yaml").write_text(policy_text(tmp))
    settings = Settings(port=free_port(), policy=str(tmp / "policy.yaml"), log_format="json", watch_policy=False)
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=settings.port, log_level="error"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    gen = Generator.from_checkpoint("tiny", "transformer", tmp / "tiny", context_length=512)
    body = {"model": "tiny", "messages": [{"role": "user", "content": "How are you today?"}], "max_tokens": 8,
            "temperature": 0}

    async def direct() -> float:
        t0 = time.perf_counter()
        req = GenerationRequest("bench", SamplingParams(temperature=0, max_tokens=8), messages=body["messages"])
        async for _ in gen.generate(req):
            pass
        return time.perf_counter() - t0

    direct_t, http_t = [], []
    with httpx.Client(base_url=f"http://127.0.0.1:{settings.port}", timeout=60) as c:
        for i in range(repeats + 3):
            d = asyncio.run(direct())
            t0 = time.perf_counter()
            r = c.post("/v1/chat/completions", json=body)
            h = time.perf_counter() - t0
            assert r.status_code == 200, r.text
            if i >= 3:
                direct_t.append(d * 1000)
                http_t.append(h * 1000)
    server.should_exit = True
    d50, h50 = statistics.median(direct_t), statistics.median(http_t)
    return {"direct_p50_ms": d50, "http_p50_ms": h50, "overhead_p50_ms": h50 - d50, "ratio_http_over_direct": h50 / d50,
            "max_tokens": 8, "n": repeats}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--policy", type=Path, default=ROOT / "config/policy.yaml")
    ap.add_argument("--repeats", type=int, default=300)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    res = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch thread, "
                   f"python {platform.python_version()}, torch {torch.__version__}",
        "command": " ".join(sys.argv),
        "decision": decision_latency(args.policy, args.repeats),
        "overhead": overhead(max(10, args.repeats // 10)),
    }
    print(f"{'prompt tokens':>14} {'p50 ms':>8} {'p99 ms':>8}")
    for n, r in res["decision"].items():
        print(f"{n:>14} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f}")
    o = res["overhead"]
    print(f"router overhead (HTTP + policy vs generator direct, {o['max_tokens']} tokens): "
          f"{o['overhead_p50_ms']:.2f} ms p50; ratio {o['ratio_http_over_direct']:.3f}")
    if args.out:
        args.out.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
