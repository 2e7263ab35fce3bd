"""The zoo v2 probe verdicts (design note §4.10) from the runs' training.json files, and the choice of
the Transformer's learning rate among probe variants.

    python -m archrouter.evals.zoo_probe --runs runs/zoo [--variants transformer transformer_lr3e-3] [--out probe.json]

Reads each run folder's last periodic/final eval (the probe generators at 1x and 4x: exact match and
first-byte accuracy) and prints the five pass/fail thresholds. Among the Transformer variants the one
with the best recall (mqar + copy_span exact match at 1x, first-byte accuracy as the tie-breaker) is
chosen: the per-family lr "confirmed on the probe".
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

FAMILIES = ("transformer", "mamba", "rwkv", "xlstm")


def last_eval(record: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """{"1x"|"4x": {"exact"|"first": {generator: accuracy}}} from the run's latest eval."""
    ev = record["evals"][-1]
    return {k: {"exact": ev[k]["per_generator"], "first": ev[k].get("first_byte", {})} for k in ("1x", "4x") if k in ev}


def recall_score(e: dict[str, Any]) -> float:
    x, f = e["1x"]["exact"], e["1x"]["first"]
    return x.get("mqar", 0) + x.get("copy_span", 0) + 0.01 * (f.get("mqar", 0) + f.get("copy_span", 0))


def verdicts(ev: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    def acc(f: str, s: str, g: str) -> float | None:
        return ev.get(f, {}).get(s, {}).get("exact", {}).get(g)

    t_mqar, m_mqar = acc("transformer", "1x", "mqar"), acc("mamba", "1x", "mqar")
    rules = [
        ("Transformer mqar 1x >= 0.9 and >= Mamba + 0.2", t_mqar is not None and m_mqar is not None
         and t_mqar >= 0.9 and t_mqar >= m_mqar + 0.2, {"transformer": t_mqar, "mamba": m_mqar}),
        ("Transformer copy_span 1x >= 0.8", (acc("transformer", "1x", "copy_span") or 0) >= 0.8,
         {"transformer": acc("transformer", "1x", "copy_span")}),
        ("xLSTM parity 1x >= 0.95 and 4x >= 0.85", (acc("xlstm", "1x", "parity") or 0) >= 0.95
         and (acc("xlstm", "4x", "parity") or 0) >= 0.85,
         {"1x": acc("xlstm", "1x", "parity"), "4x": acc("xlstm", "4x", "parity")}),
        ("Mamba parity 4x <= 0.6", (acc("mamba", "4x", "parity") or 1) <= 0.6, {"4x": acc("mamba", "4x", "parity")}),
        ("Transformer parity 4x <= 0.6", (acc("transformer", "4x", "parity") or 1) <= 0.6,
         {"4x": acc("transformer", "4x", "parity")}),
    ]
    return [{"rule": r, "pass": bool(ok), "values": v} for r, ok, v in rules]


def probe(runs: Path, variants: list[str]) -> dict[str, Any]:
    records = {p.name: json.loads((p / "training.json").read_text()) for p in sorted(runs.iterdir())
               if (p / "training.json").exists()}
    evs = {name: last_eval(r) for name, r in records.items()}
    cands = [v for v in variants if v in evs] or [v for v in evs if v.startswith("transformer")]
    chosen = max(cands, key=lambda v: recall_score(evs[v])) if cands else None
    fam_ev = {f: evs[f] for f in FAMILIES if f in evs and f != "transformer"}
    if chosen:
        fam_ev["transformer"] = evs[chosen]
    return {
        "runs": {n: {"steps": r["steps"], "wall_s": r["wall_s"], "tokens": r.get("tokens"),
                     "lr": r["hyperparameters"]["lr"], "final_loss": r.get("final_loss"), "eval": evs[n]}
                 for n, r in records.items()},
        "transformer_variant": chosen,
        "transformer_lr": records[chosen]["hyperparameters"]["lr"] if chosen else None,
        "verdicts": verdicts(fam_ev),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m archrouter.evals.zoo_probe", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=Path, required=True)
    p.add_argument("--variants", nargs="*", default=[])
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args(argv)
    res = probe(a.runs, a.variants)
    for n, r in res["runs"].items():
        cells = " ".join(f"{g}@{s} {r['eval'][s]['exact'][g]:.2f}/{r['eval'][s]['first'].get(g, 0):.2f}"
                         for s in r["eval"] for g in sorted(r["eval"][s]["exact"])
                         if g in ("mqar", "copy_span", "parity", "cups5"))
        print(f"{n}: step {r['steps']} lr {r['lr']:g} loss {r['final_loss']} wall {r['wall_s']:.0f}s | {cells}")
    print(f"transformer variant: {res['transformer_variant']} (lr {res['transformer_lr']})")
    for v in res["verdicts"]:
        print(f"{'PASS' if v['pass'] else 'FAIL'}  {v['rule']}  {v['values']}")
    if a.out:
        a.out.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
