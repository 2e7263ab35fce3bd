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
from archrouter.evals.tasks import CHANCE, GENERATORS
from archrouter.policies.types import TASKS

LEAD_START = "<!-- LEAD: prose below is kept when this page is regenerated -->"
LEAD_END = "<!-- /LEAD -->"
RECURRENT = ("mamba", "rwkv", "xlstm")
Z = 1.96


def chance(task: str) -> float:
    gens = [g for g in GENERATORS if GENERATORS[g][0] == task]
    return sum(CHANCE.get(g) or 0.0 for g in gens) / len(gens)


# the thresholds (issue 20, "Done when")
RECALL_WIN = 0.9  # the Transformer's accuracy at some load ...
RECALL_LEAD = 0.2  # ... and its lead over every recurrent family there
CHANCE_BAND = 0.1  # "within 0.1 of chance"
STATE_KEEP = 0.9  # sLSTM parity at 4x
THEORY = {
    "mamba": "theory: Mamba-1's transitions exp(dt*A) lie in (0, 1), so no finite-precision parity at any depth "
             "(Sarrof et al.; Grazzi et al. Thm 1)",
    "rwkv": "theory: as parameterised (w in (0.545, 1), a in (0, 1)) its transition's eigenvalue is >= -0.455, "
            "so an exact sign flip is not expected to extrapolate; cups5 (S5) and cycle5 (Z5) are the open cells",
}


def _gen(cap: dict[str, Any], f: str, g: str, s: str) -> float | None:
    return cap["accuracy"]["families"].get(f, {}).get("per_generator", {}).get(g, {}).get(s)


