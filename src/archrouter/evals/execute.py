"""Executed evaluation: send prompts to backends through the OpenAI API and score the answers.

Every prompt with an `answer` runs on every backend of the catalogue (pinned by name), so the
policy, each single-backend baseline and the oracle are scored on the same answers, sent to a
running router's URL (`archrouter eval run --execute` without `--url` starts one in-process first).
"""

from __future__ import annotations

import re
from typing import Any

import openai
from tqdm import tqdm

from archrouter.policies import decision_metrics as M
from archrouter.policies.engine import Policy
from archrouter.policies.evaluation import Row
from archrouter.policies.labelled import LabelledPrompt


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text.strip().casefold()).rstrip(" .!")


def is_correct(output: str, answer: str) -> bool:
    """Exact match after normalising case, whitespace and trailing punctuation; the first line counts."""
    first = output.strip().splitlines()[0] if output.strip() else ""
    return normalise(first) == normalise(answer)


def run_all(url: str, records: list[LabelledPrompt], backends: list[str], *, max_tokens: int,
            api_key: str = "unused") -> dict[str, dict[str, dict[str, Any]]]:
    """outputs[record id][backend] = {"text", "correct", "completion_tokens"}."""
    client = openai.OpenAI(base_url=url, api_key=api_key, max_retries=2, timeout=600)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    jobs = [(r, b) for r in records for b in backends]
    for rec, backend in tqdm(jobs, desc="executing", unit="call"):
        messages = [m.model_dump() for m in rec.messages] if rec.messages else [{"role": "user", "content": rec.prompt}]
        resp = client.chat.completions.create(model=backend, messages=messages, max_tokens=max_tokens, temperature=0)
        text = resp.choices[0].message.content or ""
        out.setdefault(rec.id, {})[backend] = {"text": text, "correct": is_correct(text, rec.answer or ""),
                                               "completion_tokens": resp.usage.completion_tokens}
    return out


def score(policy: Policy, rows: list[Row], outputs: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    rows = [r for r in rows if r.id in outputs]
    if not rows:
        raise ValueError("no executed prompts to score (do the labelled prompts carry an `answer`?)")
    backends = list(policy.backends)

    def quality(choice: list[str]) -> float:
        return sum(outputs[r.id][b]["correct"] for r, b in zip(rows, choice, strict=True)) / len(rows)

    def cost(choice: list[str]) -> float:
        return sum(r.estimates[b]["cost"] for r, b in zip(rows, choice, strict=True)) / len(rows)

    def oracle(r: Row) -> str:  # cheapest backend that answered correctly, else the policy's choice
        good = [b for b in backends if outputs[r.id][b]["correct"]]
        return min(good, key=lambda b: r.estimates[b]["cost"]) if good else r.backend

    choices = {"policy": [r.backend for r in rows], **{f"always:{b}": [b] * len(rows) for b in backends},
               "oracle": [oracle(r) for r in rows]}
    strategies = {n: {"quality": quality(c), "cost": cost(c)} for n, c in choices.items()}
    single = {b: strategies[f"always:{b}"]["quality"] for b in backends}
    weakest, strongest = min(single, key=single.get), max(single, key=single.get)
    # RouteLLM's APGR: move the calls the classifier is least sure of to the strongest backend, a share at a time
    order = sorted(range(len(rows)), key=lambda i: max(rows[i].features["task_probs"].values()))
    curve = []
    for step in range(11):
        k = round(len(rows) * step / 10)
        upgraded = set(order[:k])
        choice = [strongest if i in upgraded else r.backend for i, r in enumerate(rows)]
        curve.append((step / 10, quality(choice)))
    by_task: dict[str, list[bool]] = {}
    for r in rows:
        by_task.setdefault(r.task, []).append(outputs[r.id][r.backend]["correct"])
    return {
        "executed_prompts": len(rows),
        "strategies": strategies,
        "weakest": weakest, "strongest": strongest,
        "pgr": M.pgr(strategies["policy"]["quality"], single[weakest], single[strongest]),
        "apgr": M.apgr(curve, single[weakest], single[strongest]),
        "apgr_curve": curve,
        "policy_quality_by_task": {t: sum(v) / len(v) for t, v in sorted(by_task.items())},
    }
