"""Bounded loopback load test: many concurrent clients against `archrouter serve --embedded`.

Starts the embedded server as a subprocess (its own process and event loop, as in production) on two
tiny random-weight Transformer checkpoints made for the run (or a policy you pass), then runs N
concurrent httpx clients for a fixed time: chat (non-stream and stream) and completions, auto-routed
and pinned, with 1/8 of the clients on a key limited to a few requests per minute so the 429 path is
exercised. It stops by itself: no new request after the duration; in-flight ones get `--drain-s` to
end. Every request sent ends in exactly one recorded outcome (answered, 429, other 4xx, 5xx, a broken
stream, or a client-side error); `lost` counts those that got none and must be 0.

With `--redis-restart-at S`, Redis (rate limits and the decision log) is stopped S seconds in and
restarted `--redis-down-s` later with the environment's documented command; the service must stay up.

  python benchmarks/load_test.py --clients 128 --duration 60           # prints a table, writes $OUT
  python benchmarks/load_test.py --smoke                                # 8 clients, 5 s
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]  # runs from a checkout without an install (GPU images)

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
PROMPTS = [
    "Hello! Can you help me reset my password?",
    "Copy this list exactly: apple, pear, fig, plum, kiwi.",
    "x = 1; x += 2; x *= 3; what is x?",
    "Summarise: the quarterly report shows revenue up 4% while costs fell. " * 4,
    "def add(a, b):\n    return a + b\n# write a test for add",
    "3, 5, 7, 9, 11, what comes next?",
]


@dataclass
class Tally:
    outcomes: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)  # answered requests, seconds
    ttft: list[float] = field(default_factory=list)  # streams: first content event
    errors: Counter = field(default_factory=Counter)  # client-side error types
    sent: int = 0


def make_setup(tmp: Path, limited_rpm: int) -> tuple[Path, Path, str, str]:
    """Two tiny random checkpoints, a policy over them, and a keys file with one open and one limited key."""
    import yaml

    from archrouter.backends.families import init_random
    from archrouter.router.auth import KeyRecord, KeysFile, new_key
    from tests.router.conftest import policy_text

    init_random("transformer", "tiny", tmp / "tiny", seed=1)
    init_random("transformer", "tiny", tmp / "small", seed=2)
    (tmp / "policy.yaml").write_text(policy_text(tmp, name="load"))
    open_id, open_key, open_hash = new_key()
    lim_id, lim_key, lim_hash = new_key()
    keys = KeysFile(keys=[KeyRecord(id=open_id, name="load-open", hash=open_hash, rpm=10_000_000, tpm=10**12),
                          KeyRecord(id=lim_id, name="load-limited", hash=lim_hash, rpm=limited_rpm)])
    (tmp / "keys.yaml").write_text(yaml.safe_dump(keys.model_dump(exclude_none=True)))
    return tmp / "policy.yaml", tmp / "keys.yaml", open_key, lim_key


def redis_up() -> bool:
    from tests.router.faults import redis_ping

    return redis_ping(REDIS_URL)


async def one_request(client: httpx.AsyncClient, key: str, rng: random.Random, max_tokens: int, t: Tally
                      ) -> float:
    """Send one request and record its outcome; returns the Retry-After of a 429, else 0."""
    kind = rng.choices(["chat", "chat-stream", "completion"], weights=[2, 1, 1])[0]
    model = rng.choice(["auto", "auto", "tiny", "small"])
    prompt = rng.choice(PROMPTS)
    if kind == "completion":
        path, body = "/v1/completions", {"model": model, "prompt": prompt, "max_tokens": max_tokens}
    else:
        path = "/v1/chat/completions"
        body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
                "stream": kind == "chat-stream"}
    headers = {"authorization": f"Bearer {key}"}
    t.sent += 1
    t0 = time.perf_counter()
    try:
        if kind == "chat-stream":
            async with client.stream("POST", path, json=body, headers=headers) as r:
                if r.status_code != 200:
                    await r.aread()
                    t.outcomes[_status_class(r.status_code)] += 1
                    return _retry_after(r)
                done, first = False, None
                async for line in r.aiter_lines():
                    if line.startswith("data: {") and first is None and '"content"' in line:
                        first = time.perf_counter() - t0
                    if '"error"' in line and line.startswith("data: {"):
                        t.outcomes["stream_error_event"] += 1
                        return 0.0
                    done = done or line == "data: [DONE]"
                if not done:
                    t.outcomes["stream_cut"] += 1
                    return 0.0
                if first is not None:
                    t.ttft.append(first)
        else:
            r = await client.post(path, json=body, headers=headers)
            if r.status_code != 200:
                t.outcomes[_status_class(r.status_code)] += 1
                return _retry_after(r)
            r.json()["choices"][0]  # noqa: B018  (a 200 must carry a well-formed body)
        t.outcomes["answered"] += 1
        t.latencies.append(time.perf_counter() - t0)
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        t.outcomes["client_error"] += 1
        t.errors[type(exc).__name__] += 1
    return 0.0


def _retry_after(r: httpx.Response) -> float:
    return float(r.headers.get("retry-after", 0)) if r.status_code == 429 else 0.0


def _status_class(code: int) -> str:
    if code == 429:
        return "429"
    return "5xx" if code >= 500 else "4xx"


async def client_loop(i: int, client: httpx.AsyncClient, key: str, until: float, max_tokens: int, t: Tally) -> None:
    rng = random.Random(i)
    while time.perf_counter() < until:
        wait = await one_request(client, key, rng, max_tokens, t)
        if wait:  # a 429: wait as told (as the openai client does), but not past the end of the run
            await asyncio.sleep(min(wait, max(0.0, until - time.perf_counter())))


async def run_load(url: str, keys: tuple[str, str], *, clients: int, duration: float, max_tokens: int,
                   limited_every: int, drain_s: float, redis_restart_at: float | None, redis_down_s: float,
                   request_timeout_s: float) -> dict:
    t = Tally()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    outage: dict = {}
    async with httpx.AsyncClient(base_url=url, timeout=request_timeout_s, limits=limits) as client:
        start = time.perf_counter()
        until = start + duration
        tasks = [asyncio.create_task(client_loop(i, client, keys[1] if i % limited_every == 0 else keys[0], until,
                                                 max_tokens, t)) for i in range(clients)]
        if redis_restart_at is not None:
            tasks_outage = asyncio.create_task(_redis_outage(redis_restart_at, redis_down_s, outage))
        done, pending = await asyncio.wait(tasks, timeout=duration + drain_s)
        for task in pending:  # a request still running past the drain time: it ends without an outcome
            task.cancel()
        elapsed = time.perf_counter() - start
        if redis_restart_at is not None:
            await tasks_outage
        metrics = (await client.get("/metrics")).text
    lat = sorted(t.latencies)
    recorded = sum(t.outcomes.values())
    return {
        "clients": clients, "duration_s": duration, "elapsed_s": round(elapsed, 2), "max_tokens": max_tokens,
        "sent": t.sent, "answered": t.outcomes["answered"], "429": t.outcomes["429"], "4xx_other": t.outcomes["4xx"],
        "5xx": t.outcomes["5xx"], "stream_error_event": t.outcomes["stream_error_event"],
        "stream_cut": t.outcomes["stream_cut"], "client_error": t.outcomes["client_error"],
        "client_error_types": dict(t.errors), "lost": t.sent - recorded, "unfinished_tasks": len(pending),
        "requests_per_s": round(recorded / elapsed, 1), "answered_per_s": round(t.outcomes["answered"] / elapsed, 1),
        "latency_p50_ms": _pct(lat, 50), "latency_p99_ms": _pct(lat, 99), "latency_max_ms": _pct(lat, 100),
        "stream_ttft_p50_ms": _pct(sorted(t.ttft), 50), "stream_ttft_p99_ms": _pct(sorted(t.ttft), 99),
        "redis_outage": outage or None,
        "server_metrics": _server_counts(metrics),
    }


async def _redis_outage(at: float, down_s: float, out: dict) -> None:
    from tests.router.faults import redis_outage

    await asyncio.sleep(at)
    t0 = time.perf_counter()
    with redis_outage():
        out["stopped_at_s"] = at
        await asyncio.sleep(down_s)
    out["down_s"] = round(time.perf_counter() - t0, 2)


def _pct(xs: list[float], p: float) -> float | None:
    if not xs:
        return None
    return round(1000 * xs[min(len(xs) - 1, max(0, int(round(p / 100 * len(xs))) - 1))], 1)


def _server_counts(text: str) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    out: dict = {"requests_by_status": Counter(), "fallbacks": 0.0, "rate_limited": 0.0,
                 "decision_log_dropped": 0.0, "decision_log_failures": 0.0}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "archrouter_requests_total":
                out["requests_by_status"][s.labels["status"]] += s.value
            elif s.name == "archrouter_fallbacks_total":
                out["fallbacks"] += s.value
            elif s.name == "archrouter_rate_limited_total":
                out["rate_limited"] += s.value
            elif s.name == "archrouter_decision_log_dropped_total":
                out["decision_log_dropped"] += s.value
            elif s.name == "archrouter_decision_log_failures_total":
                out["decision_log_failures"] += s.value
            elif s.name == "archrouter_decision_log_pending":
                out["decision_log_pending_at_end"] = s.value
            elif s.name == "archrouter_ratelimit_redis":
                out["ratelimit_redis_at_end"] = s.value
    out["requests_by_status"] = dict(out["requests_by_status"])
    return out


def machine() -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    import torch

    return {"cpu": cpu, "cores": os.cpu_count(), "loadavg_at_start": os.getloadavg(),
            "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform()}


def table(r: dict) -> str:
    rows = [("clients", r["clients"]), ("duration s", r["duration_s"]),
            ("requests/s (all outcomes)", r["requests_per_s"]),
            ("answered/s", r["answered_per_s"]), ("latency p50 ms", r["latency_p50_ms"]),
            ("latency p99 ms", r["latency_p99_ms"]), ("stream TTFT p50 ms", r["stream_ttft_p50_ms"]),
            ("sent", r["sent"]), ("answered", r["answered"]), ("429", r["429"]), ("4xx other", r["4xx_other"]),
            ("5xx", r["5xx"]), ("stream error events", r["stream_error_event"]), ("streams cut", r["stream_cut"]),
            ("client errors", r["client_error"]), ("lost", r["lost"])]
    return "\n".join(f"{k:<28}{v}" for k, v in rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=128)
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--max-tokens", type=int, default=4)
    ap.add_argument("--limited-every", type=int, default=8, help="every Nth client uses the rate-limited key")
    ap.add_argument("--limited-rpm", type=int, default=30)
    ap.add_argument("--drain-s", type=float, default=60.0)
    ap.add_argument("--request-timeout-s", type=float, default=120.0)
    ap.add_argument("--no-redis", action="store_true", help="rate limits in memory, no decision stream")
    ap.add_argument("--redis-restart-at", type=float, default=None, help="stop Redis this many seconds in")
    ap.add_argument("--redis-down-s", type=float, default=3.0)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--smoke", action="store_true", help="8 clients for 5 s")
    ap.add_argument("--out", default=os.environ.get("OUT", "bench-out"))
    args = ap.parse_args()
    if args.smoke:
        args.clients, args.duration, args.drain_s = 8, 5.0, 30.0
    use_redis = not args.no_redis and redis_up()
    if args.redis_restart_at is not None and not use_redis:
        ap.error("--redis-restart-at needs the local Redis")
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    info = machine()

    from tests.router.conftest import free_port

    with tempfile.TemporaryDirectory(prefix="archrouter-load-") as tmp:
        policy, keys_file, open_key, lim_key = make_setup(Path(tmp), args.limited_rpm)
        port = args.port or free_port()
        stream = f"archrouter:load:{os.getpid()}"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]),
           "ARCHROUTER_LOG_FORMAT": "json", "ARCHROUTER_WATCH_POLICY": "0",
               "ARCHROUTER_KEYS_FILE": str(keys_file), "ARCHROUTER_DECISION_STREAM": stream,
               "ARCHROUTER_DECISION_STREAM_MAXLEN": "200000"}
        env.pop("REDIS_URL", None)
        if use_redis:
            env["REDIS_URL"] = REDIS_URL
        log = open(Path(tmp) / "server.log", "w")  # noqa: SIM115 (the server writes to it until it exits)
        proc = subprocess.Popen([sys.executable, "-m", "archrouter", "serve", "--embedded",
                                 "--port", str(port), "--policy", str(policy)], cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + 120
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                        break
                if time.time() > deadline or proc.poll() is not None:
                    print(Path(tmp, "server.log").read_text()[-3000:], file=sys.stderr)
                    raise SystemExit("server did not start")
                time.sleep(0.2)
            result = asyncio.run(run_load(
                url, (open_key, lim_key), clients=args.clients, duration=args.duration, max_tokens=args.max_tokens,
                limited_every=args.limited_every, drain_s=args.drain_s, redis_restart_at=args.redis_restart_at,
                redis_down_s=args.redis_down_s, request_timeout_s=args.request_timeout_s))
            if use_redis:
                import redis

                rds = redis.Redis.from_url(REDIS_URL)
                time.sleep(2)  # let the decision log flush what it buffered
                result["decision_stream_records"] = rds.xlen(stream)
                if args.redis_restart_at is not None:  # the documented restart keeps no data (--save "")
                    result["decision_stream_note"] = ("Redis restarts empty, so the stream holds the records "
                                                      "written from the outage on; none were dropped by the router")
                rds.delete(stream)
        finally:
            proc.terminate()
            rc = proc.wait(60)
            log.close()
        result["server_exit_code"] = rc
    result.update(command=command, machine=info, redis=use_redis, server="archrouter serve --embedded (subprocess)",
                  backends="two tiny random-weight Transformers (CPU), one generator each",
                  limited_key=f"every {args.limited_every}th client, {args.limited_rpm} requests/min")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"load_test-{args.clients}c-{int(args.duration)}s" + ("-redis-restart" if args.redis_restart_at else "")
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    text = f"# {stem}\n\ncommand: {command}\nmachine: {info}\n\n{table(result)}\n"
    (out / f"{stem}.txt").write_text(text)
    print(json.dumps({k: result[k] for k in ("server_metrics", "redis_outage", "client_error_types",
                                              "decision_stream_records") if k in result}, default=str))
    print(table(result))
    return 0 if result["lost"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
