"""benchmarks/bench_cluster.py end to end on the embedded server with the trained zoo (a handful of short
requests on CPU), and its workload builder."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_cluster import TEMPLATE_TOKENS, build_workload, item_near  # noqa: E402

from archrouter.evals.tasks import GENERATORS, check  # noqa: E402


def test_items_land_near_their_target_length():
    for name in GENERATORS:
        for target in (256, 4096):
            item = item_near(name, 7, target)
            size = len(item.prompt.encode()) + TEMPLATE_TOKENS
            assert abs(size - target) <= 0.1 * target, (name, target, size)
            assert check(item, item.answer)


def test_workload_covers_every_task_evenly_and_is_seeded():
    items = build_workload(60, 3, 256, 32768)
    assert Counter(i.task for i in items) == dict.fromkeys({t for t, _, _ in GENERATORS.values()}, 10)
    assert [i.to_dict() for i in items] == [i.to_dict() for i in build_workload(60, 3, 256, 32768)]
    sizes = [len(i.prompt.encode()) + TEMPLATE_TOKENS for i in items]
    assert min(sizes) < 1024 and max(sizes) > 8192  # log-uniform over the range


def test_bench_runs_routed_and_pinned_on_the_embedded_server(tmp_path):
    n = 12
    cmd = [sys.executable, str(ROOT / "benchmarks/bench_cluster.py"), "--start", "embedded", "--device", "cpu",
           "--requests", str(n), "--concurrency", "3", "--min-prompt", "64", "--max-prompt", "384",
           "--warmup", "1", "--out", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "bench_cluster.json").read_text())
    routed, pinned = report["phases"]["routed"], report["phases"]["pinned"]
    assert routed["requests"] == pinned["requests"] == n and routed["ok"] == pinned["ok"] == n
    assert pinned["per_family"] == {"transformer": n}
    assert len(routed["per_family"]) >= 2 and sum(routed["per_family"].values()) == n
    for phase in (routed, pinned):
        assert phase["requests_per_s"] > 0 and phase["ttft_p50_ms"] <= phase["e2e_p50_ms"]
        assert 0 <= phase["quality"] <= 1 and phase["gpu"]["available"] is False
    assert report["ratios"]["requests_per_s"] == routed["requests_per_s"] / pinned["requests_per_s"]
    records = [json.loads(line) for line in (tmp_path / "requests.jsonl").read_text().splitlines()]
    assert Counter(r["model"] for r in records) == {"auto": n, "transformer": n}
    # quality is the checkers' verdict on the streamed text
    workload = [json.loads(line) for line in (tmp_path / "workload.jsonl").read_text().splitlines()]
    for r in records:
        item = workload[r["index"]]
        assert r["correct"] == (" ".join(r["text"].lower().split()) == " ".join(item["answer"].lower().split()))
    assert "requests_per_s" in (tmp_path / "bench_cluster.txt").read_text()


def test_gpu_summary_per_gpu_and_per_backend():
    from bench_cluster import GpuSampler

    sampler = GpuSampler()  # no NVML here: off, with the reason
    assert sampler.stop() == {"available": False, "reason": sampler.reason}
    assert sampler.reason.startswith("no GPU sampling")
    # the summary of samples as _sample() records them (two GPUs, one backend each, one with SM figures)
    sampler.count, sampler.names = 2, ["H200", "H200"]
    sampler.samples = [
        {"t": 0, "gpus": [{"index": 0, "util": u0, "mem_util": 0, "mem_used_gib": 1.0 + u0 / 100,
                           "procs": {"transformer": {"pid": 1, "sm_util": u0}}},
                          {"index": 1, "util": u1, "mem_util": 0, "mem_used_gib": 2.0,
                           "procs": {"mamba": {"pid": 2}}}]}
        for u0, u1 in [(50, 10), (100, 30)]]
    s = sampler.stop()
    assert s["available"] and s["samples"] == 2
    assert [(g["util_mean"], g["util_max"], g["processes"]) for g in s["gpus"]] == [
        (75, 100, ["transformer"]), (20, 30, ["mamba"])]
    assert s["gpus"][0]["mem_used_gib_max"] == 2.0
    assert s["per_backend"] == {"transformer": {"gpus": [0], "sm_util_mean": 75},
                                "mamba": {"gpus": [1], "sm_util_mean": None}}


def test_process_titles_name_their_backend(tmp_path):
    from bench_cluster import GpuSampler

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "ray::ServeReplica:archrouter:"
                             "backend-rwkv.handle_request_streaming"])
    try:
        end = time.time() + 10  # until the child has exec'd (its cmdline is the parent's before)
        while GpuSampler._owner(proc.pid) != "rwkv" and time.time() < end:
            time.sleep(0.05)
        assert GpuSampler._owner(proc.pid) == "rwkv"
    finally:
        proc.kill()
        proc.wait()
