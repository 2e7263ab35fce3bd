"""`python -m archrouter.evals`: every figure against a hand computation, on labelled sets made here."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner

from archrouter.cli.evals import app
from archrouter.policies import decision_metrics as M
from tests.conftest import CLASSIFIER, REDIS_URL

runner = CliRunner()


def policy_yaml(models: Path | None = None, *, long_at: int = 200, name: str = "p") -> str:
    ckpt = models or Path("unused")
    return f"""
name: {name}
version: "1"
classifier: {CLASSIFIER}
backends:
  - name: a
    family: transformer
    checkpoint: {ckpt / "a"}
    context_length: 4096
    cost: {{price_per_1m_input: 1.0}}
  - name: b
    family: transformer
    checkpoint: {ckpt / "b"}
    context_length: 4096
    cost: {{price_per_1m_input: 2.0}}
rules:
  - name: long
    when: {{prompt_tokens: {{gt: {long_at}}}}}
    route: b
default: {{route: a}}
"""


# (prompt length in bytes, best backend): prompt tokens = bytes + 1 (BOS)
ITEMS = [(49, "a"), (49, "b"), (499, "b"), (499, "b"), (49, None), (499, "a")]


def write_data(path: Path, items=ITEMS) -> Path:
    with path.open("w") as f:
        for i, (n, best) in enumerate(items):
            rec = {"id": f"r{i}", "prompt": ("swap cup one and two " * 40)[:n], "task": "state_tracking"}
            if best:
                rec["best_backend"] = best
            f.write(json.dumps(rec) + "\n")
    return path


@pytest.fixture()
def files(tmp_path):
    (tmp_path / "policy.yaml").write_text(policy_yaml())
    return tmp_path / "policy.yaml", write_data(tmp_path / "data.jsonl")


def test_metric_functions_by_hand():
    pred, gold = ["x", "x", "y", "z"], ["x", "y", "y", "y"]
    assert M.accuracy(pred, gold) == 0.5
    per = M.per_class(pred, gold, ["x", "y", "z"])
    assert per["x"] == {"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1}
    assert per["y"]["precision"] == 1.0 and per["y"]["recall"] == 1 / 3 and per["y"]["f1"] == 0.5
    assert per["z"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert M.macro_f1(per) == pytest.approx((2 / 3 + 0.5) / 2)  # z has no support: left out
    assert M.confusion(pred, gold, ["x", "y", "z"]) == [[1, 0, 0], [1, 1, 1], [0, 0, 0]]
    assert M.percentile([5, 1, 4, 2, 3], 50) == 3 and M.percentile(list(range(1, 101)), 99) == 99
    assert M.pgr(0.7, 0.5, 0.9) == pytest.approx(0.5)
    assert M.apgr([(0.0, 0.5), (1.0, 0.9)], 0.5, 0.9) == pytest.approx(0.5)


def test_run_writes_reports_with_hand_checked_figures(files, tmp_path):
    policy, data = files
    out = tmp_path / "run"
    res = runner.invoke(app, ["run", "--policy", str(policy), "--data", str(data), "--out", str(out),
                              "--max-tokens", "10"])
    assert res.exit_code == 0, res.output
    rep = json.loads((out / "report.json").read_text())
    # decisions: short (50 tokens) -> a via default, long (500) -> b via rule `long`
    assert rep["prompts"] == 6 and rep["labelled_backend"] == 5
    assert rep["decision_accuracy"] == pytest.approx(3 / 5)  # r0 ok, r1 wrong, r2 ok, r3 ok, r5 wrong
    assert rep["rule_counts"] == {"default": 3, "long": 3} and rep["no_rule_matched"] == 3
    assert rep["backend_confusion"] == {"labels": ["a", "b"], "matrix": [[1, 1], [1, 2]]}
    b = rep["baselines"]
    assert b["always:a"]["accuracy"] == pytest.approx(2 / 5) and b["always:b"]["accuracy"] == pytest.approx(3 / 5)
    assert b["oracle"]["accuracy"] == 1.0
    # cost: tokens * price / 1e6, mean over the six prompts
    assert b["always:a"]["cost"] == pytest.approx((3 * 50 + 3 * 500) * 1.0 / 1e6 / 6)
    assert b["always:b"]["cost"] == pytest.approx((3 * 50 + 3 * 500) * 2.0 / 1e6 / 6)
    assert b["policy"]["cost"] == pytest.approx((3 * 50 * 1.0 + 3 * 500 * 2.0) / 1e6 / 6)
    assert rep["task_per_class"]["state_tracking"]["support"] == 6
    assert set(rep["decision_latency_ms"]) == {"p50", "p99", "mean"}
    lines = [json.loads(x) for x in (out / "decisions.jsonl").read_text().splitlines()]
    assert [(d["id"], d["backend"], d["rule"], d["correct"]) for d in lines] == [
        ("r0", "a", "default", True), ("r1", "a", "default", False), ("r2", "b", "long", True),
        ("r3", "b", "long", True), ("r4", "a", "default", None), ("r5", "b", "long", False)]
    for name in rep["figures"]:
        assert (out / name).stat().st_size > 1000
    assert "decision accuracy" in (out / "report.md").read_text()

    class Imgs(HTMLParser):
        srcs: list[str] = []

        def handle_starttag(self, tag, attrs):
            if tag == "img":
                self.srcs.append(dict(attrs)["src"])

    p = Imgs()
    p.feed((out / "report.html").read_text())
    assert len(p.srcs) == len(rep["figures"]) and all(s.startswith("data:image/png;base64,") for s in p.srcs)


def test_bad_lines_are_named(files, tmp_path):
    policy, _ = files
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok", "task": "chat"}\n{"prompt": "x", "task": "poetry"}\nnot json\n'
                   '{"task": "chat"}\n')
    res = runner.invoke(app, ["run", "--policy", str(policy), "--data", str(bad), "--out", str(tmp_path / "o")])
    assert res.exit_code == 1
    assert f"{bad}:2: task" in res.output and f"{bad}:3: invalid JSON" in res.output and f"{bad}:4:" in res.output
    assert "3 bad line(s)" in res.output


def test_compare_lists_changes_and_gates(files, tmp_path):
    policy, data = files
    other = tmp_path / "b.yaml"
    other.write_text(policy_yaml(long_at=10, name="q"))  # everything is "long" -> b
    res = runner.invoke(app, ["compare", "--policy", str(policy), "--policy", str(other), "--data", str(data),
                              "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["changed"] == 3 and {c["id"] for c in out["changes"]} == {"r0", "r1", "r4"}
    assert out["deltas"]["accuracy"]["a"] == pytest.approx(0.6) and out["deltas"]["accuracy"]["b"] == pytest.approx(
        0.6)
    # B costs (6 * 2.0 tokens-weighted) vs A: ratio = (3*50*2 + 3*500*2) / (3*50*1 + 3*500*2)
    ratio = (3 * 50 * 2 + 3 * 500 * 2) / (3 * 50 + 3 * 500 * 2)
    assert out["deltas"]["cost"]["b"] / out["deltas"]["cost"]["a"] == pytest.approx(ratio)
    gate = runner.invoke(app, ["compare", "--policy", str(policy), "--policy", str(other), "--data", str(data),
                               "--fail-if", "accuracy<0.5,cost>1.04x"])
    assert gate.exit_code == 1 and "cost>1.04x" in gate.output
    ok = runner.invoke(app, ["compare", "--policy", str(policy), "--policy", str(other), "--data", str(data),
                             "--fail-if", "accuracy<0.5,cost>1.2x"])
    assert ok.exit_code == 0, ok.output


def test_replay_from_file_and_redis(files, tmp_path):
    policy, data = files
    out = tmp_path / "run"
    assert runner.invoke(app, ["run", "--policy", str(policy), "--data", str(data), "--out", str(out)]).exit_code == 0
    # a router decision log holds features and the decision; make one from the run's decisions
    log = tmp_path / "decisions.log"
    recs = []
    for d in map(json.loads, (out / "decisions.jsonl").read_text().splitlines()):
        recs.append({"event": "decision", "request_id": d["id"], "decision": {"backend": d["backend"],
                     "rule": d["rule"]}, "features": {"prompt_tokens": d["prompt_tokens"], "max_tokens": 256,
                     "task": d["predicted_task"], "task_probs": d["features"]["task_probs"],
                     "state_tracking": d["state_tracking_score"], "turns": 1}})
    log.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    other = tmp_path / "b.yaml"
    other.write_text(policy_yaml(long_at=10, name="q"))
    res = runner.invoke(app, ["replay", "--log", str(log), "--policy", str(other), "--json"])
    assert res.exit_code == 0, res.output
    r = json.loads(res.stdout)
    assert (r["records"], r["changed"], r["same"]) == (6, 3, 3) and r["moves"] == {"a -> b": 3}

    stream = "archrouter:test:replay"
    rds = redis.Redis.from_url(REDIS_URL)
    rds.delete(stream)
    for rec in recs:
        rds.xadd(stream, {"record": json.dumps(rec)})
    res = runner.invoke(app, ["replay", "--log", f"{REDIS_URL}#{stream}", "--policy", str(other), "--json"])
    rds.delete(stream)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["moves"] == {"a -> b": 3}


def test_execute_against_embedded_server(tmp_path):
    """Answers made from each backend's own greedy output, so the right quality is known per backend."""
    import asyncio

    from archrouter.backends.families import init_random
    from archrouter.backends.generator import Generator
    from archrouter.backends.protocol import GenerationRequest, SamplingParams
    from archrouter.evals.execute import is_correct

    init_random("transformer", "tiny", tmp_path / "a", seed=1)
    init_random("transformer", "tiny", tmp_path / "b", seed=2)
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_yaml(tmp_path, long_at=30))
    gens = {n: Generator.from_checkpoint(n, "transformer", tmp_path / n, context_length=4096) for n in "ab"}
    prompts = ["short one", "short two", "a much longer prompt here ok", "another long prompt for b!!"]

    async def greedy(name: str, prompt: str) -> str:
        req = GenerationRequest("t", SamplingParams(temperature=0, max_tokens=6),
                                messages=[{"role": "user", "content": prompt}])
        return "".join([c.text async for c in gens[name].generate(req)])

    outs = {(n, p): asyncio.run(greedy(n, p)) for n in "ab" for p in prompts}
    answers = [outs[("a", prompts[0])], outs[("b", prompts[1])], outs[("b", prompts[2])], "never said"]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"id": f"e{i}", "messages": [{"role": "user", "content": p}],
                                        "task": "chat", "answer": a}) + "\n"
                            for i, (p, a) in enumerate(zip(prompts, answers, strict=True))))
    res = runner.invoke(app, ["run", "--policy", str(policy), "--data", str(data), "--out", str(tmp_path / "x"),
                              "--execute", "--answer-tokens", "6"])
    assert res.exit_code == 0, res.output
    ex = json.loads((tmp_path / "x/report.json").read_text())["execution"]

    def q(choose) -> float:
        return sum(is_correct(outs[(choose(i), p)], answers[i]) for i, p in enumerate(prompts)) / 4

    routed = lambda i: "a" if i < 2 else "b"  # noqa: E731  (prompt tokens > 30 go to b)
    assert ex["executed_prompts"] == 4
    assert ex["strategies"]["always:a"]["quality"] == pytest.approx(q(lambda i: "a"))
    assert ex["strategies"]["always:b"]["quality"] == pytest.approx(q(lambda i: "b"))
    assert ex["strategies"]["policy"]["quality"] == pytest.approx(q(routed))
    assert ex["strategies"]["oracle"]["quality"] == pytest.approx(3 / 4)  # e3's answer is never produced
    assert ex["strategies"]["always:a"]["quality"] >= 0.25 and ex["strategies"]["always:b"]["quality"] >= 0.5
    assert len(ex["apgr_curve"]) == 11 and (tmp_path / "x/apgr.png").exists()
