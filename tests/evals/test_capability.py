"""The capability pipeline: measurement on tiny models, the greedy-equivalence of the accuracy, the
policy fit, the labelled set and the docs page built from a capability matrix."""

import asyncio
import json
import math

import pytest
import torch
from typer.testing import CliRunner

from archrouter.backends.families import init_random
from archrouter.backends.generator import Generator
from archrouter.backends.protocol import GenerationRequest, SamplingParams
from archrouter.cli.evals import app as evals_app
from archrouter.evals import capability as C
from archrouter.evals.capability_doc import LEAD_END, LEAD_START, claims, write
from archrouter.evals.capability_labels import build
from archrouter.evals.policy_fit import fit_cost, fit_policy, parse_names
from archrouter.evals.tasks import make_item, training_length
from archrouter.evals.training import exact_match
from archrouter.policies.cost import estimate_all
from archrouter.policies.labelled import parse_lines
from archrouter.policies.loader import parse_policy
from archrouter.policies.types import TASKS, Features
from tests.conftest import ROOT

FAMILIES = ("transformer", "mamba", "rwkv", "xlstm")


# ----------------------------------------------------------------------------- measurement, end to end


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    for i, f in enumerate(FAMILIES):
        init_random(f, "tiny", root / f, seed=i)
    return root


