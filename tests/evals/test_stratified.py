"""Stratified evaluation (per task and length bucket, RouteLLM's PGR/APGR/CPT, reliability) by hand."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from archrouter.cli.evals import app
from archrouter.policies.stratified import correct_from_tags, cpt, length_bucket, reliability
from tests.evals.test_evals import policy_yaml

runner = CliRunner()
# (prompt bytes, backends that answered right): 49 bytes -> 50 tokens (routed to a), 499 -> 500 (to b)
ITEMS = [(49, "a+b"), (49, "b"), (499, "b"), (499, "a"), (49, "none"), (499, "b")]


@pytest.fixture()
def files(tmp_path):
    (tmp_path / "policy.yaml").write_text(policy_yaml())
    with (tmp_path / "data.jsonl").open("w") as f:
        for i, (n, ok) in enumerate(ITEMS):
            f.write(json.dumps({"id": f"r{i}", "prompt": ("swap cup one and two " * 40)[:n], "task": "state_tracking",
                                "tags": ["capability", f"correct:{ok}"]}) + "\n")
    return tmp_path / "policy.yaml", tmp_path / "data.jsonl"


def test_helpers_by_hand() -> None:
    assert correct_from_tags(["x", "correct:a+b"]) == ["a", "b"]
    assert correct_from_tags(["correct:none"]) == [] and correct_from_tags(["x"]) is None
    assert [length_bucket(t) for t in (0, 127, 128, 511, 512, 5000)] == [
        "0-127", "0-127", "128-511", "128-511", "512-2047", ">=2048"]
    # weak 0.2, strong 0.6: PGR 0.5 at quality 0.4, reached halfway between x=0.2 (q 0.3) and x=0.6 (q 0.5)
    assert cpt([(0.2, 0.3), (0.6, 0.5), (1.0, 0.6)], 0.5, 0.2, 0.6) == pytest.approx(0.4)
    assert cpt([(0.2, 0.3), (1.0, 0.5)], 0.9, 0.2, 0.6) is None  # never recovers 90%
    rows = [SimpleNamespace(features={"task_probs": {"a": p, "b": 1 - p}}, predicted_task=pred, task="a")
            for p, pred in ((0.95, "a"), (0.85, "a"), (0.82, "b"), (0.55, "a"))]
    rel = reliability(rows, bins=10)
    assert [(b["bin"][0], b["n"]) for b in rel["bins"]] == [(0.5, 1), (0.8, 2), (0.9, 1)]
    b8 = rel["bins"][1]
    assert b8["confidence"] == pytest.approx(0.835) and b8["accuracy"] == 0.5
    assert rel["ece"] == pytest.approx((abs(0.55 - 1) + 2 * abs(0.835 - 0.5) + abs(0.95 - 1)) / 4)


def test_run_reports_strata_by_hand(files, tmp_path) -> None:
    policy, data = files
    res = runner.invoke(app, ["run", "--policy", str(policy), "--data", str(data), "--out", str(tmp_path / "r")])
    assert res.exit_code == 0, res.output
    rep = json.loads((tmp_path / "r/report.json").read_text())
    st = rep["stratified"]["strata"]
    assert set(st) == {"all", "task:state_tracking", "length:0-127", "length:128-511"}
    a = st["all"]
    # always a: r0, r3 = 2/6; always b: r0, r1, r2, r5 = 4/6; routed (short a, long b): r0, r2, r5 = 3/6
    assert a["quality"]["single"] == pytest.approx({"a": 2 / 6, "b": 4 / 6})
    assert (a["strong"], a["weak"]) == ("b", "a")
    assert a["quality"]["routed"] == pytest.approx(0.5) and a["quality"]["oracle"] == pytest.approx(5 / 6)
    assert a["quality"]["random"] == pytest.approx(0.5)
    assert a["pgr"] == pytest.approx(0.5) and a["strong_share"] == pytest.approx(0.5)
    assert a["cpt50"] == pytest.approx(0.5)  # the policy's own point already recovers half the gap
    assert 0.5 < a["cpt80"] <= 1.0 and 0.5 <= a["apgr"] <= 1.0
    short = st["length:0-127"]  # r0, r1, r4 all routed to a: 1/3; b would get 2/3
    assert short["quality"]["routed"] == pytest.approx(1 / 3) and short["pgr"] == pytest.approx(0.0)
    assert "Per task and prompt length" in (tmp_path / "r/report.md").read_text()
    assert (tmp_path / "r/reliability.png").stat().st_size > 0


def test_compare_fail_if_per_bucket(files) -> None:
    policy, data = files
    base = ["compare", "--policy", str(policy), "--policy", str(policy), "--data", str(data), "--fail-if"]
    bad = runner.invoke(app, [*base, "pgr[length:0-127]<0.1"])
    assert bad.exit_code == 1 and "pgr[length:0-127]<0.1: pgr is 0" in bad.output
    ok = runner.invoke(app, [*base, "quality<0.4,apgr<0.5,cpt50[all]>0.6,ece>0.5,quality[task:state_tracking]<0.4"])
    assert ok.exit_code == 0, ok.output
    unknown = runner.invoke(app, [*base, "quality[length:9-9]<0.4"])
    assert unknown.exit_code == 2 and "no stratum 'length:9-9'" in unknown.output
