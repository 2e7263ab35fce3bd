"""Figures of a capability matrix (matplotlib, Agg): accuracy heatmaps and cost curves.

Written next to capability.json, where the dashboard's Capability view lists them:
  accuracy_by_task.png       one panel per family: task x length scale, exact-match accuracy
  accuracy_by_generator.png  the same per generator
  recall_load.png            recall accuracy vs load (pairs, words), one panel per swept generator
  cost.png                   prefill and decode ms/token and state bytes vs prompt length, log-log,
                             one colour per family, one line style per device
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from archrouter.policies.types import TASKS  # noqa: E402

COLOURS = {"transformer": "#4c72b0", "mamba": "#dd8452", "rwkv": "#55a868", "xlstm": "#c44e52"}
STYLES = {"cuda": "-", "cpu": "--"}


def render(cap: dict[str, Any], out_dir: Path) -> list[Path]:
    paths = []
    acc = cap.get("accuracy")
    if acc and any(f.get("per_task") for f in (acc.get("families") or {}).values()):  # a sweep-only run has none
        paths.append(heatmaps(acc, "per_task", [t for t in TASKS if any(t in f["per_task"] for f in
                                                acc["families"].values())], out_dir / "accuracy_by_task.png",
                              "Exact-match accuracy by task and length (x training length)"))
        gens = sorted(acc["generators"], key=lambda g: (TASKS.index(acc["generators"][g]["task"]), g))
        paths.append(heatmaps(acc, "per_generator", gens, out_dir / "accuracy_by_generator.png",
                              "Exact-match accuracy by generator and length (x training length)"))
    if acc and acc.get("load_sweep"):
        paths.append(load_sweep(acc, out_dir / "recall_load.png"))
    if any(d.get("families") for d in (cap.get("cost") or {}).values()):
        paths.append(cost(cap, out_dir / "cost.png"))
    return paths


def heatmaps(acc: dict[str, Any], key: str, rows: list[str], path: Path, title: str) -> Path:
    fams = list(acc["families"])
    scales = [str(s) for s in acc["scales"]]
    fig, axes = plt.subplots(1, len(fams), figsize=(1.6 + 0.75 * len(scales) * len(fams) + 0.9 * len(fams),
                                                     1.2 + 0.36 * len(rows)), squeeze=False, sharey=True)
    im = None
    for ax, f in zip(axes[0], fams, strict=True):
        table = acc["families"][f][key]
        grid = [[table.get(r, {}).get(s, float("nan")) for s in scales] for r in rows]
        im = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                if v == v:  # not nan
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                            color="black" if v > 0.6 else "white")
        ax.set_xticks(range(len(scales)), [f"{s}x" for s in scales])
        ax.set_yticks(range(len(rows)), rows)
        ax.set_title(f, fontsize=10)
    fig.suptitle(title, fontsize=11)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="accuracy")
    return _save(fig, path)


def load_sweep(acc: dict[str, Any], path: Path) -> Path:
    gens = list(acc["load_sweep"]["loads"])
    fig, axes = plt.subplots(1, len(gens), figsize=(5.2 * len(gens), 3.9), squeeze=False)
    for ax, g in zip(axes[0], gens, strict=True):
        for f, rec in acc["families"].items():
            pts = rec.get("load_sweep", {}).get(g, {})
            xs = sorted(int(n) for n in pts)
            if not xs:
                continue
            ax.plot(xs, [pts[str(n)]["accuracy"] for n in xs], "-o", ms=3, color=COLOURS.get(f), label=f"{f} exact")
            ax.plot(xs, [pts[str(n)]["first_byte"] for n in xs], ":", color=COLOURS.get(f), alpha=0.6,
                    label=f"{f} first byte")
        ax.axvline(acc["generators"][g]["training_length"], color="grey", lw=0.8, ls="--")
        ax.set_xscale("log", base=2)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel({"mqar": "key-value pairs", "copy_span": "words in the text"}.get(g, "load"))
        ax.set_ylabel("accuracy")
        ax.set_title(f"{g} ({acc['load_sweep']['items']} items per point; dashed line: 1x)", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=6, ncol=2)
    fig.suptitle("Recall accuracy vs load", fontsize=11)
    return _save(fig, path)


def cost(cap: dict[str, Any], path: Path) -> Path:
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4), gridspec_kw={"wspace": 0.32})
    panels = (("prefill_ms_per_token", "prefill ms / token"), ("decode_ms_per_token", "decode ms / token"),
              ("state_bytes", "cache / state bytes per sequence"))
    for dev, rec in sorted((cap.get("cost") or {}).items()):
        for f, res in rec.get("families", {}).items():
            pts = res.get("points") or []
            if not pts:
                continue
            xs = [p["prompt_tokens"] for p in pts]
            for ax, (k, _) in zip(axes, panels, strict=True):
                ax.plot(xs, [p[k] for p in pts], STYLES.get(dev, ":"), marker="o", ms=3,
                        color=COLOURS.get(f), label=f"{f} ({dev})")
    devices = ", ".join(f"{d}: {r.get('device')} ({r.get('dtype')}, torch {r.get('torch')}, {r.get('threads')} threads)"
                        for d, r in sorted((cap.get("cost") or {}).items()))
    for ax, (_, label) in zip(axes, panels, strict=True):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("prompt tokens")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Serving cost vs prompt length (batch 1) - {devices}", fontsize=9)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