def test_capability_command_on_tiny_models(tiny_models, tmp_path):
    out = tmp_path / "cap"
    # one scale keeps the CPU references (sequential recurrences) quick; scales are exercised below
    res = CliRunner().invoke(evals_app, [
        "capability", "--out", str(out), "--models-dir", str(tiny_models), "--items", "2", "--scales", "1",
        "--cost-lengths", "16,48", "--decode-steps", "2", "--repeats", "1",
    ])
    assert res.exit_code == 0, res.output
    cap = json.loads((out / "capability.json").read_text())
    assert cap["schema"] == C.SCHEMA and list(cap["families"]) == list(FAMILIES)
    acc = cap["accuracy"]
    assert acc["scales"] == [1] and acc["threads"] == torch.get_num_threads()
    for f in FAMILIES:
        fam = acc["families"][f]
        assert list(fam["per_task"]) == list(TASKS)
        for g, by_scale in fam["correct"].items():
            for s, bits in by_scale.items():
                assert len(bits) == acc["generators"][g]["items"] and set(bits) <= {"0", "1"}
                assert fam["per_generator"][g][s] == bits.count("1") / len(bits)
    # at least `items` per (task, scale) cell
    for t in TASKS:
        assert C.task_items(cap, t) >= 2
    cost = cap["cost"]["cpu"]
    assert cost["device_type"] == "cpu" and cost["torch"] == torch.__version__
    for f in FAMILIES:
        pts = cost["families"][f]["points"]
        assert [p["prompt_tokens"] for p in pts] == [16, 48]
        assert all(p["prefill_ms"] > 0 and p["decode_ms_per_token"] > 0 for p in pts)
        grows = pts[1]["state_bytes"] > pts[0]["state_bytes"]
        assert grows == (f == "transformer")  # a KV cache grows with length, recurrent states do not
    for png in ("accuracy_by_task.png", "accuracy_by_generator.png", "cost.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "capability.partial.json").exists()  # written per family while running, then replaced

    # a cost-only re-run merges into the same folder: accuracy kept, this device's cost replaced
    res = CliRunner().invoke(evals_app, [
        "capability", "--out", str(out), "--models-dir", str(tiny_models), "--no-accuracy", "--merge",
        "--cost-lengths", "16", "--decode-steps", "2", "--repeats", "1",
    ])
    assert res.exit_code == 0, res.output
    again = json.loads((out / "capability.json").read_text())
    assert again["accuracy"] == cap["accuracy"] and len(again["runs"]) == 2
    assert [p["prompt_tokens"] for p in again["cost"]["cpu"]["families"]["rwkv"]["points"]] == [16]

    # a cost-only run on the "other" device merges in; accuracy stays from the first run
    other = json.loads((out / "capability.json").read_text())
    other["accuracy"] = None
    other["cost"] = {"cuda": {**cost, "device_type": "cuda"}}
    merged_dir = tmp_path / "merged"
    (tmp_path / "gpu.json").write_text(json.dumps(other))
    res = CliRunner().invoke(evals_app, ["capability-merge", str(out / "capability.json"), str(tmp_path / "gpu.json"),
                                         "--out", str(merged_dir)])
    assert res.exit_code == 0, res.output
    merged = json.loads((merged_dir / "capability.json").read_text())
    assert set(merged["cost"]) == {"cpu", "cuda"} and merged["accuracy"] == cap["accuracy"]
    assert len(merged["runs"]) == len(again["runs"]) + len(other["runs"])


def test_scales_lengthen_the_items(tiny_models, tmp_path):
    # the plain entry point (`python -m archrouter.evals.capability`, for bare GPU images) writes the same file
    C.main(["--out", str(tmp_path), "--models-dir", str(tiny_models), "--families", "transformer", "mamba",
            "--items", "1", "--scales", "1", "2", "--no-cost"])
    cap = C.load(tmp_path / "capability.json")
    acc = cap["accuracy"]
    assert set(acc["families"]) == {"transformer", "mamba"} and cap["cost"] == {}
    for g, by_scale in acc["prompt_tokens"].items():
        assert by_scale["2"] > by_scale["1"], g
    for f in ("transformer", "mamba"):
        assert all(set(v) == {"1", "2"} for v in acc["families"][f]["per_task"].values())
    # the items are the held-out ones training evaluates on: seeds -1.., s x training length
    assert C.cell_items(1, 2)[0] == make_item(C.generators_of("chat")[0], -1, 2 * training_length("fact_qa"))


# ----------------------------------------------------------------------------- accuracy == greedy decoding


def _greedy(gen: Generator, item) -> tuple[bool, str]:
    async def go():
        req = GenerationRequest("t", SamplingParams(temperature=0.0, max_tokens=len(item.answer) + 2),
                                messages=item.messages())
        text, tokens, reason = "", 0, None
        async for ch in gen.generate(req):
            text += ch.text
            tokens, reason = ch.completion_tokens, ch.finish_reason
        return text, tokens, reason

    text, tokens, reason = asyncio.run(go())
    # exactly the answer, then an end token (the step that produced it counts as a completion token)
    return text == item.answer and reason == "stop" and tokens == len(item.answer.encode()) + 1, text


@pytest.mark.parametrize("family", FAMILIES)
def test_exact_match_is_greedy_decoding(family):
    """The batched teacher-forced verdict equals real greedy decoding through backends/generator.py, on the
    trained checkpoints, for items of mixed lengths batched together (right padding in play)."""
    items = [make_item("fact_qa", -1 - i) for i in range(4)] + [make_item("parity", -1 - i) for i in range(2)]
    items += [make_item("periodic_series", -1), make_item("cups5", -1, 2 * training_length("cups5"))]
    gen = Generator.from_checkpoint(family, family, ROOT / "models" / family, context_length=4096)
    verdicts = exact_match(gen.model, items, torch.device("cpu"), batch_tokens=10_000, amp=False)
    greedy = [_greedy(gen, it) for it in items]
    shown = [(it.answer, text) for it, (_, text) in zip(items, greedy, strict=True)]
    assert verdicts == [ok for ok, _ in greedy], shown
    assert any(verdicts), "some item should be answered (the trained models answer the chat facts)"


def test_training_evaluate_uses_exact_match():
    from archrouter.evals.training import evaluate, score, summarise

    gen = Generator.from_checkpoint("transformer", "transformer", ROOT / "models/transformer", context_length=4096)
    items = [make_item("fact_qa", -1 - i) for i in range(3)] + [make_item("mqar", -1)]
    ev = evaluate(gen.model, items, torch.device("cpu"))
    assert ev == summarise(items, *score(gen.model, items, torch.device("cpu")))
    assert [it.answer[0] for it in items[:1]] and set(ev["first_byte"]) == {"fact_qa", "mqar"}
    assert ev["items"] == 4 and set(ev["per_task"]) == {"chat", "recall"}


# ----------------------------------------------------------------------------- hand-made matrices


def _points(kind: str) -> list[dict]:
    pts = []
    for n in (256, 1024, 4096):
        if kind == "attention":  # cheap when short, quadratic prefill, growing cache
            pre, dec, state = 0.01 * n + 2e-5 * n * n, 1.0 + 0.001 * n, 1000 * n
        else:
            pre, dec, state = 0.05 * n, 2.0, 50_000
        pts.append({"prompt_tokens": n, "prefill_ms": pre, "prefill_ms_per_token": pre / n, "decode_ms_per_token": dec,
                    "state_bytes": state, "beyond_context": False})
    return pts


def hand_made(per_task: dict[str, dict[str, list[float]]], correct: dict | None = None) -> dict:
    """A capability dict: per_task[task][family] = accuracy at 1x, 2x, 4x, 8x (same for every generator)."""
    scales = ["1", "2", "4", "8"]
    gens = {"parity": "state_tracking", "mqar": "recall", "fact_qa": "chat", "facts": "long_document",
            "periodic_series": "sequential_data", "expression": "code"}
    fams = {}
    for f in FAMILIES:
        fams[f] = {
            "per_task": {t: dict(zip(scales, per_task[t][f], strict=True)) for t in TASKS},
            "per_generator": {g: dict(zip(scales, per_task[t][f], strict=True)) for g, t in gens.items()},
            "correct": (correct or {}).get(f, {}),
            "wall_s": 1.0,
        }
        if not correct:
            del fams[f]["correct"]
    tokens = {"1": 100.0, "2": 200.0, "4": 400.0, "8": 800.0}
    return {
        "schema": C.SCHEMA,
        "families": {f: {"checkpoint": f"models/{f}", "parameters": 3_000_000, "trained": True,
                         "context_length": 4096 if f == "transformer" else None, "training": None} for f in FAMILIES},
        "accuracy": {
            "device": "test", "torch": "x", "threads": 1, "dtype": "float32", "wall_s": 1.0,
            "scales": [1, 2, 4, 8], "items_per_cell": 200, "seeds": "",
            "generators": {g: {"task": t, "training_length": training_length(g), "items": 200}
                           for g, t in gens.items()},
            "prompt_tokens": {g: tokens for g in gens}, "task_prompt_tokens": {t: tokens for t in TASKS},
            "families": fams,
        },
        "cost": {"cuda": {"device": "test-gpu", "device_type": "cuda", "torch": "x", "threads": 1, "dtype": "float32",
                          "prefill_chunk": 512, "decode_steps": 16, "budget_s": 60,
                          "families": {f: {"points": _points("attention" if f == "transformer" else "recurrent"),
                                           "skipped": [], "error": None} for f in FAMILIES}}},
        "runs": [],
    }


#                transformer            mamba                  rwkv                   xlstm
MATRIX = {
    "chat": dict(transformer=[1, 1, 1, 1], mamba=[1, 1, 1, 1], rwkv=[1, 1, 1, 1], xlstm=[1, 1, 1, 1]),
    "recall": dict(transformer=[.9, .9, .8, .8], mamba=[.2, .1, .1, 0], rwkv=[.3, .2, .1, .1], xlstm=[.4, .3, .2, .1]),
    "state_tracking": dict(transformer=[.9, .2, .1, .1], mamba=[.5, .3, .2, .1], rwkv=[.88, .85, .84, .83],
                           xlstm=[.6, .5, .5, .5]),
    "long_document": dict(transformer=[0, 0, 0, 0], mamba=[0, 0, 0, 0], rwkv=[0, 0, 0, 0], xlstm=[0, 0, 0, 0]),
    "sequential_data": dict(transformer=[.5, .4, .3, .2], mamba=[.8, .8, .8, .8], rwkv=[.6, .6, .6, .6],
                            xlstm=[.6, .6, .6, .6]),
    "code": dict(transformer=[.7, .6, .5, .5], mamba=[.3, .3, .3, .3], rwkv=[.4, .4, .4, .4], xlstm=[.4, .4, .4, .4]),
}


def test_cost_fit_recovers_the_curves():
    att = fit_cost(_points("attention"))
    assert math.isclose(att["prefill_ms"]["per_token_sq"], 2e-5, rel_tol=1e-3)
    assert math.isclose(att["decode_ms"]["per_context"], 0.001, rel_tol=1e-3)
    rec = fit_cost(_points("recurrent"))
    assert rec["prefill_ms"]["per_token_sq"] == 0 and rec["decode_ms"] == {"base": 2.0, "per_context": 0.0}
    assert math.isclose(rec["prefill_ms"]["per_token"], 0.05, rel_tol=1e-3)


def test_policy_fit_orders_rules_and_passes_the_loader(tmp_path):
    cap = hand_made(MATRIX)
    names = parse_names("transformer=zoo-transformer,mamba=zoo-mamba,rwkv=zoo-rwkv,xlstm=zoo-xlstm")
    text = fit_policy(cap, base={"name": "fitted", "classifier": "models/classifier/task-classifier.json.gz"},
                      names=names)
    pol = parse_policy(text, file=str(tmp_path / "p.yaml"), root=ROOT)
    assert [r.name for r in pol.rules] == [
        "beyond-context", "chat", "recall", "state-tracking-1x", "state-tracking-2x-8x", "long-document",
        "sequential-data", "code",
    ]
    rules = {r.name: r.spec for r in pol.rules}
    assert rules["recall"].route == "zoo-transformer" and rules["code"].route == "zoo-transformer"
    assert rules["sequential-data"].route == "zoo-mamba"
    # 1x: transformer 0.90 and rwkv 0.88 are within the margin, so cost decides; past 1x rwkv alone
    assert rules["state-tracking-1x"].route.cheapest == ["zoo-transformer", "zoo-rwkv"]
    assert rules["state-tracking-1x"].when == {"task": "state_tracking", "prompt_tokens": {"lt": 141}}
    assert rules["state-tracking-2x-8x"].route == "zoo-rwkv"
    assert set(rules["long-document"].route.cheapest) == set(names.values())  # nobody learnt it
    assert set(rules["beyond-context"].route.cheapest) == {"zoo-mamba", "zoo-rwkv", "zoo-xlstm"}
    assert "# state_tracking at 2x..8x (prompt_tokens >= 141), accuracy at 2x/4x/8x (capability.json):\n" in text
    assert "  #   rwkv 0.85/0.84/0.83, xlstm 0.50/0.50/0.50," in text
    # the catalogue holds the fitted curves: attention quadratic, recurrent linear
    assert pol.backends["zoo-transformer"].cost.prefill_ms.per_token_sq > 0
    assert pol.backends["zoo-rwkv"].cost.prefill_ms.per_token_sq == 0
    assert pol.backends["zoo-transformer"].context_length == 4096

    def decide(task: str, tokens: int) -> str:
        f = Features(prompt_tokens=tokens, max_tokens=8, task=task, task_probs={t: float(t == task) for t in TASKS},
                     state_tracking=float(task == "state_tracking"),
                     estimates=estimate_all(pol.backends.values(), tokens, 8))
        return pol.decide(f).backend

    assert decide("state_tracking", 500) == "zoo-rwkv"
    assert decide("state_tracking", 60) == "zoo-transformer"  # tied on quality, cheaper when short
    assert decide("recall", 5000) != "zoo-transformer"  # past its context


def test_labels_pick_the_cheapest_correct_family():
    # parity items at 1x: 1 -> transformer and rwkv right; 2 -> rwkv and xlstm; 3 -> nobody
    correct = {"transformer": {"parity": {"1": "100"}}, "mamba": {"parity": {"1": "000"}},
               "rwkv": {"parity": {"1": "110"}}, "xlstm": {"parity": {"1": "010"}}}
    cap = hand_made(MATRIX, correct)
    cap["accuracy"]["scales"] = [1]
    cap["accuracy"]["generators"] = {"parity": {**cap["accuracy"]["generators"]["parity"], "items": 3}}
    recs = build(cap, names={"rwkv": "zoo-rwkv"}, per_cell=10)
    assert [r.id for r in recs] == ["cap-parity-1x-1", "cap-parity-1x-2", "cap-parity-1x-3"]
    # a ~60-token parity prompt: the transformer's curve is the cheapest there, then the recurrent ones in order
    assert [r.best_backend for r in recs] == ["transformer", "zoo-rwkv", "transformer"]
    assert recs[2].tags[-2:] == ["unsolved", "correct:none"] and recs[0].tags[-1] == "correct:transformer+zoo-rwkv"
    assert recs[0].answer == make_item("parity", -1, training_length("parity")).answer
    assert recs[0].task == "state_tracking" and recs[0].state_tracking is True
    assert build(cap, per_cell=10, include_unsolved=False)[-1].id == "cap-parity-1x-2"
    # round-trips through the labelled reader
    lines = [json.dumps(r.model_dump(exclude_none=True)) for r in recs]
    assert len(parse_lines(lines)) == 3


def test_labels_fall_back_to_cell_accuracy_without_item_verdicts():
    cap = hand_made(MATRIX)
    recs = [r for r in build(cap, per_cell=1) if r.template == "capability/periodic_series"]
    assert {r.best_backend for r in recs} == {"mamba"}  # the best sequential family at every scale


def test_capability_doc_verdicts_and_lead_prose(tmp_path):
    cap = hand_made(MATRIX)
    # the Transformer's parity falls to chance past 1x; the others as in MATRIX
    cap["accuracy"]["families"]["transformer"]["per_generator"]["parity"] = {"1": .9, "2": .55, "4": .52, "8": .5}
    verdicts = {c["claim"]: c["verdict"] for c in claims(cap)}
    # no load sweep: the matrix's mqar cells (transformer .9 vs the best recurrent .4 at 1x)
    assert verdicts["Attention is best at exact recall where the load outgrows the recurrent states"] == "held"
    assert verdicts["Mamba is weak at exact recall"] == "held"
    assert verdicts["Attention fails to track state past its training length"] == "held"
    assert verdicts["RWKV-7 tracks state past its training length"] == "held"
    assert verdicts["Mamba-1 tracks state past its training length"] == "not held"  # learnt at 1x, lost past it
    assert verdicts["xLSTM (sLSTM) tracks state past its training length"] == "not held"  # parity .5 at 4x
    assert verdicts["Mamba is cheap on long sequences (cuda)"] == "held"
    # with a load sweep the recall verdict comes from the curve: held only where T >= .9 and leads by .2
    loads = {"mqar": [8, 64]}
    curves = {"transformer": [1.0, 0.95], "mamba": [1.0, 0.7], "rwkv": [1.0, 0.8], "xlstm": [1.0, 0.74]}
    cap["accuracy"]["load_sweep"] = {"items": 100, "loads": loads}
    for f, ys in curves.items():
        cap["accuracy"]["families"][f]["load_sweep"] = {"mqar": {str(n): {"accuracy": y, "first_byte": y,
                                                                          "prompt_tokens": 8 * n}
                                                                 for n, y in zip(loads["mqar"], ys, strict=True)}}
    c = next(c for c in claims(cap) if c["claim"].startswith("Attention is best"))
    assert c["verdict"] == "not held" and "no measured load meets the rule" in c["evidence"]  # .95 leads by .15
    cap["accuracy"]["families"]["rwkv"]["load_sweep"]["mqar"]["64"]["accuracy"] = 0.6
    c = next(c for c in claims(cap) if c["claim"].startswith("Attention is best"))
    assert c["verdict"] == "held" and "transformer 0.95" in c["evidence"]
    path = tmp_path / "capability.json"
    path.write_text(json.dumps(cap))
    out = tmp_path / "docs" / "capability.md"
    write(cap, cap_path=path, out=out)
    text = out.read_text()
    assert "| recall | transformer | **0.90** | **0.90** | **0.80** | **0.80** |" in text
    assert "| Attention is best at exact recall where the load outgrows the recurrent states | **held** |" in text
    assert "| mqar: load | 8 | 64 |" in text and "| transformer | 1.00 (1.00) | 0.95 (0.95) |" in text
    out.write_text(text.replace(text.split(LEAD_START)[1].split(LEAD_END)[0], "\nThe lead's words.\n"))
    write(cap, cap_path=path, out=out)
    assert "\nThe lead's words.\n" in out.read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_request_without_cuda_says_so(tiny_models, tmp_path):
    res = CliRunner().invoke(evals_app, ["capability", "--out", str(tmp_path), "--models-dir", str(tiny_models),
                                         "--device", "cuda"])
    assert res.exit_code == 1 and "torch.cuda.is_available() is False" in res.output


def test_combine_takes_the_matrix_and_the_load_sweep_from_separate_runs():
    matrix = hand_made(MATRIX)
    matrix["families"] = {"rwkv": matrix["families"]["rwkv"]}
    matrix["accuracy"]["families"] = {"rwkv": matrix["accuracy"]["families"]["rwkv"]}
    other = hand_made(MATRIX)
    other["families"] = {"transformer": other["families"]["transformer"]}
    other["accuracy"]["families"] = {"transformer": other["accuracy"]["families"]["transformer"]}
    sweep = hand_made(MATRIX)
    sweep["cost"] = {}
    sweep["families"] = {"rwkv": sweep["families"]["rwkv"]}
    sweep["accuracy"]["items_per_cell"] = 0
    sweep["accuracy"]["load_sweep"] = {"items": 3, "loads": {"mqar": [8]}}
    sweep["accuracy"]["families"] = {"rwkv": {"per_task": {}, "load_sweep": {"mqar": {"8": {"accuracy": 1.0}}}}}
    out = C.combine([sweep, matrix, other])
    acc = out["accuracy"]
    assert list(acc["families"]) == ["transformer", "rwkv"] and list(out["families"]) == ["transformer", "rwkv"]
    assert acc["items_per_cell"] == 200 and acc["load_sweep"]["loads"] == {"mqar": [8]}
    assert acc["families"]["rwkv"]["per_task"] == MATRIX_RWKV and acc["families"]["rwkv"]["load_sweep"]["mqar"]["8"]
    assert "load_sweep" not in acc["families"]["transformer"]


MATRIX_RWKV = {t: dict(zip(["1", "2", "4", "8"], MATRIX[t]["rwkv"], strict=True)) for t in TASKS}
