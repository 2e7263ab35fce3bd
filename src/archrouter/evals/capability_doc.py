"""docs/capability.md from a capability.json: tables, the figures, and verdicts on the design's claims.

    python -m archrouter.evals capability-doc --capability src/archrouter/evals/results/capability/capability.json \
        --out docs/capability.md

The verdicts are computed from the numbers by the rules printed beside them (accuracy compared with
chance and with the other families, margins as in `evals.policy_fit`); the lead's prose goes between
the LEAD markers, which a regeneration keeps.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from archrouter.evals.capability import scales_of, task_accuracy, task_items
from archrouter.evals.policy_fit import FLOOR, margin
from archrouter.evals.tasks import GENERATORS
from archrouter.policies.types import TASKS

# Chance of a uniform guess over the answer space, where it is small enough to matter.
CHANCE = {"parity": 1 / 2, "cups": 1 / 3, "permutations": 1 / 120, "trace": 1 / 10, "loop_program": 1 / 10}
LEAD_START = "<!-- LEAD: prose below is kept when this page is regenerated -->"
LEAD_END = "<!-- /LEAD -->"
RECURRENT = ("mamba", "rwkv", "xlstm")
Z = 1.96


def chance(task: str) -> float:
    gens = [g for g in GENERATORS if GENERATORS[g][0] == task]
    return sum(CHANCE.get(g, 0.0) for g in gens) / len(gens)


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def _acc(cap, f, t, scales) -> list[float]:
    return [v for s in scales if (v := task_accuracy(cap, f, t, s)) is not None]


def claims(cap: dict[str, Any]) -> list[dict[str, str]]:
    """[{claim, verdict (held | not held | partly | inconclusive | not measured), evidence, rule}]."""
    out: list[dict[str, str]] = []
    acc = cap.get("accuracy")
    fams = list(acc["families"]) if acc else []
    if not acc:
        return [{"claim": "accuracy claims", "verdict": "not measured", "evidence": "no accuracy in the file",
                 "rule": ""}]
    scales = scales_of(cap)
    first, later = scales[:1], scales[1:]

    def row(claim: str, verdict: str, evidence: str, rule: str) -> None:
        out.append({"claim": claim, "verdict": verdict, "evidence": evidence, "rule": rule})

    # 1 + 5: exact recall at the training length
    if "transformer" in fams:
        a = {f: task_accuracy(cap, f, "recall", first[0]) for f in fams}
        n = task_items(cap, "recall")
        best = max(a, key=a.get)
        ev = ", ".join(f"{f} {v:.2f}" for f, v in sorted(a.items(), key=lambda kv: -kv[1])) + f" (recall, {first[0]}x)"
        if a[best] < FLOOR:
            verdict = "inconclusive"
        else:
            verdict = "held" if a[best] - a["transformer"] <= margin(a[best], a["transformer"], n, Z) else "not held"
        row("Attention is best at exact recall", verdict, ev,
            f"held when the transformer is within the margin of the best at {first[0]}x; inconclusive when no family "
            f"reaches {FLOOR}")
        if "mamba" in fams:
            if a[best] < FLOOR:
                verdict = "inconclusive"
            else:
                gap = a["transformer"] - a["mamba"]
                verdict = "held" if gap > margin(a["transformer"], a["mamba"], n, Z) else "not held"
            row("Mamba is weak at exact recall", verdict, ev,
                f"held when Mamba is below the transformer by more than the margin at {first[0]}x")

    # 2: attention and state past the training length
    if "transformer" in fams and later:
        n, c = task_items(cap, "state_tracking"), chance("state_tracking")
        t1 = task_accuracy(cap, "transformer", "state_tracking", first[0])
        tl = _mean(_acc(cap, "transformer", "state_tracking", later))
        rec = {f: _mean(_acc(cap, f, "state_tracking", later)) for f in fams if f in RECURRENT}
        ev = (f"transformer {t1:.2f} at {first[0]}x, {tl:.2f} mean at {later[0]}x..{later[-1]}x; "
              + ", ".join(f"{f} {v:.2f}" for f, v in rec.items()) + f" (mean past {first[0]}x); chance {c:.2f}")
        if t1 - c <= margin(t1, c, n, Z):
            verdict = "inconclusive"  # it never tracked state, even at the training length
        else:
            drop = t1 - tl > margin(t1, tl, n, Z)
            behind = bool(rec) and max(rec.values()) - tl > margin(max(rec.values()), tl, n, Z)
            verdict = "held" if drop and behind else "partly" if drop or behind else "not held"
        row("Attention fails to track state past its training length", verdict, ev,
            "held when the transformer's state-tracking accuracy past 1x is below its own 1x accuracy and below the "
            "best recurrent family's, each by more than the margin; partly when one holds; inconclusive when its 1x "
            "accuracy is within the margin of chance")

    # 3: RWKV-7 and sLSTM track state past the training length
    for f, label in (("rwkv", "RWKV-7"), ("xlstm", "xLSTM (sLSTM)")):
        if f not in fams or not later:
            continue
        n, c = task_items(cap, "state_tracking"), chance("state_tracking")
        a1 = task_accuracy(cap, f, "state_tracking", first[0])
        al = _mean(_acc(cap, f, "state_tracking", later))
        ev = f"{f} {a1:.2f} at {first[0]}x, {al:.2f} mean at {later[0]}x..{later[-1]}x; chance {c:.2f}"
        above = al - c > margin(al, c, n, Z)
        kept = a1 - al <= margin(a1, al, n, Z)
        learnt = a1 - c > margin(a1, c, n, Z)
        verdict = "held" if above and kept else "partly" if above else "not held" if learnt else "inconclusive"
        row(f"{label} can track state past its training length", verdict, ev,
            "held when its state-tracking accuracy past 1x is above chance by more than the margin and within the "
            "margin of its 1x accuracy; partly when above chance but lower; inconclusive when neither its 1x nor its "
            "longer accuracy is above chance by the margin (it did not learn the task at all)")

    # 4: cost claims, per device
    for dev, rec in sorted((cap.get("cost") or {}).items()):
        res = rec.get("families", {})
        pts = {f: r["points"] for f, r in res.items() if r.get("points")}
        if "mamba" in pts and "transformer" in pts:
            common = sorted({p["prompt_tokens"] for p in pts["mamba"]}
                            & {p["prompt_tokens"] for p in pts["transformer"]})
            if common:
                n = common[-1]
                m = next(p for p in pts["mamba"] if p["prompt_tokens"] == n)
                t = next(p for p in pts["transformer"] if p["prompt_tokens"] == n)
                cheaper = m["prefill_ms_per_token"] <= t["prefill_ms_per_token"] and \
                    m["decode_ms_per_token"] <= t["decode_ms_per_token"]
                ev = (f"at {n} tokens on {dev}: prefill {m['prefill_ms_per_token']:.4g} vs "
                      f"{t['prefill_ms_per_token']:.4g} ms/token, decode {m['decode_ms_per_token']:.4g} vs "
                      f"{t['decode_ms_per_token']:.4g} ms/token, "
                      f"state {m['state_bytes']:,} vs {t['state_bytes']:,} bytes (mamba vs transformer)")
                row(f"Mamba is cheap on long sequences ({dev})", "held" if cheaper else "not held", ev,
                    "held when Mamba's prefill and decode time per token are at most the transformer's at the longest "
                    "length both measured")
        for f in (f for f in RECURRENT if f in pts and len(pts[f]) >= 2):
            lo, hi = pts[f][0], pts[f][-1]
            ratio_p = hi["prefill_ms_per_token"] / lo["prefill_ms_per_token"]
            ratio_d = hi["decode_ms_per_token"] / lo["decode_ms_per_token"]
            const = hi["state_bytes"] == lo["state_bytes"]
            ok = ratio_p < 2 and ratio_d < 1.5 and const
            ev = (f"{f} on {dev}, {lo['prompt_tokens']} -> {hi['prompt_tokens']} tokens: "
                  f"prefill ms/token x{ratio_p:.2f}, decode ms/token x{ratio_d:.2f}, "
                  f"state {lo['state_bytes']:,} -> {hi['state_bytes']:,} bytes")
            row(f"{f}: linear prefill, constant decode and state ({dev})", "held" if ok else "not held", ev,
                "held when per-token prefill grows < 2x and per-token decode < 1.5x over the measured lengths, "
                "and the state size does not change")
    return out


def _rel(target: Path, doc: Path) -> str:
    return Path(os.path.relpath(target, doc.parent)).as_posix()


def render(cap: dict[str, Any], *, cap_path: Path, out: Path, previous: str | None = None) -> str:
    figs = cap_path.parent
    L: list[str] = ["# Capability of the model zoo", ""]
    L.append(f"<!-- Generated by `python -m archrouter.evals capability-doc --capability {cap_path.as_posix()} --out "
             f"{out.as_posix()}`; the tables and verdicts come from the numbers. "
             "Write prose between the LEAD markers. -->")
    L.append("")
    runs = cap.get("runs", [])
    if runs:
        L.append("Measured by " + "; ".join(
            f"`{r.get('command', '?')}` ({', '.join(r.get('parts', []))} on {r.get('device')}, commit "
            f"{(r.get('commit') or '?')[:10]}, {r.get('started')})" for r in runs) + ".")
        L.append("")
    # models
    L += ["## Models", "", "| family | parameters | steps | tokens | training wall (s) | device | checkpoint |",
          "| --- | ---: | ---: | ---: | ---: | --- | --- |"]
    for f, r in cap.get("families", {}).items():
        t = r.get("training") or {}
        L.append(f"| {f} | {r.get('parameters', 0):,} | {t.get('steps', '-')} | "
                 f"{t['tokens']:,} | {t.get('wall_s', '-')} | {t.get('device', '-')} | `{r.get('checkpoint')}` |"
                 if t else f"| {f} | {r.get('parameters', 0):,} | untrained | - | - | - | `{r.get('checkpoint')}` |")
    L.append("")
    acc = cap.get("accuracy")
    if acc:
        scales = scales_of(cap)
        fams = list(acc["families"])
        L += ["## Accuracy by task and length", ""]
        L.append(f"Exact-match accuracy of greedy decoding, {acc['items_per_cell']} items per task and length "
                 f"(spread over the task's generators; held-out seeds), at {', '.join(s + 'x' for s in scales)} "
                 f"each generator's training length; measured on {acc['device']} ({acc['dtype']}, torch "
                 f"{acc['torch']}) in {acc.get('wall_s', 0):.0f} s. Bold: the best family in the column.")
        L.append("")
        if (figs / "accuracy_by_task.png").is_file():
            L += [f"![accuracy by task]({_rel(figs / 'accuracy_by_task.png', out)})", ""]
        L.append("| task | family | " + " | ".join(f"{s}x" for s in scales) + " | prompt tokens (median) |")
        L.append("| --- | --- | " + " | ".join("---:" for _ in scales) + " | --- |")
        for t in TASKS:
            if t not in acc.get("task_prompt_tokens", {}):
                continue
            best = {s: max(task_accuracy(cap, f, t, s) or 0.0 for f in fams) for s in scales}
            toks = " / ".join(f"{acc['task_prompt_tokens'][t][s]:.0f}" for s in scales)
            for i, f in enumerate(fams):
                cells = []
                for s in scales:
                    v = task_accuracy(cap, f, t, s)
                    cells.append("-" if v is None else f"**{v:.2f}**" if v == best[s] and v > 0 else f"{v:.2f}")
                L.append(f"| {t if i == 0 else ''} | {f} | " + " | ".join(cells) + f" | {toks if i == 0 else ''} |")
        L.append("")
        L += ["### By generator", ""]
        if (figs / "accuracy_by_generator.png").is_file():
            L += [f"![accuracy by generator]({_rel(figs / 'accuracy_by_generator.png', out)})", ""]
        L += ["<details><summary>table</summary>", "",
              "| generator | task | train length | family | " + " | ".join(f"{s}x" for s in scales) + " |",
              "| --- | --- | ---: | --- | " + " | ".join("---:" for _ in scales) + " |"]
        gens = sorted(acc["generators"], key=lambda g: (TASKS.index(acc["generators"][g]["task"]), g))
        for g in gens:
            for i, f in enumerate(fams):
                row = acc["families"][f]["per_generator"].get(g, {})
                L.append(f"| {g if i == 0 else ''} | {acc['generators'][g]['task'] if i == 0 else ''} | "
                         f"{acc['generators'][g]['training_length'] if i == 0 else ''} | {f} | "
                         + " | ".join(f"{row[s]:.2f}" if s in row else "-" for s in scales) + " |")
        L += ["", "</details>", ""]
    cost = cap.get("cost") or {}
    if cost:
        L += ["## Cost", ""]
        L.append("Batch 1 through the serving path (`forward` with a cache; prefill in the engine's chunks, then "
                 "single-token decode steps), per device. State: one sequence's cache at that length.")
        L.append("")
        if (figs / "cost.png").is_file():
            L += [f"![cost]({_rel(figs / 'cost.png', out)})", ""]
        for dev, rec in sorted(cost.items()):
            L.append(f"**{dev}**: {rec.get('device')}, {rec.get('dtype')}, torch {rec.get('torch')}, "
                     f"{rec.get('threads')} threads, prefill chunk {rec.get('prefill_chunk')}, "
                     f"{rec.get('decode_steps')} decode steps timed.")
            L.append("")
            L += ["| family | prompt tokens | prefill ms/token | decode ms/token | state bytes | note |",
                  "| --- | ---: | ---: | ---: | ---: | --- |"]
            for f, r in rec.get("families", {}).items():
                for p in r.get("points", []):
                    note = "past the positional limit" if p.get("beyond_context") else ""
                    L.append(f"| {f} | {p['prompt_tokens']} | {p['prefill_ms_per_token']:.4g} | "
                             f"{p['decode_ms_per_token']:.4g} | {p['state_bytes']:,} | {note} |")
                if r.get("skipped"):
                    L.append(f"| {f} | {', '.join(map(str, r['skipped']))} | - | - | - | not measured: over the time "
                             f"budget{' / ' + r['error'] if r.get('error') else ''} |")
            L.append("")
    L += ["## The design's claims", ""]
    L.append("Each verdict is computed from the tables above by the rule in its row (margin: "
             "max(0.02, 1.96 standard errors of the difference), chance: a uniform guess over the answers of "
             "parity, cups, permutations, trace and loop programs).")
    L.append("")
    L += ["| claim | verdict | evidence | rule |", "| --- | --- | --- | --- |"]
    for c in claims(cap):
        L.append(f"| {c['claim']} | **{c['verdict']}** | {c['evidence']} | {c['rule']} |")
    L.append("")
    lead = "_(The lead's reading of these results: where the claims held, where they did not, and why.)_"
    if previous and LEAD_START in previous and LEAD_END in previous:
        lead = previous.split(LEAD_START, 1)[1].split(LEAD_END, 1)[0].strip("\n")
    L += [LEAD_START, lead, LEAD_END, ""]
    L += ["## How it was measured", ""]
    L.append("- Accuracy is greedy decoding's verdict computed teacher-forced (`evals.training.exact_match`): "
             "greedy decoding emits exactly the answer and stops iff the argmax at every answer position is the "
             "answer's next byte and after the last byte an end token, so one batched forward gives the same "
             "verdict as decoding (up to floating-point ties between a batched forward and step-by-step decoding; "
             "`tests/evals/test_capability.py` checks them against `backends/generator.py`). Byte-exact, so "
             "stricter than case-folding checks.")
    L.append("- Items: `evals.tasks` generators at s x their training length, seeds -1, -2, ... (training uses "
             "seeds >= 0); every family scores the same items.")
    L.append("- The policy (`archrouter policy fit`) and the labelled set "
             "(`python -m archrouter.evals capability-labels`) are derived from the same capability.json.")
    L.append("")
    return "\n".join(L)


def write(cap: dict[str, Any], *, cap_path: Path, out: Path) -> Path:
    previous = out.read_text(encoding="utf-8") if out.is_file() else None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(cap, cap_path=cap_path, out=out, previous=previous), encoding="utf-8")
    return out

