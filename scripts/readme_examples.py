"""One prompt per task type, in the zoo v2 task suite's format, sent through the real endpoint: with
`model: "auto"` (the router picks) and pinned to each family. Prints a Markdown table of the answers.

    PYTHONPATH=src python scripts/readme_examples.py [--policy config/policy.yaml] [--seed -900]

Starts the router with embedded engines in-process (as `archrouter eval run --execute` does). For each
task type it takes the first generator item (held-out seeds from --seed down, 1x length) that "auto"
answers correctly while at least one pinned family does not, so each row shows what routing buys.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import openai

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from archrouter.cli.evals import serve_in_thread  # noqa: E402
from archrouter.evals.execute import is_correct  # noqa: E402
from archrouter.evals.tasks import GENERATORS, make_item, training_length  # noqa: E402
from archrouter.policies.types import TASKS  # noqa: E402

FAMILIES = ("transformer", "mamba", "rwkv", "xlstm")


def ask(client: openai.OpenAI, model: str, prompt: str) -> tuple[str, str]:
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": prompt}], max_tokens=16, temperature=0)
    return raw.parse().choices[0].message.content or "", raw.headers.get("x-archrouter-backend", model)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--policy", default=str(ROOT / "config/policy.yaml"))
    ap.add_argument("--seed", type=int, default=-900)
    ap.add_argument("--tries", type=int, default=12)
    a = ap.parse_args()
    rows = []
    with serve_in_thread(a.policy) as base:
        client = openai.OpenAI(base_url=base, api_key="unused")
        for task in TASKS:
            gens = [g for g in sorted(GENERATORS) if GENERATORS[g][0] == task]
            found = None
            for k in range(a.tries):
                for g in gens:
                    item = make_item(g, a.seed - k, training_length(g))
                    auto, backend = ask(client, "auto", item.prompt)
                    if not is_correct(auto, item.answer):
                        continue
                    pinned = {f: ask(client, f, item.prompt)[0] for f in FAMILIES if f != backend}
                    wrong = [f for f, out in pinned.items() if not is_correct(out, item.answer)]
                    if wrong:
                        found = (g, item, backend, auto, wrong[0], pinned[wrong[0]])
                        break
                if found:
                    break
            rows.append((task, found))
    print("| task | prompt (generator) | answer | `auto` -> backend: output | pinned family: output |")
    print("| --- | --- | --- | --- | --- |")
    for task, found in rows:
        if not found:
            print(f"| {task} | no prompt found where auto is right and a pinned family wrong | | | |")
            continue
        g, item, backend, auto, fam, out = found
        p = item.prompt if len(item.prompt) <= 90 else item.prompt[:60] + " ... " + item.prompt[-25:]
        p = p.replace("|", "\\|")  # a table cell
        print(f"| {task} | `{p}` ({g}) | `{item.answer}` | {backend}: `{auto.strip()}` | {fam}: `{out.strip()}` |")


if __name__ == "__main__":
    main()
