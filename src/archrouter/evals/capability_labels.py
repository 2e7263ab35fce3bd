"""Labelled prompts from the capability matrix: `src/archrouter/evals/data/labelled_capability.jsonl`.

    python -m archrouter.evals capability-labels --capability src/archrouter/evals/results/capability/capability.json \
        --out src/archrouter/evals/data/labelled_capability.jsonl [--per-cell 10] [--names transformer=...,...]

Each record is one scored task item (the same seeds the matrix measured) as a user message, with its
`task`, `answer` (for executed evaluation) and `best_backend`: the family that answered it correctly
at the least estimated cost, quality first. Correctness is per item when capability.json has every
family's per-item verdicts (it does when written by `python -m archrouter.evals capability`); otherwise the
families with the best accuracy in the item's (generator, scale) cell count as correct. Cost is the
fitted cost curve (`evals.policy_fit.cost_models`, the same numbers the fitted policy's catalogue
holds) for the item's prompt length and its answer + end token. When no family answered, the cheapest
is the label and the record is tagged `unsolved` (filter on tags to leave those out).
"""

from __future__ import annotations

from typing import Any

from archrouter.backends.tokenizer import ByteTokenizer
from archrouter.evals.capability import prompt_tokens
from archrouter.evals.policy_fit import cost_models, estimate_ms
from archrouter.evals.tasks import GENERATORS, make_item, training_length
from archrouter.policies.labelled import LabelledPrompt, Message

TOK = ByteTokenizer()


def correct_families(cap: dict[str, Any], gen: str, scale: str, index: int) -> list[str]:
    fams = cap["accuracy"]["families"]
    if all(gen in r.get("correct", {}) and scale in r["correct"][gen] for r in fams.values()):
        return [f for f, r in fams.items() if index < len(r["correct"][gen][scale])
                and r["correct"][gen][scale][index] == "1"]
    cell = {f: r["per_generator"].get(gen, {}).get(scale, 0.0) for f, r in fams.items()}
    best = max(cell.values(), default=0.0)
    return [f for f, a in cell.items() if best > 0 and a >= best - 1e-9]


def build(cap: dict[str, Any], *, names: dict[str, str] | None = None, per_cell: int = 10,
          cost_dev: str | None = None, include_unsolved: bool = True) -> list[LabelledPrompt]:
    acc = cap.get("accuracy")
    if not acc:
        raise ValueError("the capability file has no accuracy measurements")
    families = list(acc["families"])
    names = {f: (names or {}).get(f, f) for f in families}
    _, costs = cost_models(cap, cost_dev)
    missing = [f for f in families if f not in costs]
    if missing:
        raise ValueError(f"no cost points for {', '.join(missing)}")
    out: list[LabelledPrompt] = []
    for gen in sorted(acc["generators"]):
        task = GENERATORS[gen][0]
        for scale in (str(s) for s in acc["scales"]):
            n = min(per_cell, acc["generators"][gen]["items"])
            for i in range(n):
                item = make_item(gen, -1 - i, int(scale) * training_length(gen))
                good = correct_families(cap, gen, scale, i)
                if not good and not include_unsolved:
                    continue
                tokens, m = prompt_tokens(item), len(TOK.encode(item.answer)) + 1
                est = {f: estimate_ms(costs[f], tokens, m) for f in families}
                best = min(good or families, key=lambda f: (est[f], families.index(f)))
                out.append(LabelledPrompt(
                    id=f"cap-{gen}-{scale}x-{i + 1}",
                    messages=[Message(role="user", content=item.prompt)],
                    task=task,  # type: ignore[arg-type]
                    state_tracking=task == "state_tracking",
                    best_backend=names[best],
                    answer=item.answer,
                    template=f"capability/{gen}",
                    tags=["capability", f"scale:{scale}x", "solved" if good else "unsolved",
                          "correct:" + ("+".join(names[f] for f in good) or "none")],
                ))
    return out


TASK_TRAIN_SEED = 10_000_000  # far from the trainer's step-derived seeds and the matrix's negative seeds


def task_training_set(per_cell: int = 12, scales: tuple[int, ...] = (1, 2, 4, 8)) -> list[LabelledPrompt]:
    """Task items as labelled prompts for the *classifier* (task and state_tracking only, no
    best_backend), so it recognises the zoo's task formats: `per_cell` items per (generator, scale) at
    seeds from TASK_TRAIN_SEED up, disjoint from the held-out items the matrix and
    labelled_capability.jsonl use (-1, -2, ...)."""
    out: list[LabelledPrompt] = []
    for gen in sorted(GENERATORS):
        task = GENERATORS[gen][0]
        for scale in scales:
            for i in range(per_cell):
                item = make_item(gen, TASK_TRAIN_SEED + i, scale * training_length(gen))
                out.append(LabelledPrompt(
                    id=f"task-{gen}-{scale}x-{i + 1}",
                    messages=[Message(role="user", content=item.prompt)],
                    task=task,  # type: ignore[arg-type]
                    state_tracking=task == "state_tracking",
                    template=f"tasks/{gen}",
                    tags=["tasks", f"scale:{scale}x"],
                ))
    return out
