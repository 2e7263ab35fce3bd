"""Write a run's report: report.json, report.md, a self-contained report.html, PNGs, decisions.jsonl."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from archrouter.evals import plots
from archrouter.policies.evaluation import Row


def write(out: Path, summary: dict[str, Any], rows: list[Row], execution: dict[str, Any] | None = None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    report = {**summary, **({"execution": execution} if execution else {})}
    with (out / "decisions.jsonl").open("w") as f:
        for r in rows:
            f.write(json.dumps(r.to_json()) + "\n")
    figures = {
        "task_confusion.png": plots.confusion(summary["task_confusion"]["matrix"], summary["task_confusion"]["labels"],
                                              "Task: labelled vs classifier", out / "task_confusion.png"),
        "rule_firing.png": plots.bars(summary["rule_counts"], "Rules that decided", out / "rule_firing.png"),
        "decision_latency.png": plots.histogram([r.decision_ms for r in rows], "Decision latency",
                                                "ms (features + classifier + rules)", out / "decision_latency.png"),
        "cost_quality.png": plots.cost_quality(
            summary["baselines"], "accuracy" if summary["labelled_backend"] else "latency_ms",
            "decision accuracy vs labelled best backend" if summary["labelled_backend"] else "latency (ms)",
            "Policy vs single-backend baselines", out / "cost_quality.png"),
    }
    if summary["labelled_backend"]:
        figures["backend_confusion.png"] = plots.confusion(
            summary["backend_confusion"]["matrix"], summary["backend_confusion"]["labels"],
            "Backend: labelled best vs policy", out / "backend_confusion.png")
    if (rel := summary.get("reliability")) and rel["bins"]:
        bins = rel["bins"]
        figures["reliability.png"] = plots.curve(
            [b["confidence"] for b in bins], [b["accuracy"] for b in bins],
            f"Classifier reliability (ECE {rel['ece']:.4f})", "mean confidence in bin",
            "accuracy of the top task", out / "reliability.png")
    if execution:
        figures["executed_cost_quality.png"] = plots.cost_quality(
            execution["strategies"], "quality", "quality (checker exact match)",
            "Executed: quality vs cost", out / "executed_cost_quality.png")
        c = execution["apgr_curve"]
        title = f"Quality as calls move to the strongest backend (APGR {execution['apgr']:.3f})"
        figures["apgr.png"] = plots.curve([p[0] for p in c], [p[1] for p in c], title, "share of calls upgraded",
                                          "quality", out / "apgr.png")
    report["figures"] = sorted(figures)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    md = markdown(report)
    (out / "report.md").write_text(md)
    (out / "report.html").write_text(to_html(md, {n: out / n for n in figures}, report["policy"]))
    return report


def _f(x: Any, pct: bool = False) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{100 * x:.1f}%" if pct else f"{x:.4g}"
    return str(x)


def markdown(r: dict[str, Any]) -> str:
    lines = [f"# Policy evaluation: {r['policy']}", "",
             f"{r['prompts']} prompts ({r['labelled_backend']} labelled with a best backend).", "",
             "| metric | value |", "|---|---|",
             f"| decision accuracy (vs best_backend) | {_f(r['decision_accuracy'], True)} |",
             f"| task accuracy | {_f(r['task_accuracy'], True)} |",
             f"| task macro-F1 | {_f(r['task_macro_f1'])} |",
             f"| prompts no rule matched (default) | {r['no_rule_matched']} |",
             f"| decision latency p50 / p99 | {r['decision_latency_ms']['p50']:.3f} / "
             f"{r['decision_latency_ms']['p99']:.3f} ms |", "",
             "## Policy against baselines (estimated under the catalogue's cost curves)", "",
             "| strategy | accuracy | cost / query | latency / query (ms) |", "|---|---|---|---|"]
    for name, b in r["baselines"].items():
        lines.append(f"| {name} | {_f(b['accuracy'], True)} | {b['cost']:.3g} | {b['latency_ms']:.1f} |")
    lines += ["", "## Rules that decided", "", "| rule | prompts |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in r["rule_counts"].items()]
    lines += ["", "## Classifier per task", "", "| task | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    lines += [f"| {t} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} | {v['support']} |"
              for t, v in r["task_per_class"].items()]
    if ex := r.get("execution"):
        lines += ["", "## Executed", "", f"Answers scored by exact match; APGR {ex['apgr']:.3f}, "
                  f"PGR of the policy {ex['pgr']:.3f} (weakest {ex['weakest']}, strongest {ex['strongest']}).", "",
                  "| strategy | quality | cost / query |", "|---|---|---|"]
        lines += [f"| {n} | {_f(s['quality'], True)} | {s['cost']:.3g} |" for n, s in ex["strategies"].items()]
        lines += ["", "| task | policy quality |", "|---|---|"]
        lines += [f"| {t} | {_f(q, True)} |" for t, q in ex["policy_quality_by_task"].items()]
    if st := r.get("stratified"):
        lines += stratified_markdown(st)
    if rel := r.get("reliability"):
        lines += ["", "## Reliability of the task classifier"] + reliability_markdown(rel)
    lines += ["", "## Figures", ""] + [f"![{f}]({f})" for f in r["figures"]]
    return "\n".join(lines) + "\n"


def stratified_markdown(st: dict[str, Any]) -> list[str]:
    lines = ["", "## Per task and prompt length (answer quality from per-prompt verdicts)", "",
             "Quality = share of prompts the chosen backend answered correctly. PGR, APGR and CPT as in RouteLLM "
             "(Ong et al. 2024, arXiv:2406.18665): strong = the stratum's best single backend, weak = its worst; "
             "CPT(x%) = share of calls to the strong backend needed to recover x% of the gap.", "",
             "| stratum | n | decision acc. | routed | best single | random | oracle | PGR | APGR | CPT(50%) | "
             "CPT(80%) | cost routed / best single |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in st["strata"].items():
        q, c = s["quality"], s["cost"]
        lines.append(f"| {name} | {s['n']} | {_f(s['decision_accuracy'], True)} | {_f(q['routed'], True)} | "
                     f"{_f(q['best_single'], True)} ({s['strong']}) | {_f(q['random'], True)} | "
                     f"{_f(q['oracle'], True)} | "
                     f"{_f(s['pgr'])} | {_f(s['apgr'])} | {_f(s['cpt50'], True)} | {_f(s['cpt80'], True)} | "
                     f"{c['routed']:.3g} / {c['best_single']:.3g} |")
    return lines


def reliability_markdown(rel: dict[str, Any]) -> list[str]:
    lines = []
    lines += ["", f"Reliability of the classifier's confidence (ECE {rel['ece']:.4f}):", "",
              "| confidence bin | n | mean confidence | accuracy |", "|---|---|---|---|"]
    lines += [f"| {b['bin'][0]:.1f}-{b['bin'][1]:.1f} | {b['n']} | {b['confidence']:.3f} | {b['accuracy']:.3f} |"
              for b in rel["bins"]]
    return lines


def to_html(md: str, figures: dict[str, Path], title: str) -> str:
    """A self-contained page: the markdown tables as HTML, figures inlined as data URIs."""
    body, table = [], []

    def flush():
        if table:
            rows = [[c.strip() for c in ln.strip("|").split("|")] for ln in table if not set(ln) <= set("|-")]
            head, *rest = rows
            body.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr>" + "".join(
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rest) + "</table>")
            table.clear()

    for ln in md.splitlines():
        if ln.startswith("|"):
            table.append(ln)
            continue
        flush()
        if ln.startswith("!["):
            name = ln[ln.index("(") + 1 : -1]
            data = base64.b64encode(figures[name].read_bytes()).decode()
            body.append(f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,{data}"></figure>')
        elif ln.startswith("#"):
            level = len(ln) - len(ln.lstrip("#"))
            body.append(f"<h{level}>{html.escape(ln.lstrip('#').strip())}</h{level}>")
        elif ln.strip():
            body.append(f"<p>{html.escape(ln)}</p>")
    flush()
    style = ("body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
             "img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")