def recall_load_claim(cap: dict[str, Any]) -> dict[str, str] | None:
    """Attention best at exact recall where the load outgrows the recurrent states: at some load inside the
    Transformer's context (the load sweep; the matrix's mqar / copy_span cells when there is no sweep) the
    Transformer is >= RECALL_WIN and >= every recurrent family + RECALL_LEAD."""
    acc = cap["accuracy"]
    fams = acc["families"]
    if "transformer" not in fams:
        return None
    ctx = (cap.get("families", {}).get("transformer") or {}).get("context_length") or 4096
    points: list[tuple[str, str, float, dict[str, float]]] = []  # (generator, load label, tokens, acc by family)
    sweep = acc.get("load_sweep")
    if sweep:
        for g in sweep["loads"]:
            t = fams["transformer"].get("load_sweep", {}).get(g, {})
            for n, v in t.items():
                if v.get("prompt_tokens", 0) + 16 > ctx:
                    continue
                row = {f: r.get("load_sweep", {}).get(g, {}).get(n, {}).get("accuracy") for f, r in fams.items()}
                points.append((g, f"{n}", v.get("prompt_tokens", 0), {f: a for f, a in row.items() if a is not None}))
    else:
        for g in ("mqar", "copy_span"):
            for s in scales_of(cap):
                row = {f: _gen(cap, f, g, s) for f in fams}
                points.append((g, f"{s}x", 0, {f: a for f, a in row.items() if a is not None}))
    rec = [f for f in fams if f in RECURRENT]
    if not points or not rec:
        return None

    def lead(p) -> float:
        return p[3].get("transformer", 0.0) - max(p[3].get(f, 0.0) for f in rec)

    wins = [p for p in points if p[3].get("transformer", 0.0) >= RECALL_WIN and lead(p) >= RECALL_LEAD]

    def what(g: str) -> str:
        return "pairs" if g == "mqar" else "words" if g == "copy_span" else "load"

    if wins:
        g, n, toks, row = max(wins, key=lead)
        ev = (f"{g} at {n} {what(g)}" + (f" (~{toks:.0f} prompt tokens)" if toks else "") + ": "
              + ", ".join(f"{f} {a:.2f}" for f, a in sorted(row.items(), key=lambda kv: -kv[1]))
              + f"; {len(wins)} of {len(points)} measured loads meet the rule")
    else:  # per generator: the Transformer's best point and who led there
        bits = []
        for g in dict.fromkeys(p[0] for p in points):
            g_pts = [p for p in points if p[0] == g]
            _, n, _, row = max(g_pts, key=lambda p: p[3].get("transformer", 0.0))
            top = max(row, key=row.get)
            bits.append(f"{g}: the Transformer's best {row.get('transformer', 0.0):.2f} at {n} {what(g)} "
                        f"({top} {row[top]:.2f} there); best family over the loads "
                        + ", ".join(f"{f} {max(p[3].get(f, 0.0) for p in g_pts):.2f}" for f in fams))
        ev = "no measured load meets the rule. " + "; ".join(bits)
    return {"claim": "Attention is best at exact recall where the load outgrows the recurrent states",
            "verdict": "held" if wins else "not held", "evidence": ev,
            "rule": f"held when at some measured load inside the Transformer's context (mqar pairs or copy_span "
                    f"words) it is >= {RECALL_WIN} and >= every recurrent family + {RECALL_LEAD}"}


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

    # 1: exact recall where the load outgrows the recurrent states (the load sweep)
    c1 = recall_load_claim(cap)
    if c1:
        out.append(c1)
    # 5: Mamba weak at exact recall, at the training length
    if "transformer" in fams and "mamba" in fams:
        a = {f: task_accuracy(cap, f, "recall", first[0]) for f in fams}
        n = task_items(cap, "recall")
        ev = ", ".join(f"{f} {v:.2f}" for f, v in sorted(a.items(), key=lambda kv: -kv[1])) + f" (recall, {first[0]}x)"
        if max(a.values()) < FLOOR:
            verdict = "inconclusive"
        else:
            gap = a["transformer"] - a["mamba"]
            verdict = "held" if gap > margin(a["transformer"], a["mamba"], n, Z) else "not held"
        row("Mamba is weak at exact recall", verdict, ev,
            f"held when Mamba is below the transformer by more than the margin at {first[0]}x; inconclusive when no "
            f"family reaches {FLOOR}")

    # 2: attention and state past the training length: parity and cups5 at 4x within CHANCE_BAND of chance
    four = "4" if "4" in scales else later[-1] if later else None
    if "transformer" in fams and four:
        cells = {g: (_gen(cap, "transformer", g, first[0]), _gen(cap, "transformer", g, four))
                 for g in ("parity", "cups5")}
        cells = {g: v for g, v in cells.items() if v[1] is not None}
        if cells:
            near = all(abs(v[1] - (CHANCE[g] or 0)) <= CHANCE_BAND for g, v in cells.items())
            ev = "; ".join(f"{g}: {v[0]:.2f} at {first[0]}x, {v[1]:.2f} at {four}x (chance {CHANCE[g]:.2f})"
                           for g, v in cells.items())
            if all(v[0] is not None and abs(v[0] - (CHANCE[g] or 0)) <= CHANCE_BAND for g, v in cells.items()):
                ev += " - at 1x it is near chance too: it never learnt these tasks, so the verdict says little"
            row("Attention fails to track state past its training length", "held" if near else "not held", ev,
                f"held when the Transformer's parity and cups5 accuracy at {four}x are within {CHANCE_BAND} of chance")

    # 3: the sLSTM keeps state past the training length: parity >= STATE_KEEP at 4x
    if "xlstm" in fams and four:
        p1, p4 = _gen(cap, "xlstm", "parity", first[0]), _gen(cap, "xlstm", "parity", four)
        if p4 is not None:
            extra = ", ".join(f"{g} {_gen(cap, 'xlstm', g, first[0]):.2f} / {_gen(cap, 'xlstm', g, four):.2f}"
                              for g in ("cups5", "cycle5") if _gen(cap, "xlstm", g, four) is not None)
            row("xLSTM (sLSTM) tracks state past its training length", "held" if p4 >= STATE_KEEP else "not held",
                f"parity {p1:.2f} at {first[0]}x, {p4:.2f} at {four}x" + (f"; {extra} ({first[0]}x / {four}x)"
                                                                          if extra else ""),
                f"held when its parity accuracy at {four}x is >= {STATE_KEEP}")

    # Mamba's and RWKV-7's state tracking: reported as found, with the design note's theory beside it
    for f, label in (("mamba", "Mamba-1"), ("rwkv", "RWKV-7")):
        if f not in fams or not later:
            continue
        n, c = task_items(cap, "state_tracking"), chance("state_tracking")
        a1 = task_accuracy(cap, f, "state_tracking", first[0])
        al = _mean(_acc(cap, f, "state_tracking", later))
        per = "; ".join(f"{g} " + "/".join(f"{v:.2f}" for s in scales if (v := _gen(cap, f, g, s)) is not None)
                        for g in ("parity", "cups5", "cycle5") if _gen(cap, f, g, first[0]) is not None)
        ev = (f"{f} {a1:.2f} at {first[0]}x, {al:.2f} mean at {later[0]}x..{later[-1]}x (chance {c:.2f}); "
              f"{per} ({'/'.join(s + 'x' for s in scales)}). {THEORY[f]}")
        above = al - c > margin(al, c, n, Z)
        kept = a1 - al <= margin(a1, al, n, Z)
        learnt = a1 - c > margin(a1, c, n, Z)
        verdict = "held" if above and kept else "partly" if above else "not held" if learnt else "inconclusive"
        row(f"{label} tracks state past its training length", verdict, ev,
            "held when its state-tracking accuracy past 1x is above chance by more than the margin and within the "
            "margin of its 1x accuracy; partly when above chance but lower; not held when it learnt the task at 1x "
            "but is at chance past it; inconclusive when it did not learn the task at 1x")

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


