"""Seeded generator of labelled prompts for the six task types, and the train/test split.

`python -m archrouter.evals.labelled --seed 0` writes labelled_train.jsonl.gz, labelled_test.jsonl.gz
(gzip, read back by `read_labelled`) and labelled_manifest.json into archrouter/evals/data/.
How the test split is held out:
  * every item of a *held-out template* (about a quarter of each task's templates, marked in the task
    modules) goes to test, and those items draw names, objects, places... only from the held-out quarter
    of each vocabulary pool (see vocab.py); tag "unseen_template";
  * a seeded 12% of the other generated items go to test too (same templates and vocabulary as training);
    tag "seen_template";
  * half of the hand-written prompts (src/archrouter/evals/data/handwritten.jsonl) go to test; tag "handwritten".
The templates (chat.py ... state.py, registered in base.py) are the logic; the text they draw from (phrasing
banks, word pools, prose sentences, system prompts) is data in banks/<module>.yaml, read through bank.py.
The shipped sets depend on every entry of those files and its order.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from pathlib import Path

from archrouter.evals.labelled import chat, code, extra, longdoc, more, recall, seqdata, state  # noqa: F401  (register templates)
from archrouter.evals.labelled.bank import bank
from archrouter.evals.labelled.base import TEMPLATES, Item, Template
from archrouter.evals.labelled.text import compose, noisy
from archrouter.evals.labelled.vocab import Vocab
from archrouter.evals.schema import LabelledPrompt, read_labelled, write_labelled
from archrouter.policies.types import TASKS

SEEN_TEST_FRACTION = 0.12
HANDWRITTEN_TEST_FRACTION = 0.35

_SYSTEMS = bank("render", "systems")
_GREETINGS = bank("render", "greetings")


def templates_for(task: str) -> list[Template]:
    return [t for t in TEMPLATES if t.task == task]


def _render(rng: random.Random, item: Item, v: Vocab) -> dict:
    """The record's text part: either {"prompt": ...} or {"messages": [...]}."""
    if item.messages is not None:
        msgs = list(item.messages)
        if msgs[0]["role"] != "system" and rng.random() < 0.3:
            msgs.insert(0, {"role": "system", "content": rng.choice(_SYSTEMS).format(c=v.company)})
        return {"messages": msgs}
    instr = noisy(rng, item.instr) if item.noise else item.instr
    text = compose(rng, instr, item.context, item.label)
    if rng.random() < 0.5:
        return {"prompt": text}
    msgs = []
    if rng.random() < 0.5:
        msgs.append({"role": "system", "content": rng.choice(_SYSTEMS).format(c=v.company)})
    if rng.random() < 0.2:
        u, a = rng.choice(_GREETINGS)
        msgs += [{"role": "user", "content": u}, {"role": "assistant", "content": a}]
    msgs.append({"role": "user", "content": text})
    return {"messages": msgs}


def generate(seed: int = 0, per_task: int = 800) -> list[tuple[LabelledPrompt, bool]]:
    """`per_task` records for each task, round-robin over templates: (record, held-out template?)."""
    out = []
    seen: set[str] = set()  # no duplicate texts, so no test item is a copy of a training item
    for task in TASKS:
        tmpls = templates_for(task)
        for i in range(per_task):
            t = tmpls[i % len(tmpls)]
            for attempt in range(50):
                # one RNG per item, seeded by a string: deterministic and independent of generation order
                rng = random.Random(f"{seed}:{task}:{i}:{attempt}")
                v = Vocab(rng, held_out=t.held_out)
                item = t.fn(rng, v)
                rec = LabelledPrompt(
                    id=f"gen-{seed}-{task}-{i:05d}",
                    task=task,
                    state_tracking=item.state,
                    answer=item.answer,
                    template=f"{task}/{t.name}",
                    tags=["generated"],
                    **_render(rng, item, v),
                )
                key = " ".join(rec.text().lower().split())
                if key not in seen:
                    break
            seen.add(key)
            out.append((rec, t.held_out))
    return out


def split(
    generated: list[tuple[LabelledPrompt, bool]], handwritten: list[LabelledPrompt], seed: int = 0
) -> tuple[list[LabelledPrompt], list[LabelledPrompt]]:
    rng = random.Random(f"split:{seed}")
    train, test = [], []
    for rec, held_out in generated:
        if held_out:
            test.append(rec.model_copy(update={"tags": [*rec.tags, "unseen_template"]}))
        elif rng.random() < SEEN_TEST_FRACTION:
            test.append(rec.model_copy(update={"tags": [*rec.tags, "seen_template"]}))
        else:
            train.append(rec)
    # its own RNG, so which hand-written prompts are held out does not depend on how many were generated
    rng = random.Random(f"split-handwritten:{seed}")
    for rec in handwritten:
        tags = [*rec.tags] if "handwritten" in rec.tags else [*rec.tags, "handwritten"]
        (test if rng.random() < HANDWRITTEN_TEST_FRACTION else train).append(
            rec.model_copy(update={"tags": tags})
        )
    return train, test


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_dataset(out: Path, seed: int = 0, per_task: int = 800, handwritten: Path | None = None) -> dict:
    out = Path(out)
    hw = read_labelled(handwritten) if handwritten is not None and Path(handwritten).exists() else []
    gen = generate(seed, per_task)
    train, test = split(gen, hw, seed)
    write_labelled(out / "labelled_train.jsonl.gz", train)
    write_labelled(out / "labelled_test.jsonl.gz", test)
    manifest = {
        "seed": seed,
        "per_task": per_task,
        "command": f"python -m archrouter.evals.labelled --out {out} --seed {seed}",
        "generated": len(gen),
        "handwritten": len(hw),
        "train": len(train),
        "test": len(test),
        "train_by_task": dict(Counter(r.task for r in train)),
        "test_by_task": dict(Counter(r.task for r in test)),
        "test_by_tag": dict(Counter(t for r in test for t in r.tags)),
        "held_out_templates": sorted(f"{t.task}/{t.name}" for t in TEMPLATES if t.held_out),
        "templates": len(TEMPLATES),
        "sha256": {p: _sha256(out / p) for p in ("labelled_train.jsonl.gz", "labelled_test.jsonl.gz")},
    }
    if handwritten is not None and Path(handwritten).exists():
        manifest["sha256"][Path(handwritten).name] = _sha256(Path(handwritten))
    (out / "labelled_manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
