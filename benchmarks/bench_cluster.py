"""A bounded mixed workload through the router's OpenAI endpoint: routed by the policy vs all on one backend.

The workload is the capability task mix of src/archrouter/evals/tasks.py: every generator in turn (all six task types),
each item's size knob set so its prompt lands near a target length drawn log-uniformly in
[--min-prompt, --max-prompt] tokens (the zoo is byte-level: tokens are UTF-8 bytes). The same fixed list
of requests is sent twice over real HTTP by --concurrency closed-loop streaming clients:

  (a) routed   model "auto": the policy picks a backend per request
  (b) pinned   model "<--pin>" (default "transformer"): every request to the Transformer deployment

and for each it reports requests/s, tokens/s (prompt + completion, and completion alone), TTFT and
end-to-end latency p50/p99 (streamed: TTFT is the first content token), requests per backend (family),
per-GPU utilisation sampled with NVML where there is a GPU (per backend process too, where NVML gives
per-process figures), and quality: the fraction the tasks' checkers score correct (errors count as
wrong). Then the (a)/(b) ratios. JSON and text go to --out after each phase, request records as they end.

    # against a running server
    python benchmarks/bench_cluster.py --url http://127.0.0.1:8000 --out runs/cluster
    # start the embedded server (one process, no Ray) or the Ray Serve app in this process
    python benchmarks/bench_cluster.py --start embedded --policy config/policy.yaml --out runs/cluster
    python benchmarks/bench_cluster.py --start ray --serve-config config/serve.one-gpu.yaml --out runs/cluster
    # small, on a CPU
    python benchmarks/bench_cluster.py --start embedded --device cpu --requests 24 --concurrency 4 \
        --min-prompt 64 --max-prompt 1024 --out runs/cluster-cpu
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]  # runs from a checkout without an install (GPU images)

from archrouter.evals.tasks import GENERATORS, Item, check, make_item  # noqa: E402

# chat-template tokens around one user turn for the byte tokenizer (bos, user, end, assistant)
TEMPLATE_TOKENS = 4


# ----------------------------------------------------------------------------- workload


def item_near(name: str, seed: int, target_tokens: int) -> Item:
    """The item of generator `name` whose prompt is nearest `target_tokens` bytes, found by scaling its knob."""
    length = GENERATORS[name][2]
    best: Item | None = None
    for _ in range(8):  # prompts grow about linearly in the knob; a few rescalings land within a few percent
        item = make_item(name, seed, length)
        size = len(item.prompt.encode("utf-8")) + TEMPLATE_TOKENS
        if best is None or abs(size - target_tokens) < abs(len(best.prompt.encode()) + TEMPLATE_TOKENS - target_tokens):
            best = item
        new = max(1, round(length * target_tokens / max(size, 1)))
        if new == length or abs(size - target_tokens) <= 0.03 * target_tokens:
            break
        length = new
    assert best is not None
    return best


def build_workload(n: int, seed: int, min_tokens: int, max_tokens: int) -> list[Item]:
    """n items, the six task types in equal shares (each cycling through its generators), prompt lengths
    log-uniform in [min_tokens, max_tokens]."""
    rng = random.Random(seed)
    by_task: dict[str, list[str]] = {}
    for name, (task, _, _) in sorted(GENERATORS.items()):
        by_task.setdefault(task, []).append(name)
    tasks = sorted(by_task)
    items = []
    for i in range(n):
        names = by_task[tasks[i % len(tasks)]]
        target = round(math.exp(rng.uniform(math.log(min_tokens), math.log(max_tokens))))
        items.append(item_near(names[(i // len(tasks)) % len(names)], seed * 1_000_003 + i, target))
    rng.shuffle(items)  # long and short prompts interleaved, so no phase is all long
    return items


# ----------------------------------------------------------------------------- GPU sampling


class GpuSampler:
    """Samples NVML utilisation in a background thread; maps GPUs and processes to backends by process title
    (Ray names a replica's process `ray::ServeReplica:<app>:backend-<name>`). Off (with a reason) without NVML."""

    def __init__(self, period_s: float = 0.5):
        self.period_s, self.reason, self._nvml = period_s, None, None
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        try:
            import pynvml  # nvidia-ml-py

            pynvml.nvmlInit()
            self._nvml = pynvml
            self.count = pynvml.nvmlDeviceGetCount()
            self.names = [pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i)) for i in range(self.count)]
        except Exception as exc:  # no driver, no library: report it and carry on without figures
            self.reason = f"no GPU sampling: {type(exc).__name__}: {exc}"
            self.count, self.names = 0, []

    @staticmethod
    def _owner(pid: int) -> str:
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return f"pid{pid}"
        if "backend-" in title:
            return title.split("backend-", 1)[1].split()[0].split(":")[0].split(".")[0]  # "<name>.<method>" while busy
        return "embedded" if "serve --embedded" in title or "bench_cluster" in title else f"pid{pid}"

    def _sample(self) -> dict[str, Any]:
        nv, out = self._nvml, {"t": time.time(), "gpus": []}
        for i in range(self.count):
            h = nv.nvmlDeviceGetHandleByIndex(i)
            util = nv.nvmlDeviceGetUtilizationRates(h)
            mem = nv.nvmlDeviceGetMemoryInfo(h)
            gpu = {"index": i, "util": util.gpu, "mem_util": util.memory, "mem_used_gib": mem.used / 2**30,
                   "procs": {}}
            try:
                for p in nv.nvmlDeviceGetComputeRunningProcesses(h):
                    gpu["procs"][self._owner(p.pid)] = {"pid": p.pid, "mem_gib": (p.usedGpuMemory or 0) / 2**30}
            except nv.NVMLError:
                pass
            try:  # per-process SM utilisation over the last period (not every driver/GPU gives it)
                since = int((time.time() - 2 * self.period_s) * 1e6)
                for s in nv.nvmlDeviceGetProcessUtilization(h, since):
                    owner = self._owner(s.pid)
                    gpu["procs"].setdefault(owner, {"pid": s.pid})["sm_util"] = s.smUtil
            except nv.NVMLError:
                pass
            out["gpus"].append(gpu)
        return out

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                self.samples.append(self._sample())
            except Exception as exc:
                self.reason = f"sampling stopped: {type(exc).__name__}: {exc}"
                return

    def start(self) -> None:
        self.samples = []
        if self._nvml is not None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="gpu-sampler", daemon=True)
            self._thread.start()

    def stop(self) -> dict[str, Any]:
        """Summary of the samples since start(): per GPU mean/max utilisation, and who used it."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join(5)
            self._thread = None
        if not self.samples:
            return {"available": False, "reason": self.reason or "no samples"}
        per_gpu, per_backend = [], {}
        for i in range(self.count):
            rows = [s["gpus"][i] for s in self.samples]
            owners = sorted({o for r in rows for o in r["procs"]})
            per_gpu.append({"index": i, "name": self.names[i], "util_mean": statistics.fmean(r["util"] for r in rows),
                            "util_max": max(r["util"] for r in rows),
                            "mem_used_gib_max": max(r["mem_used_gib"] for r in rows), "processes": owners})
            for o in owners:
                sm = [r["procs"][o].get("sm_util", 0) for r in rows if o in r["procs"]]
                b = per_backend.setdefault(o, {"gpus": [], "sm_util_mean": None})
                b["gpus"].append(i)
                if any("sm_util" in r["procs"].get(o, {}) for r in rows):
                    b["sm_util_mean"] = statistics.fmean(sm)
        return {"available": True, "samples": len(self.samples), "period_s": self.period_s, "gpus": per_gpu,
                "per_backend": per_backend, "note": self.reason}


# ----------------------------------------------------------------------------- load


@dataclass
class Result:
    index: int
    generator: str
    task: str
    target_prompt_bytes: int
    status: int
    backend: str | None = None
    rule: str | None = None
    ttft_s: float | None = None
    e2e_s: float | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    text: str = ""
    correct: bool = False
    error: str | None = None


async def one_request(client: httpx.AsyncClient, i: int, item: Item, model: str, max_tokens: int) -> Result:
    body = {"model": model, "messages": item.messages(), "max_tokens": max_tokens, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}}
    res = Result(i, item.generator, item.task, len(item.prompt.encode()) + TEMPLATE_TOKENS, 0)
    t0 = time.perf_counter()
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body) as r:
            res.status = r.status_code
            res.backend, res.rule = r.headers.get("x-archrouter-backend"), r.headers.get("x-archrouter-rule")
            if r.status_code != 200:
                raw = (await r.aread()).decode(errors="replace")
                try:
                    res.error = json.loads(raw)["error"].get("code") or raw[:200]
                except (ValueError, KeyError, TypeError):
                    res.error = raw[:200]
                return res
            parts = []
            async for line in r.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[6:])
                if "error" in event:
                    res.error = event["error"].get("code") or "stream_error"
                    continue
                for choice in event.get("choices") or []:
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        if res.ttft_s is None:
                            res.ttft_s = time.perf_counter() - t0
                        parts.append(piece)
                if event.get("usage"):
                    res.prompt_tokens = event["usage"]["prompt_tokens"]
                    res.completion_tokens = event["usage"]["completion_tokens"]
            res.text = "".join(parts)
    except httpx.HTTPError as exc:
        res.error = f"{type(exc).__name__}: {exc}"[:200]
    res.e2e_s = time.perf_counter() - t0
    if res.ttft_s is None and res.status == 200 and res.error is None:
        res.ttft_s = res.e2e_s  # an empty answer: its first (and only) event is the finish
    res.correct = res.status == 200 and res.error is None and check(item, res.text)
    return res


async def run_phase(url: str, items: list[Item], model: str, concurrency: int, max_tokens: int, headers: dict,
                    records: Path) -> tuple[list[Result], float]:
    todo = iter(list(enumerate(items)))
    results: list[Result] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    timeout = httpx.Timeout(1800.0, connect=60.0)
    with records.open("a") as rec:
        async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits, headers=headers) as client:

            async def worker() -> None:
                for i, item in todo:
                    res = await one_request(client, i, item, model, max_tokens)
                    results.append(res)
                    rec.write(json.dumps({"model": model, **res.__dict__}) + "\n")
                    rec.flush()

            t0 = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            wall = time.perf_counter() - t0
    return results, wall


def pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, math.ceil(q * len(xs)) - 1))]


def summarise(results: list[Result], wall: float, families: dict[str, str]) -> dict[str, Any]:
    ok = [r for r in results if r.status == 200 and r.error is None]
    ttft = [r.ttft_s for r in ok if r.ttft_s is not None]
    e2e = [r.e2e_s for r in ok if r.e2e_s is not None]
    prompt, completion = sum(r.prompt_tokens for r in ok), sum(r.completion_tokens for r in ok)
    by_backend: dict[str, int] = {}
    by_family: dict[str, int] = {}
    for r in ok:
        by_backend[r.backend or "?"] = by_backend.get(r.backend or "?", 0) + 1
        fam = families.get(r.backend or "", "?")
        by_family[fam] = by_family.get(fam, 0) + 1
    per_task: dict[str, dict[str, float]] = {}
    for task in sorted({r.task for r in results}):
        rs = [r for r in results if r.task == task]
        per_task[task] = {"n": len(rs), "correct": sum(r.correct for r in rs) / len(rs)}
    errors: dict[str, int] = {}
    for r in results:
        if r.status != 200 or r.error:
            key = f"{r.status}:{r.error}"
            errors[key] = errors.get(key, 0) + 1
    return {
        "requests": len(results), "ok": len(ok), "wall_s": wall,
        "requests_per_s": len(ok) / wall, "tokens_per_s": (prompt + completion) / wall,
        "completion_tokens_per_s": completion / wall, "prompt_tokens": prompt, "completion_tokens": completion,
        "ttft_p50_ms": _ms(pct(ttft, 0.5)), "ttft_p99_ms": _ms(pct(ttft, 0.99)),
        "e2e_p50_ms": _ms(pct(e2e, 0.5)), "e2e_p99_ms": _ms(pct(e2e, 0.99)),
        "quality": sum(r.correct for r in results) / len(results),
        "quality_of_answered": sum(r.correct for r in ok) / len(ok) if ok else None,
        "per_backend": by_backend, "per_family": by_family, "per_task": per_task, "errors": errors,
    }


def _ms(x: float | None) -> float | None:
    return None if x is None else 1000 * x


# ----------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, headers: dict, timeout: float, proc: subprocess.Popen | None = None) -> None:
    end, last = time.time() + timeout, None
    while time.time() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before it was ready")
        try:
            r = httpx.get(url + "/readyz", headers=headers, timeout=5)
            if r.status_code == 200:
                return
            last = r.text[:300]
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready after {timeout}s: {last}")


def derived_policy(policy: Path, out: Path, dtype: str | None) -> Path:
    """The policy with absolute paths (and every backend's dtype replaced), so any working directory serves it."""
    doc = yaml.safe_load(policy.read_text(encoding="utf-8"))

    def absolute(p: str) -> str:
        q = Path(p)
        return str(q if q.is_absolute() else (ROOT / q).resolve())

    doc["classifier"] = absolute(doc["classifier"])
    for b in doc["backends"]:
        b["checkpoint"] = absolute(b["checkpoint"])
        if dtype:
            b["dtype"] = dtype
    path = out / "policy.yaml"
    path.write_text(f"# {policy} as served by bench_cluster.py (dtype: {dtype or 'as given'})\n"
                    + yaml.safe_dump(doc, sort_keys=False))
    return path


def serve_doc(config: Path | None, policy: Path, device: str, port: int) -> dict:
    """The Serve config to start, with the policy and device given here; on a machine without GPUs every
    deployment's num_gpus is dropped so the same app can be placed on CPUs."""
    doc = yaml.safe_load(config.read_text(encoding="utf-8")) if config else {"applications": [{"args": {}}]}
    app = doc["applications"][0]
    args = app.setdefault("args", {})
    args.update(policy=str(policy), device=device)
    doc.setdefault("http_options", {}).update(host="127.0.0.1", port=port)
    if device == "cpu":
        for opts in [args.get("ingress"), args.get("backend_defaults"), *(args.get("backends") or {}).values()]:
            if opts and "ray_actor_options" in opts:
                opts["ray_actor_options"] = {k: v for k, v in opts["ray_actor_options"].items() if k != "num_gpus"}
    return doc


def logical_cpus(doc: dict, policy: Path) -> int:
    """CPUs the app's deployments ask for (replicas x num_cpus): Ray on a small CPU machine is told it has at
    least this many (logical) CPUs, so the GPU layout's CPU shares still place there."""
    args = doc["applications"][0]["args"]

    def need(opts: dict | None, default: dict | None = None) -> float:
        o = {**(default or {}), **(opts or {})}
        return (o.get("num_replicas") or 1) * (o.get("ray_actor_options") or {}).get("num_cpus", 0.25)

    names = [b["name"] for b in yaml.safe_load(policy.read_text())["backends"]]
    total = need(args.get("ingress")) + sum(need((args.get("backends") or {}).get(n), args.get("backend_defaults"))
                                            for n in names)
    return max(os.cpu_count() or 1, math.ceil(total) + 1)


def start_embedded(policy: Path, device: str, port: int, engine_env: dict[str, str], log: Path) -> subprocess.Popen:
    # the repo first, then whatever this process was given (the GPU machine's carried packages in /tmp/site)
    path = os.pathsep.join(filter(None, [str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, **engine_env, "PYTHONPATH": path, "ARCHROUTER_LOG_FORMAT": "json",
           "ARCHROUTER_WATCH_POLICY": "false", "ARCHROUTER_RPM": "100000000", "ARCHROUTER_TPM": "1000000000000",
           "ARCHROUTER_REQUEST_TIMEOUT_S": "1800"}
    env.pop("REDIS_URL", None)
    cmd = [sys.executable, "-m", "archrouter", "serve", "--embedded", "--port", str(port),
           "--policy", str(policy), "--device", device]
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT)


def start_ray(doc: dict, ray_init: dict) -> str:
    from archrouter.cli import start_ray_app

    return start_ray_app(doc, {}, source="bench_cluster", ray_init=ray_init).removesuffix("/v1")


# ----------------------------------------------------------------------------- main


def table(report: dict[str, Any]) -> str:
    lines = [f"# {k}: {v}" for k, v in report["meta"].items()]
    cols = ["requests_per_s", "tokens_per_s", "completion_tokens_per_s", "ttft_p50_ms", "ttft_p99_ms",
            "e2e_p50_ms", "e2e_p99_ms", "quality"]
    phases = report["phases"]
    lines.append(f"{'metric':26s}" + "".join(f"{p:>14s}" for p in phases) + (f"{'a/b':>10s}" if report.get(
        "ratios") else ""))
    for c in cols:
        row = f"{c:26s}" + "".join(f"{_fmt(phases[p][c]):>14s}" for p in phases)
        if report.get("ratios"):
            row += f"{_fmt(report['ratios'].get(c)):>10s}"
        lines.append(row)
    for p, s in phases.items():
        lines.append(f"{p}: {s['ok']}/{s['requests']} answered in {s['wall_s']:.1f}s; per family {s['per_family']}; "
                     f"per backend {s['per_backend']}; errors {s['errors'] or '-'}")
        lines.append(f"{p}: quality per task " + ", ".join(f"{t} {v['correct']:.2f} (n={v['n']})"
                                                           for t, v in s["per_task"].items()))
        gpu = s.get("gpu", {})
        if gpu.get("available"):
            for g in gpu["gpus"]:
                lines.append(f"{p}: GPU {g['index']} util mean {g['util_mean']:.0f}% max {g['util_max']}% "
                             f"mem {g['mem_used_gib_max']:.1f} GiB, processes {', '.join(g['processes']) or '-'}")
            for b, v in gpu["per_backend"].items():
                sm = "n/a" if v["sm_util_mean"] is None else f"{v['sm_util_mean']:.0f}%"
                lines.append(f"{p}: backend {b}: GPUs {v['gpus']} SM util mean {sm}")
        else:
            lines.append(f"{p}: GPU utilisation: {gpu.get('reason', 'n/a')}")
    return "\n".join(lines) + "\n"


def _rel(p: Path) -> str:
    p = p.resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


def _fmt(x: Any) -> str:
    return "-" if x is None else f"{x:.3f}" if isinstance(x, float) and abs(x) < 10 else f"{x:.1f}" if isinstance(
        x, float) else str(x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="a running server (its root, e.g. http://127.0.0.1:8000)")
    where.add_argument("--start", choices=["embedded", "ray"], help="start the server here")
    ap.add_argument("--serve-config", type=Path, default=None,
                    help="Serve config (--start ray; its runtime_env engine settings apply to --start embedded too)")
    ap.add_argument("--policy", type=Path, default=ROOT / "config/policy.yaml")
    ap.add_argument("--device", default=None, help="torch device for the engines (default: cuda if present)")
    ap.add_argument("--dtype", default=None, help="serve every backend in this dtype (bfloat16 on GPUs)")
    ap.add_argument("--requests", type=int, default=256, help="requests per phase (the same list each phase)")
    ap.add_argument("--concurrency", type=int, default=64, help="closed-loop streaming clients")
    ap.add_argument("--min-prompt", type=int, default=256, help="shortest prompt target (tokens)")
    ap.add_argument("--max-prompt", type=int, default=32768, help="longest prompt target (tokens)")
    ap.add_argument("--max-tokens", type=int, default=16, help="max_tokens per request (answers are a few bytes)")
    ap.add_argument("--pin", default="transformer", help="backend of phase (b)")
    ap.add_argument("--phases", default="routed,pinned", help="routed, pinned, or both (default)")
    ap.add_argument("--warmup", type=int, default=2, help="warm-up requests per backend before measuring")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--api-key", default=os.environ.get("ARCHROUTER_API_KEY"))
    ap.add_argument("--ready-timeout", type=float, default=600)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    headers = {"authorization": f"Bearer {a.api_key}"} if a.api_key else {}

    import torch

    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    t_build = time.perf_counter()
    items = build_workload(a.requests, a.seed, a.min_prompt, a.max_prompt)
    build_s = time.perf_counter() - t_build
    sizes = sorted(len(i.prompt.encode()) + TEMPLATE_TOKENS for i in items)
    print(f"workload: {len(items)} items, prompt tokens {sizes[0]}..{sizes[-1]} (median {sizes[len(sizes) // 2]}), "
          f"built in {build_s:.1f}s", file=sys.stderr, flush=True)
    (a.out / "workload.jsonl").write_text("".join(json.dumps(i.to_dict()) + "\n" for i in items))

    proc, url, ray_started = None, a.url, False
    engine_env = {}
    if a.serve_config:
        app = yaml.safe_load(a.serve_config.read_text())["applications"][0]
        engine_env = dict((app.get("runtime_env") or {}).get("env_vars") or {})
    t_start = time.perf_counter()
    try:
        if a.start:
            policy = derived_policy(a.policy, a.out, a.dtype)
            port = free_port()
            if a.start == "embedded":
                proc = start_embedded(policy, device, port, engine_env, a.out / "server.log")
                url = f"http://127.0.0.1:{port}"
            else:
                doc = serve_doc(a.serve_config, policy, device, port)
                (a.out / "serve-config.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
                ray_init = {"include_dashboard": False, "log_to_driver": False}
                if device == "cpu":
                    ray_init.update(num_gpus=0, num_cpus=logical_cpus(doc, policy))
                elif not os.environ.get("RAY_ADDRESS"):  # a local instance: say what torch sees, not what Ray guesses
                    ray_init["num_gpus"] = torch.cuda.device_count()
                ray_started = True
                url = start_ray(doc, ray_init)
        url = url.rstrip("/").removesuffix("/v1")
        wait_ready(url, headers, a.ready_timeout, proc)
        startup_s = time.perf_counter() - t_start
        models = httpx.get(url + "/v1/models", headers=headers, timeout=60).json()["data"]
        families = {m["id"]: m["family"] for m in models if m["id"] != "auto"}
        print(f"server ready at {url} in {startup_s:.1f}s: {families}", file=sys.stderr, flush=True)

        # warm-up: each backend compiles/caches its paths (Triton kernels on a GPU) at a short and a long prompt
        lengths = [a.min_prompt, a.max_prompt][: max(a.warmup, 0)]
        warm = [item_near("mqar", -1 - k, t) for k, t in enumerate(lengths)]
        t_warm = time.perf_counter()

        async def warmup() -> None:
            async with httpx.AsyncClient(base_url=url, timeout=1800, headers=headers) as c:
                await asyncio.gather(*(one_request(c, -1, it, b, a.max_tokens) for b in families for it in warm))

        if warm:
            asyncio.run(warmup())
        warm_s = time.perf_counter() - t_warm

        sampler = GpuSampler()
        meta = {
            "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
            "commit": subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                     text=True).stdout.strip(),
            "machine": platform.node(), "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "gpus": sampler.names or None, "python": platform.python_version(), "torch": torch.__version__,
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "server": a.start or a.url,
            "serve_config": str(a.serve_config) if a.serve_config else None, "policy": _rel(a.policy),
            "device": device, "dtype": a.dtype, "requests": a.requests, "concurrency": a.concurrency,
            "prompt_tokens_target": [a.min_prompt, a.max_prompt], "max_tokens": a.max_tokens, "pin": a.pin,
            "seed": a.seed, "startup_s": round(startup_s, 1), "warmup_s": round(warm_s, 1),
            "backends": families,
        }
        if ray_started:
            import ray

            meta["ray"] = f"{ray.__version__} ({Path(ray.__file__).parent})"
        report: dict[str, Any] = {"meta": meta, "phases": {}}
        records = a.out / "requests.jsonl"
        records.write_text("")
        models_of = {"routed": "auto", "pinned": a.pin}
        for phase in a.phases.split(","):
            print(f"phase {phase}: {a.requests} requests, model {models_of[phase]!r}, {a.concurrency} clients",
                  file=sys.stderr, flush=True)
            sampler.start()
            results, wall = asyncio.run(run_phase(url, items, models_of[phase], a.concurrency, a.max_tokens, headers,
                                                  records))
            summary = summarise(results, wall, families)
            summary["model"] = models_of[phase]
            summary["gpu"] = sampler.stop()
            report["phases"][phase] = summary
            if {"routed", "pinned"} <= set(report["phases"]):
                ra, rb = report["phases"]["routed"], report["phases"]["pinned"]
                report["ratios"] = {k: (ra[k] / rb[k] if ra[k] is not None and rb[k] else None) for k in (
                    "requests_per_s", "tokens_per_s", "completion_tokens_per_s", "ttft_p50_ms", "ttft_p99_ms",
                    "e2e_p50_ms", "e2e_p99_ms", "quality")}
            (a.out / "bench_cluster.json").write_text(json.dumps(report, indent=2))
            (a.out / "bench_cluster.txt").write_text(table(report))
            print(f"phase {phase}: {summary['requests_per_s']:.2f} req/s, quality {summary['quality']:.3f}, "
                  f"per family {summary['per_family']}", file=sys.stderr, flush=True)
        print(table(report))
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        if ray_started:
            import ray
            from ray import serve

            if ray.is_initialized():
                serve.shutdown()
                ray.shutdown()


if __name__ == "__main__":
    main()