def _chance_cell(g: str) -> str:
    c = CHANCE.get(g)
    return "-" if c is None else f"{c:.2f}"


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
              "| generator | task | 1x knob | chance | family | " + " | ".join(f"{s}x" for s in scales) + " |",
              "| --- | --- | ---: | ---: | --- | " + " | ".join("---:" for _ in scales) + " |"]
        gens = sorted(acc["generators"], key=lambda g: (TASKS.index(acc["generators"][g]["task"]), g))
        for g in gens:
            for i, f in enumerate(fams):
                row = acc["families"][f]["per_generator"].get(g, {})
                L.append(f"| {g if i == 0 else ''} | {acc['generators'][g]['task'] if i == 0 else ''} | "
                         f"{acc['generators'][g]['training_length'] if i == 0 else ''} | "
                         f"{_chance_cell(g) if i == 0 else ''} | {f} | "
                         + " | ".join(f"{row[s]:.2f}" if s in row else "-" for s in scales) + " |")
        L += ["", "</details>", ""]
        sweep = acc.get("load_sweep")
        if sweep:
            L += ["### Recall accuracy against load", ""]
            L.append(f"Exact match (first-byte accuracy in brackets) on {sweep['items']} held-out items per point, "
                     "as the recall load grows past where fixed recurrent states saturate, inside the Transformer's "
                     "context. The 1x column of the matrix is mqar at "
                     f"{acc['generators'].get('mqar', {}).get('training_length')} pairs and copy_span at "
                     f"{acc['generators'].get('copy_span', {}).get('training_length')} words; training drew up to "
                     "4x of both.")
            L.append("")
            if (figs / "recall_load.png").is_file():
                L += [f"![recall accuracy vs load]({_rel(figs / 'recall_load.png', out)})", ""]
            for g, loads in sweep["loads"].items():
                L.append(f"| {g}: load | " + " | ".join(str(n) for n in loads) + " |")
                L.append("| --- | " + " | ".join("---:" for _ in loads) + " |")
                t = fams[0] if fams else None
                toks = acc["families"][t].get("load_sweep", {}).get(g, {}) if t else {}
                L.append("| prompt tokens | " + " | ".join(str(toks.get(str(n), {}).get("prompt_tokens", "-"))
                                                          for n in loads) + " |")
                for f in fams:
                    pts = acc["families"][f].get("load_sweep", {}).get(g, {})
                    L.append(f"| {f} | " + " | ".join(
                        f"{pts[str(n)]['accuracy']:.2f} ({pts[str(n)]['first_byte']:.2f})" if str(n) in pts else "-"
                        for n in loads) + " |")
                L.append("")
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
             "max(0.02, 1.96 standard errors of the difference); chance: a uniform guess over the answer's "
             "alphabet, per generator in the table above, averaged over a task's generators where a rule uses "
             "the task).")
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

