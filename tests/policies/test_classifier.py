"""Task classifier: shipped model quality on the shipped held-out split, JSON round trip, training."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from archrouter.evals import DATA_DIR
from archrouter.policies.classifier import TaskClassifier, evaluate, train
from archrouter.policies.labelled import read_labelled
from archrouter.policies.types import TASKS

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "models/classifier/task-classifier.json.gz"
METRICS = ROOT / "models/classifier/metrics.json"
TEST = DATA_DIR / "labelled_test.jsonl.gz"


@pytest.fixture(scope="module")
def shipped() -> TaskClassifier:
    return TaskClassifier.load(MODEL)


def test_shipped_model_reaches_recorded_heldout_scores(shipped: TaskClassifier) -> None:
    recorded = json.loads(METRICS.read_text())["test"]
    m = evaluate(shipped, read_labelled(TEST))
    # same model, same data, deterministic arithmetic: the recorded figures must be reproduced exactly
    assert m["n"] == recorded["n"]
    assert m["macro_f1"] == recorded["macro_f1"]
    assert m["state_tracking_auc"] == recorded["state_tracking_auc"]
    # floors (the figures reported in metrics.json): items from seen templates, hand-written items,
    # and the harder share from templates and vocabulary never seen in training
    assert m["macro_f1"] >= 0.90
    assert m["by_tag"]["seen_template"]["macro_f1"] >= 0.95
    assert m["by_tag"]["handwritten"]["macro_f1"] >= 0.90
    assert m["by_tag"]["unseen_template"]["macro_f1"] >= 0.85
    assert m["state_tracking_auc"] >= 0.99


def test_predict_outputs_are_distributions(shipped: TaskClassifier) -> None:
    for text in ["", "hi", "x" * 50_000, "Swap cups 1 and 3. " * 3000, "😀 你好 Größe\n\t{}"]:
        probs, score = shipped.predict(text)
        assert list(probs) == list(TASKS)
        assert abs(sum(probs.values()) - 1.0) < 1e-9
        assert all(0.0 <= p <= 1.0 for p in probs.values())
        assert 0.0 <= score <= 1.0


def test_save_load_round_trip_identical(shipped: TaskClassifier, tmp_path: Path) -> None:
    texts = [r.text() for r in read_labelled(TEST)[:40]]
    for name in ("m.json", "m.json.gz"):
        shipped.save(tmp_path / name)
        again = TaskClassifier.load(tmp_path / name)
        assert again.predict_many(texts) == shipped.predict_many(texts)  # bit-identical, not approximately


def _tiny_set(rng: random.Random) -> list[dict]:
    objs, names = ["ball", "key", "coin", "cup"], ["Ana", "Bo", "Cy", "Di"]
    make = {
        "chat": lambda: {
            "prompt": rng.choice(
                [
                    "hi, how are you?",
                    "any tips for sleeping better?",
                    "recommend a movie please",
                    "what is inflation?",
                ]
            )
        },
        "recall": lambda: {
            "prompt": f"{rng.choice(names)}: {rng.randint(100, 999)}\n"
            f"{rng.choice(names)}: {rng.randint(100, 999)}\nWhat is the number of "
            f"{rng.choice(names)}? Copy it exactly."
        },
        "state_tracking": lambda: {
            "prompt": " ".join(f"Swap cups {rng.randint(1, 3)} and {rng.randint(1, 3)}." for _ in range(5))
            + " Where is the ball?"
        },
        "long_document": lambda: {
            "prompt": "Summarise this report. "
            + " ".join(
                rng.choice(["The council met.", "Costs rose.", "Residents objected.", "The plan changed."])
                for _ in range(80)
            )
        },
        "sequential_data": lambda: {
            "prompt": "Forecast the next values: " + ", ".join(str(rng.randint(0, 99)) for _ in range(30))
        },
        "code": lambda: {
            "messages": [
                {
                    "role": "user",
                    "content": f"Write a Python function that sorts {rng.choice(objs)}s"
                    " and fix this: def f(x): return x.sort()",
                }
            ]
        },
    }
    return [{"task": t, **make[t]()} for t in TASKS for _ in range(12)]


def test_train_on_small_set(tmp_path: Path) -> None:
    rng = random.Random(1)
    data = _tiny_set(rng)
    clf = train(data, seed=0)
    probe = _tiny_set(random.Random(2))
    preds = [
        max(p, key=p.get)
        for p, _ in clf.predict_many(
            [r["prompt"] if "prompt" in r else r["messages"][0]["content"] for r in probe]
        )
    ]
    # separable toy tasks: a working trainer gets nearly all of a fresh draw right
    assert np.mean([p == r["task"] for p, r in zip(preds, probe, strict=True)]) >= 0.9
    _, s_state = clf.predict(probe[2 * 12]["prompt"])
    _, s_chat = clf.predict(probe[0]["prompt"])
    assert s_state > s_chat
    clf.save(tmp_path / "tiny.json")
    assert TaskClassifier.load(tmp_path / "tiny.json").predict("hello") == clf.predict("hello")


def test_train_rejects_missing_task() -> None:
    with pytest.raises(ValueError, match="no examples"):
        train([{"prompt": "hi", "task": "chat"}, {"prompt": "yo", "task": "chat"}])


def test_load_rejects_foreign_json(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text('{"format": "something-else"}')
    with pytest.raises(ValueError, match="not a"):
        TaskClassifier.load(tmp_path / "x.json")
