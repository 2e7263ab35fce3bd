"""Recurrent-state affinity across Ray Serve replicas: turn-10 time to first token, affinity on vs off.

    python benchmarks/bench_affinity.py --out benchmarks/results/affinity-cpu

Two replicas of one Mamba backend (the `base` preset, random weights: the timing is the point) on a local
Ray instance on the CPU, real Redis as the engines' shared state tier. C conversations of 10 turns each;
every turn repeats the conversation so far and adds a user message, so its prompt extends the previous
one and the engine restores the previous turn's state: from the device tier when the turn lands on the
replica that served the previous one, else from Redis (or, without Redis, recomputed). The conversations
run concurrently, turn by turn. Modes, each a fresh deploy with its own keys:
  on        the StateAffinityRouter steers turns to the replica holding the state (router/ray_affinity.py)
  off       the same router only counts (Serve's usual choice decides), Redis shared tier
  off-noredis  Serve's default router, no Redis: a turn on the other replica recomputes its prefix
Prints the median TTFT of turn 10 per mode, the ratios, and the share of later turns that landed on
the replica holding their state (the device-tier hit rate); writes bench_affinity.json/.txt to --out.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]
from archrouter.backends.families import init_random  # noqa: E402
from tests.conftest import CLASSIFIER  # noqa: E402

REDIS = "redis://127.0.0.1:6379/0"


def ttft(client: httpx.Client, messages: list[dict], max_tokens: int) -> tuple[float, str]:
    t0 = time.perf_counter()
    first, text = None, []
    body = {"model": "auto", "messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": True}
    with client.stream("POST", "/v1/chat/completions", json=body) as s:
        s.raise_for_status()
        for line in s.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            delta = json.loads(line[6:])["choices"]
            if delta and first is None:
                first = time.perf_counter() - t0
            if delta:
                text.append(delta[0]["delta"].get("content") or "")
    return first or float("nan"), "".join(text)


def run_mode(mode: str, url: str, convs: int, turns: int, max_tokens: int, ns: str) -> dict:
    per_turn: dict[int, list[float]] = {t: [] for t in range(turns)}
    history = [[{"role": "user", "content": f"[{mode} {uuid.uuid4().hex[:8]} #{c}] Let us keep a log of the "
                 "ship's cargo as it changes, one line per port."}] for c in range(convs)]
    def turn(client: httpx.Client, t: int, c: int) -> None:
        ms, answer = ttft(client, history[c], max_tokens)
        per_turn[t].append(ms * 1000)
        history[c] += [{"role": "assistant", "content": answer},
                       {"role": "user", "content": f"Port {t + 1}: unload {3 + t} crates of tea, "
                                                   f"load {2 + c} barrels of oil. What is aboard now?"}]

    # the conversations' turns run concurrently (a turn waits for the conversation's previous one), so the
    # replicas carry load and Serve's usual choice spreads requests as it would in service
    with httpx.Client(base_url=url, timeout=120) as client, cf.ThreadPoolExecutor(convs) as pool:
        for t in range(turns):
            list(pool.map(lambda c, t=t: turn(client, t, c), range(convs)))
    time.sleep(0.5)
    stats = {k.decode(): int(v) for k, v in redis.Redis.from_url(REDIS).hgetall(f"{ns}:stats").items()}
    later = stats.get("turns", 0)
    return {"mode": mode, "ttft_ms_by_turn": {t + 1: statistics.median(v) for t, v in per_turn.items()},
            "turn10_ttft_ms": statistics.median(per_turn[turns - 1]), "turn10_all_ms": per_turn[turns - 1],
            "affinity_counters": stats,
            "device_tier_hit_rate": stats.get("owner_routed", 0) / later if later else None}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/affinity-cpu")
    ap.add_argument("--conversations", type=int, default=6)
    ap.add_argument("--turns", type=int, default=10)
    ap.add_argument("--max-tokens", type=int, default=12)
    ap.add_argument("--preset", default="base")
    ap.add_argument("--rounds", type=int, default=2, help="modes alternate, this many times (CPU noise)")
    args = ap.parse_args()
    import ray
    from ray import serve

    from archrouter import ray_app
    from tests.router.conftest import free_port

    work = Path("/tmp") / f"bench-affinity-{uuid.uuid4().hex[:6]}"
    init_random("mamba", args.preset, work / "mamba", seed=0)
    policy = work / "policy.yaml"
    policy.write_text(f"name: affinity-bench\nclassifier: {CLASSIFIER}\nbackends:\n"
                      f"  - {{name: mamba, family: mamba, checkpoint: {work / 'mamba'}, context_length: 8192}}\n"
                      "default: {route: mamba}\n")
    port = free_port()
    ray.init(address="local", num_cpus=3, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}})
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    results = []
    try:
        for mode in ("on", "off", "off-noredis") * args.rounds:
            ns = f"archrouter:bench:aff:{uuid.uuid4().hex}"
            redis_url = None if mode == "off-noredis" else REDIS
            cfg = {"policy": str(policy), "affinity_prefix": ns,
                   "state_affinity": {"on": "on", "off": "measure", "off-noredis": "off"}[mode],
                   "settings": {"redis_url": redis_url, "watch_policy": False, "log_format": "json",
                                "policy_sync": False, "rpm": 100000},
                   "ingress": {"num_replicas": 1, "max_ongoing_requests": 64, "ray_actor_options": {"num_cpus": 0.1}},
                   "backend_defaults": {"num_replicas": 2, "max_ongoing_requests": 8,
                                        "ray_actor_options": {"num_cpus": 0.5}}}
            serve.run(ray_app.build(cfg), name="archrouter", route_prefix="/")
            res = run_mode(mode, f"http://127.0.0.1:{port}", args.conversations, args.turns, args.max_tokens, ns)
            results.append(res)
            print(f"{mode:>12}: turn-10 TTFT {res['turn10_ttft_ms']:.1f} ms; device-tier hit rate "
                  f"{res['device_tier_hit_rate']}", flush=True)
            serve.delete("archrouter")
            r = redis.Redis.from_url(REDIS)
            for k in r.scan_iter(f"{ns}*"):
                r.delete(k)
    finally:
        serve.shutdown()
        ray.shutdown()
    def pooled(mode: str) -> dict:
        rs = [r for r in results if r["mode"] == mode]
        counters = {k: sum(r["affinity_counters"].get(k, 0) for r in rs) for k in
                    ("new", "turns", "owner_routed", "owner_busy", "owner_gone")}
        return {"turn10_ttft_ms": statistics.median([x for r in rs for x in r["turn10_all_ms"]]),
                "device_tier_hit_rate": counters["owner_routed"] / counters["turns"] if counters["turns"] else None,
                "affinity_counters": counters}

    modes = {m: pooled(m) for m in ("on", "off", "off-noredis")}
    summary = {
        "modes": modes,
        "turn10_ttft_ratio_off_over_on": modes["off"]["turn10_ttft_ms"] / modes["on"]["turn10_ttft_ms"],
        "turn10_ttft_ratio_noredis_over_on": modes["off-noredis"]["turn10_ttft_ms"] / modes["on"]["turn10_ttft_ms"],
    }
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    import torch

    env = {"device": "cpu", "cpus_for_ray": 3, "machine": platform.processor() or platform.machine(),
           "python": platform.python_version(), "torch": torch.__version__, "ray": ray.__version__,
           "commit": commit, "command": "python " + " ".join(sys.argv), "preset": args.preset,
           "conversations": args.conversations, "turns": args.turns, "max_tokens": args.max_tokens,
           "rounds": args.rounds, "load_avg_1m_at_end": os.getloadavg()[0]}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_affinity.json").write_text(json.dumps({"env": env, "results": results, **summary}, indent=2))
    lines = [f"{m:>12}: turn-10 TTFT median {r['turn10_ttft_ms']:8.1f} ms   device-tier hit rate "
             f"{'-' if r['device_tier_hit_rate'] is None else format(r['device_tier_hit_rate'], '.2f')}"
             for m, r in modes.items()]
    lines += [f"turn-10 TTFT off/on (both with Redis): {summary['turn10_ttft_ratio_off_over_on']:.2f}x",
              f"turn-10 TTFT off without Redis / on: {summary['turn10_ttft_ratio_noredis_over_on']:.2f}x",
              json.dumps(env)]
    (args.out / "bench_affinity.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
