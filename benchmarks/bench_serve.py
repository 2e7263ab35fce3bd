"""Router overhead of the Ray Serve path against embedded mode, side by side in one run.

Both serve the same policy over the same tiny random checkpoints (a Transformer and a Mamba):
embedded mode as `archrouter serve --embedded` in a subprocess, the Serve app of ray_app.py on a
local Ray instance (one ingress replica, one replica per backend). A closed-loop asyncio load
generator sends N requests at each concurrency and measures requests/s and latency percentiles for

  route  POST /v1/route (the decision only: HTTP + auth + features + policy; no backend call)
  chat   POST /v1/chat/completions, max_tokens=1 (the whole path: decision, dispatch through the
         handle or in process, one decode step, response)

and prints serve / embedded ratios. Results (JSON + text table) go under $OUT (default ./bench-out).

    python benchmarks/bench_serve.py            # 1, 4, 16, 64 concurrent
    python benchmarks/bench_serve.py --smoke    # 1 and 4, few requests
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]  # runs from a checkout without an install (GPU images)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_policy(root: Path) -> Path:
    from archrouter.backends.families import init_random

    init_random("transformer", "tiny", root / "transformer", seed=1)
    init_random("mamba", "tiny", root / "mamba", seed=2)
    classifier = ROOT / "models/classifier/task-classifier.json.gz"
    path = root / "policy.yaml"
    path.write_text(f"""name: bench
classifier: {classifier}
backends:
  - {{name: transformer, family: transformer, checkpoint: {root / "transformer"}, context_length: 512}}
  - {{name: mamba, family: mamba, checkpoint: {root / "mamba"}, context_length: 2048}}
rules:
  - name: long
    when: {{prompt_tokens: {{gt: 200}}}}
    route: mamba
    fallbacks: [transformer]
default: {{route: transformer, fallbacks: [mamba]}}
""")
    return path


def wait_up(url: str, timeout: float = 120.0) -> None:
    end = time.time() + timeout
    while time.time() < end:
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not become ready")


async def load(url: str, path: str, body: dict, concurrency: int, n: int) -> dict:
    latencies: list[float] = []
    errors = 0
    todo = iter(range(n))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        async def worker() -> None:
            nonlocal errors
            for _ in todo:
                t0 = time.perf_counter()
                r = await client.post(path, json=body)
                latencies.append(time.perf_counter() - t0)
                errors += r.status_code != 200

        for _ in range(min(concurrency, 4)):  # warm connections and code paths
            await client.post(path, json=body)
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    latencies.sort()
    return {"rps": n / wall, "p50_ms": 1000 * statistics.median(latencies),
            "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], "errors": errors, "n": n}


def start_embedded(policy: Path, port: int) -> subprocess.Popen:
    # one torch thread, as Ray gives its workers (OMP_NUM_THREADS=1 for fractional num_cpus): same engine setup
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
           "ARCHROUTER_LOG_FORMAT": "json", "ARCHROUTER_WATCH_POLICY": "false",
           "ARCHROUTER_RPM": "100000000", "OMP_NUM_THREADS": "1"}
    env.pop("REDIS_URL", None)
    cmd = [sys.executable, "-m", "archrouter", "serve", "--embedded", "--port", str(port),
           "--policy", str(policy)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_serve(policy: Path, port: int) -> None:
    import ray
    from ray import serve

    from archrouter import ray_app
    ray.init(address="local", include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}})
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    args = {"policy": str(policy),
            "settings": {"log_format": "json", "watch_policy": False, "rpm": 100_000_000,
                         "backend_assign_timeout_s": 60},
            "ingress": {"num_replicas": 1, "max_ongoing_requests": 256, "ray_actor_options": {"num_cpus": 0.25}},
            "backend_defaults": {"num_replicas": 1, "max_ongoing_requests": 256,
                                 "ray_actor_options": {"num_cpus": 0.25}}}
    serve.run(ray_app.build(args), name="archrouter", route_prefix="/")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="1 and 4 concurrent, few requests")
    ap.add_argument("--concurrency", default=None, help="comma-separated (default 1,4,16,64)")
    ap.add_argument("--requests", type=int, default=None, help="requests per point (default max(64, 8*c))")
    a = ap.parse_args()
    levels = [int(c) for c in (a.concurrency or ("1,4" if a.smoke else "1,4,16,64")).split(",")]
    out = Path(os.environ.get("OUT", "bench-out"))
    out.mkdir(parents=True, exist_ok=True)
    workloads = {
        "route": ("/v1/route", {"model": "auto", "messages": [{"role": "user", "content": "hello, how are you?"}]}),
        "chat": ("/v1/chat/completions", {"model": "auto", "messages": [{"role": "user", "content": "hello"}],
                                          "max_tokens": 1, "temperature": 0}),
    }
    with tempfile.TemporaryDirectory() as tmp:
        policy = write_policy(Path(tmp))
        emb_port, serve_port = free_port(), free_port()
        proc = start_embedded(policy, emb_port)
        try:
            start_serve(policy, serve_port)
            urls = {"embedded": f"http://127.0.0.1:{emb_port}", "serve": f"http://127.0.0.1:{serve_port}"}
            for url in urls.values():
                wait_up(url)
            rows = []
            for wl, (path, body) in workloads.items():
                for c in levels:
                    n = a.requests or (16 if a.smoke else max(64, 8 * c))
                    point = {"workload": wl, "concurrency": c}
                    for mode, url in urls.items():  # the same point back to back, so load drift hits both
                        point[mode] = asyncio.run(load(url, path, body, c, n))
                    point["rps_ratio"] = point["serve"]["rps"] / point["embedded"]["rps"]
                    point["p50_ratio"] = point["serve"]["p50_ms"] / point["embedded"]["p50_ms"]
                    point["overhead_p50_ms"] = point["serve"]["p50_ms"] - point["embedded"]["p50_ms"]
                    rows.append(point)
                    print(f"{wl:5s} c={c:3d}  embedded {point['embedded']['rps']:8.1f} rps  "
                          f"serve {point['serve']['rps']:8.1f} rps", file=sys.stderr, flush=True)
        finally:
            proc.terminate()
            proc.wait(30)
            import ray
            from ray import serve

            if ray.is_initialized():
                serve.shutdown()
                ray.shutdown()

    import ray
    import torch

    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    meta = {"command": " ".join([os.path.basename(sys.executable), *sys.argv]), "commit": commit,
            "machine": platform.node(),
            "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__, "ray": ray.__version__,
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "smoke": a.smoke,
            "setup": "1 ingress replica + 1 replica per backend (tiny random transformer, mamba), local Ray; "
                     "embedded: archrouter serve --embedded in a subprocess (OMP_NUM_THREADS=1 like Ray workers); "
                     "closed-loop httpx load from this process"}
    header = (f"{'workload':8s} {'conc':>4s} {'emb rps':>9s} {'serve rps':>9s} {'rps s/e':>8s} "
              f"{'emb p50':>8s} {'serve p50':>9s} {'p50 s/e':>8s} {'+ms p50':>8s} {'errors':>7s}")
    lines = [header, "-" * len(header)]
    for p in rows:
        e, s = p["embedded"], p["serve"]
        lines.append(f"{p['workload']:8s} {p['concurrency']:4d} {e['rps']:9.1f} {s['rps']:9.1f} {p['rps_ratio']:8.2f} "
                     f"{e['p50_ms']:8.1f} {s['p50_ms']:9.1f} {p['p50_ratio']:8.2f} {p['overhead_p50_ms']:8.1f} "
                     f"{e['errors'] + s['errors']:7d}")
    table = "\n".join([f"# {k}: {v}" for k, v in meta.items()] + lines)
    (out / "serve_vs_embedded.json").write_text(json.dumps({"meta": meta, "points": rows}, indent=2))
    (out / "serve_vs_embedded.txt").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
